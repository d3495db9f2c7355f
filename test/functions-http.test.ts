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

describe('loading and the admin API', () => {
  it('lists the loaded functions, and reports broken files by path and reason', async () => {
    const response = await request(server.url, 'GET', '/v1/admin/functions', { token: server.serviceKey });
    expect(response.status).toBe(200);
    const body = response.body as {
      functions: Array<{ name: string; kind: string; options: { timeout_ms: number } }>;
      errors: Array<{ file: string; reason: string }>;
    };
    expect(body.functions.map((fn) => fn.name)).toEqual([
      'env',
      'first',
      'hello',
      'hog',
      'logs',
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
