import type pg from 'pg';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StorageBackend } from '../server/modules/storage/backends/index.js';
import { signUp, type SignedUp } from './auth-helpers.js';
import { createBucket, errorCode, request, type TestApp } from './helpers.js';
import { startStorageTestServer, type StorageTestServer } from './storage-helpers.js';

/** A real JPEG of the given size: a gradient, so encoders have something to do. */
async function jpeg(width: number, height: number): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    pixels[i * 3] = i % 256;
    pixels[i * 3 + 1] = Math.floor(i / width) % 256;
    pixels[i * 3 + 2] = 128;
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .jpeg()
    .toBuffer();
}

async function fetchBytes(url: string, headers: Record<string, string> = {}) {
  const response = await fetch(url, { headers });
  const body = Buffer.from(await response.arrayBuffer());
  return { status: response.status, headers: response.headers, body };
}

describe.each(['fs', 's3'] as const)('image transforms (%s backend)', (backendKind) => {
  let storage: StorageTestServer | undefined;
  let server: TestApp;
  let sql: pg.Pool;
  let backend: StorageBackend;
  let alice: SignedUp;
  let photo: Buffer;

  beforeAll(async () => {
    storage = await startStorageTestServer(backendKind, {
      BASALT_STORAGE_TRANSFORM_MAX_DIMENSION: '1000',
      BASALT_STORAGE_TRANSFORM_MAX_INPUT_PIXELS: '4000000',
    });
    ({ server, sql, backend } = storage);
    alice = await signUp(server.url);
    await createBucket(server, {
      name: 'photos',
      rules: { read: 'auth != null', write: 'auth != null', delete: 'auth != null' },
    });
    await createBucket(server, { name: 'pub', public: true });
    photo = await jpeg(1200, 800);
    await put('photos', 'cat.jpg', photo, 'image/jpeg');
  });

  afterAll(async () => {
    await storage?.close();
  });

  async function put(bucket: string, path: string, body: Buffer, contentType: string, upsert = false) {
    const res = await request(server.url, 'PUT', `/v1/storage/${bucket}/${path}`, {
      token: server.serviceKey,
      headers: { 'content-type': contentType, ...(upsert ? { 'x-upsert': 'true' } : {}) },
      rawBody: new Uint8Array(body),
    });
    expect(res.status, res.text).toBe(201);
    return res.body as { etag: string };
  }

  function get(path: string, query: string, headers: Record<string, string> = {}) {
    return fetchBytes(`${server.url}/v1/storage/${path}?${query}`, {
      authorization: `Bearer ${alice.token}`,
      ...headers,
    });
  }

  /** A signed URL pointed at the test server (the configured public URL names no real port). */
  function local(signedUrl: string): URL {
    const parsed = new URL(signedUrl);
    return new URL(`${parsed.pathname}${parsed.search}`, server.url);
  }

  async function variants(): Promise<Array<{ storage_key: string; object_key: string }>> {
    const { rows } = await sql.query<{ storage_key: string; object_key: string }>(
      'SELECT storage_key, object_key FROM basalt.storage_variants ORDER BY storage_key',
    );
    return rows;
  }

  async function variantKeysInBackend(bucket: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const entry of backend.list(`${bucket}/t`)) keys.push(entry.key);
    return keys;
  }

  it('resizes and re-encodes, and the result decodes to the asked size and format', async () => {
    const webp = await get('photos/cat.jpg', 'width=300&format=webp');
    expect(webp.status).toBe(200);
    expect(webp.headers.get('content-type')).toBe('image/webp');
    expect(Number(webp.headers.get('content-length'))).toBe(webp.body.length);
    const meta = await sharp(webp.body).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['webp', 300, 200]);

    const cover = await sharp(
      (await get('photos/cat.jpg', 'width=200&height=200&fit=cover&format=png')).body,
    ).metadata();
    expect([cover.format, cover.width, cover.height]).toEqual(['png', 200, 200]);
    const contain = await sharp((await get('photos/cat.jpg', 'width=200&height=200&fit=contain')).body).metadata();
    // No format asked for: the original's (JPEG).
    expect([contain.format, contain.width, contain.height]).toEqual(['jpeg', 200, 200]);
    const inside = await sharp(
      (await get('photos/cat.jpg', 'width=200&height=200&fit=inside&format=avif')).body,
    ).metadata();
    expect([inside.format, inside.width, inside.height]).toEqual(['heif', 200, 133]);

    // Without a size, the output is still bounded by the configured maximum (1000 here).
    const bounded = await sharp((await get('photos/cat.jpg', 'format=png')).body).metadata();
    expect([bounded.width, bounded.height]).toEqual([1000, 667]);

    const low = await get('photos/cat.jpg', 'width=600&format=jpeg&quality=10');
    const high = await get('photos/cat.jpg', 'width=600&format=jpeg&quality=95');
    expect(low.body.length).toBeLessThan(high.body.length);
  });

  it('caches variants with their own ETag, out of listings, and answers If-None-Match with 304', async () => {
    const first = await get('photos/cat.jpg', 'width=100&format=webp');
    const etag = first.headers.get('etag') as string;
    const original = await get('photos/cat.jpg', '');
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    expect(etag).not.toBe(original.headers.get('etag'));
    const again = await get('photos/cat.jpg', 'width=100&format=webp');
    expect(again.headers.get('etag')).toBe(etag);
    expect(again.body.equals(first.body)).toBe(true);
    const notModified = await get('photos/cat.jpg', 'width=100&format=webp', { 'if-none-match': etag });
    expect(notModified.status).toBe(304);

    const cached = await variants();
    expect(cached.length).toBeGreaterThan(0);
    expect(await variantKeysInBackend('photos')).toEqual(cached.map((v) => v.storage_key).sort());
    const list = await request(server.url, 'GET', '/v1/storage/photos', { token: server.serviceKey });
    expect((list.body as { objects: Array<{ path: string }> }).objects.map((o) => o.path)).toEqual(['cat.jpg']);
  });

  it('drops the variants when the original is overwritten or deleted, and never serves a stale one', async () => {
    await put('photos', 'dog.jpg', await jpeg(800, 800), 'image/jpeg');
    const before = await get('photos/dog.jpg', 'width=100&format=png');
    expect((await sharp(before.body).metadata()).height).toBe(100);
    const dogKey = (
      await sql.query<{ storage_key: string }>(`SELECT storage_key FROM basalt.objects WHERE path = 'dog.jpg'`)
    ).rows[0]?.storage_key;
    expect((await variants()).some((v) => v.object_key === dogKey)).toBe(true);

    await put('photos', 'dog.jpg', await jpeg(800, 400), 'image/jpeg', true);
    expect((await variants()).some((v) => v.object_key === dogKey)).toBe(false);
    const after = await get('photos/dog.jpg', 'width=100&format=png');
    expect((await sharp(after.body).metadata()).height).toBe(50);
    expect(after.headers.get('etag')).not.toBe(before.headers.get('etag'));
    // The old ETag is not "not modified" any more.
    const revalidated = await get('photos/dog.jpg', 'width=100&format=png', {
      'if-none-match': before.headers.get('etag') as string,
    });
    expect(revalidated.status).toBe(200);

    const count = (await variants()).length;
    expect(count).toBeGreaterThan(0);
    const del = await request(server.url, 'DELETE', '/v1/storage/photos/dog.jpg', { token: server.serviceKey });
    expect(del.status).toBe(204);
    const left = await variants();
    expect(left.length).toBe(count - 1);
    expect(await variantKeysInBackend('photos')).toEqual(left.map((v) => v.storage_key).sort());
  });

  it('computes a variant once for concurrent requests and serves them all the same bytes', async () => {
    await put('photos', 'burst.jpg', await jpeg(1000, 1000), 'image/jpeg');
    const results = await Promise.all(
      Array.from({ length: 6 }, () => get('photos/burst.jpg', 'width=250&format=webp')),
    );
    for (const result of results) {
      expect(result.status).toBe(200);
      expect(result.body.equals(results[0]?.body as Buffer)).toBe(true);
    }
    const { rows } = await sql.query(
      `SELECT v.storage_key FROM basalt.storage_variants v JOIN basalt.objects o ON o.storage_key = v.object_key
        WHERE o.path = 'burst.jpg'`,
    );
    expect(rows).toHaveLength(1);
  });

  it('refuses bad parameters (400), non-images (415) and images over the pixel limit (413)', async () => {
    for (const query of [
      'width=0',
      'width=1001',
      'height=-5',
      'width=abc',
      'width=1.5',
      'fit=fill',
      'format=gif',
      'format=svg',
      'quality=0',
      'quality=101',
    ]) {
      const res = await get('photos/cat.jpg', query);
      expect(res.status, query).toBe(400);
      expect(errorCode(JSON.parse(res.body.toString())), query).toBe('INVALID_REQUEST');
    }
    await put('photos', 'notes.txt', Buffer.from('hello'), 'text/plain');
    const text = await get('photos/notes.txt', 'width=100');
    expect(text.status).toBe(415);
    expect(errorCode(JSON.parse(text.body.toString()))).toBe('UNSUPPORTED_MEDIA_TYPE');
    await put('photos', 'fake.png', Buffer.from('not a png at all'), 'image/png');
    const fake = await get('photos/fake.png', 'width=100');
    expect(fake.status).toBe(415);
    await put('photos', 'huge.jpg', await jpeg(2500, 2000), 'image/jpeg');
    const huge = await get('photos/huge.jpg', 'width=100');
    expect(huge.status).toBe(413);
    expect(errorCode(JSON.parse(huge.body.toString()))).toBe('PAYLOAD_TOO_LARGE');
    // Nothing was cached for the failures.
    const { rows } = await sql.query(
      `SELECT 1 FROM basalt.storage_variants v JOIN basalt.objects o ON o.storage_key = v.object_key
        WHERE o.path IN ('notes.txt', 'fake.png', 'huge.jpg')`,
    );
    expect(rows).toHaveLength(0);
    // The server still serves.
    expect((await get('photos/cat.jpg', 'width=10')).status).toBe(200);
  });

  it('serves transforms through signed URLs whose signature covers the parameters', async () => {
    const signed = await request(server.url, 'POST', '/v1/sign/photos/cat.jpg', {
      token: alice.token,
      body: { expires_in: 600, transform: { width: 120, format: 'webp' } },
    });
    expect(signed.status, signed.text).toBe(200);
    const url = local((signed.body as { url: string }).url);
    expect(url.searchParams.get('width')).toBe('120');
    const ok = await fetchBytes(url.toString());
    expect(ok.status).toBe(200);
    const meta = await sharp(ok.body).metadata();
    expect([meta.format, meta.width]).toEqual(['webp', 120]);

    const altered = new URL(url);
    altered.searchParams.set('width', '900');
    expect((await fetchBytes(altered.toString())).status).toBe(403);
    const added = new URL(url);
    added.searchParams.set('quality', '100');
    expect((await fetchBytes(added.toString())).status).toBe(403);
    const stripped = new URL(url);
    stripped.searchParams.delete('width');
    stripped.searchParams.delete('format');
    expect((await fetchBytes(stripped.toString())).status).toBe(403);

    // A URL signed for the original cannot be turned into a transform, nor the reverse.
    const plain = await request(server.url, 'POST', '/v1/sign/photos/cat.jpg', {
      token: alice.token,
      body: { expires_in: 600 },
    });
    const plainUrl = local((plain.body as { url: string }).url);
    expect((await fetchBytes(plainUrl.toString())).status).toBe(200);
    plainUrl.searchParams.set('width', '50');
    expect((await fetchBytes(plainUrl.toString())).status).toBe(403);

    const badSign = await request(server.url, 'POST', '/v1/sign/photos/cat.jpg', {
      token: alice.token,
      body: { expires_in: 600, transform: { width: 5000 } },
    });
    expect(badSign.status).toBe(400);
  });

  it('serves transforms of public objects without a token', async () => {
    await put('pub', 'p.jpg', await jpeg(400, 200), 'image/jpeg');
    const res = await fetchBytes(`${server.url}/v1/storage/pub/p.jpg?width=40&format=png`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toContain('public');
    const meta = await sharp(res.body).metadata();
    expect([meta.width, meta.height]).toEqual([40, 20]);
    const head = await fetch(`${server.url}/v1/storage/pub/p.jpg?width=40&format=png`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('image/png');
  });

  it('keeps variants with a moved object and drops those of what a move, copy or bulk delete replaces', async () => {
    const keyOf = async (path: string) =>
      (
        await sql.query<{ storage_key: string }>(
          `SELECT storage_key FROM basalt.objects WHERE bucket = 'photos' AND path = $1`,
          [path],
        )
      ).rows[0]?.storage_key as string;
    const variantsOf = async (key: string) => (await variants()).filter((v) => v.object_key === key).length;
    const transfer = (kind: 'move' | 'copy', body: Record<string, unknown>) =>
      request(server.url, 'POST', `/v1/storage/${kind}`, {
        token: server.serviceKey,
        body: { bucket: 'photos', ...body },
      });

    await put('photos', 'mv.jpg', await jpeg(400, 400), 'image/jpeg');
    const moving = await keyOf('mv.jpg');
    const before = await get('photos/mv.jpg', 'width=50&format=png');
    expect(await variantsOf(moving)).toBe(1);
    // The moved object keeps its bytes' key, so its variant follows it and is served from cache.
    expect((await transfer('move', { from: 'mv.jpg', to: 'moved.jpg' })).status).toBe(200);
    expect(await keyOf('moved.jpg')).toBe(moving);
    expect(await variantsOf(moving)).toBe(1);
    const after = await get('photos/moved.jpg', 'width=50&format=png');
    expect(after.status).toBe(200);
    expect(after.body.equals(before.body)).toBe(true);
    expect((await get('photos/mv.jpg', 'width=50&format=png')).status).toBe(404);

    // A move over an object drops the replaced object's variants.
    await put('photos', 'target.jpg', await jpeg(300, 600), 'image/jpeg');
    const replaced = await keyOf('target.jpg');
    await get('photos/target.jpg', 'width=50&format=png');
    expect(await variantsOf(replaced)).toBe(1);
    expect((await transfer('move', { from: 'moved.jpg', to: 'target.jpg', upsert: true })).status).toBe(200);
    expect(await variantsOf(replaced)).toBe(0);
    expect(await variantsOf(moving)).toBe(1);
    expect((await sharp((await get('photos/target.jpg', 'width=50&format=png')).body).metadata()).height).toBe(50);

    // A copy over an object drops the replaced object's variants; the source's stay.
    await put('photos', 'c-dst.jpg', await jpeg(600, 300), 'image/jpeg');
    const overwritten = await keyOf('c-dst.jpg');
    await get('photos/c-dst.jpg', 'width=50&format=png');
    expect(await variantsOf(overwritten)).toBe(1);
    expect((await transfer('copy', { from: 'target.jpg', to: 'c-dst.jpg', upsert: true })).status).toBe(201);
    expect(await variantsOf(overwritten)).toBe(0);
    expect(await variantsOf(moving)).toBe(1);
    expect((await sharp((await get('photos/c-dst.jpg', 'width=50&format=png')).body).metadata()).height).toBe(50);

    // A bulk delete drops the deleted objects' variants, bytes included.
    const copyKey = await keyOf('c-dst.jpg');
    await get('photos/c-dst.jpg', 'width=60&format=png');
    expect(await variantsOf(copyKey)).toBe(2);
    const removed = await request(server.url, 'DELETE', '/v1/storage/photos', {
      token: server.serviceKey,
      body: { paths: ['target.jpg', 'c-dst.jpg'] },
    });
    expect(removed.status, removed.text).toBe(200);
    expect(await variantsOf(moving)).toBe(0);
    expect(await variantsOf(copyKey)).toBe(0);
    const photoVariants = (await variants()).filter((v) => v.storage_key.startsWith('photos/'));
    expect(await variantKeysInBackend('photos')).toEqual(photoVariants.map((v) => v.storage_key).sort());
  });

  it('sweeps variants whose original is gone', async () => {
    const [some] = await variants();
    expect(some).toBeDefined();
    // As a crash between an overwrite's commit and its cleanup would leave it.
    await sql.query(
      `UPDATE basalt.storage_variants SET object_key = 'photos/gone', created_at = now() - interval '1 day'
      WHERE storage_key = $1`,
      [some?.storage_key],
    );
    const sweep = await request(server.url, 'POST', '/v1/admin/storage/sweep', {
      token: server.serviceKey,
      body: { grace_seconds: 60 },
    });
    expect(sweep.status, sweep.text).toBe(200);
    expect((await variants()).some((v) => v.storage_key === some?.storage_key)).toBe(false);
    expect(await variantKeysInBackend('photos')).not.toContain(some?.storage_key);
  });
});
