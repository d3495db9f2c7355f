import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../server/internal/errors.js';
import { FsBackend } from '../server/modules/storage/backends/fs.js';
import type { StorageBackend } from '../server/modules/storage/backends/index.js';
import { S3Backend } from '../server/modules/storage/backends/s3.js';
import { generatedBytes, startS3Server } from './storage-helpers.js';

const MIB = 1024 * 1024;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

function key(): string {
  return `contract/${randomUUID()}`;
}

async function keys(backend: StorageBackend): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of backend.list()) found.push(entry.key);
  return found;
}

interface Harness {
  backend: StorageBackend;
  /** Anything a failed write may have left behind (temporary files, parts), for "nothing stored" checks. */
  leftovers(): Promise<string[]>;
  close(): Promise<void>;
}

async function fsHarness(): Promise<Harness> {
  const root = await mkdtemp(path.join(tmpdir(), 'basalt-fs-backend-'));
  const backend = new FsBackend(root);
  return {
    backend,
    leftovers: async () => readdir(path.join(root, 'tmp')).catch(() => []),
    close: async () => rm(root, { recursive: true, force: true }),
  };
}

async function s3Harness(): Promise<Harness> {
  const server = await startS3Server('basalt-contract');
  const backend = new S3Backend({
    endpoint: server.endpoint,
    region: 'us-east-1',
    bucket: server.bucket,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
    partSize: 5 * MIB,
  });
  return {
    backend,
    // s3rver cannot list multipart uploads; objects are what a reader could see.
    leftovers: async () => [],
    close: async () => {
      await backend.close();
      await server.close();
    },
  };
}

describe.each([
  ['fs', fsHarness],
  ['s3', s3Harness],
] as const)('storage backend contract: %s', (_name, makeHarness) => {
  let harness: Harness;
  let backend: StorageBackend;

  beforeAll(async () => {
    harness = await makeHarness();
    backend = harness.backend;
  });
  afterAll(async () => {
    await harness?.close();
  });

  it('answers ping', async () => {
    expect(await backend.ping()).toBe(true);
  });

  it('stores bytes and reports size, sha256 and etag', async () => {
    const k = key();
    const content = randomBytes(10_000);
    const result = await backend.put(k, Readable.from([content]), { maxBytes: 1 * MIB });
    const sha256 = createHash('sha256').update(content).digest('hex');
    expect(result).toEqual({ size: 10_000, sha256, etag: `"${sha256}"` });
    expect(await readAll(await backend.get(k))).toEqual(content);
    const head = await backend.head(k);
    expect(head?.size).toBe(10_000);
    expect(head?.lastModified).toBeInstanceOf(Date);
  });

  it('stores an empty body', async () => {
    const k = key();
    const result = await backend.put(k, Readable.from([]), { maxBytes: 10 });
    expect(result.size).toBe(0);
    expect((await readAll(await backend.get(k))).length).toBe(0);
  });

  it('serves byte ranges', async () => {
    const k = key();
    const content = Buffer.from('0123456789abcdef');
    await backend.put(k, Readable.from([content]), { maxBytes: 100 });
    expect((await readAll(await backend.get(k, { start: 2, end: 5 }))).toString()).toBe('2345');
    expect((await readAll(await backend.get(k, { start: 15, end: 15 }))).toString()).toBe('f');
  });

  it('streams a multipart-sized upload and reads it back intact', async () => {
    const k = key();
    const total = 11 * MIB + 123;
    const result = await backend.put(k, generatedBytes(total), { maxBytes: 20 * MIB });
    expect(result.size).toBe(total);
    const back = await readAll(await backend.get(k));
    expect(back.length).toBe(total);
    expect(createHash('sha256').update(back).digest('hex')).toBe(result.sha256);
  });

  it('refuses a body over the limit while streaming and keeps nothing', async () => {
    const k = key();
    const error = await backend.put(k, generatedBytes(12 * MIB), { maxBytes: 6 * MIB }).catch((e: unknown) => e);
    expect(isAppError(error) && error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(await backend.head(k)).toBeNull();
    expect(await keys(backend)).not.toContain(k);
    expect(await harness.leftovers()).toEqual([]);
  });

  it('refuses a small body over the limit and keeps nothing', async () => {
    const k = key();
    const error = await backend.put(k, Readable.from([Buffer.alloc(11)]), { maxBytes: 10 }).catch((e: unknown) => e);
    expect(isAppError(error) && error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(await backend.head(k)).toBeNull();
  });

  it('keeps nothing when the source fails midway', async () => {
    const k = key();
    const error = await backend
      .put(k, generatedBytes(12 * MIB, { failAfter: 7 * MIB }), { maxBytes: 20 * MIB })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(await backend.head(k)).toBeNull();
    expect(await keys(backend)).not.toContain(k);
    expect(await harness.leftovers()).toEqual([]);
  });

  it('reports a missing key as NOT_FOUND on get and null on head', async () => {
    const k = key();
    const error = await backend.get(k).catch((e: unknown) => e);
    expect(isAppError(error) && error.code).toBe('NOT_FOUND');
    expect(await backend.head(k)).toBeNull();
  });

  it('deletes idempotently', async () => {
    const k = key();
    await backend.put(k, Readable.from([Buffer.from('x')]), { maxBytes: 10 });
    await backend.delete(k);
    await backend.delete(k);
    expect(await backend.head(k)).toBeNull();
  });

  it('lists keys under a prefix', async () => {
    const bucket = `list${randomBytes(4).toString('hex')}`;
    const written = [`${bucket}/a1`, `${bucket}/b2`, `${bucket}/c3`];
    for (const k of written) await backend.put(k, Readable.from([Buffer.from(k)]), { maxBytes: 100 });
    const listed: string[] = [];
    for await (const entry of backend.list(`${bucket}/`)) listed.push(entry.key);
    expect(listed.sort()).toEqual(written);
  });

  it('discards stale unfinished writes but not ones in use', async () => {
    // Nothing unfinished exists after the failures above: a sweep finds nothing to do
    // and never touches completed keys.
    const k = key();
    await backend.put(k, Readable.from([Buffer.from('kept')]), { maxBytes: 100 });
    const discarded = await backend.discardStaleWrites(new Date(Date.now() + 60_000), async () => false);
    expect(discarded).toBe(0);
    expect(await backend.head(k)).not.toBeNull();
  });

  describe('resumable writes', () => {
    it('stores pieces of any size, across part boundaries, and completes them as one object', async () => {
      const data = randomBytes(11 * MIB + 7);
      const k = key();
      let upload = { state: await backend.beginResumable(k, data.length), offset: 0, held: null as Buffer | null };
      for (const end of [2 * MIB, 2 * MIB + 1, 9 * MIB, data.length]) {
        const piece = data.subarray(upload.offset, end);
        const progress = await backend.appendResumable(k, upload, Readable.from([piece]), data.length - upload.offset);
        expect(progress.failure).toBeNull();
        expect(progress.offset).toBe(end);
        upload = { state: progress.state, offset: progress.offset, held: progress.held };
        // Nothing is visible under the key before completion.
        if (end < data.length) expect(await backend.head(k)).toBeNull();
      }
      await backend.completeResumable(k, upload.state, upload.held);
      expect((await readAll(await backend.get(k))).equals(data)).toBe(true);
      // Completing again (a crash before the commit was recorded) finds the object there.
      await backend.completeResumable(k, upload.state, upload.held);
      expect((await backend.head(k))?.size).toBe(data.length);
    });

    it('keeps what arrived of a body that fails, and refuses bytes past the limit', async () => {
      const k = key();
      const state = await backend.beginResumable(k, 8 * MIB);
      const cut = await backend.appendResumable(
        k,
        { state, offset: 0, held: null },
        generatedBytes(8 * MIB, { failAfter: 3 * MIB }),
        8 * MIB,
      );
      expect(cut.failure).not.toBeNull();
      expect(cut.offset).toBeGreaterThan(0);
      expect(cut.offset).toBeLessThanOrEqual(3 * MIB);
      const over = await backend.appendResumable(
        k,
        { state: cut.state, offset: cut.offset, held: cut.held },
        Readable.from([Buffer.alloc(100)]),
        10,
      );
      expect(isAppError(over.failure) && over.failure.code).toBe('PAYLOAD_TOO_LARGE');
      expect(over.offset).toBeLessThanOrEqual(cut.offset + 10);
      await backend.abortResumable(k, over.state);
      await backend.abortResumable(k, over.state);
      expect(await backend.head(k)).toBeNull();
    });

    it('completes an empty upload', async () => {
      const k = key();
      const state = await backend.beginResumable(k, 0);
      await backend.completeResumable(k, state, null);
      expect((await backend.head(k))?.size).toBe(0);
    });
  });
});
