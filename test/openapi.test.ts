import { Ajv2020 } from 'ajv/dist/2020.js';
import * as addFormatsModule from 'ajv-formats';
import { beforeAll, describe, expect, it } from 'vitest';
import { signUp, STRONG_PASSWORD, uniqueEmail, type SignedUp } from './auth-helpers.js';
import { request, useTestApp } from './helpers.js';

// ajv-formats is CommonJS with a default export; under NodeNext the callable sits on .default.
const addFormats = addFormatsModule.default.default;

interface Response {
  description?: string;
  headers?: Record<string, unknown>;
  content?: Record<string, { schema?: Record<string, unknown> }>;
}
interface Operation {
  responses?: Record<string, Response>;
  'x-websocket'?: Record<string, unknown>;
}
interface OpenApi {
  info: { description: string };
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown>; responses: Record<string, Response> };
}

const server = useTestApp();
let spec: OpenApi;

beforeAll(async () => {
  const response = await request(server.url, 'GET', '/docs/json');
  expect(response.status).toBe(200);
  spec = response.body as OpenApi;
});

/** Every documented operation, as [method, path, operation]. */
function operations(): Array<[string, string, Operation]> {
  return Object.entries(spec.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]): [string, string, Operation] => [method, path, operation]),
  );
}

/** The OpenAPI path of a Fastify route: `:name` → `{name}`, `*` → `{*}`. */
function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\*$/, '{*}');
}

/**
 * The server's own routes as "METHOD path", read from Fastify's route tree (printRoutes),
 * so a route added anywhere is held to the document without a list to keep up.
 */
function serverRoutes(): string[] {
  const lines = server.app.printRoutes({ commonPrefix: false }).split('\n');
  const stack: string[] = [];
  const routes: string[] = [];
  for (const line of lines) {
    const match = /^([│ ]*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/.exec(line.replace(/\u00a0/g, ' '));
    if (!match) continue;
    const [, indent = '', segment = '', methods] = match;
    const depth = indent.length / 4;
    stack.length = depth;
    // A wildcard child is printed without the slash before it ("/v1/storage/:bucket" then "*").
    const parent = stack.at(-1) ?? '';
    stack.push(segment.startsWith('*') && !parent.endsWith('/') && parent !== '' ? `/${segment}` : segment);
    if (!methods) continue;
    const url = stack.join('');
    for (const method of methods.split(', ')) routes.push(`${method} ${url}`);
  }
  return routes;
}

/** Routes that are not the API: its own docs, the dashboard's files, and CORS preflights. */
const NOT_THE_API = /^(OPTIONS|[A-Z]+ \/docs|[A-Z]+ \/_(\/|$))/;

const SUCCESS = /^(2\d\d|101|30[1278])$/;
/** Success without a body: no content, a redirect, not modified, a protocol switch. */
const BODYLESS = /^(204|30\d|101)$/;

describe('the OpenAPI document at /docs/json', () => {
  it('lists every route the server has (HEAD where a route of its own serves it), and no other', () => {
    const routes = serverRoutes();
    expect(routes.length).toBeGreaterThan(40);
    const documented = new Set(operations().map(([method, path]) => `${method.toUpperCase()} ${path}`));
    const missing = routes
      .filter((route) => !NOT_THE_API.test(route))
      // Fastify's implicit HEAD beside every GET is documented only where it is a route of its own.
      .filter((route) => !route.startsWith('HEAD ') || route === 'HEAD /v1/storage/:bucket/*')
      .map((route) => {
        const [method = '', url = ''] = route.split(' ');
        return `${method} ${openApiPath(url)}`;
      })
      .filter((route) => !documented.has(route));
    expect(missing).toEqual([]);
    // And nothing documented that the server does not serve.
    const phantom = [...documented].filter((route) => {
      const [method = '', path = ''] = route.split(' ');
      const url = path.replace(/\{\*\}$/, '*').replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
      return !server.app.hasRoute({ method: method as 'GET', url });
    });
    expect(phantom).toEqual([]);
  });

  it('gives every operation its success status, with a schema for each body it sends', () => {
    const wrong: string[] = [];
    for (const [method, path, operation] of operations()) {
      const name = `${method.toUpperCase()} ${path}`;
      const responses = operation.responses ?? {};
      const success = Object.entries(responses).filter(([status]) => SUCCESS.test(status));
      if (success.length === 0) wrong.push(`${name}: no success status`);
      for (const [status, response] of Object.entries(responses)) {
        if (response.description === 'Default Response') wrong.push(`${name} ${status}: no description`);
        if (BODYLESS.test(status) || method === 'head') {
          if (response.content !== undefined && method === 'head') wrong.push(`${name} ${status}: HEAD with a body`);
          continue;
        }
        const schemas = Object.values(response.content ?? {}).map((media) => media.schema);
        if (schemas.length === 0 || schemas.some((schema) => schema === undefined)) {
          wrong.push(`${name} ${status}: no schema`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it('describes every error of an API operation with the one error envelope, 5xx included', () => {
    const wrong: string[] = [];
    for (const [method, path, operation] of operations()) {
      const name = `${method.toUpperCase()} ${path}`;
      const errors = Object.entries(operation.responses ?? {}).filter(([status]) => /^[45]/.test(status));
      if (path.startsWith('/v1/') && !errors.some(([status]) => status.startsWith('4'))) wrong.push(`${name}: no 4xx`);
      if (path.startsWith('/v1/') && !errors.some(([status]) => status.startsWith('5'))) wrong.push(`${name}: no 5xx`);
      // Health checks answer their own status object for 503, not the error envelope; HEAD has no body.
      if (path === '/readyz' || method === 'head') continue;
      for (const [status, response] of errors) {
        const schema = response.content?.['application/json']?.schema;
        if (schema?.$ref !== '#/components/schemas/ErrorEnvelope') wrong.push(`${name}: ${status} is not the envelope`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('states the statuses routes answer beyond their JSON body', () => {
    const object = spec.paths['/v1/storage/{bucket}/{*}'];
    expect(Object.keys(object?.get?.responses ?? {})).toEqual(expect.arrayContaining(['200', '206', '304', '416']));
    expect(Object.keys(object?.head?.responses ?? {})).toEqual(expect.arrayContaining(['200', '206', '304']));
    expect(object?.put?.responses).toHaveProperty('201');
    expect(object?.delete?.responses).toHaveProperty('204');
    expect(spec.paths['/v1/auth/recover']?.post?.responses).toHaveProperty('202');
    expect(spec.paths['/v1/auth/signup']?.post?.responses).toHaveProperty('201');
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      const responses = spec.paths['/v1/functions/{name}']?.[method]?.responses;
      expect(Object.keys(responses ?? {})).toEqual(expect.arrayContaining(['200', '405', '500', '504']));
    }
    expect(spec.components.responses.MethodNotAllowed?.headers).toHaveProperty('allow');
    expect(spec.info.description).toContain('405');
  });

  it('describes the websocket: its upgrade and its message types', () => {
    const realtime = spec.paths['/v1/realtime']?.get;
    expect(realtime?.responses).toHaveProperty('101');
    const socket = realtime?.['x-websocket'] as { clientMessages: object; serverMessages: object };
    expect(Object.keys(socket.clientMessages)).toEqual(
      expect.arrayContaining(['auth', 'subscribe', 'unsubscribe', 'ping', 'join', 'leave', 'broadcast']),
    );
    expect(Object.keys(socket.serverMessages)).toEqual(
      expect.arrayContaining(['subscribed', 'change', 'reset', 'error', 'pong', 'authenticated']),
    );
  });

  it('documents /healthz as what it returns, and /readyz with its checks', () => {
    const health = spec.paths['/healthz']?.get?.responses?.['200']?.content?.['application/json']?.schema;
    expect(Object.keys((health?.properties as object | undefined) ?? {})).toEqual(['status']);
    const ready = spec.paths['/readyz']?.get?.responses?.['200']?.content?.['application/json']?.schema;
    expect(Object.keys((ready?.properties as object | undefined) ?? {})).toEqual(['status', 'checks']);
  });

  it('lists the error envelope once, as a shared schema', () => {
    expect(spec.components.schemas.ErrorEnvelope).toMatchObject({
      type: 'object',
      properties: { error: { type: 'object' } },
    });
  });
});

describe('real responses match the document', () => {
  let ajv: Ajv2020;
  beforeAll(() => {
    ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
    addFormats(ajv);
    ajv.addFormat('binary', true);
    ajv.addSchema({ ...spec, $id: 'openapi.json' });
    // The validator does reject what the document does not allow.
    const health = ajv.getSchema('openapi.json#/paths/~1healthz/get/responses/200/content/application~1json/schema');
    expect(health?.({ status: 'ok' })).toBe(true);
    expect(health?.({ status: 'ok', checks: {} })).toBe(false);
    expect(health?.({ status: 1 })).toBe(false);
  });

  /** The documented response for a real answer: its exact status, else the status class (4XX). */
  function documented(method: string, path: string, status: number): [string, Response] | undefined {
    const responses = spec.paths[path]?.[method.toLowerCase()]?.responses ?? {};
    const exact = responses[String(status)];
    if (exact) return [String(status), exact];
    const range = `${String(status)[0]}XX`;
    return responses[range] ? [range, responses[range]] : undefined;
  }

  const pointer = (...parts: string[]) =>
    parts.map((part) => part.replaceAll('~', '~0').replaceAll('/', '~1')).join('/');

  /** Sends a request, then checks its status is documented and its JSON body fits the documented schema. */
  async function check(
    method: string,
    path: string,
    url: string,
    options: Parameters<typeof request>[3] = {},
  ): Promise<Awaited<ReturnType<typeof request>>> {
    const response = await request(server.url, method, url, options);
    const found = documented(method, path, response.status);
    expect(found, `${method} ${url} answered ${response.status}, which ${path} does not document`).toBeDefined();
    const [status, declared] = found as [string, Response];
    const type = response.headers.get('content-type')?.split(';')[0] ?? '';
    if (response.text === '' || method === 'HEAD') return response;
    const media = declared.content?.[type] ?? declared.content?.['*/*'];
    expect(media, `${method} ${url} ${status}: ${type} is not documented`).toBeDefined();
    if (type === 'application/json') {
      const ref = `openapi.json#/${pointer('paths', path, method.toLowerCase(), 'responses', status, 'content', 'application/json', 'schema')}`;
      const validate = ajv.getSchema(ref);
      expect(validate, ref).toBeDefined();
      const valid = validate?.(response.body);
      expect(
        valid,
        `${method} ${url} ${status}: ${JSON.stringify(validate?.errors)} in ${response.text.slice(0, 300)}`,
      ).toBe(true);
    }
    return response;
  }

  let user: SignedUp;
  const admin = () => ({ token: server.serviceKey });

  it('auth', async () => {
    const email = uniqueEmail('openapi');
    const signed = await check('POST', '/v1/auth/signup', '/v1/auth/signup', {
      body: { email, password: STRONG_PASSWORD },
    });
    expect(signed.status).toBe(201);
    user = await signUp(server.url);
    const session = user.session;
    if (!session) throw new Error('sign-up gave no session');
    const token = session.access_token;
    await check('POST', '/v1/auth/signin', '/v1/auth/signin', { body: { email, password: STRONG_PASSWORD } });
    await check('POST', '/v1/auth/signin', '/v1/auth/signin', { body: { email, password: 'wrong password 1' } });
    await check('POST', '/v1/auth/anonymous', '/v1/auth/anonymous', { body: {} });
    await check('GET', '/v1/auth/user', '/v1/auth/user', { token });
    await check('GET', '/v1/auth/user', '/v1/auth/user');
    await check('PATCH', '/v1/auth/user', '/v1/auth/user', { token, body: { data: { name: 'Ada' } } });
    await check('GET', '/v1/auth/sessions', '/v1/auth/sessions', { token });
    await check('POST', '/v1/auth/recover', '/v1/auth/recover', { body: { email } });
    await check('POST', '/v1/auth/refresh', '/v1/auth/refresh', {
      body: { refresh_token: session.refresh_token },
    });
    await check('GET', '/.well-known/jwks.json', '/.well-known/jwks.json');
    await check('GET', '/v1/admin/users', '/v1/admin/users', admin());
    await check('GET', '/v1/admin/users/{id}', `/v1/admin/users/${user.user.id}`, admin());
  });

  it('documents', async () => {
    await check('POST', '/v1/admin/collections', '/v1/admin/collections', {
      ...admin(),
      body: { name: 'notes', rules: { read: 'true', create: 'auth != null' } },
    });
    await check('GET', '/v1/admin/collections', '/v1/admin/collections', admin());
    await check('GET', '/v1/admin/collections/{name}', '/v1/admin/collections/notes', admin());
    await check('POST', '/v1/db/{collection}', '/v1/db/notes', { ...admin(), body: { id: 'n1', data: { n: 1 } } });
    await check('POST', '/v1/db/{collection}', '/v1/db/notes', { ...admin(), body: { id: 'n1', data: { n: 1 } } });
    await check('GET', '/v1/db/{collection}/{id}', '/v1/db/notes/n1');
    await check('PUT', '/v1/db/{collection}/{id}', '/v1/db/notes/n2', { ...admin(), body: { data: { n: 2 } } });
    await check('PUT', '/v1/db/{collection}/{id}', '/v1/db/notes/n2', { ...admin(), body: { data: { n: 3 } } });
    await check('PATCH', '/v1/db/{collection}/{id}', '/v1/db/notes/n2', { ...admin(), body: { data: { m: 1 } } });
    await check('POST', '/v1/db/{collection}/query', '/v1/db/notes/query', { body: { limit: 1 } });
    await check('POST', '/v1/db/{collection}/count', '/v1/db/notes/count', { body: {} });
    await check('POST', '/v1/db/batch', '/v1/db/batch', {
      ...admin(),
      body: { ops: [{ op: 'create', collection: 'notes', id: 'n3', data: {} }] },
    });
    await check('DELETE', '/v1/db/{collection}/{id}', '/v1/db/notes/n3', admin());
    await check('GET', '/v1/db/{collection}/{id}', '/v1/db/notes/n3');
  });

  it('storage, with ranges and revalidation', async () => {
    await check('POST', '/v1/admin/buckets', '/v1/admin/buckets', {
      ...admin(),
      body: { name: 'files', rules: { read: 'true' } },
    });
    await check('GET', '/v1/admin/buckets', '/v1/admin/buckets', admin());
    const path = '/v1/storage/{bucket}/{*}';
    await check('PUT', path, '/v1/storage/files/a/hello.txt', {
      ...admin(),
      rawBody: 'hello world',
      headers: { 'content-type': 'text/plain' },
    });
    await check('GET', '/v1/storage/{bucket}', '/v1/storage/files?prefix=a/');
    const full = await check('GET', path, '/v1/storage/files/a/hello.txt');
    expect(full.status).toBe(200);
    const etag = full.headers.get('etag') ?? '';
    expect(
      (await check('GET', path, '/v1/storage/files/a/hello.txt', { headers: { range: 'bytes=0-4' } })).status,
    ).toBe(206);
    const notModified = await check('GET', path, '/v1/storage/files/a/hello.txt', {
      headers: { 'if-none-match': etag },
    });
    expect(notModified.status).toBe(304);
    const beyond = await check('GET', path, '/v1/storage/files/a/hello.txt', { headers: { range: 'bytes=100-' } });
    expect(beyond.status).toBe(416);
    expect((await check('HEAD', path, '/v1/storage/files/a/hello.txt')).status).toBe(200);
    await check('GET', path, '/v1/storage/files/missing.txt');
    await check('POST', '/v1/sign/{bucket}/{*}', '/v1/sign/files/a/hello.txt', {
      ...admin(),
      body: { expires_in: 60 },
    });
    await check('DELETE', path, '/v1/storage/files/a/hello.txt', admin());
  });

  it('operations, admin views and functions', async () => {
    await check('GET', '/healthz', '/healthz');
    await check('GET', '/readyz', '/readyz');
    await check('GET', '/metrics', '/metrics', admin());
    await check('GET', '/metrics', '/metrics');
    await check('GET', '/v1/admin/realtime', '/v1/admin/realtime', admin());
    await check('GET', '/v1/admin/functions', '/v1/admin/functions', admin());
    // A GET that asks for no upgrade.
    await check('GET', '/v1/realtime', '/v1/realtime');
    await check('POST', '/v1/functions/{name}', '/v1/functions/nothing', { body: {} });
  });

  it('events: one publish, a batch, a refused batch', async () => {
    const path = '/v1/events/{topic}';
    const one = await check('POST', path, '/v1/events/docs.check', { ...admin(), body: { payload: { n: 1 } } });
    expect(one.status).toBe(202);
    const batch = await check('POST', path, '/v1/events/docs.check', {
      ...admin(),
      body: { events: [{ payload: 1 }, { payload: 2, key: 'k', delay_seconds: 1 }] },
    });
    expect(batch.status).toBe(202);
    expect((batch.body as { ids: string[] }).ids).toHaveLength(2);
    const refused = await check('POST', path, '/v1/events/docs.check', { ...admin(), body: { events: [] } });
    expect(refused.status).toBe(400);
    const body = spec.paths[path]?.post as { requestBody?: { content: Record<string, { schema: unknown }> } };
    expect(JSON.stringify(body.requestBody?.content['application/json']?.schema)).toContain('"events"');
  });

  it('deploys, versions, rollback, undeploy and secrets', async () => {
    const source = (answer: string) =>
      `import { http } from 'basalt/functions';\n` +
      `export default http({ method: 'POST' }, async () => (${JSON.stringify(answer)}));\n`;
    const deployPath = '/v1/admin/functions/{name}';
    const deploy = (answer: string) =>
      check('PUT', deployPath, '/v1/admin/functions/documented', {
        ...admin(),
        body: { files: { 'index.ts': source(answer) }, entry: 'index.ts' },
      });
    expect((await deploy('one')).status).toBe(201);
    expect((await deploy('two')).status).toBe(201);
    const broken = await check('PUT', deployPath, '/v1/admin/functions/documented', {
      ...admin(),
      body: { files: { 'index.ts': 'export default (' }, entry: 'index.ts' },
    });
    expect(broken.status).toBe(422);
    const missingEntry = await check('PUT', deployPath, '/v1/admin/functions/documented', {
      ...admin(),
      body: { files: {} },
    });
    expect(missingEntry.status).toBe(400);
    expect((await check('PUT', deployPath, '/v1/admin/functions/documented', { body: {} })).status).toBe(401);

    const versions = await check(
      'GET',
      '/v1/admin/functions/{name}/versions',
      '/v1/admin/functions/documented/versions',
      admin(),
    );
    expect((versions.body as { versions: unknown[] }).versions).toHaveLength(2);
    const rollback = '/v1/admin/functions/{name}/rollback';
    const url = '/v1/admin/functions/documented/rollback';
    expect((await check('POST', rollback, url, { ...admin(), body: { version: 1 } })).status).toBe(200);
    expect((await check('POST', rollback, url, { ...admin(), body: { version: 99 } })).status).toBe(404);
    await check('GET', '/v1/admin/functions', '/v1/admin/functions', admin());
    await check('GET', '/v1/admin/functions/{name}/invocations', '/v1/admin/functions/documented/invocations', admin());

    // A method the function does not declare: 405 with the Allow header the document names.
    const refused = await check('GET', '/v1/functions/{name}', '/v1/functions/documented');
    expect(refused.status).toBe(405);
    expect(refused.headers.get('allow')).toBe('POST');
    expect(spec.paths['/v1/functions/{name}']?.get?.responses?.['405']?.headers).toHaveProperty('allow');

    expect((await check('DELETE', deployPath, '/v1/admin/functions/documented', admin())).status).toBe(204);
    expect((await check('DELETE', deployPath, '/v1/admin/functions/documented', admin())).status).toBe(404);

    const secret = '/v1/admin/secrets/{name}';
    expect(
      (await check('PUT', secret, '/v1/admin/secrets/DOCUMENTED', { ...admin(), body: { value: 'v' } })).status,
    ).toBe(204);
    expect((await check('PUT', secret, '/v1/admin/secrets/DOCUMENTED', { ...admin(), body: {} })).status).toBe(400);
    await check('GET', '/v1/admin/secrets', '/v1/admin/secrets', admin());
    expect((await check('DELETE', secret, '/v1/admin/secrets/DOCUMENTED', admin())).status).toBe(204);
    expect((await check('DELETE', secret, '/v1/admin/secrets/DOCUMENTED', admin())).status).toBe(404);
  });
});
