import { http } from 'basalt/functions';

/**
 * An HTTP function, served at /v1/functions/hello for any method.
 * Try: curl -X POST http://127.0.0.1:8080/v1/functions/hello -H 'content-type: application/json' -d '{"name":"Ada"}'
 */
export default http(async (request) => {
  const body = request.body as { name?: unknown } | null;
  const name = typeof body?.name === 'string' ? body.name : (request.query.name ?? 'world');
  return { message: `Hello, ${name}!`, signedIn: request.auth !== null };
});
