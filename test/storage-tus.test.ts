import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type pg from 'pg';
import * as tus from 'tus-js-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StorageBackend } from '../server/modules/storage/backends/index.js';
import { signUp, type SignedUp } from './auth-helpers.js';
import { createBucket, errorCode, request, type TestApp } from './helpers.js';
import { startStorageTestServer, type StorageTestServer } from './storage-helpers.js';

const MIB = 1024 * 1024;

function metadata(entries: Record<string, string>): string {
  return Object.entries(entries)
    .map(([key, value]) => `${key} ${Buffer.from(value).toString('base64')}`)
    .join(',');
}

/** Uploads `data` with tus-js-client (Node), resolving to the upload URL once it succeeded. */
function tusUpload(
  server: TestApp,
  token: string,
  data: Buffer,
  meta: Record<string, string>,
  options: Partial<tus.UploadOptions> = {},
): Promise<{ url: string; progress: number[] }> {
  const progress: number[] = [];
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint: `${server.url}/v1/storage/uploads`,
      headers: { authorization: `Bearer ${token}` },
      metadata: meta,
      chunkSize: 3 * MIB,
      retryDelays: [],
      onProgress: (sent) => progress.push(sent),
      onError: reject,
      onSuccess: () => resolve({ url: upload.url as string, progress }),
      ...options,
    });
    upload.start();
  });
}

function tusRequest(
  server: TestApp,
  method: string,
  path: string,
  token: string,
  headers: Record<string, string> = {},
  body?: Uint8Array<ArrayBuffer>,
) {
  return request(server.url, method, path, {
    token,
    headers: { 'tus-resumable': '1.0.0', ...headers },
    rawBody: body,
  });
}

describe.each(['fs', 's3'] as const)('resumable uploads, tus 1.0.0 (%s backend)', (backendKind) => {
  let storage: StorageTestServer | undefined;
  let server: TestApp;
  let sql: pg.Pool;
  let backend: StorageBackend;
  let alice: SignedUp;
  let bob: SignedUp;

  beforeAll(async () => {
    storage = await startStorageTestServer(backendKind, { S3_PART_SIZE: String(5 * MIB) });
    ({ server, sql, backend } = storage);
    alice = await signUp(server.url);
    bob = await signUp(server.url);
    await createBucket(server, {
      name: 'files',
      max_file_size: 64 * MIB,
      rules: {
        read: 'auth != null && object.owner == auth.uid',
        write: 'auth != null && object.owner == auth.uid',
        delete: 'auth != null && object.owner == auth.uid',
      },
    });
    await createBucket(server, { name: 'quota', max_total_bytes: 1000, rules: { write: 'auth != null' } });
  });

  afterAll(async () => {
    await storage?.close();
  });

  async function download(path: string, token: string): Promise<Buffer> {
    const res = await fetch(`${server.url}/v1/storage/${path}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    return Buffer.from(await res.arrayBuffer());
  }

  async function uploadsLeft(): Promise<number> {
    const { rows } = await sql.query<{ n: string }>('SELECT count(*) AS n FROM basalt.storage_uploads');
    return Number(rows[0]?.n);
  }

  async function pendingLeft(): Promise<number> {
    const { rows } = await sql.query<{ n: string }>('SELECT count(*) AS n FROM basalt.storage_pending');
    return Number(rows[0]?.n);
  }

  it('answers OPTIONS with its version and extensions', async () => {
    const res = await fetch(`${server.url}/v1/storage/uploads`, { method: 'OPTIONS' });
    expect(res.status).toBe(204);
    expect(res.headers.get('tus-version')).toBe('1.0.0');
    expect(res.headers.get('tus-extension')).toBe('creation,creation-with-upload,termination,expiration');
    expect(Number(res.headers.get('tus-max-size'))).toBeGreaterThan(0);
  });

  it('takes a multi-chunk upload from tus-js-client and commits the object once, as a PUT would', async () => {
    const data = randomBytes(12 * MIB + 12345);
    const path = `${alice.id}/big.bin`;
    const { url, progress } = await tusUpload(server, alice.token, data, {
      bucket: 'files',
      path,
      content_type: 'application/x-test',
    });
    expect(url).toMatch(/\/v1\/storage\/uploads\/[A-Za-z0-9_-]+$/);
    expect(progress.at(-1)).toBe(data.length);
    const back = await download(`files/${path}`, alice.token);
    expect(back.equals(data)).toBe(true);
    const list = await request(server.url, 'GET', `/v1/storage/files?prefix=${alice.id}/`, { token: alice.token });
    const object = (list.body as { objects: Array<Record<string, unknown>> }).objects[0];
    expect(object).toMatchObject({
      path,
      size: data.length,
      content_type: 'application/x-test',
      owner: alice.id,
      sha256: createHash('sha256').update(data).digest('hex'),
    });
    const { rows } = await sql.query<{ op: string }>(
      `SELECT op FROM basalt.changes WHERE table_name = 'objects' AND new_row ->> 'path' = $1`,
      [path],
    );
    expect(rows.map((row) => row.op)).toEqual(['insert']);
    // The upload is gone once complete.
    const head = await tusRequest(server, 'HEAD', new URL(url).pathname, alice.token);
    expect(head.status).toBe(404);
    expect(await uploadsLeft()).toBe(0);
    expect(await pendingLeft()).toBe(0);
  });

  it('creates and uploads in one request (creation-with-upload), answering with the object', async () => {
    const body = new TextEncoder().encode('hello tus');
    const res = await tusRequest(
      server,
      'POST',
      '/v1/storage/uploads',
      alice.token,
      {
        'upload-length': String(body.length),
        'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/small.txt`, content_type: 'text/plain' }),
        'content-type': 'application/offset+octet-stream',
      },
      body,
    );
    expect(res.status, res.text).toBe(201);
    expect(res.headers.get('upload-offset')).toBe(String(body.length));
    expect(res.body).toMatchObject({ path: `${alice.id}/small.txt`, size: body.length, content_type: 'text/plain' });
    expect((await download(`files/${alice.id}/small.txt`, alice.token)).toString()).toBe('hello tus');
  });

  it('checks rules, limits, quotas and the protocol at creation', async () => {
    const create = (token: string, headers: Record<string, string>) =>
      tusRequest(server, 'POST', '/v1/storage/uploads', token, headers);
    const noVersion = await request(server.url, 'POST', '/v1/storage/uploads', {
      token: alice.token,
      headers: { 'upload-length': '10', 'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/x` }) },
    });
    expect(noVersion.status).toBe(412);
    expect(noVersion.headers.get('tus-version')).toBe('1.0.0');

    // Overwriting alice's file: the write rule sees the existing object, owned by alice.
    const bobToAlice = await create(bob.token, {
      'upload-length': '10',
      'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/small.txt`, upsert: 'true' }),
    });
    expect(bobToAlice.status).toBe(403);
    expect(errorCode(bobToAlice.body)).toBe('FORBIDDEN');

    const tooBig = await create(alice.token, {
      'upload-length': String(64 * MIB + 1),
      'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/huge.bin` }),
    });
    expect(tooBig.status).toBe(413);
    expect(errorCode(tooBig.body)).toBe('PAYLOAD_TOO_LARGE');

    const overQuota = await create(alice.token, {
      'upload-length': '1001',
      'upload-metadata': metadata({ bucket: 'quota', path: 'a.bin' }),
    });
    expect(overQuota.status).toBe(413);
    expect(errorCode(overQuota.body)).toBe('QUOTA_EXCEEDED');

    const malformed: Array<Record<string, string>> = [
      { 'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/x` }) },
      { 'upload-length': '-1', 'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/x` }) },
      { 'upload-length': '10', 'upload-metadata': metadata({ bucket: 'files' }) },
      { 'upload-length': '10', 'upload-metadata': 'bucket !!!notbase64' },
      { 'upload-length': '10', 'upload-metadata': metadata({ bucket: 'files', path: '../escape' }) },
      { 'upload-length': '10', 'upload-defer-length': '1', 'upload-metadata': metadata({ bucket: 'files' }) },
    ];
    for (const headers of malformed) {
      const res = await create(alice.token, headers);
      expect(res.status, JSON.stringify(headers)).toBe(400);
      expect(['INVALID_REQUEST', 'INVALID_PATH']).toContain(errorCode(res.body));
    }

    await tusUpload(server, alice.token, Buffer.from('first'), { bucket: 'files', path: `${alice.id}/taken.txt` });
    const taken = await create(alice.token, {
      'upload-length': '5',
      'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/taken.txt` }),
    });
    expect(taken.status).toBe(409);
    expect(errorCode(taken.body)).toBe('ALREADY_EXISTS');
    await tusUpload(server, alice.token, Buffer.from('second'), {
      bucket: 'files',
      path: `${alice.id}/taken.txt`,
      upsert: 'true',
    });
    expect((await download(`files/${alice.id}/taken.txt`, alice.token)).toString()).toBe('second');
    expect(await uploadsLeft()).toBe(0);
    expect(await pendingLeft()).toBe(0);
  });

  it('answers the completing PATCH with 204, as tus requires, and with the object only when asked', async () => {
    const create = async (name: string) => {
      const created = await tusRequest(server, 'POST', '/v1/storage/uploads', alice.token, {
        'upload-length': '20',
        'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/${name}` }),
      });
      expect(created.status).toBe(201);
      return created.headers.get('location') as string;
    };
    const append = (location: string, offset: number, headers: Record<string, string> = {}) =>
      tusRequest(
        server,
        'PATCH',
        location,
        alice.token,
        { 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream', ...headers },
        new Uint8Array(10),
      );

    const plain = await create('plain.bin');
    expect((await append(plain, 0)).status).toBe(204);
    const plainLast = await append(plain, 10);
    expect(plainLast.status).toBe(204);
    expect(plainLast.headers.get('upload-offset')).toBe('20');
    expect(plainLast.text).toBe('');

    const asking = await create('asking.bin');
    const notYet = await append(asking, 0, { prefer: 'return=representation' });
    expect(notYet.status).toBe(204);
    const askingLast = await append(asking, 10, { prefer: 'return=representation' });
    expect(askingLast.status).toBe(200);
    expect(askingLast.body).toMatchObject({ bucket: 'files', path: `${alice.id}/asking.bin`, size: 20 });
    expect((await download(`files/${alice.id}/plain.bin`, alice.token)).length).toBe(20);
  });

  it('refuses wrong offsets, bad bodies, other callers, and anything after termination', async () => {
    const created = await tusRequest(server, 'POST', '/v1/storage/uploads', alice.token, {
      'upload-length': '100',
      'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/term.bin` }),
    });
    expect(created.status).toBe(201);
    const location = created.headers.get('location') as string;
    expect(created.headers.get('upload-expires')).toBeTruthy();
    const patch = (
      token: string,
      offset: number,
      body: Uint8Array<ArrayBuffer>,
      type = 'application/offset+octet-stream',
    ) => tusRequest(server, 'PATCH', location, token, { 'upload-offset': String(offset), 'content-type': type }, body);

    const first = await patch(alice.token, 0, new Uint8Array(40));
    expect(first.status).toBe(204);
    expect(first.headers.get('upload-offset')).toBe('40');
    const wrongOffset = await patch(alice.token, 10, new Uint8Array(10));
    expect(wrongOffset.status).toBe(409);
    expect((wrongOffset.body as { error: { details: { offset: number } } }).error.details.offset).toBe(40);
    const wrongType = await patch(alice.token, 40, new Uint8Array(10), 'application/json');
    expect(wrongType.status).toBe(415);
    const tooLong = await patch(alice.token, 40, new Uint8Array(100));
    expect(tooLong.status).toBe(413);
    const bobs = await patch(bob.token, 40, new Uint8Array(10));
    expect(bobs.status).toBe(404);
    const bobHead = await tusRequest(server, 'HEAD', location, bob.token);
    expect(bobHead.status).toBe(404);
    const head = await tusRequest(server, 'HEAD', location, alice.token);
    expect(head.status).toBe(200);
    expect(head.headers.get('upload-length')).toBe('100');
    expect(head.headers.get('cache-control')).toBe('no-store');
    const offsetNow = Number(head.headers.get('upload-offset'));
    expect(offsetNow).toBeGreaterThanOrEqual(40);

    const bobDelete = await tusRequest(server, 'DELETE', location, bob.token);
    expect(bobDelete.status).toBe(404);
    const terminated = await tusRequest(server, 'DELETE', location, alice.token);
    expect(terminated.status).toBe(204);
    const after = await patch(alice.token, offsetNow, new Uint8Array(10));
    expect(after.status).toBe(404);
    expect((await tusRequest(server, 'HEAD', location, alice.token)).status).toBe(404);
    expect(await uploadsLeft()).toBe(0);
    expect(await pendingLeft()).toBe(0);
    const unknown = await tusRequest(server, 'HEAD', '/v1/storage/uploads/not-a-real-upload-id-at-all', alice.token);
    expect(unknown.status).toBe(404);
  });

  it('resumes after the connection drops mid-PATCH, keeping the bytes that arrived', async () => {
    const data = randomBytes(7 * MIB);
    const created = await tusRequest(server, 'POST', '/v1/storage/uploads', alice.token, {
      'upload-length': String(data.length),
      'upload-metadata': metadata({ bucket: 'files', path: `${alice.id}/dropped.bin` }),
    });
    const location = created.headers.get('location') as string;
    // Send 6 MiB of the 7, then cut the connection.
    await new Promise<void>((resolve) => {
      const target = new URL(location, server.url);
      const req = http.request(target, {
        method: 'PATCH',
        headers: {
          authorization: `Bearer ${alice.token}`,
          'tus-resumable': '1.0.0',
          'upload-offset': '0',
          'content-type': 'application/offset+octet-stream',
          'content-length': String(data.length),
        },
      });
      req.on('error', () => resolve());
      req.on('response', () => resolve());
      req.write(data.subarray(0, 6 * MIB), () => setTimeout(() => req.destroy(), 300));
    });
    let offset = 0;
    for (let i = 0; i < 50 && offset === 0; i++) {
      const head = await tusRequest(server, 'HEAD', location, alice.token);
      offset = Number(head.headers.get('upload-offset'));
      if (offset === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(6 * MIB);
    // tus-js-client resumes from the server's offset.
    await tusUpload(server, alice.token, data, {}, { uploadUrl: new URL(location, server.url).toString() });
    expect((await download(`files/${alice.id}/dropped.bin`, alice.token)).equals(data)).toBe(true);
  });

  it('expires unfinished uploads: the sweeper removes their bytes and releases their quota', async () => {
    const created = await tusRequest(server, 'POST', '/v1/storage/uploads', alice.token, {
      'upload-length': '900',
      'upload-metadata': metadata({ bucket: 'quota', path: 'held.bin' }),
    });
    expect(created.status).toBe(201);
    const location = created.headers.get('location') as string;
    await tusRequest(
      server,
      'PATCH',
      location,
      alice.token,
      { 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
      new Uint8Array(300),
    );
    // The reservation holds the bucket's room while the upload is alive.
    const squeezed = await tusRequest(server, 'POST', '/v1/storage/uploads', bob.token, {
      'upload-length': '200',
      'upload-metadata': metadata({ bucket: 'quota', path: 'other.bin' }),
    });
    expect(squeezed.status).toBe(413);
    const { rows } = await sql.query<{ storage_key: string }>(`SELECT storage_key FROM basalt.storage_uploads`);
    const key = rows[0]?.storage_key as string;
    await sql.query(`UPDATE basalt.storage_uploads SET expires_at = now() - interval '1 second'`);
    expect((await tusRequest(server, 'HEAD', location, alice.token)).status).toBe(404);
    const sweep = await request(server.url, 'POST', '/v1/admin/storage/sweep', {
      token: server.serviceKey,
      body: { grace_seconds: 3600 },
    });
    expect(sweep.status, sweep.text).toBe(200);
    expect((sweep.body as { expired_uploads: number }).expired_uploads).toBe(1);
    expect(await uploadsLeft()).toBe(0);
    expect(await pendingLeft()).toBe(0);
    expect(await backend.head(key)).toBeNull();
    const room = await tusRequest(server, 'POST', '/v1/storage/uploads', bob.token, {
      'upload-length': '200',
      'upload-metadata': metadata({ bucket: 'quota', path: 'other.bin' }),
    });
    expect(room.status).toBe(201);
    await tusRequest(server, 'DELETE', room.headers.get('location') as string, bob.token);
  });
});
