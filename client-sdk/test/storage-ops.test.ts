// Storage calls a real app reaches for, against a real server: uploads from Node streams,
// signed URLs with their expiry, bulk remove, move and copy.
import { createReadStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { createBucket, request, useTempDir, useTestApp } from '../../test/helpers.js';
import { signedInClient } from './sdk-support.js';
import { BasaltError, createClient, type BasaltClient } from '../src/index.js';

const server = useTestApp();
const temp = useTempDir('basalt-sdk-storage-');
let alice: BasaltClient;
let bob: BasaltClient;

const ownRules = {
  read: 'auth != null && object.owner == auth.uid',
  write: 'auth != null && object.owner == auth.uid',
  delete: 'auth != null && object.owner == auth.uid',
};

beforeAll(async () => {
  await createBucket(server, { name: 'files', rules: ownRules });
  await createBucket(server, { name: 'small', max_file_size: 10, rules: ownRules });
  await createBucket(server, { name: 'images', allowed_mime_types: ['image/*'], rules: ownRules });
  await createBucket(server, { name: 'shared', public: true, rules: { write: 'auth != null' } });
  [alice, bob] = await Promise.all([signedInClient(server.url), signedInClient(server.url)]);
});

async function text(client: BasaltClient, bucket: string, objectPath: string): Promise<string> {
  return (await client.storage.from(bucket).download(objectPath)).text();
}

async function failure(promise: Promise<unknown>): Promise<BasaltError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BasaltError);
  return error as BasaltError;
}

describe('uploads from Node streams', () => {
  it('takes an fs.ReadStream and a Readable, streamed, with progress', async () => {
    const file = path.join(temp.path, 'big.bin');
    const bytes = randomBytes(300_000);
    writeFileSync(file, bytes);
    const files = alice.storage.from('files');
    const fromFile = await files.upload('node/file.bin', createReadStream(file));
    expect(fromFile).toMatchObject({ size: bytes.length, content_type: 'application/octet-stream' });
    expect(Buffer.from(await (await files.download('node/file.bin')).arrayBuffer()).equals(bytes)).toBe(true);

    const progress: number[] = [];
    const readable = Readable.from(['hello ', 'from ', Buffer.from('a Readable')]);
    const fromReadable = await files.upload('node/readable.txt', readable, {
      contentType: 'text/plain',
      onProgress: (sent) => progress.push(sent),
    });
    expect(fromReadable.size).toBe('hello from a Readable'.length);
    expect(progress.at(-1)).toBe(fromReadable.size);
    expect(await text(alice, 'files', 'node/readable.txt')).toBe('hello from a Readable');
  });

  it('answers PAYLOAD_TOO_LARGE for a stream over the bucket limit, with typed details', async () => {
    const error = await failure(alice.storage.from('small').upload('big.bin', Readable.from([Buffer.alloc(1000)])));
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    if (error.is('PAYLOAD_TOO_LARGE')) expect(error.details?.max_file_size).toBe(10);
  });
});

describe('signed URLs', () => {
  it('still resolve with the URL, and with { url, expires_at } when asked', async () => {
    const files = alice.storage.from('files');
    await files.upload('signed/a.txt', new Blob(['signed!']), { contentType: 'text/plain' });
    const url = await files.createSignedUrl('signed/a.txt', 60);
    expect(typeof url).toBe('string');
    const before = Date.now();
    const signed = await files.createSignedUrl('signed/a.txt', 120, { withExpiry: true });
    expect(Object.keys(signed).sort()).toEqual(['expires_at', 'url']);
    const expiresAt = Date.parse(signed.expires_at);
    expect(expiresAt).toBeGreaterThan(before + 110_000);
    expect(expiresAt).toBeLessThan(before + 125_000);
    // The URL is built on the server's public URL; the test server listens elsewhere.
    const { pathname, search } = new URL(signed.url);
    expect(await (await fetch(`${server.url}${pathname}${search}`)).text()).toBe('signed!');
  });
});

describe('remove([...paths])', () => {
  it('deletes several objects in one call, with one result per path', async () => {
    const files = alice.storage.from('files');
    for (const name of ['a', 'b', 'c']) await files.upload(`bulk/${name}.txt`, new Blob([name]));
    await bob.storage.from('files').upload('bulk/bob.txt', new Blob(['bob']));
    const results = await files.remove(['bulk/a.txt', 'bulk/b.txt', 'bulk/bob.txt', 'bulk/none.txt', 'bulk/a.txt']);
    expect(results).toEqual([
      { path: 'bulk/a.txt', deleted: true },
      { path: 'bulk/b.txt', deleted: true },
      { path: 'bulk/bob.txt', deleted: false, error: expect.objectContaining({ code: 'FORBIDDEN' }) },
      { path: 'bulk/none.txt', deleted: false, error: expect.objectContaining({ code: 'NOT_FOUND' }) },
      { path: 'bulk/a.txt', deleted: false, error: expect.objectContaining({ code: 'NOT_FOUND' }) },
    ]);
    const left = await files.list({ prefix: 'bulk/' });
    expect(left.objects.map((object) => object.path)).toEqual(['bulk/c.txt']);
    expect(await text(bob, 'files', 'bulk/bob.txt')).toBe('bob');
    // The single-path form is unchanged.
    await expect(files.remove('bulk/c.txt')).resolves.toBeUndefined();
  });

  it('reports invalid paths per path, and refuses an empty or oversized list', async () => {
    const raw = await request(server.url, 'DELETE', '/v1/storage/files', {
      token: alice.auth.session?.access_token,
      body: { paths: ['../etc/passwd', 'a//b', 'ok-but-missing'] },
    });
    expect(raw.status).toBe(200);
    expect((raw.body as { results: Array<{ error?: { code: string } }> }).results.map((r) => r.error?.code)).toEqual([
      'INVALID_PATH',
      'INVALID_PATH',
      'NOT_FOUND',
    ]);
    const files = alice.storage.from('files');
    expect((await failure(files.remove([]))).code).toBe('INVALID_REQUEST');
    const tooMany = Array.from({ length: 1001 }, (_, i) => `p${i}`);
    expect((await failure(files.remove(tooMany))).code).toBe('INVALID_REQUEST');
    expect((await failure(alice.storage.from('nope').remove(['x']))).code).toBe('NOT_FOUND');
  });
});

describe('move and copy', () => {
  it('moves an object within a bucket and to another bucket, atomically', async () => {
    const files = alice.storage.from('files');
    const original = await files.upload('move/from.txt', new Blob(['moving']), { contentType: 'text/plain' });
    const moved = await files.move('move/from.txt', 'move/to.txt');
    expect(moved).toMatchObject({
      bucket: 'files',
      path: 'move/to.txt',
      size: 6,
      etag: original.etag,
      owner: original.owner,
    });
    expect((await failure(files.download('move/from.txt'))).code).toBe('NOT_FOUND');
    expect(await text(alice, 'files', 'move/to.txt')).toBe('moving');

    const elsewhere = await files.move('move/to.txt', 'pic.txt', { toBucket: 'shared' });
    expect(elsewhere).toMatchObject({ bucket: 'shared', path: 'pic.txt' });
    expect(await (await fetch(`${server.url}/v1/storage/shared/pic.txt`)).text()).toBe('moving');
    expect((await files.list({ prefix: 'move/' })).objects).toEqual([]);
  });

  it('refuses what the rules or the destination bucket do not allow, and keeps the source', async () => {
    const files = alice.storage.from('files');
    await files.upload('guard/doc.txt', new Blob(['0123456789abc']), { contentType: 'text/plain' });
    expect((await failure(bob.storage.from('files').move('guard/doc.txt', 'guard/stolen.txt'))).code).toBe('FORBIDDEN');
    expect((await failure(bob.storage.from('files').copy('guard/doc.txt', 'guard/stolen.txt'))).code).toBe('FORBIDDEN');
    expect((await failure(files.move('guard/doc.txt', 'doc.txt', { toBucket: 'small' }))).code).toBe(
      'PAYLOAD_TOO_LARGE',
    );
    expect((await failure(files.copy('guard/doc.txt', 'doc.txt', { toBucket: 'images' }))).code).toBe(
      'UNSUPPORTED_MEDIA_TYPE',
    );
    expect((await failure(files.move('guard/doc.txt', 'guard/doc.txt'))).code).toBe('INVALID_REQUEST');
    expect((await failure(files.move('guard/none.txt', 'guard/x.txt'))).code).toBe('NOT_FOUND');
    expect((await failure(files.move('guard/doc.txt', '../escape.txt'))).code).toBe('INVALID_PATH');
    expect(await text(alice, 'files', 'guard/doc.txt')).toBe('0123456789abc');
  });

  it('replaces an existing destination only with upsert', async () => {
    const files = alice.storage.from('files');
    await files.upload('up/a.txt', new Blob(['A']));
    await files.upload('up/b.txt', new Blob(['B']));
    expect((await failure(files.move('up/a.txt', 'up/b.txt'))).code).toBe('ALREADY_EXISTS');
    await files.move('up/a.txt', 'up/b.txt', { upsert: true });
    expect(await text(alice, 'files', 'up/b.txt')).toBe('A');
    expect((await files.list({ prefix: 'up/' })).objects.map((o) => o.path)).toEqual(['up/b.txt']);
  });

  it('copies into a new object of the caller, leaving the source', async () => {
    await alice.storage.from('shared').upload('tpl.txt', new Blob(['template']), { contentType: 'text/plain' });
    const copy = await bob.storage.from('shared').copy('tpl.txt', 'mine/tpl.txt', { toBucket: 'files' });
    expect(copy).toMatchObject({ bucket: 'files', path: 'mine/tpl.txt', owner: bob.auth.user?.id, size: 8 });
    expect(await text(bob, 'files', 'mine/tpl.txt')).toBe('template');
    expect(await (await fetch(`${server.url}/v1/storage/shared/tpl.txt`)).text()).toBe('template');
  });

  it('two moves of one object race: one wins, the object is at exactly one place', async () => {
    const files = alice.storage.from('files');
    await files.upload('race/src.txt', new Blob(['race']));
    const outcomes = await Promise.allSettled([
      files.move('race/src.txt', 'race/one.txt'),
      files.move('race/src.txt', 'race/two.txt'),
    ]);
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    const rejected = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect((rejected?.reason as BasaltError).code).toBe('NOT_FOUND');
    const paths = (await files.list({ prefix: 'race/' })).objects.map((o) => o.path);
    expect(paths).toHaveLength(1);
    expect(await text(alice, 'files', paths[0] as string)).toBe('race');
  });
});

describe('session storage on Node', () => {
  it('warns once when a client has nowhere to keep its session', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      createClient(server.url, { autoRefreshToken: false });
      createClient(server.url, { autoRefreshToken: false });
      createClient(server.url, { persistSession: false });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]?.[0])).toContain('session storage');
    } finally {
      warn.mockRestore();
    }
  });
});
