import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import * as tus from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBucket, createTestDatabase, request, type TestDatabase } from './helpers.js';
import { startS3Server, startServerProcess, type S3Server, type ServerProcess } from './storage-helpers.js';

const MIB = 1024 * 1024;

describe.each(['fs', 's3'] as const)('tus uploads survive kill -9 of the server (%s backend)', (backendKind) => {
  let database: TestDatabase;
  let dataDir: string;
  let s3: S3Server | null = null;
  let sql: pg.Pool;
  let server: ServerProcess | null = null;
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-tus-crash-'));
    if (backendKind === 's3') s3 = await startS3Server();
    env = {
      DATABASE_URL: database.url,
      BASALT_DATA_DIR: dataDir,
      BASALT_SERVICE_KEY: serviceKey,
      BASALT_STORAGE_SWEEP_INTERVAL: '0',
      S3_PART_SIZE: String(5 * MIB),
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

  it('resumes on a restarted server from the last durable offset, and commits the object once', async () => {
    server = await startServerProcess(env);
    await createBucket({ url: server.url, serviceKey }, { name: 'crash' });
    const data = randomBytes(16 * MIB);
    const metadata = ['bucket crash', 'path big.bin'].map((pair) => {
      const [key, value] = pair.split(' ') as [string, string];
      return `${key} ${Buffer.from(value).toString('base64')}`;
    });
    const created = await request(server.url, 'POST', '/v1/storage/uploads', {
      token: serviceKey,
      headers: {
        'tus-resumable': '1.0.0',
        'upload-length': String(data.length),
        'upload-metadata': metadata.join(','),
      },
    });
    expect(created.status, created.text).toBe(201);
    const location = created.headers.get('location') as string;

    // One PATCH, sent slowly; the server dies in the middle of it.
    const patch = http.request(new URL(location, server.url), {
      method: 'PATCH',
      headers: {
        authorization: `Bearer ${serviceKey}`,
        'tus-resumable': '1.0.0',
        'upload-offset': '0',
        'content-type': 'application/offset+octet-stream',
        'content-length': String(data.length),
      },
    });
    const patchDone = new Promise<void>((resolve) => {
      patch.on('error', () => resolve());
      patch.on('response', () => resolve());
    });
    let sent = 0;
    const timer = setInterval(() => {
      if (sent < 12 * MIB) {
        patch.write(data.subarray(sent, sent + 256 * 1024));
        sent += 256 * 1024;
      }
    }, 5);
    while (sent < 12 * MIB) await new Promise((resolve) => setTimeout(resolve, 20));
    // Time for the server to store what arrived (it records every 8 MiB segment once durable).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    server.child.kill('SIGKILL');
    await new Promise((resolve) => server?.child.once('exit', resolve));
    clearInterval(timer);
    patch.destroy();
    await patchDone;

    server = await startServerProcess(env);
    const uploadUrl = new URL(location, server.url).toString();
    // The server reports an offset whose bytes it holds (whatever the crash cut short).
    const head = await request(server.url, 'HEAD', location, {
      token: serviceKey,
      headers: { 'tus-resumable': '1.0.0' },
    });
    expect(head.status).toBe(200);
    const offset = Number(head.headers.get('upload-offset'));
    // At least the first 8 MiB segment of the PATCH the crash cut short was recorded.
    expect(offset).toBeGreaterThanOrEqual(8 * MIB);
    expect(offset).toBeLessThanOrEqual(12 * MIB);

    await new Promise<void>((resolve, reject) => {
      const upload = new tus.Upload(data, {
        uploadUrl,
        headers: { authorization: `Bearer ${serviceKey}` },
        chunkSize: 4 * MIB,
        // The dead process's lease on the upload runs out within 15 s: 409s until then.
        retryDelays: [500, 1000, 2000, 4000, 8000, 8000],
        onError: reject,
        onSuccess: () => resolve(),
      });
      upload.start();
    });
    const res = await fetch(`${server.url}/v1/storage/crash/big.bin`, {
      headers: { authorization: `Bearer ${serviceKey}` },
    });
    const back = Buffer.from(await res.arrayBuffer());
    expect(back.length).toBe(data.length);
    const sha256 = createHash('sha256').update(data).digest('hex');
    expect(createHash('sha256').update(back).digest('hex')).toBe(sha256);
    // The restarted server had no running hash of the bytes before the crash: it read them back.
    expect(res.headers.get('etag')).toBe(`"${sha256}"`);
    const { rows } = await sql.query<{ op: string }>(
      `SELECT op FROM basalt.changes WHERE table_name = 'objects' AND new_row ->> 'path' = 'big.bin'`,
    );
    expect(rows.map((row) => row.op)).toEqual(['insert']);
    const left = await sql.query('SELECT 1 FROM basalt.storage_uploads');
    expect(left.rows).toHaveLength(0);
  }, 120_000);
});
