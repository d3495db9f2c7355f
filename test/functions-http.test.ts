import path from 'node:path';
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { errorCode, request, useTestApp, waitFor } from './helpers.js';

const FILES: Record<string, string> = {
  'hello.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request) => {
      const body = request.body as { name?: string } | null;
      return { hello: body?.name ?? 'world', method: request.method, query: request.query, auth: request.auth,
               sawAuthorization: 'authorization' in request.headers };
    });`,
  'posted.ts': `
    import { http } from 'basalt/functions';
    export default http({ method: 'POST' }, async () => ({ ok: true }));`,
  'several.ts': `
    import { http } from 'basalt/functions';
    export const first = http(async () => 1);
    export const second = http(async () => [2]);`,
  'throws.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => { throw new Error('database password is hunter2'); });`,
  'spins.ts': `
    import { http } from 'basalt/functions';
    export default http({ timeout_ms: 300 }, async () => { for (;;) {} });`,
  'hog.ts': `
    import { http } from 'basalt/functions';
    export default http({ memory_mb: 32, timeout_ms: 20000 }, async () => {
      const keep: number[][] = [];
      for (;;) keep.push(new Array(1e6).fill(1));
    });`,
  'logs.ts': `
    import { http } from 'basalt/functions';
    export default http(async (_request, ctx) => {
      console.log('from console', { n: 1 });
      ctx.log.warn('from ctx');
      return 'logged';
    });`,
  'env.ts': `
    import { http } from 'basalt/functions';
    export default http({ env: ['FN_SECRET'] }, async (_request, ctx) => ({ secret: ctx.env.FN_SECRET ?? null, path: ctx.env.PATH ?? null }));`,
  'broken.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => { return ( ; });`,
  'nothing.ts': `export const value = 42;`,
  'echoRaw.ts': `
    import { http } from 'basalt/functions';
    import { createHmac } from 'node:crypto';
    export default http({ method: 'POST' }, async (request) => ({
      isBytes: request.rawBody instanceof Uint8Array,
      hex: Buffer.from(request.rawBody).toString('hex'),
      signature: createHmac('sha256', 'whsec').update(request.rawBody).digest('hex'),
      body: request.body,
    }));`,
  'digest.ts': `
    import { http } from 'basalt/functions';
    import { createHash } from 'node:crypto';
    export default http({ method: 'POST' }, async (request) => ({
      length: request.rawBody.byteLength,
      sha256: createHash('sha256').update(request.rawBody).digest('hex'),
      text: typeof request.body === 'string' ? createHash('sha256').update(request.body).digest('hex') : null,
      json: request.body !== null && typeof request.body === 'object' ? (request.body as { tag?: unknown }).tag ?? null : null,
    }));`,
  'blob.ts': `
    import { http } from 'basalt/functions';
    // size bytes of a pattern the test can rebuild: byte i is (i * 31 + seed) mod 256.
    export default http(async (request) => {
      const size = Number(request.query.size ?? 0);
      const seed = Number(request.query.seed ?? 0);
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 255;
      return new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } });
    });`,
  'csv.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => {
      const headers = new Headers({ 'content-type': 'text/csv; charset=utf-8', 'x-trace': 't1' });
      headers.append('set-cookie', 'a=1; Path=/');
      headers.append('set-cookie', 'b=2; Path=/');
      return new Response('a,b\\n1,2\\n', { status: 201, headers });
    });`,
  'bytes.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => new Response(new Uint8Array([0, 1, 2, 255]), { status: 202 }));`,
  'moved.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => Response.redirect('https://example.com/next', 302));`,
  'empty.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => new Response(null, { status: 204 }));`,
  'framing.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request) =>
      new Response('x', { headers: { [request.query.header ?? 'content-length']: request.query.value ?? '1' } }));`,
  'errorResponse.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => Response.error());`,
  '_shared.ts': `export const helper = 1;`,
};

const server = useTestApp({ functions: FILES, env: { FN_SECRET: 's3cret' } });

interface Invocation {
  id: string;
  status: string;
  error: string | null;
  logs: Array<{ level: string; message: string }>;
  duration_ms: number;
  trigger: string;
}

async function invocations(name: string, query = ''): Promise<Invocation[]> {
  const response = await request(server.url, 'GET', `/v1/admin/functions/${name}/invocations${query}`, {
    token: server.serviceKey,
  });
  expect(response.status).toBe(200);
  return (response.body as { invocations: Invocation[] }).invocations;
}

describe('HTTP functions', () => {
  it('runs a function and returns its JSON result with the caller as auth', async () => {
    const anonymous = await request(server.url, 'POST', '/v1/functions/hello?x=1', { body: { name: 'Ada' } });
    expect(anonymous.status).toBe(200);
    expect(anonymous.body).toEqual({
      hello: 'Ada',
      method: 'POST',
      query: { x: '1' },
      auth: null,
      sawAuthorization: false,
    });
    const service = await request(server.url, 'GET', '/v1/functions/hello', { token: server.serviceKey });
    expect(service.status).toBe(200);
    expect(service.body).toMatchObject({ hello: 'world', auth: { role: 'service' }, sawAuthorization: false });
  });

  it('serves named exports under their export names', async () => {
    expect((await request(server.url, 'GET', '/v1/functions/first')).body).toBe(1);
    expect((await request(server.url, 'GET', '/v1/functions/second')).body).toEqual([2]);
  });

  it('answers a method the function does not take with 405', async () => {
    const response = await request(server.url, 'GET', '/v1/functions/posted');
    expect(response.status).toBe(405);
    expect(errorCode(response.body)).toBe('METHOD_NOT_ALLOWED');
    // Like every 405: the method it does take, in Allow and in the details.
    expect(response.headers.get('allow')).toBe('POST');
    expect(response.body).toMatchObject({ error: { details: { method: 'GET', allowed: ['POST'] } } });
    expect((await request(server.url, 'POST', '/v1/functions/posted', { body: {} })).body).toEqual({ ok: true });
  });

  it('answers an unknown or invalid name with 404 / 400', async () => {
    const unknown = await request(server.url, 'GET', '/v1/functions/nope');
    expect(unknown.status).toBe(404);
    expect(errorCode(unknown.body)).toBe('NOT_FOUND');
    const invalid = await request(server.url, 'GET', `/v1/functions/${encodeURIComponent('../etc')}`);
    expect(invalid.status).toBe(400);
    expect(errorCode(invalid.body)).toBe('INVALID_REQUEST');
  });

  it('turns a thrown error into 500 FUNCTION_ERROR with the invocation id and no internals', async () => {
    const response = await request(server.url, 'GET', '/v1/functions/throws');
    expect(response.status).toBe(500);
    expect(errorCode(response.body)).toBe('FUNCTION_ERROR');
    const id = (response.body as { error: { details: { invocation_id: string } } }).error.details.invocation_id;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(response.text).not.toContain('hunter2');
    expect(response.text).not.toMatch(/at .*:\d+:\d+/);
    const [recorded] = await invocations('throws');
    expect(recorded).toMatchObject({ id, status: 'failed', trigger: 'http' });
    expect(recorded?.error).toContain('hunter2');
  });

  it('stops a function past its timeout with 504, and keeps serving', async () => {
    const started = Date.now();
    const response = await request(server.url, 'GET', '/v1/functions/spins');
    expect(response.status).toBe(504);
    expect(errorCode(response.body)).toBe('FUNCTION_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(5_000);
    const [recorded] = await invocations('spins');
    expect(recorded?.status).toBe('failed');
    expect(recorded?.error).toContain('timed out after 300 ms');
    expect((await request(server.url, 'GET', '/healthz')).status).toBe(200);
  });

  it('stops a function past its memory limit, and keeps serving', async () => {
    const response = await request(server.url, 'GET', '/v1/functions/hog');
    expect(response.status).toBe(500);
    expect(errorCode(response.body)).toBe('FUNCTION_ERROR');
    const [recorded] = await invocations('hog');
    expect(recorded?.error).toContain('memory limit of 32 MB');
    expect((await request(server.url, 'GET', '/v1/functions/first')).body).toBe(1);
  });

  it('captures console and ctx.log lines per invocation', async () => {
    expect((await request(server.url, 'GET', '/v1/functions/logs')).body).toBe('logged');
    const [recorded] = await invocations('logs', '?status=succeeded');
    expect(recorded?.logs.map((line) => [line.level, line.message])).toEqual([
      ['info', 'from console { n: 1 }'],
      ['warn', 'from ctx'],
    ]);
    expect(recorded?.duration_ms).toBeGreaterThanOrEqual(0);
  });

  it('gives a function only the environment variables it declares', async () => {
    const response = await request(server.url, 'GET', '/v1/functions/env');
    expect(response.body).toEqual({ secret: 's3cret', path: null });
  });

  it('handles concurrent calls to one function', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        request(server.url, 'POST', '/v1/functions/hello', { body: { name: `n${i}` } }),
      ),
    );
    expect(results.map((result) => (result.body as { hello: string }).hello)).toEqual(
      Array.from({ length: 20 }, (_, i) => `n${i}`),
    );
  });

  it('records every call shortly after its response, also when nothing lists invocations', async () => {
    const client = new pg.Client({ connectionString: server.database.url });
    await client.connect();
    try {
      const count = async () =>
        (
          await client.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM basalt.function_invocations WHERE function_name = 'second'`,
          )
        ).rows[0]?.n ?? 0;
      const before = await count();
      const answered = Date.now();
      const results = await Promise.all(
        Array.from({ length: 30 }, () => request(server.url, 'GET', '/v1/functions/second')),
      );
      expect(results.every((result) => result.status === 200)).toBe(true);
      // Written after the responses, in a batch or a few, without a read to prompt it.
      await waitFor('the 30 rows', async () => (await count()) === before + 30, 5_000);
      expect(Date.now() - answered).toBeLessThan(5_000);
      const { rows } = await client.query<{ status: string; trigger: string; duration_ms: number | null }>(
        `SELECT status, trigger, duration_ms FROM basalt.function_invocations WHERE function_name = 'second'`,
      );
      expect(
        rows.every((row) => row.status === 'succeeded' && row.trigger === 'http' && row.duration_ms !== null),
      ).toBe(true);
    } finally {
      await client.end();
    }
  });
});

describe('HTTP functions: raw bodies and Response objects', () => {
  const post = (name: string, body: BodyInit, contentType?: string) =>
    fetch(`${server.url}/v1/functions/${name}`, {
      method: 'POST',
      headers: contentType ? { 'content-type': contentType } : {},
      body,
    });

  it('gives the handler the bytes as sent besides the parsed JSON', async () => {
    const text = '{ "amount": 10,\n  "currency": "eur" }';
    const response = await post('echoRaw', text, 'application/json');
    expect(response.status).toBe(200);
    const { createHmac } = await import('node:crypto');
    expect(await response.json()).toEqual({
      isBytes: true,
      hex: Buffer.from(text).toString('hex'),
      signature: createHmac('sha256', 'whsec').update(text).digest('hex'),
      body: { amount: 10, currency: 'eur' },
    });
  });

  it('takes other content types, with the raw bytes and a text body for text/plain', async () => {
    const form = await post('echoRaw', 'a=1&b=2', 'application/x-www-form-urlencoded');
    expect(form.status).toBe(200);
    expect(await form.json()).toMatchObject({ hex: Buffer.from('a=1&b=2').toString('hex'), body: null });
    const bytes = await post('echoRaw', new Uint8Array([0, 255, 7]), 'application/octet-stream');
    expect(await bytes.json()).toMatchObject({ hex: '00ff07', body: null });
    const text = await post('echoRaw', 'plain words', 'text/plain; charset=utf-8');
    expect(await text.json()).toMatchObject({ body: 'plain words' });
    const none = await fetch(`${server.url}/v1/functions/echoRaw`, { method: 'POST' });
    expect(await none.json()).toMatchObject({ isBytes: true, hex: '', body: null });
  });

  it('still refuses malformed JSON and bodies over the limit', async () => {
    const malformed = await post('echoRaw', '{"a":', 'application/json');
    expect(malformed.status).toBe(400);
    expect(errorCode(await malformed.json())).toBe('INVALID_REQUEST');
    const oversized = await post('echoRaw', new Uint8Array(3 * 1024 * 1024), 'application/octet-stream');
    expect(oversized.status).toBe(413);
    expect(errorCode(await oversized.json())).toBe('PAYLOAD_TOO_LARGE');
  });

  // From 16 KiB a body is moved to the worker (its buffer transferred) rather than copied.
  it('gives the handler a large binary, JSON or text body intact, below and above the size bodies are moved from', async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const sha256 = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex');
    for (const size of [16 * 1024 - 1, 16 * 1024, 256 * 1024, 1536 * 1024]) {
      const bytes = randomBytes(size);
      const response = await post('digest', bytes, 'application/octet-stream');
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ length: size, sha256: sha256(bytes), text: null, json: null });
    }
    const json = JSON.stringify({ tag: 'big', filler: 'é€😀'.repeat(20_000) });
    const parsed = await post('digest', json, 'application/json');
    expect(await parsed.json()).toEqual({
      length: Buffer.byteLength(json),
      sha256: sha256(json),
      text: null,
      json: 'big',
    });
    const text = 'ünïcødé line\n'.repeat(5_000);
    const plain = await post('digest', text, 'text/plain; charset=utf-8');
    expect(await plain.json()).toEqual({
      length: Buffer.byteLength(text),
      sha256: sha256(text),
      text: sha256(text),
      json: null,
    });
  });

  it('keeps concurrent calls with large bodies apart: each run sees only its own bytes', async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const bodies = Array.from({ length: 16 }, (_, i) => randomBytes(64 * 1024 + i * 1000));
    const answers = await Promise.all(
      bodies.map(async (bytes) => (await post('digest', bytes, 'application/octet-stream')).json()),
    );
    expect(answers).toEqual(
      bodies.map((bytes) => ({
        length: bytes.byteLength,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        text: null,
        json: null,
      })),
    );
  });

  it("sends a returned Response's binary body intact, small or large", async () => {
    for (const [size, seed] of [
      [100, 3],
      [16 * 1024, 5],
      [1024 * 1024 + 7, 11],
    ] as const) {
      const response = await fetch(`${server.url}/v1/functions/blob?size=${size}&seed=${seed}`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-length')).toBe(String(size));
      const received = new Uint8Array(await response.arrayBuffer());
      const expected = new Uint8Array(size);
      for (let i = 0; i < size; i++) expected[i] = (i * 31 + seed) & 255;
      expect(Buffer.from(received).equals(Buffer.from(expected))).toBe(true);
    }
  });

  it("sends a returned Response's status, headers and body", async () => {
    const csv = await fetch(`${server.url}/v1/functions/csv`);
    expect(csv.status).toBe(201);
    expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(csv.headers.get('x-trace')).toBe('t1');
    expect(csv.headers.getSetCookie()).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    expect(await csv.text()).toBe('a,b\n1,2\n');

    const bytes = await fetch(`${server.url}/v1/functions/bytes`);
    expect(bytes.status).toBe(202);
    expect([...new Uint8Array(await bytes.arrayBuffer())]).toEqual([0, 1, 2, 255]);

    const moved = await fetch(`${server.url}/v1/functions/moved`, { redirect: 'manual' });
    expect(moved.status).toBe(302);
    expect(moved.headers.get('location')).toBe('https://example.com/next');

    const empty = await fetch(`${server.url}/v1/functions/empty`);
    expect(empty.status).toBe(204);
    expect(await empty.text()).toBe('');
  });

  it('fails a Response that sets a header the server controls, or has no valid status', async () => {
    for (const header of ['content-length', 'transfer-encoding', 'connection']) {
      const response = await fetch(`${server.url}/v1/functions/framing?header=${header}&value=chunked`);
      expect(response.status).toBe(500);
      expect(errorCode(await response.json())).toBe('FUNCTION_ERROR');
      const [recorded] = await invocations('framing');
      expect(recorded?.error).toContain(`"${header}" header, which the server controls`);
    }
    const allowed = await fetch(`${server.url}/v1/functions/framing?header=x-custom&value=1`);
    expect(allowed.status).toBe(200);
    expect(allowed.headers.get('x-custom')).toBe('1');

    const error = await fetch(`${server.url}/v1/functions/errorResponse`);
    expect(error.status).toBe(500);
    expect(errorCode(await error.json())).toBe('FUNCTION_ERROR');
    const [recorded] = await invocations('errorResponse');
    expect(recorded?.error).toContain('status 0 is not one a function may answer (200–599)');
  });
});

describe('loading and the admin API', () => {
  it('lists the loaded functions, and reports broken files by path and reason', async () => {
    const response = await request(server.url, 'GET', '/v1/admin/functions', { token: server.serviceKey });
    expect(response.status).toBe(200);
    const body = response.body as {
      functions: Array<{ name: string; kind: string; options: { timeout_ms: number } }>;
      errors: Array<{ file: string; reason: string }>;
    };
    expect(body.functions.map((fn) => fn.name)).toEqual([
      'blob',
      'bytes',
      'csv',
      'digest',
      'echoRaw',
      'empty',
      'env',
      'errorResponse',
      'first',
      'framing',
      'hello',
      'hog',
      'logs',
      'moved',
      'posted',
      'second',
      'spins',
      'throws',
    ]);
    expect(body.functions.find((fn) => fn.name === 'spins')?.options.timeout_ms).toBe(300);
    const files = body.errors.map((error) => path.basename(error.file)).sort();
    expect(files).toEqual(['broken.ts', 'nothing.ts']);
    expect(body.errors.find((error) => error.file.endsWith('nothing.ts'))?.reason).toContain('no function definition');
  });

  it('answers 404 for the invocations of an unknown function and 400 for a bad query', async () => {
    const invocationsOfUnknown = await request(server.url, 'GET', '/v1/admin/functions/nope/invocations', {
      token: server.serviceKey,
    });
    expect(invocationsOfUnknown.status).toBe(404);
    const badQuery = await request(server.url, 'GET', '/v1/admin/functions/hello/invocations?limit=abc', {
      token: server.serviceKey,
    });
    expect(badQuery.status).toBe(400);
  });
});
