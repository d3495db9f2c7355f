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

  it('rejects with the catalogue error', async () => {
    const basalt = createClient(server.url, { persistSession: false });
    const failed = await basalt.functions.invoke('fails').catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(BasaltError);
    expect((failed as BasaltError).code).toBe('FUNCTION_ERROR');
    const missing = await basalt.functions.invoke('absent').catch((error: unknown) => error);
    expect((missing as BasaltError).code).toBe('NOT_FOUND');
  });
});
