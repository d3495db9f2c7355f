import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStorageBackend } from '../server/modules/storage/module.js';
import { loadConfig } from '../server/config.js';
import { createBucket, createTestDatabase, request, type TestDatabase } from './helpers.js';
import {
  startS3Server,
  startServerProcess as startServer,
  type S3Server,
  type ServerProcess as Process,
} from './storage-helpers.js';

async function waitFor(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await filesUnder(full)));
    else found.push(full);
  }
  return found;
}

describe.each(['fs', 's3'] as const)('storage survives kill -9 mid-upload (%s backend)', (backendKind) => {
  let database: TestDatabase;
  let dataDir: string;
  let s3: S3Server | null = null;
  let sql: pg.Pool;
  let server: Process | null = null;
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-crash-'));
    if (backendKind === 's3') s3 = await startS3Server();
    env = {
      DATABASE_URL: database.url,
      BASALT_DATA_DIR: dataDir,
      BASALT_SERVICE_KEY: serviceKey,
      BASALT_STORAGE_SWEEP_INTERVAL: '0',
      S3_PART_SIZE: String(5 * 1024 * 1024),
      ...(s3?.env ?? {}),
    };
    sql = new pg.Pool({ connectionString: database.url, max: 2 });
  });

  afterAll(async () => {
    server?.child.kill('SIGKILL');
    await sql?.end();
    await s3?.close();
    await database?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('leaves no row, no visible object and no bytes once swept after the restart', async () => {
    server = await startServer(env);
    await createBucket({ url: server.url, serviceKey }, { name: 'crash' });

    // A large upload, sent slowly, so the process dies with bytes half written.
    const total = 64 * 1024 * 1024;
    const target = new URL(`${server.url}/v1/storage/crash/big.bin`);
    let sent = 0;
    const upload = http.request(target, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${serviceKey}`,
        'content-type': 'application/octet-stream',
        'content-length': String(total),
      },
    });
    const uploadDone = new Promise<void>((resolve) => {
      upload.on('error', () => resolve());
      upload.on('response', () => resolve());
    });
    const chunk = Buffer.alloc(256 * 1024, 7);
    const timer = setInterval(() => {
      if (sent < total - chunk.length) {
        upload.write(chunk);
        sent += chunk.length;
      }
    }, 5);

    const pending = async () =>
      Number((await sql.query<{ n: string }>('SELECT count(*) AS n FROM basalt.storage_pending')).rows[0]?.n);
    // Past one S3 part, so S3 holds an unfinished multipart upload too.
    await waitFor(async () => (await pending()) === 1 && sent > 8 * 1024 * 1024);
    const tmpDir = path.join(dataDir, 'storage', 'tmp');
    if (backendKind === 'fs') expect((await filesUnder(tmpDir)).length).toBe(1);
    server.child.kill('SIGKILL');
    await new Promise((resolve) => server?.child.once('exit', resolve));
    clearInterval(timer);
    upload.destroy();
    await uploadDone;

    // The crash left a pending mark (and, on disk, a temporary file) but no object row.
    expect(await pending()).toBe(1);
    const rows = await sql.query('SELECT 1 FROM basalt.objects');
    expect(rows.rowCount).toBe(0);

    server = await startServer(env);
    const invisible = await request(server.url, 'GET', '/v1/storage/crash/big.bin', { token: serviceKey });
    expect(invisible.status).toBe(404);
    const sweep = await request(server.url, 'POST', '/v1/admin/storage/sweep', {
      token: serviceKey,
      body: { grace_seconds: 0 },
    });
    expect(sweep.status).toBe(200);
    expect(sweep.body).toMatchObject({ ran: true, pending: 1 });

    expect(await pending()).toBe(0);
    expect((await sql.query('SELECT 1 FROM basalt.objects')).rowCount).toBe(0);
    const listed = await request(server.url, 'GET', '/v1/storage/crash', { token: serviceKey });
    expect(listed.body).toEqual({ objects: [], next_cursor: null });
    expect((await request(server.url, 'GET', '/v1/storage/crash/big.bin', { token: serviceKey })).status).toBe(404);

    const backend = createStorageBackend(loadConfig({ ...env }));
    try {
      const keys: string[] = [];
      for await (const entry of backend.list()) keys.push(entry.key);
      expect(keys).toEqual([]);
    } finally {
      await backend.close();
    }
    if (backendKind === 'fs') expect(await filesUnder(path.join(dataDir, 'storage'))).toEqual([]);

    server.child.kill('SIGTERM');
    await new Promise((resolve) => server?.child.once('exit', resolve));
    server = null;
  }, 120_000);
});
