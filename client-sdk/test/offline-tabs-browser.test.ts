import type { Browser, Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { STRONG_PASSWORD } from '../../test/auth-helpers.js';
import { createCollection, request, type TestApp } from '../../test/helpers.js';
import { haveBrowser, useBrowserSuite } from './browser-support.js';

// Many tabs of one origin with offline on (IndexedDB): one socket for all of them, held by the
// tab that holds the offline lock; the other tabs' live queries and live aggregates go through
// it, and a closing leader hands the socket over. In Chromium against a real server, whose
// /metrics gauges count the open realtime sockets and the live subscriptions. Skipped without
// chromium.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  setup: async (app) => {
    // Readable by the user each document is for: results reach a tab only through a socket
    // that carries that user's session.
    await createCollection(app, {
      name: 'tasks',
      rules: {
        read: 'auth != null && doc.data.for == auth.uid',
        create: 'auth != null && incoming.data.for == auth.uid',
      },
    });
  },
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

interface TabState {
  /** Each snapshot's titles, in order. */
  lists: string[][];
  fromCache: boolean[];
  pending: boolean[];
  counts: number[];
  errors: string[];
}
interface PageQuery {
  onSnapshot(
    callback: (snapshot: {
      docs: Array<{ data: { title: string } }>;
      fromCache: boolean;
      hasPendingWrites: boolean;
    }) => void,
    onError?: (error: { code: string }) => void,
  ): () => void;
}
interface PageWindow {
  Basalt: {
    createClient(url: string, options: unknown): PageClient;
    count(): unknown;
  };
  basalt: PageClient;
  state: TabState;
  stops: Array<() => void>;
}
interface PageClient {
  auth: { ready: Promise<void>; user: { id: string } | null; signUp(input: object): Promise<unknown> };
  db: {
    collection(name: string): {
      orderBy(path: string): PageQuery;
      add(data: object): Promise<unknown>;
      aggregate(spec: object): { onSnapshot(callback: (groups: Array<{ values: { n: number } }>) => void): () => void };
    };
  };
}

/** The frames a page's websockets sent and received, and how many it opened. */
interface Wire {
  opened: number;
  sent: Array<Record<string, unknown>>;
  received: Array<Record<string, unknown>>;
}

function recordWire(page: Page): Wire {
  const wire: Wire = { opened: 0, sent: [], received: [] };
  page.on('websocket', (socket) => {
    if (!socket.url().endsWith('/v1/realtime')) return;
    wire.opened++;
    const parse = (payload: string | Buffer) => JSON.parse(String(payload)) as Record<string, unknown>;
    socket.on('framesent', (frame) => wire.sent.push(parse(frame.payload)));
    socket.on('framereceived', (frame) => wire.received.push(parse(frame.payload)));
  });
  return wire;
}

/** Opens the app with an offline client (IndexedDB) and waits for its session. */
async function openTab(page: Page): Promise<void> {
  await page.goto(pageUrl);
  await page.evaluate(async (url) => {
    const w = window as unknown as PageWindow;
    w.basalt = w.Basalt.createClient(url, { offline: { persistence: 'indexeddb' } });
    w.state = { lists: [], fromCache: [], pending: [], counts: [], errors: [] };
    w.stops = [];
    await w.basalt.auth.ready;
  }, server.url);
}

/** Starts the tab's live list of tasks (oldest first); with `aggregate`, a live count of them too. */
function follow(page: Page, aggregate = false): Promise<void> {
  return page.evaluate((aggregate) => {
    const w = window as unknown as PageWindow;
    const tasks = w.basalt.db.collection('tasks');
    w.stops.push(
      tasks.orderBy('created_at').onSnapshot(
        (snapshot) => {
          w.state.lists.push(snapshot.docs.map((doc) => doc.data.title));
          w.state.fromCache.push(snapshot.fromCache);
          w.state.pending.push(snapshot.hasPendingWrites);
        },
        (error) => w.state.errors.push(error.code),
      ),
    );
    if (aggregate) {
      w.stops.push(
        tasks.aggregate({ n: w.Basalt.count() }).onSnapshot((groups) => w.state.counts.push(groups[0]?.values.n ?? 0)),
      );
    }
  }, aggregate);
}

function tabState(page: Page): Promise<TabState> {
  return page.evaluate(() => (window as unknown as PageWindow).state);
}

/** The server's gauges: open realtime sockets and live subscriptions. */
async function gauges(): Promise<{ sockets: number; subscriptions: number }> {
  const metrics = await request(server.url, 'GET', '/metrics', { token: server.serviceKey });
  const gauge = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics.text)?.[1] ?? NaN);
  return { sockets: gauge('basalt_realtime_connections'), subscriptions: gauge('basalt_realtime_subscriptions') };
}

/** Whether this page's tab holds the offline lock (it leads the socket). */
function leads(page: Page): Promise<boolean> {
  return page.evaluate(async () => {
    // Only one tab exists when this is asked: any holder of the lock is this one.
    const { held = [] } = await navigator.locks.query();
    return held.some((lock) => lock.name?.startsWith('basalt.offline:') && !lock.name.includes(':tab:'));
  });
}

let written = 0;
/** A task for `user`, written by a third party (the service key), not by any tab. */
async function writeTask(user: string, title: string): Promise<void> {
  const answer = await request(server.url, 'PUT', `/v1/db/tasks/t${++written}`, {
    token: server.serviceKey,
    body: { data: { title, for: user } },
  });
  expect(answer.status).toBeLessThan(300);
}

describe.skipIf(!haveBrowser)('many tabs share one realtime socket', () => {
  it('opens one socket for three tabs, relays the followers’ live queries, and hands the socket over when the leader closes', async () => {
    const context = await browser.newContext();
    const [leader, second, third] = [await context.newPage(), await context.newPage(), await context.newPage()];
    const wires = new Map([leader, second, third].map((page) => [page, recordWire(page)]));

    await openTab(leader);
    const user = await leader.evaluate(async (password) => {
      const w = window as unknown as PageWindow;
      await w.basalt.auth.signUp({ email: `tabs-${crypto.randomUUID()}@example.com`, password });
      return w.basalt.auth.user?.id ?? '';
    }, STRONG_PASSWORD);
    expect(user).not.toBe('');
    await writeTask(user, 'one');
    await follow(leader);
    await expect.poll(() => leads(leader)).toBe(true);
    // The other tabs open signed in: the session is shared by the origin's tabs.
    for (const page of [second, third]) await openTab(page);
    await follow(second, true);
    await follow(third);
    // The third tab's second live query, stopped further down.
    await follow(third);

    for (const page of [leader, second, third]) {
      await expect.poll(async () => (await tabState(page)).lists.at(-1)).toEqual(['one']);
    }
    await expect.poll(async () => (await tabState(second)).counts.at(-1)).toBe(1);
    // One socket, carrying every tab's subscriptions: 4 live queries and 1 aggregate.
    await expect.poll(gauges).toEqual({ sockets: 1, subscriptions: 5 });
    expect(wires.get(leader)!.opened).toBe(1);
    expect(wires.get(second)!.opened).toBe(0);
    expect(wires.get(third)!.opened).toBe(0);

    // A third party's write reaches the followers' live queries through the leader's socket.
    await writeTask(user, 'two');
    for (const page of [second, third]) {
      await expect.poll(async () => (await tabState(page)).lists.at(-1)).toEqual(['one', 'two']);
      expect((await tabState(page)).fromCache.at(-1)).toBe(false);
    }
    await expect.poll(async () => (await tabState(second)).counts.at(-1)).toBe(2);

    // A follower's unsubscribe ends the leader's subscription on the server.
    await third.evaluate(() => (window as unknown as PageWindow).stops.pop()?.());
    await expect.poll(gauges).toEqual({ sockets: 1, subscriptions: 4 });

    // The leader closes; tasks written meanwhile by a third party must not be missed, and a
    // follower's own write meanwhile shows at once, pending, in both tabs.
    await leader.close();
    await second.evaluate((user) => {
      void (window as unknown as PageWindow).basalt.db.collection('tasks').add({ title: 'mine', for: user });
    }, user);
    await writeTask(user, 'three');
    await writeTask(user, 'four');
    // Tasks the outbox sends get the server's created_at when they land: compared as sets.
    const titles = async (page: Page) => [...((await tabState(page)).lists.at(-1) ?? [])].sort();
    for (const page of [second, third]) {
      await expect.poll(() => titles(page), { timeout: 15_000 }).toEqual(['four', 'mine', 'one', 'three', 'two']);
      // Shown pending before it landed; confirmed since.
      const { lists, pending } = await tabState(page);
      expect(lists.some((list, i) => list.includes('mine') && pending[i])).toBe(true);
      await expect.poll(async () => (await tabState(page)).pending.at(-1)).toBe(false);
    }
    await expect.poll(async () => (await tabState(second)).counts.at(-1)).toBe(5);
    // One of the followers took over: it opened one socket, the other none.
    const opened = [second, third].map((page) => wires.get(page)!.opened);
    expect([...opened].sort()).toEqual([0, 1]);
    const [next, other] = opened[0] === 1 ? [second, third] : [third, second];
    // Its live queries resumed from their cursors: no full re-read.
    const wire = wires.get(next)!;
    const subscribes = wire.sent.filter((frame) => frame.type === 'subscribe' && frame.aggregate === undefined);
    expect(subscribes).toHaveLength(2);
    for (const frame of subscribes) expect(frame.resume_from).toEqual(expect.any(String));
    expect(wire.received.filter((frame) => frame.type === 'reset')).toEqual([]);
    for (const frame of wire.received.filter((frame) => frame.type === 'subscribed' && frame.docs !== undefined)) {
      // Only the aggregate (it has no cursor) is read afresh.
      expect(subscribes.map((subscribe) => subscribe.id)).not.toContain(frame.id);
    }
    // The old socket closed, the new one serves both tabs: 2 live queries and 1 aggregate.
    await expect.poll(gauges, { timeout: 10_000 }).toEqual({ sockets: 1, subscriptions: 3 });

    // Later changes still reach both tabs; no snapshot of the hand-over lost what was shown.
    await writeTask(user, 'five');
    for (const page of [second, third]) {
      await expect.poll(() => titles(page)).toEqual(['five', 'four', 'mine', 'one', 'three', 'two']);
      const { lists, errors } = await tabState(page);
      expect(errors).toEqual([]);
      // Every snapshot after the first result holds at least what the one before held.
      const firstFull = lists.findIndex((list) => list.includes('one'));
      for (let i = firstFull + 1; i < lists.length; i++) {
        expect(lists[i]!.length).toBeGreaterThanOrEqual(lists[i - 1]!.length);
      }
    }
    expect(await gauges()).toEqual({ sockets: 1, subscriptions: 3 });

    // The other follower closes: the leader ends its subscriptions (it waited for the tab's lock).
    const othersSubscriptions = other === second ? 2 : 1;
    await other.close();
    await expect.poll(gauges).toEqual({ sockets: 1, subscriptions: 3 - othersSubscriptions });
    await context.close();
    await expect.poll(gauges).toEqual({ sockets: 0, subscriptions: 0 });
  }, 90_000);
});
