import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { request, type TestApp } from '../../test/helpers.js';
import { haveBrowser, useBrowserSuite } from './browser-support.js';

// Resumable uploads in a real browser (Debian's chromium), cross-origin as an app would call
// them: tus-js-client against Basalt's tus endpoint, and the SDK's own client resuming an
// upload after a page reload.

const TUS_BUNDLE = fileURLToPath(new URL('../../node_modules/tus-js-client/dist/tus.min.js', import.meta.url));

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  setup: async (app) => {
    const created = await request(app.url, 'POST', '/v1/admin/buckets', {
      token: app.serviceKey,
      body: {
        name: 'videos',
        rules: {
          read: 'auth != null && object.owner == auth.uid',
          write: 'auth != null && object.owner == auth.uid',
        },
      },
    });
    expect(created.status).toBe(201);
  },
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

interface ResumableLike {
  start(): Promise<{ size: number; path: string }>;
  pause(): void;
}

interface BrowserGlobals {
  Basalt: {
    createClient(url: string): {
      auth: {
        signUp(input: { email: string; password: string }): Promise<{ user: { id: string } }>;
        session: { access_token: string } | null;
      };
      storage: {
        from(bucket: string): {
          createResumableUpload(
            path: string,
            body: Blob,
            options: { chunkSize: number; onProgress?: (sent: number) => void },
          ): ResumableLike;
          download(path: string): Promise<Blob>;
        };
      };
    };
  };
  tus: {
    Upload: new (
      file: Blob,
      options: Record<string, unknown> & { onSuccess: () => void; onError: (e: Error) => void },
    ) => { start(): void; url: string | null };
  };
}

describe.skipIf(!haveBrowser)('resumable uploads in a browser', () => {
  it('takes an upload from tus-js-client running in Chromium', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    await page.addScriptTag({ path: TUS_BUNDLE });
    const result = await page.evaluate(
      async ({ url, email }) => {
        const g = window as unknown as BrowserGlobals;
        const basalt = g.Basalt.createClient(url);
        await basalt.auth.signUp({ email, password: 'correct horse battery staple 42' });
        const size = 5 * 1024 * 1024 + 333;
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i++) bytes[i] = (i * 7) % 256;
        const progress: number[] = [];
        await new Promise<void>((resolve, reject) => {
          const upload = new g.tus.Upload(new Blob([bytes]), {
            endpoint: `${url}/v1/storage/uploads`,
            headers: { authorization: `Bearer ${basalt.auth.session?.access_token}` },
            metadata: { bucket: 'videos', path: 'me/tus-js.bin', content_type: 'video/mp4' },
            chunkSize: 2 * 1024 * 1024,
            retryDelays: [],
            onProgress: (sent: number) => progress.push(sent),
            onSuccess: () => resolve(),
            onError: reject,
          });
          upload.start();
        });
        const back = new Uint8Array(
          await (await basalt.storage.from('videos').download('me/tus-js.bin')).arrayBuffer(),
        );
        let same = back.length === size;
        for (let i = 0; same && i < size; i++) same = back[i] === bytes[i];
        return { same, last: progress[progress.length - 1], size };
      },
      { url: server.url, email: `tus-${Date.now()}@example.com` },
    );
    expect(result.same).toBe(true);
    expect(result.last).toBe(result.size);
    await context.close();
  });

  it('resumes an SDK upload after the page reloads, from the bytes the server has', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    const file = `
      const size = 3 * 1024 * 1024 + 10;
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = (i * 13) % 256;
      window.testFile = new File([bytes], 'clip.bin', { type: 'video/mp4', lastModified: 1700000000000 });
    `;
    await page.addScriptTag({ content: file });
    const first = await page.evaluate(
      async ({ url, email }) => {
        const g = window as unknown as BrowserGlobals & { testFile: File };
        const basalt = g.Basalt.createClient(url);
        await basalt.auth.signUp({ email, password: 'correct horse battery staple 42' });
        return new Promise<number>((resolve) => {
          const upload = basalt.storage.from('videos').createResumableUpload('me/clip.bin', g.testFile, {
            chunkSize: 1024 * 1024,
            onProgress: (sent) => {
              if (sent >= 1024 * 1024) {
                upload.pause();
                resolve(sent);
              }
            },
          });
          upload.start().catch(() => undefined);
        });
      },
      { url: server.url, email: `tus-reload-${Date.now()}@example.com` },
    );
    expect(first).toBe(1024 * 1024);

    await page.reload();
    await page.addScriptTag({ content: file });
    const second = await page.evaluate(async (url) => {
      const g = window as unknown as BrowserGlobals & { testFile: File };
      const basalt = g.Basalt.createClient(url);
      const progress: number[] = [];
      const object = await basalt.storage
        .from('videos')
        .createResumableUpload('me/clip.bin', g.testFile, {
          chunkSize: 1024 * 1024,
          onProgress: (n) => progress.push(n),
        })
        .start();
      const remembered = Object.keys(localStorage).filter((key) => key.startsWith('basalt-upload:'));
      return { size: object.size, firstProgress: progress[0], remembered };
    }, server.url);
    expect(second.size).toBe(3 * 1024 * 1024 + 10);
    expect(second.firstProgress).toBe(2 * 1024 * 1024);
    expect(second.remembered).toEqual([]);
    await context.close();
  });
});
