import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDatabase, request, startTestApp, waitFor, type TestApp, type TestDatabase } from './helpers.js';

/**
 * The functions folder is deployed through the same path as the admin API: restarts mint no
 * versions, and when a folder file and an API deploy share a name the latest deploy wins.
 */
let database: TestDatabase;
let folder: string;

beforeAll(async () => {
  database = await createTestDatabase();
  folder = await mkdtemp(path.join(tmpdir(), 'basalt-folder-deploy-'));
});
afterAll(async () => {
  await database.drop();
  await rm(folder, { recursive: true, force: true });
});

// Each test starts instances one after another: slow on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const answering = (value: string) =>
  `import { http } from 'basalt/functions';\nexport default http(async () => ${JSON.stringify(value)});\n`;

async function withInstance<T>(work: (app: TestApp) => Promise<T>, env: Record<string, string> = {}): Promise<T> {
  const app = await startTestApp(
    database,
    { BASALT_FUNCTIONS_DIR: folder, ...env },
    { serviceKey: 'bsk_folder-deploy-test-key-0123456789abcdef' },
  );
  try {
    return await work(app);
  } finally {
    await app.close();
  }
}

async function versions(app: TestApp, name: string) {
  const response = await request(app.url, 'GET', `/v1/admin/functions/${name}/versions`, { token: app.serviceKey });
  return (response.body as { versions: Array<{ version: number; active: boolean; source: string }> }).versions;
}

const callOf = async (app: TestApp, name: string) =>
  (await request(app.url, 'POST', `/v1/functions/${name}`, { body: {} })).body;

describe('the functions folder', () => {
  it('deploys on start only what changed, and the latest deploy wins against the API', async () => {
    await writeFile(path.join(folder, 'greet.ts'), answering('from the folder'));
    await withInstance(async (app) => {
      expect(await callOf(app, 'greet')).toBe('from the folder');
      expect(await versions(app, 'greet')).toEqual([
        { version: 1, active: true, source: 'folder', deployed_at: expect.any(String) },
      ]);
    });
    // A restart (or another instance with the same folder) mints nothing.
    await withInstance(async (app) => {
      expect((await versions(app, 'greet')).map((v) => v.version)).toEqual([1]);
      // An API deploy of the same name replaces the folder's version …
      const deployed = await request(app.url, 'PUT', '/v1/admin/functions/greet', {
        token: app.serviceKey,
        body: { files: { 'index.ts': answering('from the API') }, entry: 'index.ts' },
      });
      expect(deployed.body).toMatchObject({ version: 2 });
    });
    // … and stays live across restarts while the file is unchanged.
    await withInstance(async (app) => {
      expect(await callOf(app, 'greet')).toBe('from the API');
      expect((await versions(app, 'greet')).map((v) => [v.version, v.active, v.source])).toEqual([
        [2, true, 'api'],
        [1, false, 'folder'],
      ]);
    });
    // Once the file changes, the folder deploys it again: the latest deploy wins.
    await writeFile(path.join(folder, 'greet.ts'), answering('edited in the folder'));
    await withInstance(async (app) => {
      expect(await callOf(app, 'greet')).toBe('edited in the folder');
      expect((await versions(app, 'greet'))[0]).toMatchObject({ version: 3, active: true, source: 'folder' });
      const listed = await request(app.url, 'GET', '/v1/admin/functions', { token: app.serviceKey });
      expect(listed.body).toMatchObject({
        functions: [expect.objectContaining({ name: 'greet', version: 3, source: 'folder', file: 'greet.ts' })],
        errors: [],
      });
    });
  });

  it('keeps an undeploy in force across restarts while the file is unchanged', async () => {
    await writeFile(path.join(folder, 'gone.ts'), answering('here'));
    await withInstance(async (app) => {
      expect(await callOf(app, 'gone')).toBe('here');
      expect((await request(app.url, 'DELETE', '/v1/admin/functions/gone', { token: app.serviceKey })).status).toBe(
        204,
      );
    });
    await withInstance(async (app) => {
      expect((await request(app.url, 'POST', '/v1/functions/gone', { body: {} })).status).toBe(404);
    });
  });

  it('deploys a saved file through the same path while watching: a new version, listed like any deploy', async () => {
    await withInstance(
      async (app) => {
        await writeFile(path.join(folder, 'saved.ts'), answering('first save'));
        await waitFor('the saved file deployed', async () => (await callOf(app, 'saved')) === 'first save', 10_000);
        await writeFile(path.join(folder, 'saved.ts'), answering('second save'));
        await waitFor('the edit deployed', async () => (await callOf(app, 'saved')) === 'second save', 10_000);
        expect((await versions(app, 'saved')).map((v) => [v.version, v.active, v.source])).toEqual([
          [2, true, 'folder'],
          [1, false, 'folder'],
        ]);
        const listed = await request(app.url, 'GET', '/v1/admin/functions', { token: app.serviceKey });
        expect((listed.body as { functions: unknown[] }).functions).toContainEqual(
          expect.objectContaining({ name: 'saved', version: 2, source: 'folder', file: 'saved.ts' }),
        );
      },
      { BASALT_FUNCTIONS_WATCH: 'true' },
    );
  });
});
