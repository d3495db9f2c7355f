import net from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { haveBrowser, useBrowserSuite, type PageLiveQueries } from './browser-support.js';
import { createCollection } from '../../test/documents-support.js';
import { describe, expect, it } from 'vitest';
import { request, type TestApp } from '../../test/helpers.js';

// The realtime socket of a page that goes offline, sleeps, or keeps a socket that died
// silently. The page's clock is paused (Playwright's clock), so the SDK's backoff timers never
// fire by themselves: only the wake-up handling (online, visibilitychange, pageshow, and the
// ping probe) can bring the socket back. Skipped where chromium is absent.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

/** A TCP proxy to the server: can cut its connections (refusing new ones), or freeze them (half-open). */
class Proxy {
  private server: net.Server | null = null;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  port = 0;

  constructor(private readonly target: number) {}

  async listen(): Promise<void> {
    const server = net.createServer((socket) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      const pair: [net.Socket, net.Socket] = [socket, upstream];
      this.pairs.add(pair);
      socket.pipe(upstream).pipe(socket);
      const close = () => {
        this.pairs.delete(pair);
        socket.destroy();
        upstream.destroy();
      };
      socket.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const [socket, upstream] of this.pairs) {
      socket.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }

  /** Open connections stop carrying anything, in either direction, without closing. */
  freeze(): void {
    for (const [socket, upstream] of this.pairs) {
      socket.unpipe(upstream);
      upstream.unpipe(socket);
      socket.pause();
      upstream.pause();
    }
  }
}

useBrowserSuite({
  setup: (app) => createCollection(app, { name: 'notes', rules: { read: 'true' } }),
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

type Sdk = {
  createClient(url: string): PageLiveQueries & { realtime: { connected: boolean } };
};
type Watch = { ids: string[]; snapshots: number; client: ReturnType<Sdk['createClient']> };

/**
 * A page in a new browser context whose client follows the notes of `kind` through a proxy
 * to the server: its first snapshot arrived, and its clock stands still from a second on.
 */
async function watchingThroughProxy(kind: string): Promise<{ proxy: Proxy; context: BrowserContext; page: Page }> {
  const proxy = new Proxy(Number(new URL(server.url).port));
  await proxy.listen();
  const context = await browser.newContext();
  const url = `http://127.0.0.1:${proxy.port}`;
  const page = await context.newPage();
  await page.clock.install();
  await page.goto(pageUrl);
  await page.evaluate(
    ({ url, kind }) => {
      const w = window as unknown as { Basalt: Sdk; watch: Watch };
      const client = w.Basalt.createClient(url);
      const watch: Watch = { ids: [], snapshots: 0, client };
      w.watch = watch;
      client.db
        .collection('notes')
        .where('kind', '==', kind)
        .onSnapshot((snapshot) => {
          watch.snapshots++;
          watch.ids = snapshot.docs.map((doc) => doc.id).sort();
        });
    },
    { url, kind },
  );
  await expect.poll(() => page.evaluate(() => (window as unknown as { watch: Watch }).watch.snapshots)).toBe(1);
  await page.clock.pauseAt(Date.now() + 1_000);
  return { proxy, context, page };
}

const ids = (page: Page) => page.evaluate(() => (window as unknown as { watch: Watch }).watch.ids);
const connected = (page: Page) =>
  page.evaluate(() => (window as unknown as { watch: Watch }).watch.client.realtime.connected);

async function put(id: string, kind: string): Promise<void> {
  const response = await request(server.url, 'PUT', `/v1/db/notes/${id}`, {
    token: server.serviceKey,
    body: { data: { kind } },
  });
  expect(response.status).toBeLessThan(300);
}

describe.skipIf(!haveBrowser)('realtime across wake-ups in a browser', () => {
  it('reconnects at once when the page comes back online or is shown again', async () => {
    const { proxy, context, page } = await watchingThroughProxy('wake');

    for (const [round, wake] of [
      ['online', () => context.setOffline(true).then(() => context.setOffline(false))],
      ['shown', () => page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')))],
      ['pageshow', () => page.evaluate(() => window.dispatchEvent(new Event('pageshow')))],
    ] as const) {
      await proxy.cut();
      await expect.poll(() => connected(page)).toBe(false);
      await put(`${round}-missed`, 'wake');
      await proxy.listen();
      // The reconnect timer is frozen with the clock: nothing happens by itself.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(await ids(page)).not.toContain(`${round}-missed`);
      await wake();
      await expect.poll(() => ids(page), { timeout: 5_000 }).toContain(`${round}-missed`);
    }
    expect(await ids(page)).toEqual(['online-missed', 'pageshow-missed', 'shown-missed']);
    await context.close();
    await proxy.cut();
  }, 60_000);

  it('replaces a socket that died silently once a wake-up ping goes unanswered', async () => {
    const { proxy, context, page } = await watchingThroughProxy('frozen');

    proxy.freeze();
    await put('while-frozen', 'frozen');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await connected(page)).toBe(true);
    expect(await ids(page)).toEqual([]);
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    // The probe's deadline (3 s) and the reconnect's first backoff step pass on the page's clock.
    await page.clock.runFor(3_500);
    await expect.poll(() => ids(page), { timeout: 5_000 }).toEqual(['while-frozen']);
    await context.close();
    await proxy.cut();
  }, 60_000);
});
