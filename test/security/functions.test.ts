/**
 * HTTP functions: what a caller can send to a function (raw bodies of any type, within the
 * body limit; no credentials passed on) and what a function can answer (its own status and
 * headers, never the connection's framing). One row per attack; see harness.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import { request, type TestApp } from '../helpers.js';
import { securitySuite, type Attack, type HttpResult } from './harness.js';

const SECRET_MARKER = 'internal-detail-7f3a';

const functionsDir = mkdtempSync(path.join(tmpdir(), 'basalt-security-functions-'));
const FILES: Record<string, string> = {
  'echo.ts': `import { http } from 'basalt/functions';
    export default http(async (request) => ({ headers: request.headers, bytes: request.rawBody.length }));`,
  // Answers with the header named in the query: the rows try those the server controls.
  'header.ts': `import { http } from 'basalt/functions';
    export default http(async (request) =>
      new Response('${SECRET_MARKER}', { headers: { [request.query.name ?? 'x-a']: request.query.value ?? '1' } }));`,
  // Response subclasses get past the checks of the Response constructor and of Headers.
  'status.ts': `import { http } from 'basalt/functions';
    class Odd extends Response { get status() { return Number(this.oddStatus); } oddStatus = '0'; }
    export default http(async (request) => {
      const response = new Odd('${SECRET_MARKER}');
      response.oddStatus = request.query.status ?? '0';
      return response;
    });`,
  'injected.ts': `import { http } from 'basalt/functions';
    class Injected extends Response {
      get headers() { return new Map([['x-note', 'a\\r\\nset-cookie: pwned=1']]) as unknown as Headers; }
    }
    export default http(async () => new Injected('${SECRET_MARKER}'));`,
};
for (const [name, source] of Object.entries(FILES)) writeFileSync(path.join(functionsDir, name), source);
afterAll(() => rmSync(functionsDir, { recursive: true, force: true }));

/** The body limit of these rows' server. */
const BODY_LIMIT = 64 * 1024;

type Fixture = Record<string, never>;

const HELLO = `import { http } from 'basalt/functions';\nexport default http(async () => 'hi');\n`;
const deployOf = (files: Record<string, string>, entry = 'index.ts') => ({ files, entry });
const LEAKED_SECRET = 'sk_live_do_not_leak_4242';

/** Deploys, secrets and versions: admin only, bounded, and never a path outside the deploy. */
const deployRows: Array<Attack<Fixture>> = [
  ...(['anonymous', 'bogus'] as const).map((as) => ({
    name: `a deploy ${as === 'anonymous' ? 'without a token' : 'with a forged token'} is refused and deploys nothing`,
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/intruder',
      as: as === 'anonymous' ? 'anonymous' : 'bearer-bogus',
      body: deployOf({ 'index.ts': HELLO }),
    }),
    status: 401,
    code: 'UNAUTHENTICATED',
    check: async (_result: HttpResult, _fixture: Fixture, server: TestApp) => {
      const listed = await request(server.url, 'GET', '/v1/admin/functions', { token: server.serviceKey });
      expect(listed.text).not.toContain('intruder');
    },
  })),
  ...[
    ['DELETE', '/v1/admin/functions/echo'],
    ['POST', '/v1/admin/functions/echo/rollback'],
    ['GET', '/v1/admin/functions/echo/versions'],
    ['GET', '/v1/admin/secrets'],
    ['PUT', '/v1/admin/secrets/API_KEY'],
    ['DELETE', '/v1/admin/secrets/API_KEY'],
  ].map(([method, path]) => ({
    name: `${method} ${path} needs the service key`,
    request: () => ({ method: method!, path: path!, body: method === 'GET' || method === 'DELETE' ? undefined : {} }),
    status: 401,
    code: 'UNAUTHENTICATED',
  })),
  ...['../escape.ts', '/etc/passwd', 'a/../../b.ts', '.hidden.ts', 'a\\b.ts', 'a//b.ts', 'C:/x.ts', 'a/\u0000.ts'].map(
    (file) => ({
      name: `a deployed file may not be named ${JSON.stringify(file)} (path traversal)`,
      request: () => ({
        method: 'PUT',
        path: '/v1/admin/functions/traversal',
        as: 'service',
        body: deployOf({ 'index.ts': HELLO, [file]: 'export {};' }),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    }),
  ),
  {
    name: 'a deploy whose entry is not one of its files is refused',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/traversal',
      as: 'service',
      body: deployOf({ 'index.ts': HELLO }, '../index.ts'),
    }),
    status: 400,
    code: 'INVALID_REQUEST',
  },
  {
    name: 'a deploy cannot import a file outside its own files',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/traversal',
      as: 'service',
      body: deployOf({
        'index.ts': `import { http } from 'basalt/functions';\nimport * as key from '/etc/hostname';\nexport default http(async () => String(key));\n`,
      }),
    }),
    status: 422,
    code: 'FUNCTION_BUILD_FAILED',
  },
  {
    name: 'a deploy whose sources are over the limit is refused with 413',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/huge',
      as: 'service',
      body: deployOf({ 'index.ts': HELLO, 'big.ts': `export const big = '${'x'.repeat(5 * 1024 * 1024)}';` }),
    }),
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
  },
  {
    name: 'a deploy that builds into a bundle over the limit is refused with 413 and deploys nothing',
    request: () => {
      // Small sources, a large build: every file is pulled in under 4 MiB each, 3 of them.
      const chunk = `export const part = '${'y'.repeat(1_700_000)}';\n`;
      return {
        method: 'PUT',
        path: '/v1/admin/functions/bloated',
        as: 'service',
        body: deployOf({
          'index.ts': `import { http } from 'basalt/functions';\nimport { part as a } from './a.js';\nimport { part as b } from './b.js';\nimport { part as c } from './c.js';\nexport default http(async () => a.length + b.length + c.length);\n`,
          'a.ts': chunk,
          'b.ts': chunk,
          'c.ts': chunk,
        }),
      };
    },
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
    check: async (_result, _fixture, server) => {
      const versions = await request(server.url, 'GET', '/v1/admin/functions/bloated/versions', {
        token: server.serviceKey,
      });
      expect(versions.status).toBe(404);
    },
  },
  {
    name: 'too many files in one deploy are refused',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/many',
      as: 'service',
      body: deployOf({
        'index.ts': HELLO,
        ...Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`f${i}.ts`, 'export {};'])),
      }),
    }),
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
  },
  {
    name: 'a deploy body of the wrong shape is refused',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/shape',
      as: 'service',
      body: { files: { 'index.ts': 42 }, entry: 'index.ts' },
    }),
    status: 400,
    code: 'INVALID_REQUEST',
  },
  {
    name: 'a function name that is not a name is refused',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/functions/..%2Fetc',
      as: 'service',
      body: deployOf({ 'index.ts': HELLO }),
    }),
    status: 400,
    code: 'INVALID_REQUEST',
  },
  ...['lower', '1ABC', 'A-B', 'A'.repeat(65), 'A B', 'Ä'].map((name) => ({
    name: `a secret may not be named ${JSON.stringify(name)}`,
    request: () => ({
      method: 'PUT',
      path: `/v1/admin/secrets/${encodeURIComponent(name)}`,
      as: 'service',
      body: { value: 'v' },
    }),
    status: 400,
    code: 'INVALID_REQUEST',
  })),
  {
    name: 'a secret value over 64 KiB is refused',
    request: () => ({
      method: 'PUT',
      path: '/v1/admin/secrets/LARGE',
      as: 'service',
      body: { value: 'z'.repeat(64 * 1024 + 1) },
    }),
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
  },
  {
    name: 'a secret value never appears in the API: listings, invocation logs, errors, the function list',
    run: async (_fixture, server) => {
      const put = await request(server.url, 'PUT', '/v1/admin/secrets/LEAKY', {
        token: server.serviceKey,
        body: { value: LEAKED_SECRET },
      });
      expect(put.status).toBe(204);
      const leaky = `import { http } from 'basalt/functions';
export default http({ secrets: ['LEAKY'] }, async (_request, ctx) => {
  console.log('key is', ctx.secrets.LEAKY);
  ctx.log.error('again ' + ctx.secrets.LEAKY);
  throw new Error('failed with ' + ctx.secrets.LEAKY);
});
`;
      const deployed = await request(server.url, 'PUT', '/v1/admin/functions/leaky', {
        token: server.serviceKey,
        body: deployOf({ 'index.ts': leaky }),
      });
      expect(deployed.status).toBe(201);
      const called = await request(server.url, 'POST', '/v1/functions/leaky', { body: {} });
      expect(called.status).toBe(500);
      const answers = await Promise.all(
        [
          '/v1/admin/secrets',
          '/v1/admin/functions',
          '/v1/admin/functions/leaky/versions',
          '/v1/admin/functions/leaky/invocations',
        ].map((path) => request(server.url, 'GET', path, { token: server.serviceKey })),
      );
      for (const answer of [called, deployed, ...answers]) expect(answer.text).not.toContain(LEAKED_SECRET);
      const invocations = answers[3]!.text;
      expect(invocations).toContain('key is [secret]');
      expect(invocations).toContain('failed with [secret]');
    },
  },
];

const forbiddenHeaderRows: Array<Attack<Fixture>> = [
  ['content-length', '1'],
  ['transfer-encoding', 'chunked'],
  ['connection', 'close'],
  ['keep-alive', 'timeout=999'],
  ['upgrade', 'websocket'],
  ['trailer', 'x-after'],
].map(([name, value]) => ({
  name: `a function's Response cannot set the server-controlled "${name}" header`,
  request: () => ({ method: 'GET', path: `/v1/functions/header?name=${name}&value=${value}` }),
  status: 500,
  code: 'FUNCTION_ERROR',
  mustNotContain: () => [SECRET_MARKER],
}));

const badStatusRows: Array<Attack<Fixture>> = ['0', '99', '101', '600', '1000', 'NaN'].map((status) => ({
  name: `a function's Response cannot answer status ${status}`,
  request: () => ({ method: 'GET', path: `/v1/functions/status?status=${status}` }),
  status: 500,
  code: 'FUNCTION_ERROR',
  mustNotContain: () => [SECRET_MARKER],
}));

/** Every content type the route takes is held to the body limit, before the function runs. */
const oversizedBodyRows: Array<Attack<Fixture>> = [
  'application/octet-stream',
  'text/plain',
  'application/json',
  'application/x-www-form-urlencoded',
  undefined,
].map((contentType) => ({
  name: `a ${contentType ?? 'untyped'} body over the body limit is refused before the function runs`,
  request: () => ({
    method: 'POST',
    path: '/v1/functions/echo',
    rawBody: new Uint8Array(BODY_LIMIT + 1).fill(0x20),
    headers: contentType ? { 'content-type': contentType } : undefined,
  }),
  status: 413,
  code: 'PAYLOAD_TOO_LARGE',
}));

securitySuite<Fixture>({
  surface: 'functions',
  env: { BASALT_FUNCTIONS_DIR: functionsDir, BASALT_BODY_LIMIT: String(BODY_LIMIT) },
  setup: async () => ({}),
  // A well-formed token no server issued.
  tokenOf: (_fixture, actor) =>
    actor === 'bearer-bogus' ? 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl' : undefined,
  attacks: [
    ...deployRows,
    ...oversizedBodyRows,
    {
      name: 'a raw body at the limit reaches the function whole',
      request: () => ({
        method: 'POST',
        path: '/v1/functions/echo',
        rawBody: new Uint8Array(BODY_LIMIT),
        headers: { 'content-type': 'application/octet-stream' },
      }),
      status: 200,
      check: (result) => expect((result.body as { bytes: number }).bytes).toBe(BODY_LIMIT),
    },
    {
      name: 'a JSON body with __proto__ is refused as by every JSON route, raw bytes or not',
      request: () => ({
        method: 'POST',
        path: '/v1/functions/echo',
        rawBody: '{"__proto__": {"polluted": true}}',
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: "the caller's cookie and authorization never reach the function",
      request: () => ({
        method: 'POST',
        path: '/v1/functions/echo',
        rawBody: 'hi',
        headers: {
          'content-type': 'text/plain',
          cookie: 'session=c00kie-value',
          'proxy-authorization': 'Basic cHJveHk=',
        },
      }),
      status: 200,
      mustNotContain: () => ['c00kie-value', 'cHJveHk='],
    },
    ...forbiddenHeaderRows,
    ...badStatusRows,
    {
      name: 'a header value with CR LF from a Response subclass is refused, not split into two headers',
      request: () => ({ method: 'GET', path: '/v1/functions/injected' }),
      status: 500,
      code: 'FUNCTION_ERROR',
      mustNotContain: () => [SECRET_MARKER],
      check: (result) => expect(result.headers.get('set-cookie')).toBeNull(),
    },
    {
      name: 'an ordinary header and set-cookie from a Response are sent',
      request: () => ({ method: 'GET', path: '/v1/functions/header?name=set-cookie&value=theme%3Ddark' }),
      status: 200,
      check: (result) => expect(result.headers.get('set-cookie')).toBe('theme=dark'),
    },
  ],
});
