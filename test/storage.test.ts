import { createHash, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StorageBackend } from '../server/modules/storage/backends/index.js';
import { createStorageBackend } from '../server/modules/storage/module.js';
import { UrlSigner } from '../server/modules/storage/signing.js';
import {
  createBucket as createBucketAs,
  createTestDatabase,
  errorCode,
  request,
  startTestApp,
  type TestApp,
  type TestDatabase,
  waitFor,
} from './helpers.js';
import { signUp, type SignedUp } from './auth-helpers.js';
import { rawRequest, startS3Server, type S3Server } from './storage-helpers.js';

interface Ctx {
  server: TestApp;
  sql: pg.Pool;
  backend: StorageBackend;
}

async function upload(
  ctx: Ctx,
  bucket: string,
  objectPath: string,
  body: string | Uint8Array<ArrayBuffer>,
  options: { token?: string; contentType?: string; upsert?: boolean } = {},
) {
  const headers: Record<string, string> = { 'content-type': options.contentType ?? 'text/plain' };
  if (options.upsert) headers['x-upsert'] = 'true';
  return request(ctx.server.url, 'PUT', `/v1/storage/${bucket}/${objectPath}`, {
    token: options.token ?? ctx.server.serviceKey,
    headers,
    rawBody: typeof body === 'string' ? new TextEncoder().encode(body) : body,
  });
}

async function backendKeys(ctx: Ctx, bucket: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const entry of ctx.backend.list(`${bucket}/`)) keys.push(entry.key);
  return keys;
}

async function pendingCount(ctx: Ctx): Promise<number> {
  const { rows } = await ctx.sql.query<{ n: string }>('SELECT count(*) AS n FROM basalt.storage_pending');
  return Number(rows[0]?.n);
}

async function objectCount(ctx: Ctx, bucket: string): Promise<number> {
  const { rows } = await ctx.sql.query<{ n: string }>('SELECT count(*) AS n FROM basalt.objects WHERE bucket = $1', [
    bucket,
  ]);
  return Number(rows[0]?.n);
}

async function tmpFiles(ctx: Ctx): Promise<string[]> {
  if (ctx.backend.kind !== 'fs') return [];
  return readdir(path.join(ctx.server.config.dataDir, 'storage', 'tmp')).catch(() => []);
}

/**
 * A PUT whose body is `chunk` written until `total` bytes went out, honouring back-pressure
 * (no Content-Length unless the headers give one: then it is chunked); resolves to the status.
 */
function streamedPut(url: string, headers: Record<string, string>, chunk: Buffer, total: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    let sent = 0;
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

function createBucket(ctx: Ctx, body: Record<string, unknown>): Promise<void> {
  return createBucketAs(ctx.server, body);
}

describe.each(['fs', 's3'] as const)('storage over HTTP (%s backend)', (backendKind) => {
  let database: TestDatabase;
  let s3: S3Server | null = null;
  const ctx = {} as Ctx;

  beforeAll(async () => {
    database = await createTestDatabase();
    if (backendKind === 's3') s3 = await startS3Server();
    ctx.server = await startTestApp(database, { ...(s3?.env ?? {}), S3_PART_SIZE: String(5 * 1024 * 1024) });
    ctx.sql = new pg.Pool({ connectionString: database.url, max: 2 });
    ctx.backend = createStorageBackend(ctx.server.config);
  });

  afterAll(async () => {
    await ctx.backend?.close();
    await ctx.sql?.end();
    await ctx.server?.close();
    await s3?.close();
    await database?.drop();
  });

  describe('buckets admin API', () => {
    it('creates, lists, reads, changes and deletes buckets', async () => {
      const { url, serviceKey: token } = ctx.server;
      const created = await request(url, 'POST', '/v1/admin/buckets', {
        token,
        body: {
          name: 'admin-a',
          public: false,
          max_file_size: 1000,
          allowed_mime_types: ['image/*', 'text/plain'],
          rules: { read: 'auth != null' },
        },
      });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({
        name: 'admin-a',
        public: false,
        max_file_size: 1000,
        allowed_mime_types: ['image/*', 'text/plain'],
        rules: { read: 'auth != null' },
      });
      const again = await request(url, 'POST', '/v1/admin/buckets', { token, body: { name: 'admin-a' } });
      expect(again.status).toBe(409);
      const listed = await request(url, 'GET', '/v1/admin/buckets', { token });
      expect((listed.body as { buckets: Array<{ name: string }> }).buckets.map((b) => b.name)).toContain('admin-a');
      const patched = await request(url, 'PATCH', '/v1/admin/buckets/admin-a', {
        token,
        body: { public: true, rules: {} },
      });
      expect(patched.status).toBe(200);
      expect(patched.body).toMatchObject({ public: true, max_file_size: 1000, rules: {} });
      expect((await request(url, 'GET', '/v1/admin/buckets/admin-a', { token })).body).toMatchObject({ public: true });
      expect((await request(url, 'DELETE', '/v1/admin/buckets/admin-a', { token })).status).toBe(204);
      const gone = await request(url, 'GET', '/v1/admin/buckets/admin-a', { token });
      expect(gone.status).toBe(404);
    });

    it('validates names, rules and MIME types, and needs the service key', async () => {
      const { url, serviceKey: token } = ctx.server;
      for (const name of ['', 'Upper', '-dash', 'a/b', 'x'.repeat(64), 'dot.name']) {
        const response = await request(url, 'POST', '/v1/admin/buckets', { token, body: { name } });
        expect(response.status, name).toBe(400);
      }
      const badRule = await request(url, 'POST', '/v1/admin/buckets', {
        token,
        body: { name: 'bad-rule', rules: { read: 'auth.uid ==' } },
      });
      expect(errorCode(badRule.body)).toBe('INVALID_RULE');
      const badMime = await request(url, 'POST', '/v1/admin/buckets', {
        token,
        body: { name: 'bad-mime', allowed_mime_types: ['not a type'] },
      });
      expect(errorCode(badMime.body)).toBe('INVALID_REQUEST');
      const unknown = await request(url, 'POST', '/v1/admin/buckets', { token, body: { name: 'x1', color: 'red' } });
      expect(unknown.status).toBe(400);
    });

    it('refuses to delete a non-empty bucket unless forced, and force removes the bytes', async () => {
      const { url, serviceKey: token } = ctx.server;
      await createBucket(ctx, { name: 'to-delete' });
      expect((await upload(ctx, 'to-delete', 'a.txt', 'a')).status).toBe(201);
      expect((await upload(ctx, 'to-delete', 'b/c.txt', 'bc')).status).toBe(201);
      expect(await backendKeys(ctx, 'to-delete')).toHaveLength(2);
      const refused = await request(url, 'DELETE', '/v1/admin/buckets/to-delete', { token });
      expect(refused.status).toBe(409);
      const forced = await request(url, 'DELETE', '/v1/admin/buckets/to-delete?force=true', { token });
      expect(forced.status).toBe(204);
      expect(await backendKeys(ctx, 'to-delete')).toEqual([]);
      expect(await objectCount(ctx, 'to-delete')).toBe(0);
      expect(await pendingCount(ctx)).toBe(0);
    });
  });

  describe('objects', () => {
    beforeAll(async () => {
      await createBucket(ctx, { name: 'files', max_file_size: 200_000 });
      await createBucket(ctx, { name: 'images', allowed_mime_types: ['image/*', 'application/pdf'] });
      await createBucket(ctx, { name: 'pub', public: true });
    });

    it('uploads with PUT and downloads the same bytes with headers', async () => {
      const content = randomBytes(5000);
      const put = await upload(ctx, 'files', 'docs/report.bin', content, { contentType: 'application/octet-stream' });
      expect(put.status).toBe(201);
      const sha256 = createHash('sha256').update(content).digest('hex');
      expect(put.body).toMatchObject({
        bucket: 'files',
        path: 'docs/report.bin',
        size: 5000,
        content_type: 'application/octet-stream',
        sha256,
        etag: `"${sha256}"`,
        owner: null,
      });
      const object = put.body as { created_at: string; updated_at: string };
      expect(Date.parse(object.created_at)).not.toBeNaN();

      const get = await fetch(`${ctx.server.url}/v1/storage/files/docs/report.bin`, {
        headers: { authorization: `Bearer ${ctx.server.serviceKey}` },
      });
      expect(get.status).toBe(200);
      expect(get.headers.get('content-type')).toBe('application/octet-stream');
      expect(get.headers.get('content-length')).toBe('5000');
      expect(get.headers.get('etag')).toBe(`"${sha256}"`);
      expect(get.headers.get('accept-ranges')).toBe('bytes');
      expect(Buffer.from(await get.arrayBuffer())).toEqual(content);

      const head = await fetch(`${ctx.server.url}/v1/storage/files/docs/report.bin`, {
        method: 'HEAD',
        headers: { authorization: `Bearer ${ctx.server.serviceKey}` },
      });
      expect(head.status).toBe(200);
      expect(head.headers.get('content-length')).toBe('5000');
      expect(head.headers.get('etag')).toBe(`"${sha256}"`);
    });

    it('honours If-None-Match, Range and ?download', async () => {
      const token = ctx.server.serviceKey;
      const put = await upload(ctx, 'files', 'range.txt', '0123456789');
      const etag = (put.body as { etag: string }).etag;
      const url = `${ctx.server.url}/v1/storage/files/range.txt`;
      const auth = { authorization: `Bearer ${token}` };
      const notModified = await fetch(url, { headers: { ...auth, 'if-none-match': etag } });
      expect(notModified.status).toBe(304);
      const modified = await fetch(url, { headers: { ...auth, 'if-none-match': '"other"' } });
      expect(modified.status).toBe(200);
      await modified.arrayBuffer();

      const partial = await fetch(url, { headers: { ...auth, range: 'bytes=2-5' } });
      expect(partial.status).toBe(206);
      expect(partial.headers.get('content-range')).toBe('bytes 2-5/10');
      expect(partial.headers.get('content-length')).toBe('4');
      expect(await partial.text()).toBe('2345');
      const suffix = await fetch(url, { headers: { ...auth, range: 'bytes=-3' } });
      expect(await suffix.text()).toBe('789');
      const open = await fetch(url, { headers: { ...auth, range: 'bytes=7-' } });
      expect(await open.text()).toBe('789');
      const unsatisfiable = await fetch(url, { headers: { ...auth, range: 'bytes=10-20' } });
      expect(unsatisfiable.status).toBe(416);
      expect(unsatisfiable.headers.get('content-range')).toBe('bytes */10');
      expect(((await unsatisfiable.json()) as { error: { code: string } }).error.code).toBe('RANGE_NOT_SATISFIABLE');

      const attachment = await fetch(`${url}?download`, { headers: auth });
      expect(attachment.headers.get('content-disposition')).toContain('attachment; filename="range.txt"');
      await attachment.arrayBuffer();
      const named = await fetch(`${url}?download=r%C3%A9sum%C3%A9.txt`, { headers: auth });
      expect(named.headers.get('content-disposition')).toContain("filename*=UTF-8''r%C3%A9sum%C3%A9.txt");
      await named.arrayBuffer();
    });

    it('refuses to overwrite without x-upsert, overwrites with it and removes the old bytes', async () => {
      expect((await upload(ctx, 'files', 'over/write.txt', 'first')).status).toBe(201);
      const keysBefore = await backendKeys(ctx, 'files');
      const conflict = await upload(ctx, 'files', 'over/write.txt', 'second');
      expect(conflict.status).toBe(409);
      expect(errorCode(conflict.body)).toBe('ALREADY_EXISTS');
      const replaced = await upload(ctx, 'files', 'over/write.txt', 'second!', { upsert: true });
      expect(replaced.status).toBe(201);
      expect(replaced.body).toMatchObject({ size: 7 });
      const get = await request(ctx.server.url, 'GET', '/v1/storage/files/over/write.txt', {
        token: ctx.server.serviceKey,
      });
      expect(get.text).toBe('second!');
      expect((await backendKeys(ctx, 'files')).length).toBe(keysBefore.length);
      expect(await pendingCount(ctx)).toBe(0);
    });

    it('uploads with multipart/form-data', async () => {
      const form = new FormData();
      form.append('note', 'ignored');
      form.append('file', new Blob(['<svg/>'], { type: 'image/svg+xml' }), 'logo.svg');
      const response = await fetch(`${ctx.server.url}/v1/storage/images/logos/logo.svg`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ctx.server.serviceKey}` },
        body: form,
      });
      expect(response.status).toBe(201);
      expect(await response.json()).toMatchObject({ path: 'logos/logo.svg', size: 6, content_type: 'image/svg+xml' });
      const noFile = new FormData();
      noFile.append('other', 'x');
      const missing = await fetch(`${ctx.server.url}/v1/storage/images/none.png`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ctx.server.serviceKey}` },
        body: noFile,
      });
      expect(missing.status).toBe(400);
    });

    it('enforces the MIME allowlist with wildcards (415)', async () => {
      expect((await upload(ctx, 'images', 'a.png', 'png', { contentType: 'image/png' })).status).toBe(201);
      expect((await upload(ctx, 'images', 'a.pdf', 'pdf', { contentType: 'application/pdf' })).status).toBe(201);
      const refused = await upload(ctx, 'images', 'a.txt', 'text', { contentType: 'text/plain' });
      expect(refused.status).toBe(415);
      expect(errorCode(refused.body)).toBe('UNSUPPORTED_MEDIA_TYPE');
      const form = new FormData();
      form.append('file', new Blob(['x'], { type: 'text/html' }), 'x.html');
      const multipart = await fetch(`${ctx.server.url}/v1/storage/images/x.html`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ctx.server.serviceKey}` },
        body: form,
      });
      expect(multipart.status).toBe(415);
      expect(await objectCount(ctx, 'images')).toBe(3);
    });

    it('refuses invalid paths with 400', async () => {
      const token = ctx.server.serviceKey;
      const bad = [
        'a/../b.txt',
        'a/%2e%2e/b.txt',
        '%2E/b.txt',
        'a/./b',
        'a//b',
        'a/b/',
        '%2Fabs',
        'ctl%01x',
        'nul%00x',
        'bad%ZZ',
        'x'.repeat(1025),
        '%C3%A9'.repeat(513),
      ];
      for (const p of bad) {
        const response = await rawRequest(ctx.server.url, 'PUT', `/v1/storage/files/${p}`, token, 'x');
        expect(response.status, p).toBe(400);
        expect(['INVALID_PATH', 'INVALID_REQUEST'], p).toContain(errorCode(response.body));
        const get = await rawRequest(ctx.server.url, 'GET', `/v1/storage/files/${p}`, token);
        expect(get.status, p).toBe(400);
      }
      // 1024 bytes exactly is fine, and paths are stored in NFC.
      expect((await upload(ctx, 'files', 'y'.repeat(1024), 'ok')).status).toBe(201);
      const decomposed = await upload(ctx, 'files', 'cafe%CC%81.txt', 'nfc');
      expect(decomposed.status).toBe(201);
      expect((decomposed.body as { path: string }).path).toBe('caf\u00e9.txt');
      const get = await request(ctx.server.url, 'GET', '/v1/storage/files/caf%C3%A9.txt', { token });
      expect(get.text).toBe('nfc');
    });

    it('enforces the size limit while streaming (413) and stores nothing', async () => {
      const before = await backendKeys(ctx, 'files');
      const objects = await objectCount(ctx, 'files');
      // Declared too large: refused before reading.
      const declared = await upload(ctx, 'files', 'big1.bin', new Uint8Array(200_001));
      expect(declared.status).toBe(413);
      // No Content-Length (chunked): refused once the stream passes the limit.
      const status = await streamedPut(
        `${ctx.server.url}/v1/storage/files/big2.bin`,
        { authorization: `Bearer ${ctx.server.serviceKey}`, 'content-type': 'application/octet-stream' },
        Buffer.alloc(16_384, 1),
        400_000,
      );
      expect(status).toBe(413);
      // multipart/form-data: the file part is cut off the same way.
      const form = new FormData();
      form.append('file', new Blob([new Uint8Array(300_000)], { type: 'application/octet-stream' }), 'big3.bin');
      const multipart = await fetch(`${ctx.server.url}/v1/storage/files/big3.bin`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ctx.server.serviceKey}` },
        body: form,
      }).catch(() => null);
      expect(multipart?.status).toBe(413);
      await waitFor('no pending storage keys', async () => (await pendingCount(ctx)) === 0, 5000, 50);
      expect(await backendKeys(ctx, 'files')).toEqual(before);
      expect(await objectCount(ctx, 'files')).toBe(objects);
      expect(await tmpFiles(ctx)).toEqual([]);
    });

    it('streams a large upload and download without holding the file in memory', async () => {
      await createBucket(ctx, { name: `large-${backendKind}` });
      const total = 120 * 1024 * 1024;
      const chunk = Buffer.alloc(256 * 1024, 5);
      const memory = () => {
        const usage = process.memoryUsage();
        return usage.heapUsed + usage.arrayBuffers;
      };
      global.gc?.();
      const baseline = memory();
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, memory())), 20);
      try {
        const status = await streamedPut(
          `${ctx.server.url}/v1/storage/large-${backendKind}/big.bin`,
          {
            authorization: `Bearer ${ctx.server.serviceKey}`,
            'content-type': 'application/octet-stream',
            'content-length': String(total),
          },
          chunk,
          total,
        );
        expect(status).toBe(201);
        let received = 0;
        await new Promise<void>((resolve, reject) => {
          http
            .get(
              `${ctx.server.url}/v1/storage/large-${backendKind}/big.bin`,
              { headers: { authorization: `Bearer ${ctx.server.serviceKey}` } },
              (res) => {
                res.on('data', (data: Buffer) => (received += data.length));
                res.on('end', resolve);
                res.on('error', reject);
              },
            )
            .on('error', reject);
        });
        expect(received).toBe(total);
      } finally {
        clearInterval(sampler);
      }
      // Client and server share this process: both together stay far below the file's size. With
      // S3 the s3rver under test (which buffers parts itself) shares it too, so only disk is judged.
      if (backendKind === 'fs') expect(peak - baseline).toBeLessThan(64 * 1024 * 1024);
    }, 120_000);

    it('leaves nothing behind when the client disconnects mid-body', async () => {
      const before = await backendKeys(ctx, 'files');
      await new Promise<void>((resolve) => {
        const req = http.request(`${ctx.server.url}/v1/storage/files/cut.bin`, {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${ctx.server.serviceKey}`,
            'content-type': 'application/octet-stream',
            'content-length': '150000',
          },
        });
        req.on('error', () => resolve());
        req.write(Buffer.alloc(60_000, 2));
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 300);
      });
      await waitFor('no pending storage keys', async () => (await pendingCount(ctx)) === 0, 5000, 50);
      expect(await backendKeys(ctx, 'files')).toEqual(before);
      expect(await objectCount(ctx, 'files')).toBeGreaterThan(0);
      const get = await request(ctx.server.url, 'GET', '/v1/storage/files/cut.bin', { token: ctx.server.serviceKey });
      expect(get.status).toBe(404);
      expect(await tmpFiles(ctx)).toEqual([]);
    });

    it('leaves nothing behind when the database fails after the bytes were written', async () => {
      await ctx.sql.query(`
        CREATE OR REPLACE FUNCTION public.fail_storage_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.path LIKE 'db-fail/%' THEN RAISE EXCEPTION 'simulated database failure'; END IF;
          RETURN NEW;
        END $$;
        DROP TRIGGER IF EXISTS fail_storage_insert ON basalt.objects;
        CREATE TRIGGER fail_storage_insert BEFORE INSERT ON basalt.objects
          FOR EACH ROW EXECUTE FUNCTION public.fail_storage_insert();`);
      try {
        const before = await backendKeys(ctx, 'files');
        const response = await upload(ctx, 'files', 'db-fail/x.bin', randomBytes(50_000));
        expect(response.status).toBe(500);
        expect(errorCode(response.body)).toBe('INTERNAL');
        expect(await backendKeys(ctx, 'files')).toEqual(before);
        expect(await pendingCount(ctx)).toBe(0);
      } finally {
        await ctx.sql.query('DROP TRIGGER IF EXISTS fail_storage_insert ON basalt.objects');
      }
    });

    it('lets exactly one of two concurrent uploads to one path win, leaving no stray bytes', async () => {
      const before = (await backendKeys(ctx, 'files')).length;
      const results = await Promise.all([
        upload(ctx, 'files', 'race/one.bin', randomBytes(40_000)),
        upload(ctx, 'files', 'race/one.bin', randomBytes(40_000)),
        upload(ctx, 'files', 'race/one.bin', randomBytes(40_000)),
      ]);
      expect(results.map((r) => r.status).sort()).toEqual([201, 409, 409]);
      await waitFor('no pending storage keys', async () => (await pendingCount(ctx)) === 0, 5000, 50);
      expect((await backendKeys(ctx, 'files')).length).toBe(before + 1);
      const upserts = await Promise.all([
        upload(ctx, 'files', 'race/one.bin', 'a', { upsert: true }),
        upload(ctx, 'files', 'race/one.bin', 'b', { upsert: true }),
      ]);
      expect(upserts.map((r) => r.status)).toEqual([201, 201]);
      await waitFor('no pending storage keys', async () => (await pendingCount(ctx)) === 0, 5000, 50);
      expect((await backendKeys(ctx, 'files')).length).toBe(before + 1);
    });

    it('accepts a 1024-byte multibyte path, a missing Content-Type, and rejects a bad x-upsert', async () => {
      const long = await rawRequest(
        ctx.server.url,
        'PUT',
        `/v1/storage/files/${'%C3%A9'.repeat(512)}`,
        ctx.server.serviceKey,
        'x',
      );
      expect(long.status).toBe(201);
      const noType = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(`${ctx.server.url}/v1/storage/files/untyped`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${ctx.server.serviceKey}`, 'content-length': '3' },
        });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end('abc');
      });
      expect(noType.status).toBe(201);
      expect(JSON.parse(noType.body)).toMatchObject({ content_type: 'application/octet-stream', size: 3 });
      // A JSON body is stored as bytes, never parsed.
      const json = await upload(ctx, 'files', 'data.json', '{"a": [1, 2]}', { contentType: 'application/json' });
      expect(json.status).toBe(201);
      const back = await request(ctx.server.url, 'GET', '/v1/storage/files/data.json', {
        token: ctx.server.serviceKey,
      });
      expect(back.text).toBe('{"a": [1, 2]}');
      expect(back.headers.get('content-type')).toBe('application/json');
      const badUpsert = await request(ctx.server.url, 'PUT', '/v1/storage/files/u.txt', {
        token: ctx.server.serviceKey,
        headers: { 'x-upsert': 'maybe', 'content-type': 'text/plain' },
        rawBody: new TextEncoder().encode('x'),
      });
      expect(badUpsert.status).toBe(400);
      const badType = await upload(ctx, 'files', 'bad-type.txt', 'x', { contentType: 'not a type' });
      // Fastify refuses an unparseable Content-Type before the route runs.
      expect(badType.status).toBe(415);
      expect(errorCode(badType.body)).toBe('UNSUPPORTED_MEDIA_TYPE');
    });

    it('answers a well-formed error when an object row has lost its bytes', async () => {
      const put = await upload(ctx, 'files', 'lost/bytes.txt', 'soon gone');
      expect(put.status).toBe(201);
      const { rows } = await ctx.sql.query<{ k: string }>(
        `SELECT storage_key AS k FROM basalt.objects WHERE bucket = 'files' AND path = 'lost/bytes.txt'`,
      );
      await ctx.backend.delete(rows[0]!.k);
      const get = await request(ctx.server.url, 'GET', '/v1/storage/files/lost/bytes.txt', {
        token: ctx.server.serviceKey,
      });
      expect(get.status).toBe(404);
      expect(errorCode(get.body)).toBe('NOT_FOUND');
    });

    it('deletes bytes and metadata', async () => {
      const token = ctx.server.serviceKey;
      expect((await upload(ctx, 'files', 'del/me.txt', 'bye')).status).toBe(201);
      const before = (await backendKeys(ctx, 'files')).length;
      expect((await request(ctx.server.url, 'DELETE', '/v1/storage/files/del/me.txt', { token })).status).toBe(204);
      expect((await backendKeys(ctx, 'files')).length).toBe(before - 1);
      expect((await request(ctx.server.url, 'GET', '/v1/storage/files/del/me.txt', { token })).status).toBe(404);
      expect((await request(ctx.server.url, 'DELETE', '/v1/storage/files/del/me.txt', { token })).status).toBe(404);
    });

    it('writes uploads and deletes to the change log', async () => {
      expect((await upload(ctx, 'files', 'changes/x.txt', 'x')).status).toBe(201);
      await request(ctx.server.url, 'DELETE', '/v1/storage/files/changes/x.txt', { token: ctx.server.serviceKey });
      const { rows } = await ctx.sql.query<{ op: string }>(
        `SELECT op FROM basalt.changes WHERE table_name = 'objects'
           AND coalesce(new_row, old_row) ->> 'path' = 'changes/x.txt' ORDER BY id`,
      );
      expect(rows.map((row) => row.op)).toEqual(['insert', 'delete']);
    });

    it('lists by prefix with keyset pages', async () => {
      await createBucket(ctx, { name: 'listing' });
      const paths = ['a/1.txt', 'a/2.txt', 'a/3.txt', 'a/sub/4.txt', 'b/5.txt', 'a_/6.txt'];
      for (const p of paths) expect((await upload(ctx, 'listing', p, p)).status).toBe(201);
      const token = ctx.server.serviceKey;
      const seen: string[] = [];
      let after: string | null = null;
      for (let page = 0; page < 5; page++) {
        const query: string = `prefix=a%2F&limit=2${after ? `&after=${encodeURIComponent(after)}` : ''}`;
        const response = await request(ctx.server.url, 'GET', `/v1/storage/listing?${query}`, { token });
        expect(response.status).toBe(200);
        const body = response.body as { objects: Array<{ path: string }>; next_cursor: string | null };
        seen.push(...body.objects.map((o) => o.path));
        after = body.next_cursor;
        if (after === null) break;
      }
      expect(seen).toEqual(['a/1.txt', 'a/2.txt', 'a/3.txt', 'a/sub/4.txt']);
      const bad = await request(ctx.server.url, 'GET', '/v1/storage/listing?limit=0', { token });
      expect(bad.status).toBe(400);
      const badPrefix = await request(ctx.server.url, 'GET', '/v1/storage/listing?prefix=..%2F', { token });
      expect(badPrefix.status).toBe(400);
    });

    it('serves public buckets without a token and hides private ones', async () => {
      expect((await upload(ctx, 'pub', 'hello.txt', 'hi')).status).toBe(201);
      const open = await request(ctx.server.url, 'GET', '/v1/storage/pub/hello.txt');
      expect(open.status).toBe(200);
      expect(open.text).toBe('hi');
      expect((await request(ctx.server.url, 'GET', '/v1/storage/pub')).status).toBe(200);
      const closed = await request(ctx.server.url, 'GET', '/v1/storage/files/range.txt');
      expect(closed.status).toBe(401);
      expect((await request(ctx.server.url, 'GET', '/v1/storage/files')).status).toBe(401);
      const write = await request(ctx.server.url, 'PUT', '/v1/storage/pub/anon.txt', {
        rawBody: new TextEncoder().encode('x'),
      });
      expect(write.status).toBe(401);
    });

    it('signs URLs that work without a token and refuses tampering and expiry', async () => {
      const token = ctx.server.serviceKey;
      expect((await upload(ctx, 'files', 'signed/a.txt', 'secret-a')).status).toBe(201);
      expect((await upload(ctx, 'files', 'signed/b.txt', 'secret-b')).status).toBe(201);
      const signed = await request(ctx.server.url, 'POST', '/v1/sign/files/signed/a.txt', {
        token,
        body: { expires_in: 60 },
      });
      expect(signed.status).toBe(200);
      // The URL is absolute on BASALT_PUBLIC_URL; the test server's port is only known after listen.
      const given = new URL((signed.body as { url: string }).url);
      expect(given.origin).toBe(ctx.server.config.publicUrl);
      const url = new URL(`${given.pathname}${given.search}`, ctx.server.url);
      expect(url.pathname).toBe('/v1/storage/files/signed/a.txt');
      const fetched = await fetch(url);
      expect(fetched.status).toBe(200);
      expect(await fetched.text()).toBe('secret-a');

      const otherPath = new URL(url);
      otherPath.pathname = '/v1/storage/files/signed/b.txt';
      expect((await fetch(otherPath)).status).toBe(403);
      const badSig = new URL(url);
      badSig.searchParams.set('sig', `${url.searchParams.get('sig')?.slice(0, -2)}AA`);
      expect((await fetch(badSig)).status).toBe(403);
      const later = new URL(url);
      later.searchParams.set('expires', String(Number(url.searchParams.get('expires')) + 1000));
      expect((await fetch(later)).status).toBe(403);

      const signer = new UrlSigner(null, ctx.server.serviceKey);
      const past = Math.floor(Date.now() / 1000) - 10;
      const expired = `${ctx.server.url}/v1/storage/files/signed/a.txt?expires=${past}&sig=${signer.signature('files', 'signed/a.txt', past)}`;
      const expiredResponse = await fetch(expired);
      expect(expiredResponse.status).toBe(403);

      expect(
        (await request(ctx.server.url, 'POST', '/v1/sign/files/signed/a.txt', { token, body: { expires_in: 0 } }))
          .status,
      ).toBe(400);
      expect(
        (await request(ctx.server.url, 'POST', '/v1/sign/files/signed/none.txt', { token, body: { expires_in: 5 } }))
          .status,
      ).toBe(404);
      // Signing needs read access.
      expect(
        (await request(ctx.server.url, 'POST', '/v1/sign/files/signed/a.txt', { body: { expires_in: 5 } })).status,
      ).toBe(401);
    });

    it('answers unknown buckets and objects with 404', async () => {
      const token = ctx.server.serviceKey;
      expect((await request(ctx.server.url, 'GET', '/v1/storage/nope/a.txt', { token })).status).toBe(404);
      expect((await upload(ctx, 'nope', 'a.txt', 'x')).status).toBe(404);
      expect((await request(ctx.server.url, 'GET', '/v1/storage/files/missing.txt', { token })).status).toBe(404);
    });

    it('adds the storage backend to /readyz and counts uploads in /metrics', async () => {
      const ready = await request(ctx.server.url, 'GET', '/readyz');
      expect(ready.status).toBe(200);
      expect((ready.body as { checks: Record<string, boolean> }).checks.storage).toBe(true);
      const metrics = await request(ctx.server.url, 'GET', '/metrics', { token: ctx.server.serviceKey });
      expect(metrics.text).toMatch(/basalt_storage_uploads_total\{result="stored"\} [1-9]/);
      expect(metrics.text).toMatch(/basalt_storage_uploads_total\{result="rejected"\} [1-9]/);
      expect(metrics.text).toMatch(/basalt_storage_uploaded_bytes_total [1-9]/);
      expect(metrics.text).toMatch(/basalt_storage_downloaded_bytes_total [1-9]/);
    });
  });

  describe('per-user rules', () => {
    let alice: SignedUp;
    let bob: SignedUp;

    beforeAll(async () => {
      await createBucket(ctx, {
        name: 'private',
        rules: {
          read: 'auth != null && object.owner == auth.uid',
          write: 'auth != null && object.owner == auth.uid && starts_with(object.path, "users/")',
          delete: 'auth != null && object.owner == auth.uid',
        },
      });
      alice = await signUp(ctx.server.url);
      bob = await signUp(ctx.server.url);
    });

    it('keeps two users out of each other’s files', async () => {
      const a = await upload(ctx, 'private', 'users/alice/diary.txt', 'alice secret', { token: alice.token });
      expect(a.status).toBe(201);
      expect((a.body as { owner: string }).owner).toBe(alice.id);
      expect((await upload(ctx, 'private', 'users/bob/notes.txt', 'bob secret', { token: bob.token })).status).toBe(
        201,
      );

      const own = await request(ctx.server.url, 'GET', '/v1/storage/private/users/alice/diary.txt', {
        token: alice.token,
      });
      expect(own.text).toBe('alice secret');
      const read = await request(ctx.server.url, 'GET', '/v1/storage/private/users/alice/diary.txt', {
        token: bob.token,
      });
      expect(read.status).toBe(403);
      const overwrite = await upload(ctx, 'private', 'users/alice/diary.txt', 'bob was here', {
        token: bob.token,
        upsert: true,
      });
      expect(overwrite.status).toBe(403);
      const remove = await request(ctx.server.url, 'DELETE', '/v1/storage/private/users/alice/diary.txt', {
        token: bob.token,
      });
      expect(remove.status).toBe(403);
      const sign = await request(ctx.server.url, 'POST', '/v1/sign/private/users/alice/diary.txt', {
        token: bob.token,
        body: { expires_in: 60 },
      });
      expect(sign.status).toBe(403);

      const bobsList = await request(ctx.server.url, 'GET', '/v1/storage/private', { token: bob.token });
      expect((bobsList.body as { objects: Array<{ path: string }> }).objects.map((o) => o.path)).toEqual([
        'users/bob/notes.txt',
      ]);
      const still = await request(ctx.server.url, 'GET', '/v1/storage/private/users/alice/diary.txt', {
        token: alice.token,
      });
      expect(still.text).toBe('alice secret');

      // The write rule also guards where a user may write.
      expect((await upload(ctx, 'private', 'elsewhere.txt', 'x', { token: alice.token })).status).toBe(403);
      // Alice can overwrite and delete her own file.
      expect(
        (await upload(ctx, 'private', 'users/alice/diary.txt', 'v2', { token: alice.token, upsert: true })).status,
      ).toBe(201);
      expect(
        (
          await request(ctx.server.url, 'DELETE', '/v1/storage/private/users/alice/diary.txt', {
            token: alice.token,
          })
        ).status,
      ).toBe(204);
    });
  });

  describe('sweeper', () => {
    it('removes abandoned uploads and unreferenced bytes, and keeps live objects', async () => {
      const token = ctx.server.serviceKey;
      await createBucket(ctx, { name: 'sweep' });
      expect((await upload(ctx, 'sweep', 'live.txt', 'live')).status).toBe(201);
      const { Readable } = await import('node:stream');
      // An upload a crash abandoned: pending mark and complete bytes, no row.
      const abandoned = `sweep/${randomUUID()}`;
      await ctx.sql.query(
        `INSERT INTO basalt.storage_pending (storage_key, reason, touched_at) VALUES ($1, 'upload', now() - interval '2 hours')`,
        [abandoned],
      );
      await ctx.backend.put(abandoned, Readable.from([Buffer.from('abandoned')]), { maxBytes: 100 });
      // Bytes with neither row nor mark.
      const orphan = `sweep/${randomUUID()}`;
      // Not of Basalt's key shape: left alone even though nothing references it.
      const foreign = 'sweep/not-a-basalt-key';
      await ctx.backend.put(foreign, Readable.from([Buffer.from('foreign')]), { maxBytes: 100 });
      await ctx.backend.put(orphan, Readable.from([Buffer.from('orphan')]), { maxBytes: 100 });
      // A fresh pending upload is left alone by a sweep with the default grace.
      const fresh = `sweep/${randomUUID()}`;
      await ctx.sql.query(`INSERT INTO basalt.storage_pending (storage_key, reason) VALUES ($1, 'upload')`, [fresh]);
      await ctx.backend.put(fresh, Readable.from([Buffer.from('fresh')]), { maxBytes: 100 });

      const first = await request(ctx.server.url, 'POST', '/v1/admin/storage/sweep', { token, body: {} });
      expect(first.status).toBe(200);
      expect(first.body).toMatchObject({ ran: true, pending: 1 });
      let keys = await backendKeys(ctx, 'sweep');
      expect(keys).not.toContain(abandoned);
      expect(keys).toContain(fresh);

      const second = await request(ctx.server.url, 'POST', '/v1/admin/storage/sweep', {
        token,
        body: { grace_seconds: 0 },
      });
      expect(second.status).toBe(200);
      keys = await backendKeys(ctx, 'sweep');
      expect(keys).not.toContain(orphan);
      expect(keys).not.toContain(fresh);
      expect(keys.sort()).toEqual(
        [
          foreign,
          (await ctx.sql.query<{ k: string }>("SELECT storage_key AS k FROM basalt.objects WHERE bucket = 'sweep'"))
            .rows[0]?.k,
        ].sort(),
      );
      await ctx.backend.delete(foreign);
      const live = await request(ctx.server.url, 'GET', '/v1/storage/sweep/live.txt', { token });
      expect(live.text).toBe('live');
    });

    it('fails an upload whose pending mark the sweeper claimed, instead of committing a row without bytes', async () => {
      const token = ctx.server.serviceKey;
      const before = await backendKeys(ctx, 'sweep');
      let finish: () => void = () => undefined;
      const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(`${ctx.server.url}/v1/storage/sweep/slow.bin`, {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${token}`,
            'content-type': 'application/octet-stream',
            'content-length': '100000',
          },
        });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.write(Buffer.alloc(50_000, 3));
        finish = () => req.end(Buffer.alloc(50_000, 4));
      });
      await waitFor('one pending storage key', async () => (await pendingCount(ctx)) === 1, 5000, 50);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const sweep = await request(ctx.server.url, 'POST', '/v1/admin/storage/sweep', {
        token,
        body: { grace_seconds: 0 },
      });
      expect(sweep.body).toMatchObject({ ran: true, pending: 1 });
      finish();
      const result = await response;
      expect(result.status).toBe(503);
      expect(JSON.parse(result.body).error.code).toBe('UNAVAILABLE');
      await waitFor('no pending storage keys', async () => (await pendingCount(ctx)) === 0, 5000, 50);
      expect(await backendKeys(ctx, 'sweep')).toEqual(before);
      expect((await request(ctx.server.url, 'GET', '/v1/storage/sweep/slow.bin', { token })).status).toBe(404);
    });
  });
});

describe('periodic sweeper', () => {
  let database: TestDatabase;
  let server: TestApp;
  let sql: pg.Pool;
  let backend: StorageBackend;

  beforeAll(async () => {
    database = await createTestDatabase();
    server = await startTestApp(database, { BASALT_STORAGE_SWEEP_INTERVAL: '1', BASALT_STORAGE_ORPHAN_GRACE: '0' });
    sql = new pg.Pool({ connectionString: database.url, max: 2 });
    backend = createStorageBackend(server.config);
  });

  afterAll(async () => {
    await backend?.close();
    await sql?.end();
    await server?.close();
    await database?.drop();
  });

  it('runs on its own and skips a round while another instance holds the lock', async () => {
    const { Readable } = await import('node:stream');
    const lock = await sql.connect();
    try {
      // Another instance sweeping: this one must not run.
      await lock.query('SELECT pg_advisory_lock($1)', [0x6273_7477]);
      const skipped = await request(server.url, 'POST', '/v1/admin/storage/sweep', {
        token: server.serviceKey,
        body: { grace_seconds: 0 },
      });
      expect(skipped.body).toEqual({ ran: false, expired_uploads: 0, pending: 0, orphans: 0, stale_writes: 0 });
      // An abandoned upload (pending mark and bytes): every periodic sweep looks for these.
      const orphan = `periodic/${randomUUID()}`;
      await sql.query(`INSERT INTO basalt.storage_pending (storage_key, reason) VALUES ($1, 'upload')`, [orphan]);
      await backend.put(orphan, Readable.from([Buffer.from('orphan')]), { maxBytes: 100 });
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(await backend.head(orphan)).not.toBeNull();
      await lock.query('SELECT pg_advisory_unlock($1)', [0x6273_7477]);
      await waitFor('the orphan to be swept', async () => (await backend.head(orphan)) === null, 10_000, 50);
      const { rows } = await sql.query('SELECT 1 FROM basalt.storage_pending WHERE storage_key = $1', [orphan]);
      expect(rows).toEqual([]);
    } finally {
      lock.release();
    }
  });
});
