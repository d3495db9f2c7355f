import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BasaltProcess } from '../../test/basalt-process.js';
import { createCollection, createTestDatabase, request, type TestDatabase } from '../../test/helpers.js';
import { haveBrowser, startBrowserHarness, type BrowserHarness } from './browser-support.js';
import { LoopbackProxy } from './offline-proxy.js';

// The offline acceptance of issue 21, in Chromium against a real Basalt process that the test
// stops and starts again (same port, same database). The pages reach it through a loopback
// proxy, which can swallow the answer of a write the server applied. Skipped without chromium.

let database: TestDatabase;
let server: BasaltProcess;
let proxy: LoopbackProxy;
let harness: BrowserHarness;
let browser: Browser;

const PASSWORD = 'correct horse battery staple 42';

beforeAll(async () => {
  if (!haveBrowser) return;
  database = await createTestDatabase();
  server = await BasaltProcess.spawn({ DATABASE_URL: database.url, BASALT_DB_POOL_MAX: '6' });
  [harness] = await Promise.all([startBrowserHarness(), server.ready()]);
  browser = harness.browser;
  await createCollection(server, {
    name: 'todos',
    rules: {
      read: 'auth != null && doc.owner == auth.uid',
      create: 'auth != null && incoming.owner == auth.uid',
      // A title of "forbidden" is refused: the write a test queues to see it rolled back.
      update: 'auth != null && doc.owner == auth.uid && incoming.data.title != "forbidden"',
      delete: 'auth != null && doc.owner == auth.uid',
    },
  });
  proxy = new LoopbackProxy(Number(new URL(server.url).port));
  await proxy.listen();
}, 90_000);

afterAll(async () => {
  await harness?.close();
  await proxy?.close();
  await server?.stop();
  await database?.drop();
});

/** Stops the server (its process ends; its database and data folder stay). */
async function stopServer(): Promise<void> {
  await server.stop({ keepData: true });
}

/** Starts it again on the same port and database, so the pages reconnect on their own. */
async function startServer(): Promise<void> {
  server = server.respawn();
  await server.ready();
}

/** What a page shows of one live query: titles in order, and the snapshot's flags. */
interface View {
  titles: string[];
  done: Record<string, boolean>;
  fromCache: boolean;
  hasPendingWrites: boolean;
  snapshots: number;
}
interface PageState {
  list: View | null;
  open: View | null;
  doc: { title: string | null; fromCache: boolean; hasPendingWrites: boolean } | null;
  firstSnapshotMs: number | null;
  writeErrors: Array<{ code: string; ids: string[] }>;
  pending: number;
  user: string | null;
}

type Data = { title: string; done: boolean; note?: string };
interface PageDoc {
  id: string;
  data: Data;
}
interface PageSnapshot {
  docs: PageDoc[];
  fromCache: boolean;
  hasPendingWrites: boolean;
}
interface PageQuery {
  onSnapshot(callback: (snapshot: PageSnapshot) => void, onError?: (error: Error) => void): () => void;
}
interface PageClient {
  auth: {
    ready: Promise<void>;
    user: { id: string } | null;
    signUp(input: { email: string; password: string }): Promise<unknown>;
  };
  db: {
    collection(name: string): PageQuery & {
      add(data: Data): Promise<PageDoc>;
      orderBy(path: string, direction?: string): PageQuery;
      where(path: string, op: string, value: unknown): PageQuery & { orderBy(path: string): PageQuery };
      doc(id: string): {
        update(patch: Partial<Data>): Promise<unknown>;
        delete(): Promise<void>;
        onSnapshot(
          callback: (doc: PageDoc | null, meta?: { fromCache: boolean; hasPendingWrites: boolean }) => void,
        ): () => void;
      };
    };
    pendingWrites(): number;
    waitForPendingWrites(): Promise<void>;
    onWriteError(listener: (error: { code: string }, write: { ops?: Array<{ id: string }> }) => void): () => void;
  };
}
interface PageWindow {
  Basalt: { createClient(url: string, options: unknown): PageClient };
  basalt: PageClient;
  state: Omit<PageState, 'pending' | 'user'>;
  /** Resolves with the ms the writes took to resolve (queued); rejects if one takes over 2 s. */
  queued(writes: Array<Promise<unknown>>): Promise<number>;
}

/** Loads the page with an offline-enabled client (IndexedDB) on the proxy; waits for its stored session. */
async function openApp(page: Page): Promise<void> {
  if (page.url() === 'about:blank') await page.goto(harness.pageUrl);
  else await page.reload();
  await page.evaluate(async (url) => {
    const w = window as unknown as PageWindow;
    w.basalt = w.Basalt.createClient(url, { offline: { persistence: 'indexeddb' } });
    w.state = { list: null, open: null, doc: null, firstSnapshotMs: null, writeErrors: [] };
    w.queued = async (writes) => {
      const started = performance.now();
      const late = new Promise((_, reject) => setTimeout(() => reject(new Error('a write was not queued')), 2_000));
      await Promise.race([Promise.all(writes), late]);
      return performance.now() - started;
    };
    w.basalt.db.onWriteError((error, write) =>
      w.state.writeErrors.push({ code: error.code, ids: (write.ops ?? []).map((op) => op.id) }),
    );
    await w.basalt.auth.ready;
  }, proxy.url);
}

/** Starts the page's live queries: every todo (oldest first), the open ones, and one document. */
async function startLive(page: Page, docId: string | null): Promise<void> {
  await page.evaluate((docId) => {
    const w = window as unknown as PageWindow;
    const todos = w.basalt.db.collection('todos');
    const started = performance.now();
    const view = (snapshot: PageSnapshot, previous: View | null): View => ({
      titles: snapshot.docs.map((doc) => doc.data.title),
      done: Object.fromEntries(snapshot.docs.map((doc) => [doc.data.title, doc.data.done])),
      fromCache: snapshot.fromCache,
      hasPendingWrites: snapshot.hasPendingWrites,
      snapshots: (previous?.snapshots ?? 0) + 1,
    });
    todos.orderBy('created_at').onSnapshot((snapshot) => {
      w.state.firstSnapshotMs ??= performance.now() - started;
      w.state.list = view(snapshot, w.state.list);
    });
    todos
      .where('done', '==', false)
      .orderBy('created_at')
      .onSnapshot((snapshot) => (w.state.open = view(snapshot, w.state.open)));
    if (docId) {
      todos.doc(docId).onSnapshot((doc, meta) => {
        w.state.doc = {
          title: doc?.data.title ?? null,
          fromCache: meta?.fromCache ?? false,
          hasPendingWrites: meta?.hasPendingWrites ?? false,
        };
      });
    }
  }, docId);
}

function state(page: Page): Promise<PageState> {
  return page.evaluate(() => {
    const w = window as unknown as PageWindow;
    return {
      ...w.state,
      pending: w.basalt.db.pendingWrites(),
      user: w.basalt.auth.user?.id ?? null,
    };
  });
}

/** The todos the server holds, read with the service key: title → {done, version}. */
async function serverTodos(): Promise<Record<string, { done: boolean; note?: string; version: number }>> {
  const answer = await request(server.url, 'POST', '/v1/db/todos/query', {
    token: server.serviceKey,
    body: { order_by: [['created_at', 'asc']] },
  });
  expect(answer.status).toBe(200);
  const docs = (answer.body as { docs: Array<{ data: Data; version: number }> }).docs;
  // Each title once: a write applied twice would show here as a second document.
  expect(new Set(docs.map((doc) => doc.data.title)).size).toBe(docs.length);
  return Object.fromEntries(
    docs.map((doc) => [
      doc.data.title,
      { done: doc.data.done, version: doc.version, ...(doc.data.note ? { note: doc.data.note } : {}) },
    ]),
  );
}

/** A new browser profile with a page signed up as a new user, who wrote `todos` online; their ids by title. */
async function signedUpWith(
  todos: Data[],
): Promise<{ context: BrowserContext; page: Page; ids: Record<string, string> }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await openApp(page);
  const ids = await page.evaluate(
    async ({ password, todos }) => {
      const w = window as unknown as PageWindow;
      await w.basalt.auth.signUp({ email: `offline-${crypto.randomUUID()}@example.com`, password });
      const ids: Record<string, string> = {};
      for (const data of todos) ids[data.title] = (await w.basalt.db.collection('todos').add(data)).id;
      return ids;
    },
    { password: PASSWORD, todos },
  );
  return { context, page, ids };
}

describe.skipIf(!haveBrowser)('offline-first in Chromium, with the server stopped and started', () => {
  let context: BrowserContext;

  it('keeps a live list working offline and lands every write exactly once when the server returns', async () => {
    let page: Page;
    let ids: Record<string, string>;
    ({ context, page, ids } = await signedUpWith(['milk', 'bread', 'eggs'].map((title) => ({ title, done: false }))));
    await startLive(page, ids.bread!);
    await expect
      .poll(async () => (await state(page)).list)
      .toMatchObject({ titles: ['milk', 'bread', 'eggs'], fromCache: false, hasPendingWrites: false });

    // Server stopped; the page reloads: the list comes from the cache.
    await stopServer();
    await openApp(page);
    expect((await state(page)).user).not.toBeNull();
    await startLive(page, ids.bread!);
    await expect
      .poll(async () => (await state(page)).list, { timeout: 2_000 })
      .toMatchObject({ titles: ['milk', 'bread', 'eggs'], fromCache: true, hasPendingWrites: false });
    expect((await state(page)).firstSnapshotMs).toBeLessThan(1_000);

    // Add two, edit one, delete one: every live query shows it at once, as pending.
    const queuedMs = await page
      .evaluate(({ bread, eggs }) => {
        const w = window as unknown as PageWindow;
        const todos = w.basalt.db.collection('todos');
        return w.queued([
          todos.add({ title: 'jam', done: false }),
          todos.add({ title: 'tea', done: true }),
          todos.doc(bread!).update({ title: 'bread and butter' }),
          todos.doc(eggs!).delete(),
        ]);
      }, ids)
      .catch(async (error: unknown) => {
        throw new Error(`offline writes: ${String(error)}; page state ${JSON.stringify(await state(page))}`);
      });
    const offline = {
      list: ['milk', 'bread and butter', 'jam', 'tea'],
      open: ['milk', 'bread and butter', 'jam'],
    };
    await expect
      .poll(
        async () => {
          const now = await state(page);
          return { list: now.list, open: now.open, doc: now.doc, pending: now.pending };
        },
        { timeout: 1_000 },
      )
      .toMatchObject({
        list: { titles: offline.list, fromCache: true, hasPendingWrites: true },
        open: { titles: offline.open, fromCache: true, hasPendingWrites: true },
        doc: { title: 'bread and butter', hasPendingWrites: true },
        pending: 4,
      });
    expect(queuedMs).toBeLessThan(1_000);

    // Reload again, still offline: the queued writes are still there and still shown.
    await openApp(page);
    await startLive(page, ids.bread!);
    await expect
      .poll(
        async () => {
          const now = await state(page);
          return { list: now.list, open: now.open, pending: now.pending };
        },
        { timeout: 2_000 },
      )
      .toMatchObject({
        list: { titles: offline.list, fromCache: true, hasPendingWrites: true },
        open: { titles: offline.open, fromCache: true, hasPendingWrites: true },
        pending: 4,
      });

    // Server started. The first write it applies loses its answer on the way back.
    proxy.dropAnswerOf((method, path) => path.startsWith('/v1/db/'));
    await startServer();
    // Documents created by one batch of the outbox share their created_at (the transaction's
    // time, docs/offline.md "Limits"), so jam and tea may come in either order here.
    const unordered = (list: { titles: string[] } | null) => list && { ...list, titles: [...list.titles].sort() };
    await expect
      .poll(async () => unordered((await state(page)).list), { timeout: 20_000, interval: 250 })
      .toMatchObject({ titles: [...offline.list].sort(), fromCache: false, hasPendingWrites: false });
    await page.evaluate(() => (window as unknown as PageWindow).basalt.db.waitForPendingWrites());
    const online = await state(page);
    expect(online.pending).toBe(0);
    expect(online.writeErrors).toEqual([]);
    // The other live queries are confirmed by their own `subscribed`, which may come a moment after the list's.
    await expect
      .poll(async () => {
        const { open, doc } = await state(page);
        return { open, doc };
      })
      .toMatchObject({
        open: { titles: offline.open, fromCache: false, hasPendingWrites: false },
        doc: { title: 'bread and butter', fromCache: false, hasPendingWrites: false },
      });

    // The server holds exactly that state, each write applied once.
    expect(await serverTodos()).toEqual({
      milk: { done: false, version: 1 },
      'bread and butter': { done: false, version: 2 },
      jam: { done: false, version: 1 },
      tea: { done: true, version: 1 },
    });
    const dropped = proxy.writes.filter((write) => write.answerDropped);
    expect(dropped).toHaveLength(1);
    const key = dropped[0]!.idempotencyKey;
    expect(key).toBeTruthy();
    // The write whose answer was lost went again with the same key, and the server answered it.
    const resent = proxy.writes.filter((write) => write.idempotencyKey === key && !write.answerDropped);
    expect(resent.length).toBeGreaterThanOrEqual(1);
    expect(resent.at(-1)!.status).toBeLessThan(300);
    await context.close();
  }, 60_000);

  it('keeps two tabs offline on one outbox: edits of different fields both land, a refused write is rolled back and reported, a closed tab hands over', async () => {
    let first: Page;
    let ids: Record<string, string>;
    ({
      context,
      page: first,
      ids,
    } = await signedUpWith([
      { title: 'plan', done: false, note: '' },
      { title: 'keep', done: false },
    ]));
    // The second tab opens signed in (the session is shared) on the same cache.
    const second = await context.newPage();
    await openApp(second);
    for (const page of [first, second]) await startLive(page, ids.plan!);
    for (const page of [first, second]) {
      await expect
        .poll(async () => (await state(page)).list)
        .toMatchObject({ titles: ['plan', 'keep'], fromCache: false });
    }

    await stopServer();
    const writesBefore = proxy.writes.length;
    // Each tab edits another field of the same document; the first also queues a write the
    // rules refuse, the second one that lands.
    await first.evaluate(({ plan, keep }) => {
      const { basalt, queued } = window as unknown as PageWindow;
      const todos = basalt.db.collection('todos');
      return queued([todos.doc(plan!).update({ title: 'plan v2' }), todos.doc(keep!).update({ title: 'forbidden' })]);
    }, ids);
    await second.evaluate(({ plan }) => {
      const { basalt, queued } = window as unknown as PageWindow;
      const todos = basalt.db.collection('todos');
      return queued([todos.doc(plan!).update({ done: true }), todos.add({ title: 'late', done: false })]);
    }, ids);
    // Each tab shows the other's pending writes as well as its own.
    for (const page of [first, second]) {
      await expect
        .poll(async () => {
          const now = await state(page);
          return { list: now.list, pending: now.pending };
        })
        .toMatchObject({
          list: {
            titles: ['plan v2', 'forbidden', 'late'],
            done: { 'plan v2': true, forbidden: false, late: false },
            hasPendingWrites: true,
          },
          pending: 4,
        });
    }

    // The first tab (the one that sends) closes; the second takes over when the server is back.
    await first.close();
    await startServer();
    await expect
      .poll(async () => (await state(second)).list, { timeout: 20_000, interval: 250 })
      .toMatchObject({
        titles: ['plan v2', 'keep', 'late'],
        done: { 'plan v2': true, keep: false, late: false },
        fromCache: false,
        hasPendingWrites: false,
      });
    const after = await state(second);
    expect(after.pending).toBe(0);
    expect(after.writeErrors).toEqual([{ code: 'FORBIDDEN', ids: [ids.keep] }]);
    expect(await serverTodos()).toMatchObject({
      'plan v2': { done: true, version: 3 },
      keep: { done: false, version: 1 },
      late: { done: false, version: 1 },
    });
    // One tab sent the outbox: the server answered each write once (attempts while it was
    // down never reached it).
    const sent = proxy.writes.slice(writesBefore);
    expect(sent.every((write) => write.idempotencyKey !== null)).toBe(true);
    const answered = sent.filter((write) => write.status !== null).map((write) => write.idempotencyKey);
    expect(answered).toHaveLength(4);
    expect(new Set(answered).size).toBe(4);
    await context.close();
  }, 60_000);
});
