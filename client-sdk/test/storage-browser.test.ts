import type { Browser } from 'playwright-core';
import { haveBrowser, useBrowserSuite } from './browser-support.js';
import { describe, expect, it } from 'vitest';
import { request, type TestApp } from '../../test/helpers.js';

// The storage SDK in a real browser (Debian's chromium), cross-origin as an app would call it:
// uploads through XMLHttpRequest with progress, downloads as Blobs, signed URLs, listings.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  setup: async (app) => {
    const created = await request(app.url, 'POST', '/v1/admin/buckets', {
      token: app.serviceKey,
      body: {
        name: 'photos',
        rules: {
          read: 'auth != null && object.owner == auth.uid',
          write: 'auth != null && object.owner == auth.uid',
          delete: 'auth != null && object.owner == auth.uid',
        },
      },
    });
    expect(created.status).toBe(201);
  },
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

interface BucketLike {
  upload(
    path: string,
    body: Blob,
    options?: { upsert?: boolean; onProgress?: (sent: number, total: number | null) => void },
  ): Promise<{ path: string; size: number; content_type: string; owner: string }>;
  download(path: string): Promise<Blob>;
  createSignedUrl(path: string, expiresIn: number): Promise<string>;
  list(options?: { prefix?: string }): Promise<{ objects: Array<{ path: string }>; nextCursor: string | null }>;
  remove(path: string): Promise<void>;
}

interface BasaltGlobal {
  Basalt: {
    createClient(url: string): {
      auth: { signUp(input: { email: string; password: string }): Promise<{ user: { id: string } }> };
      storage: { from(bucket: string): BucketLike };
    };
  };
}

describe.skipIf(!haveBrowser)('storage in a browser', () => {
  it('uploads with XMLHttpRequest progress, downloads, signs, lists and removes', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    const result = await page.evaluate(
      async ({ url, email }) => {
        const basalt = (window as unknown as BasaltGlobal).Basalt.createClient(url);
        const { user } = await basalt.auth.signUp({ email, password: 'correct horse battery staple 42' });
        const photos = basalt.storage.from('photos');
        const size = 3 * 1024 * 1024;
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i++) bytes[i] = i % 251;
        const progress: Array<[number, number | null]> = [];
        const uploaded = await photos.upload('me/big photo.jpg', new Blob([bytes], { type: 'image/jpeg' }), {
          onProgress: (sent, total) => progress.push([sent, total]),
        });
        const downloaded = new Uint8Array(await (await photos.download('me/big photo.jpg')).arrayBuffer());
        let same = downloaded.length === size;
        for (let i = 0; same && i < size; i += 4093) same = downloaded[i] === i % 251;
        const signed = await photos.createSignedUrl('me/big photo.jpg', 60);
        const viaSigned = await fetch(signed.replace(/^https?:\/\/[^/]+/, url));
        const listed = await photos.list({ prefix: 'me/' });
        await photos.remove('me/big photo.jpg');
        const after = await photos.list({ prefix: 'me/' });
        return {
          uid: user.id,
          uploaded,
          progress,
          same,
          signedStatus: viaSigned.status,
          signedSize: (await viaSigned.arrayBuffer()).byteLength,
          listed: listed.objects.map((o) => o.path),
          after: after.objects.length,
        };
      },
      { url: server.url, email: `storage-browser-${Date.now()}@example.com` },
    );
    expect(result.uploaded).toMatchObject({
      path: 'me/big photo.jpg',
      size: 3 * 1024 * 1024,
      content_type: 'image/jpeg',
      owner: result.uid,
    });
    expect(result.progress.length).toBeGreaterThan(0);
    expect(result.progress[result.progress.length - 1]).toEqual([3 * 1024 * 1024, 3 * 1024 * 1024]);
    expect(result.same).toBe(true);
    expect(result.signedStatus).toBe(200);
    expect(result.signedSize).toBe(3 * 1024 * 1024);
    expect(result.listed).toEqual(['me/big photo.jpg']);
    expect(result.after).toBe(0);
    await context.close();
  }, 60_000);
});
