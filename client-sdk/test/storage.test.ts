import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createBucket, useTestApp } from '../../test/helpers.js';
import { signedInClient } from './sdk-support.js';
import { BasaltError, type BasaltClient } from '../src/index.js';

const server = useTestApp();
let alice: BasaltClient;
let bob: BasaltClient;

function bucket(body: Record<string, unknown>): Promise<void> {
  return createBucket(server, body);
}

beforeAll(async () => {
  await bucket({
    name: 'avatars',
    max_file_size: 2_000_000,
    rules: {
      read: 'auth != null && object.owner == auth.uid',
      write: 'auth != null && object.owner == auth.uid',
      delete: 'auth != null && object.owner == auth.uid',
    },
  });
  await bucket({ name: 'public-assets', public: true, rules: { write: 'auth != null' } });
  alice = await signedInClient(server.url);
  bob = await signedInClient(server.url);
});

describe('storage SDK', () => {
  it('uploads bytes, a Blob and a stream, and downloads them as Blobs', async () => {
    const avatars = alice.storage.from('avatars');
    const bytes = new Uint8Array(randomBytes(1000));
    const a = await avatars.upload('u/bytes.bin', bytes);
    expect(a).toMatchObject({ bucket: 'avatars', path: 'u/bytes.bin', size: 1000 });
    const blob = await avatars.upload('u/me.png', new Blob(['png-bytes'], { type: 'image/png' }));
    expect(blob.content_type).toBe('image/png');
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('streamed '));
        controller.enqueue(new TextEncoder().encode('body'));
        controller.close();
      },
    });
    const streamed = await avatars.upload('u/stream.txt', stream, { contentType: 'text/plain' });
    expect(streamed.size).toBe(13);

    expect(new Uint8Array(await (await avatars.download('u/bytes.bin')).arrayBuffer())).toEqual(bytes);
    const png = await avatars.download('u/me.png');
    expect(png.type).toBe('image/png');
    expect(await png.text()).toBe('png-bytes');
    expect(await (await avatars.download('u/stream.txt')).text()).toBe('streamed body');
  });

  it('reports upload progress while streaming the body', async () => {
    const avatars = alice.storage.from('avatars');
    const calls: Array<[number, number | null]> = [];
    const size = 1_200_000;
    const result = await avatars.upload('u/progress.bin', new Uint8Array(size), {
      onProgress: (sent, total) => calls.push([sent, total]),
    });
    expect(result.size).toBe(size);
    expect(calls.length).toBeGreaterThan(1);
    expect(calls[calls.length - 1]).toEqual([size, size]);
    for (let i = 1; i < calls.length; i++) expect(calls[i]![0]).toBeGreaterThan(calls[i - 1]![0]);
  });

  it('rejects with catalogue codes: conflict, too large, forbidden', async () => {
    const avatars = alice.storage.from('avatars');
    await avatars.upload('u/dup.txt', new Uint8Array([1]));
    const conflict = await avatars.upload('u/dup.txt', new Uint8Array([2])).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(BasaltError);
    expect((conflict as BasaltError).code).toBe('ALREADY_EXISTS');
    const replaced = await avatars.upload('u/dup.txt', new Uint8Array([2, 3]), { upsert: true });
    expect(replaced.size).toBe(2);
    const big = await avatars.upload('u/big.bin', new Uint8Array(2_000_001)).catch((e: unknown) => e);
    expect((big as BasaltError).code).toBe('PAYLOAD_TOO_LARGE');
    const stolen = await bob.storage
      .from('avatars')
      .download('u/dup.txt')
      .catch((e: unknown) => e);
    expect((stolen as BasaltError).code).toBe('FORBIDDEN');
    const overwritten = await bob.storage
      .from('avatars')
      .upload('u/dup.txt', new Uint8Array([9]), { upsert: true })
      .catch((e: unknown) => e);
    expect((overwritten as BasaltError).code).toBe('FORBIDDEN');
  });

  it('refuses the paths the server refuses instead of letting fetch resolve them elsewhere', async () => {
    const avatars = alice.storage.from('avatars');
    for (const path of ['x/../a.txt', './a.txt', 'x/.', '/a.txt', 'a//b', 'a/', '', 'a\u0001b']) {
      const refused = await avatars.upload(path, new Uint8Array([1])).catch((error: unknown) => error);
      expect(refused, path).toBeInstanceOf(BasaltError);
      expect((refused as BasaltError).code, path).toBe('INVALID_PATH');
    }
    await expect(avatars.download('x/../a.txt')).rejects.toMatchObject({ code: 'INVALID_PATH' });
    await expect(avatars.remove('..')).rejects.toMatchObject({ code: 'INVALID_PATH' });
    await expect(avatars.createSignedUrl('a/./b', 60)).rejects.toMatchObject({ code: 'INVALID_PATH' });
    expect(() => avatars.getPublicUrl('../a.txt')).toThrow(BasaltError);
    expect((await avatars.list({ prefix: 'a.txt' })).objects).toEqual([]);
    // Dots inside a segment are ordinary characters.
    expect((await avatars.upload('x/..a/.b', new Uint8Array([1]))).path).toBe('x/..a/.b');
  });

  it('lists with a prefix and pages with nextCursor', async () => {
    const avatars = bob.storage.from('avatars');
    for (const name of ['a', 'b', 'c']) await avatars.upload(`list/${name}.txt`, new Blob([name]));
    const first = await avatars.list({ prefix: 'list/', limit: 2 });
    expect(first.objects.map((o) => o.path)).toEqual(['list/a.txt', 'list/b.txt']);
    expect(first.nextCursor).not.toBeNull();
    const second = await avatars.list({ prefix: 'list/', limit: 2, after: first.nextCursor });
    expect(second.objects.map((o) => o.path)).toEqual(['list/c.txt']);
    expect(second.nextCursor).toBeNull();
  });

  it('removes objects', async () => {
    const avatars = alice.storage.from('avatars');
    await avatars.upload('u/gone.txt', new Blob(['x']));
    await avatars.remove('u/gone.txt');
    const missing = await avatars.download('u/gone.txt').catch((e: unknown) => e);
    expect((missing as BasaltError).code).toBe('NOT_FOUND');
  });

  it('gives public URLs and signed URLs that work without a token', async () => {
    await alice.storage.from('public-assets').upload('logo one.svg', new Blob(['<svg/>'], { type: 'image/svg+xml' }));
    const publicUrl = alice.storage.from('public-assets').getPublicUrl('logo one.svg');
    expect(publicUrl).toBe(`${server.url}/v1/storage/public-assets/logo%20one.svg`);
    const open = await fetch(publicUrl);
    expect(open.status).toBe(200);
    expect(await open.text()).toBe('<svg/>');

    await alice.storage.from('avatars').upload('u/private.txt', new Blob(['only alice']));
    const signed = await alice.storage.from('avatars').createSignedUrl('u/private.txt', 60);
    const parsed = new URL(signed);
    expect(parsed.searchParams.get('sig')).toBeTruthy();
    const viaSigned = await fetch(new URL(`${parsed.pathname}${parsed.search}`, server.url));
    expect(await viaSigned.text()).toBe('only alice');
    const refused = await bob.storage
      .from('avatars')
      .createSignedUrl('u/private.txt', 60)
      .catch((e: unknown) => e);
    expect((refused as BasaltError).code).toBe('FORBIDDEN');
  });
});
