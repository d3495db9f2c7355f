import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, request, startTestApp, type TestApp, type TestDatabase } from './helpers.js';

interface Response {
  description?: string;
  content?: { 'application/json'?: { schema?: Record<string, unknown> } };
}
interface Operation {
  responses?: Record<string, Response>;
}
interface OpenApi {
  paths: Record<string, Record<string, Operation>>;
}

let database: TestDatabase;
let server: TestApp;
let spec: OpenApi;

beforeAll(async () => {
  database = await createTestDatabase();
  server = await startTestApp(database);
  const response = await request(server.url, 'GET', '/docs/json');
  expect(response.status).toBe(200);
  spec = response.body as OpenApi;
});

afterAll(async () => {
  await server?.close();
  await database?.drop();
});

/** Every documented operation, as "METHOD /path" with its responses. */
function operations(): Array<[string, Record<string, Response>]> {
  return Object.entries(spec.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]): [string, Record<string, Response>] => [
      `${method.toUpperCase()} ${path}`,
      operation.responses ?? {},
    ]),
  );
}

/**
 * Operations whose success is not a JSON body: the Prometheus text, an object's bytes (a
 * stream with the object's own type, which a JSON schema cannot describe), and an HTTP
 * function's answer (whatever JSON value the function returns).
 */
const OPEN_SUCCESS = new Set(['GET /metrics', 'GET /v1/storage/{bucket}/{*}']);
/** The download declares no responses at all: its errors are the envelope all the same (storage.test.ts). */
const UNDECLARED_ERRORS = new Set(['GET /v1/storage/{bucket}/{*}']);
/** Health checks answer their own status object for 503, not the error envelope. */
const OWN_ERROR_BODY = new Set(['GET /readyz']);

describe('the OpenAPI document at /docs/json', () => {
  it('describes the success of every operation with a schema', () => {
    const missing: string[] = [];
    for (const [name, responses] of operations()) {
      const success = Object.entries(responses).filter(([status]) => /^[23]/.test(status));
      if (success.length === 0) {
        missing.push(`${name}: no success status`);
        continue;
      }
      if (OPEN_SUCCESS.has(name) || name.includes(' /v1/functions/')) continue;
      for (const [status, response] of success) {
        // swagger writes "Default Response" where a route declares nothing for the status.
        if (response.description === 'Default Response' && response.content === undefined && status === '200') {
          missing.push(`${name}: ${status} has no schema`);
        }
        const bodyless = status === '204' || status.startsWith('3');
        if (!bodyless && response.content?.['application/json']?.schema === undefined) {
          missing.push(`${name}: ${status} has no JSON schema`);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  it('describes the errors of every API operation with the one error envelope', () => {
    const wrong: string[] = [];
    for (const [name, responses] of operations()) {
      const errors = Object.entries(responses).filter(([status]) => /^[45]/.test(status));
      if (name.includes(' /v1/') && errors.length === 0 && !UNDECLARED_ERRORS.has(name)) {
        wrong.push(`${name}: no error response`);
      }
      if (OWN_ERROR_BODY.has(name)) continue;
      for (const [status, response] of errors) {
        const schema = response.content?.['application/json']?.schema;
        if (schema?.$ref !== '#/components/schemas/ErrorEnvelope') wrong.push(`${name}: ${status} is not the envelope`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('lists the error envelope once, as a shared schema', () => {
    const components = (spec as unknown as { components: { schemas: Record<string, unknown> } }).components;
    expect(components.schemas.ErrorEnvelope).toMatchObject({
      type: 'object',
      properties: { error: { type: 'object' } },
    });
  });
});
