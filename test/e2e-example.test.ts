import sharp from 'sharp';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser, BrowserContext, Page, WebSocket } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser, launchChromium } from '../client-sdk/test/browser-support.js';
import { resolveServiceKey } from '../server/internal/service-key.js';
import { startExampleServer, type ExampleServer } from '../examples/server.js';
import { exampleSettings, readServiceKey, SettingsError } from '../examples/settings.js';
import { EXAMPLE_BUCKET, EXAMPLE_COLLECTION, setupExample } from '../examples/setup.js';
import {
  createTestDatabase,
  errorCode,
  request,
  startTestApp,
  waitFor,
  type TestApp,
  type TestDatabase,
} from './helpers.js';
import { noisePng } from './png.js';

// The todo example end to end, as people use it: Basalt set up by the same code as
// `npm run example`, the page served by the same static server, two people in two browser
// contexts of Debian's chromium. Person B reaches Basalt through a TCP link the test can cut,
// so a dropped network really drops the websocket (chromium's offline emulation leaves open
// websockets alone).

const repo = fileURLToPath(new URL('..', import.meta.url));
const screenshotDir = path.join(repo, 'test-results', 'e2e');
const LONG = 45_000;
const PASSWORD = 'correct horse battery staple';

/** A TCP link to Basalt that can be cut (every connection reset, new ones refused) and restored. */
interface Link {
  url: string;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

async function startLink(target: string): Promise<Link> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  let up = true;
  const server = net.createServer((client) => {
    if (!up) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    const pair = [client, upstream];
    for (const socket of pair) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        for (const other of pair) {
          sockets.delete(other);
          other.destroy();
        }
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    cut() {
      up = false;
      for (const socket of sockets) socket.resetAndDestroy();
      sockets.clear();
    },
    restore() {
      up = true;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The SDK built as client-sdk/scripts/build.mjs builds it, in memory: that script empties dist/ while it runs. */
async function bundleSdk(): Promise<Map<string, string>> {
  const result = await build({
    entryPoints: [path.join(repo, 'client-sdk', 'src', 'index.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2020'],
    minify: true,
    write: false,
    logLevel: 'silent',
  });
  return new Map([['index.js', result.outputFiles[0]?.text ?? '']]);
}

interface ItemState {
  id: string;
  title: string;
  done: boolean;
  version: string;
}

/** The list as the page shows it, in order. */
function listOf(page: Page): Promise<ItemState[]> {
  return page.$$eval('#items .item', (items) =>
    items.map((item) => ({
      id: (item as HTMLElement).dataset.id ?? '',
      title: item.querySelector('.title')?.textContent ?? '',
      done: (item.querySelector('.done') as HTMLInputElement | null)?.checked ?? false,
      version: (item as HTMLElement).dataset.version ?? '',
    })),
  );
}

async function waitForList(page: Page, what: string, check: (items: ItemState[]) => boolean): Promise<ItemState[]> {
  return waitFor(
    what,
    async () => {
      const items = await listOf(page);
      return check(items) ? items : null;
    },
    LONG,
  );
}

function itemByTitle(page: Page, title: string) {
  return page.locator('#items .item').filter({ has: page.locator('.title', { hasText: new RegExp(`^${title}$`) }) });
}

async function signUpInPage(page: Page, name: string, email: string): Promise<void> {
  await page.locator('#auth').waitFor({ state: 'visible', timeout: LONG });
  await page.fill('#name', name);
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-up');
  await page.locator('#board').waitFor({ state: 'visible', timeout: LONG });
  await page.locator('#live[data-state="live"]').waitFor({ timeout: LONG });
}

async function addItem(page: Page, title: string): Promise<void> {
  await page.fill('#new-title', title);
  await page.press('#new-title', 'Enter');
  await itemByTitle(page, title).waitFor({ timeout: LONG });
}

async function editTitle(page: Page, from: string, to: string): Promise<void> {
  // The title turns into an input while editing: hold on to the item by its id.
  const id = await itemByTitle(page, from).getAttribute('data-id');
  const item = page.locator(`#items .item[data-id="${id}"]`);
  await item.locator('.edit').click();
  await item.locator('.title-input').fill(to);
  await item.locator('.title-input').press('Enter');
  await itemByTitle(page, to).waitFor({ timeout: LONG });
}

/** Every frame a page's websockets received, with the time it arrived. */
interface FrameLog {
  sockets: Array<{ socket: WebSocket; openedAt: number; closedAt: number | null }>;
  frames: Array<{
    at: number;
    frame: { type?: string; change?: string; doc?: { id: string; version: number }; docs?: unknown[] };
  }>;
}

function recordFrames(page: Page): FrameLog {
  const log: FrameLog = { sockets: [], frames: [] };
  page.on('websocket', (socket) => {
    const entry = { socket, openedAt: Date.now(), closedAt: null as number | null };
    log.sockets.push(entry);
    socket.on('framereceived', ({ payload }) => {
      try {
        log.frames.push({ at: Date.now(), frame: JSON.parse(String(payload)) as FrameLog['frames'][number]['frame'] });
      } catch {
        // Not JSON: not a Basalt frame.
      }
    });
    socket.on('close', () => (entry.closedAt = Date.now()));
  });
  return log;
}

const changeFrames = (log: FrameLog, since = 0) =>
  log.frames.filter(({ at, frame }) => at >= since && frame.type === 'change').map(({ frame }) => frame);

let database: TestDatabase;
let basalt: TestApp;
let pagesForA: ExampleServer;
let pagesForB: ExampleServer;
let linkForB: Link;
let browser: Browser;
let contextA: BrowserContext;
let contextB: BrowserContext;
let pageA: Page;
let pageB: Page;
let framesB: FrameLog;
const run = randomBytes(4).toString('hex');

/** Runs a test step; when it fails, every open page is photographed into test-results/e2e/. */
async function photographedOnFailure(name: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    await mkdir(screenshotDir, { recursive: true });
    const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
    for (const [who, page] of [
      ['a', pageA],
      ['b', pageB],
    ] as const) {
      await page
        ?.screenshot({ path: path.join(screenshotDir, `${slug}-${who}.png`), fullPage: true, timeout: 10_000 })
        .catch(() => undefined);
    }
    throw error;
  }
}

function e2e(name: string, body: () => Promise<void>): void {
  it(name, { timeout: 180_000 }, () => photographedOnFailure(name, body));
}

beforeAll(async () => {
  database = await createTestDatabase();
  basalt = await startTestApp(database);
  const sdk = await bundleSdk();
  const root = path.join(repo, 'examples', 'todo');
  linkForB = await startLink(basalt.url);
  pagesForA = await startExampleServer({ root, basaltUrl: basalt.url, sdk });
  pagesForB = await startExampleServer({ root, basaltUrl: linkForB.url, sdk });
}, 180_000);

afterAll(async () => {
  await pagesForA?.close();
  await pagesForB?.close();
  await linkForB?.close();
  await basalt?.close();
  await database?.drop();
});

describe('npm run example', () => {
  it('sets up the collection and bucket, and setting up again restores them', async () => {
    // The same setup as `npm run example`.
    expect(await setupExample(basalt.url, basalt.serviceKey)).toEqual({ collection: 'created', bucket: 'created' });
    // Someone loosens the rules by hand; the next run puts them back and keeps the data.
    const loosened = await request(basalt.url, 'PATCH', `/v1/admin/collections/${EXAMPLE_COLLECTION.name}`, {
      token: basalt.serviceKey,
      body: { rules: { update: 'auth != null', delete: null } },
    });
    expect(loosened.status).toBe(200);
    const kept = await request(basalt.url, 'POST', `/v1/db/${EXAMPLE_COLLECTION.name}`, {
      token: basalt.serviceKey,
      body: { id: 'kept', data: { title: 'kept across setups', done: false } },
    });
    expect(kept.status).toBe(201);
    await request(basalt.url, 'PATCH', `/v1/admin/buckets/${EXAMPLE_BUCKET.name}`, {
      token: basalt.serviceKey,
      body: { public: false, max_file_size: 10 },
    });
    expect(await setupExample(basalt.url, basalt.serviceKey)).toEqual({ collection: 'updated', bucket: 'updated' });

    const collection = await request(basalt.url, 'GET', `/v1/admin/collections/${EXAMPLE_COLLECTION.name}`, {
      token: basalt.serviceKey,
    });
    expect(collection.status).toBe(200);
    expect((collection.body as { rules: unknown }).rules).toEqual(EXAMPLE_COLLECTION.rules);
    const bucket = await request(basalt.url, 'GET', `/v1/admin/buckets/${EXAMPLE_BUCKET.name}`, {
      token: basalt.serviceKey,
    });
    expect(bucket.status).toBe(200);
    expect(bucket.body).toMatchObject({
      public: true,
      max_file_size: EXAMPLE_BUCKET.max_file_size,
      rules: EXAMPLE_BUCKET.rules,
    });
    const still = await request(basalt.url, 'GET', `/v1/db/${EXAMPLE_COLLECTION.name}/kept`, {
      token: basalt.serviceKey,
    });
    expect(still.status).toBe(200);
    const removed = await request(basalt.url, 'DELETE', `/v1/db/${EXAMPLE_COLLECTION.name}/kept`, {
      token: basalt.serviceKey,
    });
    expect(removed.status).toBe(204);
  });

  it('finds the server and the service key `npm start` uses, from the same variables', async () => {
    expect(exampleSettings({}, '/srv/app')).toEqual({
      basaltUrl: 'http://127.0.0.1:8080',
      serviceKey: null,
      serviceKeyFile: '/srv/app/.basalt/service-key',
      host: '127.0.0.1',
      port: 5173,
    });
    expect(exampleSettings({ PORT: '9090', HOST: '0.0.0.0' }, '/srv/app').basaltUrl).toBe('http://127.0.0.1:9090');
    expect(exampleSettings({ PORT: '9090', HOST: '::1' }, '/srv/app').basaltUrl).toBe('http://[::1]:9090');
    expect(exampleSettings({ PORT: '9090', BASALT_URL: 'https://api.example.com/' }, '/srv/app').basaltUrl).toBe(
      'https://api.example.com',
    );
    expect(exampleSettings({ BASALT_DATA_DIR: 'data' }, '/srv/app').serviceKeyFile).toBe('/srv/app/data/service-key');
    expect(exampleSettings({ EXAMPLE_PORT: '0', EXAMPLE_HOST: '0.0.0.0' }, '/srv/app')).toMatchObject({
      port: 0,
      host: '0.0.0.0',
    });
    expect(() => exampleSettings({ EXAMPLE_PORT: 'eighty' }, '/srv/app')).toThrow(SettingsError);
    expect(() => exampleSettings({ BASALT_URL: 'ftp://x' }, '/srv/app')).toThrow(SettingsError);

    // The key file as the server writes it on first start.
    const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-example-'));
    try {
      const settings = exampleSettings({ BASALT_DATA_DIR: dataDir }, '/srv/app');
      await expect(readServiceKey(settings)).rejects.toThrow(/BASALT_SERVICE_KEY/);
      const generated = await resolveServiceKey(null, dataDir);
      await expect(readServiceKey(settings)).resolves.toBe(generated.key);
      await expect(readServiceKey({ ...settings, serviceKey: 'from-the-env' })).resolves.toBe('from-the-env');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses a wrong service key with a hint', async () => {
    await expect(setupExample(basalt.url, 'bsk_not-the-key-of-this-server-at-all-000000')).rejects.toThrow(
      /service key/,
    );
  });

  it('serves the page, its config and the SDK, and nothing outside the example', async () => {
    const page = await fetch(pagesForA.url);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<script type="module" src="app.js">');
    expect(page.headers.get('content-security-policy')).toContain(basalt.url);
    expect(await (await fetch(`${pagesForA.url}/config.js`)).text()).toContain(JSON.stringify(basalt.url));
    expect(await (await fetch(`${pagesForB.url}/config.js`)).text()).toContain(JSON.stringify(linkForB.url));
    const sdk = await fetch(`${pagesForA.url}/sdk/index.js`);
    expect(sdk.status).toBe(200);
    expect(sdk.headers.get('content-type')).toContain('text/javascript');
    expect((await fetch(`${pagesForA.url}/sdk/other.js`)).status).toBe(404);
    // package.json of the repository, two folders up: a type it serves, outside its folder.
    expect((await fetch(`${pagesForA.url}/..%2F..%2Fpackage.json`)).status).toBe(404);
    expect((await fetch(`${pagesForA.url}/missing.css`)).status).toBe(404);
    expect((await fetch(`${pagesForA.url}/app.js`, { method: 'POST' })).status).toBe(405);
  });
});

describe.skipIf(!haveBrowser)('the todo example in a browser', () => {
  beforeAll(async () => {
    browser = await launchChromium();
    contextA = await browser.newContext();
    contextB = await browser.newContext();
    pageA = await contextA.newPage();
    pageB = await contextB.newPage();
    framesB = recordFrames(pageB);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
  });

  e2e('two people sign up; what one adds and edits the other sees live', async () => {
    await Promise.all([pageA.goto(pagesForA.url), pageB.goto(pagesForB.url)]);
    await signUpInPage(pageA, 'Ada', `ada-${run}@example.com`);
    await signUpInPage(pageB, 'Bob', `bob-${run}@example.com`);
    await expect(pageA.locator('#me-name').textContent()).resolves.toBe('Ada');

    await addItem(pageA, 'Buy milk');
    await waitForList(pageB, "Ada's item on Bob's page", (items) => items.some((item) => item.title === 'Buy milk'));
    await editTitle(pageA, 'Buy milk', 'Buy oat milk');
    await waitForList(pageB, 'the edited title', (items) => items.some((item) => item.title === 'Buy oat milk'));
    await itemByTitle(pageA, 'Buy oat milk').locator('.done').check();
    await waitForList(pageB, 'the item done', (items) =>
      items.some((item) => item.title === 'Buy oat milk' && item.done),
    );

    await addItem(pageB, 'Water the plants');
    const seenByA = await waitForList(pageA, "Bob's item on Ada's page", (items) => items.length === 2);
    expect(seenByA.map((item) => item.title)).toEqual(['Buy oat milk', 'Water the plants']);
    expect(await listOf(pageB)).toEqual(await listOf(pageA));

    // Only the author changes an item: Bob's page offers no controls for Ada's, and the
    // server refuses Bob's write even when sent directly.
    const adasItemOnB = itemByTitle(pageB, 'Buy oat milk');
    await expect(adasItemOnB.locator('.done').isDisabled()).resolves.toBe(true);
    await expect(adasItemOnB.locator('.actions').isHidden()).resolves.toBe(true);
    await expect(itemByTitle(pageB, 'Water the plants').locator('.actions').isVisible()).resolves.toBe(true);
    const bobsToken = await pageB.evaluate(() => {
      const key = Object.keys(localStorage).find((name) => name.startsWith('basalt.auth.'));
      return (JSON.parse(localStorage.getItem(key ?? '') ?? '{}') as { session?: { access_token?: string } }).session
        ?.access_token;
    });
    expect(bobsToken).toBeTruthy();
    const adasId = seenByA[0]!.id;
    const denied = await request(basalt.url, 'PATCH', `/v1/db/${EXAMPLE_COLLECTION.name}/${adasId}`, {
      token: bobsToken,
      body: { data: { title: 'hijacked' } },
    });
    expect(denied.status).toBe(403);
    expect(errorCode(denied.body)).toBe('FORBIDDEN');
    await waitForList(pageA, 'the title unchanged', (items) => items[0]?.title === 'Buy oat milk');
  });

  e2e('an upload shows its progress and the photo appears for both people', async () => {
    const width = 320;
    const height = 240;
    const picture = noisePng(width, height);
    const item = itemByTitle(pageA, 'Buy oat milk');
    // Every value the progress bar takes, recorded as the page changes it.
    await pageA.evaluate(() => {
      const seen: number[] = [];
      (window as unknown as { progressSeen: number[] }).progressSeen = seen;
      new MutationObserver(() => {
        const bar = document.querySelector<HTMLProgressElement>('.item.is-uploading .upload-bar');
        if (bar && seen.at(-1) !== bar.value) seen.push(bar.value);
      }).observe(document.body, { subtree: true, attributes: true, childList: true, characterData: true });
    });
    // A slow uplink, so the upload takes long enough for progress to show between 0 and 100.
    const cdp = await contextA.newCDPSession(pageA);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: 96 * 1024,
    });
    try {
      await item.locator('.attach-input').setInputFiles({ name: 'noise.png', mimeType: 'image/png', buffer: picture });
      await item.locator('.upload').waitFor({ state: 'visible', timeout: LONG });
      await waitFor(
        'the upload to finish',
        async () =>
          (await item.locator('.upload-label').textContent()) === '100%' &&
          !(await item.getAttribute('class'))?.includes('is-uploading'),
        LONG,
      );
    } finally {
      await cdp.send('Network.emulateNetworkConditions', {
        offline: false,
        latency: 0,
        downloadThroughput: -1,
        uploadThroughput: -1,
      });
      await cdp.detach();
    }
    const progress = await pageA.evaluate(() => (window as unknown as { progressSeen: number[] }).progressSeen);
    expect(
      progress.some((value) => value > 0 && value < 100),
      `progress seen: ${progress.join(',')}`,
    ).toBe(true);
    expect(progress.at(-1)).toBe(100);
    // Values only grow.
    expect([...progress].sort((a, b) => a - b)).toEqual(progress);

    // Both people see the picture, decoded (a broken image has naturalWidth 0).
    for (const page of [pageA, pageB]) {
      const photo = itemByTitle(page, 'Buy oat milk').locator('.photo');
      await photo.waitFor({ state: 'visible', timeout: LONG });
      await waitFor(
        'the photo to load',
        () => photo.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth === 320),
        LONG,
      );
      expect(await photo.evaluate((img: HTMLImageElement) => img.naturalHeight)).toBe(height);
    }
    const src = await itemByTitle(pageA, 'Buy oat milk').locator('.photo').getAttribute('src');
    // The list shows a thumbnail the server made (WebP, at most 480 px), the original stays as uploaded.
    const thumbnailUrl = new URL(src ?? '');
    expect(thumbnailUrl.searchParams.get('format')).toBe('webp');
    const served = await fetch(thumbnailUrl);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toBe('image/webp');
    const thumbnail = await sharp(Buffer.from(await served.arrayBuffer())).metadata();
    expect([thumbnail.format, thumbnail.width, thumbnail.height]).toEqual(['webp', width, height]);
    const original = await fetch(`${thumbnailUrl.origin}${thumbnailUrl.pathname}`);
    expect(Buffer.from(await original.arrayBuffer()).equals(picture)).toBe(true);
    // The progress bar goes away once done.
    await item.locator('.upload').waitFor({ state: 'hidden', timeout: LONG });
  });

  e2e('after the network drops, the page reconnects and catches up on every change once', async () => {
    const before = await listOf(pageB);
    const socketsBefore = framesB.sockets.length;
    expect(framesB.sockets.some((entry) => entry.closedAt === null)).toBe(true);

    await contextB.setOffline(true);
    linkForB.cut();
    await waitFor('the websocket to drop', async () => framesB.sockets.every((entry) => entry.closedAt !== null), LONG);

    // Meanwhile Ada adds, edits, completes and deletes.
    await addItem(pageA, 'Call the plumber');
    await addItem(pageA, 'Book the trip');
    await addItem(pageA, 'Temporary note');
    await editTitle(pageA, 'Call the plumber', 'Call the plumber today');
    await itemByTitle(pageA, 'Book the trip').locator('.done').check();
    await waitForList(pageA, 'the trip done', (items) =>
      items.some((item) => item.title === 'Book the trip' && item.done),
    );
    await itemByTitle(pageA, 'Temporary note').locator('.delete').click();
    await itemByTitle(pageA, 'Temporary note').waitFor({ state: 'detached', timeout: LONG });
    const expected = await listOf(pageA);
    expect(expected.map((item) => item.title)).toEqual([
      'Buy oat milk',
      'Water the plants',
      'Call the plumber today',
      'Book the trip',
    ]);
    // Bob's page still shows the list as it was when the network went.
    expect(await listOf(pageB)).toEqual(before);

    const restoredAt = Date.now();
    linkForB.restore();
    await contextB.setOffline(false);
    const caughtUp = await waitForList(
      pageB,
      "Bob's page to catch up",
      (items) =>
        items.length === expected.length &&
        items.every((item, index) => JSON.stringify(item) === JSON.stringify(expected[index])),
    );
    expect(caughtUp).toEqual(expected);
    expect(new Set(caughtUp.map((item) => item.id)).size).toBe(caughtUp.length);

    // It was a new connection that resumed (no fresh snapshot), and each change came once.
    expect(framesB.sockets.length).toBeGreaterThan(socketsBefore);
    const resumed = framesB.frames.filter(({ at, frame }) => at >= restoredAt && frame.type === 'subscribed');
    expect(resumed.length).toBeGreaterThan(0);
    // A resume carries no fresh result: the missed changes follow as `change` frames.
    expect(resumed.every(({ frame }) => frame.docs === undefined)).toBe(true);
    expect(framesB.frames.some(({ at, frame }) => at >= restoredAt && frame.type === 'reset')).toBe(false);
    // Three adds, a rename, a tick and a delete: six changes missed, six replayed, in order.
    const replayed = changeFrames(framesB, restoredAt).map((frame) => frame.change);
    expect(replayed).toEqual(['added', 'added', 'added', 'modified', 'modified', 'removed']);
    const keys = changeFrames(framesB).map((frame) => `${frame.change}:${frame.doc?.id}:${frame.doc?.version}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.filter((key) => key.startsWith('removed:')).length).toBe(1);
  });

  e2e(
    'offline, the badge says so, what Bob adds and ticks off shows at once, and it lands when the network returns',
    async () => {
      await contextB.setOffline(true);
      linkForB.cut();
      await pageB.locator('#live[data-state="offline"]').waitFor({ timeout: LONG });

      await addItem(pageB, 'Written on the train');
      await itemByTitle(pageB, 'Water the plants').locator('.done').check();
      // Shown at once, as waiting to be sent; Ada sees none of it yet.
      await waitForList(pageB, "Bob's offline tick", (items) =>
        items.some((item) => item.title === 'Water the plants' && item.done),
      );
      await expect.poll(() => pageB.locator('#pending').textContent()).toBe('2 changes to send');
      expect(await itemByTitle(pageA, 'Written on the train').count()).toBe(0);

      linkForB.restore();
      await contextB.setOffline(false);
      await pageB.locator('#live[data-state="live"]').waitFor({ timeout: LONG });
      await pageB.locator('#pending').waitFor({ state: 'hidden', timeout: LONG });
      await itemByTitle(pageA, 'Written on the train').waitFor({ timeout: LONG });
      await waitForList(pageA, "Bob's tick on Ada's page", (items) =>
        items.some((item) => item.title === 'Water the plants' && item.done),
      );
      expect((await listOf(pageA)).filter((item) => item.title === 'Written on the train')).toHaveLength(1);
    },
  );

  e2e('once Bob signs out, nothing more reaches his page', async () => {
    await pageB.click('#sign-out');
    await pageB.locator('#auth').waitFor({ state: 'visible', timeout: LONG });
    const signedOutAt = Date.now();
    expect(await listOf(pageB)).toEqual([]);
    // The page let go of its live query, so the socket closes.
    await waitFor(
      "Bob's websocket to close",
      async () => framesB.sockets.every((entry) => entry.closedAt !== null),
      LONG,
    );

    await addItem(pageA, 'After Bob left');
    await editTitle(pageA, 'After Bob left', 'After Bob left, edited');
    await itemByTitle(pageA, 'Water the plants').waitFor({ timeout: LONG });
    // Ada's own page got her changes over the same change feed; give Bob's a moment more.
    const moment = Date.now() + 1_500;
    await waitFor('a moment', async () => Date.now() > moment, 5_000);
    expect(changeFrames(framesB, signedOutAt)).toEqual([]);
    expect(await listOf(pageB)).toEqual([]);
    expect(framesB.sockets.every((entry) => entry.closedAt !== null)).toBe(true);
    await expect(pageB.locator('#board').isHidden()).resolves.toBe(true);
  });
});
