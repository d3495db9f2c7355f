/**
 * HTTP functions: what a caller can send to a function (raw bodies of any type, within the
 * body limit; no credentials passed on) and what a function can answer (its own status and
 * headers, never the connection's framing). One row per attack; see harness.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import { securitySuite, type Attack } from './harness.js';

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
  attacks: [
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
