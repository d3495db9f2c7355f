import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { createBucket, useTestApp } from '../../test/helpers.js';
import { signedInClient } from './sdk-support.js';
import { BasaltError, type BasaltClient } from '../src/index.js';

const server = useTestApp();
let alice: BasaltClient;

/** A Map-backed stand-in for localStorage: what a browser keeps across a reload. */
function memoryStorage(): Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> & { entries: Map<string, string> } {
  const entries = new Map<string, string>();
  return {
    entries,
    getItem: (key) => entries.get(key) ?? null,
    setItem: (key, value) => void entries.set(key, value),
    removeItem: (key) => void entries.delete(key),
  };
}

beforeAll(async () => {
  await createBucket(server, {
    name: 'big',
    public: true,
    rules: { read: 'auth != null', write: 'auth != null && object.owner == auth.uid' },
  });
  alice = await signedInClient(server.url);
});

describe('resumable uploads and transforms in the SDK', () => {
  it('goes resumable on its own above 6 MiB, reporting progress, and the bytes arrive intact', async () => {
    const data = new Uint8Array(randomBytes(7 * 1024 * 1024));
    const progress: number[] = [];
    const object = await alice.storage
      .from('big')
      .upload('auto.bin', data, { onProgress: (sent) => progress.push(sent), contentType: 'application/x-big' });
    expect(object).toMatchObject({ path: 'auto.bin', size: data.length, content_type: 'application/x-big' });
    expect(progress.at(-1)).toBe(data.length);
    const back = new Uint8Array(await (await alice.storage.from('big').download('auto.bin')).arrayBuffer());
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
  });

  it('pauses and resumes, and resumes a remembered upload after a "reload"', async () => {
    const data = new Uint8Array(randomBytes(3 * 1024 * 1024));
    const urlStorage = memoryStorage();
    let sent = 0;
    const pausedAfterOne = new Promise<void>((resolve) => {
      const upload = alice.storage.from('big').createResumableUpload('paused.bin', data, {
        chunkSize: 1024 * 1024,
        urlStorage,
        onProgress: (n) => {
          sent = n;
          if (n >= 1024 * 1024) {
            upload.pause();
            resolve();
          }
        },
      });
      upload.start().catch(() => undefined);
    });
    await pausedAfterOne;
    expect(sent).toBe(1024 * 1024);
    expect(urlStorage.entries.size).toBe(1);
    // A new upload object for the same file (as after a page reload) finds the URL and resumes.
    const progress: number[] = [];
    const resumed = alice.storage.from('big').createResumableUpload('paused.bin', data, {
      chunkSize: 1024 * 1024,
      urlStorage,
      onProgress: (n) => progress.push(n),
    });
    const object = await resumed.start();
    expect(object.size).toBe(data.length);
    expect(progress[0]).toBeGreaterThan(1024 * 1024);
    expect(urlStorage.entries.size).toBe(0);
    const back = new Uint8Array(await (await alice.storage.from('big').download('paused.bin')).arrayBuffer());
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
  });

  it('rejects with the catalogue error when the server refuses the upload', async () => {
    const error = await alice.storage
      .from('nope')
      .upload('x.bin', new Uint8Array(10), { resumable: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BasaltError);
    expect((error as BasaltError).code).toBe('NOT_FOUND');
  });

  it('builds transform URLs: public, signed and downloads', async () => {
    const jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#3366aa' } })
      .jpeg()
      .toBuffer();
    const photos = alice.storage.from('big');
    await photos.upload('photo.jpg', new Blob([new Uint8Array(jpeg)], { type: 'image/jpeg' }));
    const publicUrl = photos.getPublicUrl('photo.jpg', { transform: { width: 64, format: 'webp' } });
    expect(publicUrl).toBe(`${server.url}/v1/storage/big/photo.jpg?width=64&format=webp`);
    const thumb = await sharp(Buffer.from(await (await fetch(publicUrl)).arrayBuffer())).metadata();
    expect([thumb.format, thumb.width]).toEqual(['webp', 64]);

    const signed = new URL(await photos.createSignedUrl('photo.jpg', 60, { transform: { width: 32, format: 'png' } }));
    const signedRes = await fetch(`${server.url}${signed.pathname}${signed.search}`);
    const signedMeta = await sharp(Buffer.from(await signedRes.arrayBuffer())).metadata();
    expect([signedMeta.format, signedMeta.width]).toEqual(['png', 32]);
    // Both options at once: the expiry comes back and the URL signs the transform.
    const before = Date.now();
    const withExpiry = await photos.createSignedUrl('photo.jpg', 90, {
      withExpiry: true,
      transform: { width: 24, format: 'webp' },
    });
    expect(Object.keys(withExpiry).sort()).toEqual(['expires_at', 'url']);
    expect(Date.parse(withExpiry.expires_at)).toBeGreaterThan(before + 80_000);
    const both = new URL(withExpiry.url);
    expect(both.searchParams.get('width')).toBe('24');
    const bothMeta = await sharp(
      Buffer.from(await (await fetch(`${server.url}${both.pathname}${both.search}`)).arrayBuffer()),
    ).metadata();
    expect([bothMeta.format, bothMeta.width]).toEqual(['webp', 24]);

    const blob = await photos.download('photo.jpg', { transform: { height: 48, format: 'jpeg', quality: 50 } });
    expect(blob.type).toBe('image/jpeg');
    const downloaded = await sharp(Buffer.from(await blob.arrayBuffer())).metadata();
    expect(downloaded.height).toBe(48);
  });
});
