import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, startTestApp, type TestApp, type TestDatabase } from '../../test/helpers.js';
import { BasaltError, createClient } from '../src/index.js';

let database: TestDatabase;
let server: TestApp;
let functionsDir: string;

const FILES: Record<string, string> = {
  'greet.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request) => ({
      hello: (request.body as { name?: string } | null)?.name ?? 'world',
      method: request.method,
      uid: request.auth?.uid ?? null,
    }));`,
  'fails.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => { throw new Error('no'); });`,
};

beforeAll(async () => {
  functionsDir = await mkdtemp(path.join(tmpdir(), 'basalt-sdk-functions-'));
  for (const [name, source] of Object.entries(FILES)) await writeFile(path.join(functionsDir, name), source);
  database = await createTestDatabase();
  server = await startTestApp(database, { BASALT_FUNCTIONS_DIR: functionsDir });
});

afterAll(async () => {
  await server?.close();
  await database?.drop();
  if (functionsDir) await rm(functionsDir, { recursive: true, force: true });
});

describe('functions.invoke', () => {
  it('posts the body as JSON with the session token and resolves with the result', async () => {
    const basalt = createClient(server.url, { persistSession: false, autoRefreshToken: false });
    expect(await basalt.functions.invoke('greet')).toEqual({ hello: 'world', method: 'POST', uid: null });
    const { user } = await basalt.auth.signUp({
      email: `sdk-fn-${Date.now()}@example.com`,
      password: 'correct horse battery staple 42',
    });
    const result = await basalt.functions.invoke<{ hello: string; uid: string | null }>('greet', { name: 'ada' });
    expect(result).toEqual({ hello: 'ada', method: 'POST', uid: user.id });
  });

  it('refreshes a token about to expire before the call, and sends the new one', async () => {
    const sent: Array<{ path: string; token: string | null }> = [];
    const recording: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers);
      sent.push({ path: new URL(String(input)).pathname, token: headers.get('authorization') });
      return fetch(input, init);
    };
    const basalt = createClient(server.url, { persistSession: false, autoRefreshToken: false, fetch: recording });
    const { user } = await basalt.auth.signUp({
      email: `sdk-fn-refresh-${Date.now()}@example.com`,
      password: 'correct horse battery staple 42',
    });
    const before = basalt.auth.session?.access_token;
    // As if the token's life had run out while the app sat idle.
    (basalt.auth.session as { expires_at: number }).expires_at = Math.floor(Date.now() / 1000) + 2;
    sent.length = 0;
    const result = await basalt.functions.invoke<{ uid: string | null }>('greet');
    expect(result.uid).toBe(user.id);
    expect(sent.map((request) => request.path)).toEqual(['/v1/auth/refresh', '/v1/functions/greet']);
    const after = basalt.auth.session?.access_token;
    expect(after).not.toBe(before);
    expect(sent[1]?.token).toBe(`Bearer ${after}`);
  });

  it('rejects with the catalogue error', async () => {
    const basalt = createClient(server.url, { persistSession: false });
    const failed = await basalt.functions.invoke('fails').catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(BasaltError);
    expect((failed as BasaltError).code).toBe('FUNCTION_ERROR');
    const missing = await basalt.functions.invoke('absent').catch((error: unknown) => error);
    expect((missing as BasaltError).code).toBe('NOT_FOUND');
  });
});
