import { rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../server/app.js';
import {
  createTestDatabase,
  request,
  silentLogger,
  startTestApp,
  waitFor,
  type TestApp,
  type TestDatabase,
} from '../../test/helpers.js';
import { createClient, type BasaltClient } from '../src/index.js';
import { clientsStoppedAfterAll, createLiveCollections } from './sdk-support.js';

// The realtime socket through what happens to real clients: the server restarting, access
// tokens expiring (refreshed, or not in time as after sleep) and signing out.

let database: TestDatabase;
/** Restarted in place (same port, same database) by the first test. */
let restartable: TestApp;
let restarted: FastifyInstance | null = null;
/** Another instance on the same database, up while the first is down. */
let other: TestApp;
/** Access tokens live 30 s here, so a test can see them expire. */
let shortTokens: TestApp;

const PASSWORD = 'correct horse battery staple 42';

/** The frames a client's socket sent and received. */
interface Wire {
  sent: Array<Record<string, unknown>>;
  received: Array<Record<string, unknown>>;
}

function client(url: string, wire?: Wire): BasaltClient {
  class Recording extends WebSocket {
    constructor(address: string) {
      super(address);
      this.addEventListener('message', (event) => wire?.received.push(JSON.parse(String(event.data))));
      const send = this.send.bind(this);
      this.send = ((data: string) => {
        wire?.sent.push(JSON.parse(data) as Record<string, unknown>);
        send(data);
      }) as WebSocket['send'];
    }
  }
  const basalt = createClient(url, {
    persistSession: false,
    WebSocket: Recording,
  });
  clients.push(basalt);
  return basalt;
}

async function admin(server: TestApp, method: string, path: string, body?: unknown): Promise<void> {
  const response = await request(server.url, method, path, { token: server.serviceKey, body });
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${response.text}`);
}

/** A live query over every todo, recording each snapshot's ids and each error; resolves after the first snapshot. */
async function watchTodos(basalt: BasaltClient): Promise<{ snapshots: string[][]; errors: unknown[] }> {
  const snapshots: string[][] = [];
  const errors: unknown[] = [];
  basalt.realtime.subscribe(
    { collection: 'todos' },
    (snapshot) => snapshots.push(snapshot.docs.map((doc) => doc.id)),
    (error) => errors.push(error),
  );
  await waitFor('snapshots.length === 1', async () => snapshots.length === 1);
  return { snapshots, errors };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

beforeAll(async () => {
  database = await createTestDatabase();
  restartable = await startTestApp(database);
  other = await startTestApp(database);
  shortTokens = await startTestApp(database, { BASALT_ACCESS_TOKEN_TTL: '30' });
  await createLiveCollections(restartable);
});

afterAll(async () => {
  if (restarted) {
    await restarted.close();
    await rm(restartable.config.dataDir, { recursive: true, force: true });
  } else await restartable?.close();
  await other?.close();
  await shortTokens?.close();
  await database?.drop();
});

// Registered after the servers' hook, so the clients stop first (after-hooks run in reverse).
const clients = clientsStoppedAfterAll();

describe('a server restart', () => {
  it('reconnects to the new server on the same address and catches up exactly once', async () => {
    const basalt = client(restartable.url);
    const seen: string[] = [];
    let docs: string[] = [];
    const statuses: string[] = [basalt.realtime.connectionStatus];
    basalt.realtime.onStatusChange((status) => statuses.push(status));
    basalt.realtime.subscribe({ collection: 'notes', query: { where: [['list', '==', 'restart']] } }, (snapshot) => {
      docs = snapshot.docs.map((doc) => doc.id);
      for (const change of snapshot.changes) {
        seen.push(`${change.type}:${change.doc.id}:${String((change.doc.data as { n?: number }).n)}`);
      }
    });
    await admin(restartable, 'PUT', '/v1/db/notes/before', { data: { list: 'restart', n: 0 } });
    await waitFor('seen.length === 1', async () => seen.length === 1);

    // The server goes away (closing its sockets with 1001); writes go on through another instance.
    await restartable.app.close();
    for (let i = 0; i < 20; i++)
      await admin(other, 'PUT', `/v1/db/notes/down${i}`, { data: { list: 'restart', n: i } });
    await admin(other, 'PATCH', '/v1/db/notes/before', { data: { n: 1 } });
    await admin(other, 'DELETE', '/v1/db/notes/down0');
    // Let a few reconnect attempts fail against the closed port.
    await sleep(1_500);
    expect(basalt.realtime.connected).toBe(false);

    restarted = await buildApp(restartable.config, { logger: silentLogger });
    await restarted.listen({ port: Number(new URL(restartable.url).port), host: '127.0.0.1' });
    await waitFor('seen.length === 23', async () => seen.length === 23, 20_000);
    await admin(restartable, 'PUT', '/v1/db/notes/after', { data: { list: 'restart', n: 2 } });
    await waitFor('seen.length === 24', async () => seen.length === 24);
    await sleep(300);
    expect(seen).toEqual([
      'added:before:0',
      ...Array.from({ length: 20 }, (_, i) => `added:down${i}:${i}`),
      'modified:before:1',
      'removed:down0:0',
      'added:after:2',
    ]);
    expect(docs.sort()).toEqual(['after', 'before', ...Array.from({ length: 19 }, (_, i) => `down${i + 1}`)].sort());
    // The app could show it: connecting, open, then reconnecting through the outage, open again.
    expect(statuses).toEqual(['idle', 'connecting', 'open', 'reconnecting', 'open']);
  }, 40_000);
});

describe('the socket and the session', () => {
  it('re-authenticates on every refresh, and resubscribes a query dropped for an expired token', async () => {
    // `live` refreshes in the background (and so re-authenticates its socket before expiry);
    // `asleep` does not, as a page whose timers were suspended past its token's life.
    const wires: Record<'live' | 'asleep', Wire> = {
      live: { sent: [], received: [] },
      asleep: { sent: [], received: [] },
    };
    const setups = (['live', 'asleep'] as const).map(async (name) => {
      const basalt = client(shortTokens.url, wires[name]);
      const { user } = await basalt.auth.signUp({ email: `rt-${name}-${Date.now()}@example.com`, password: PASSWORD });
      if (name === 'asleep') basalt.auth.stopAutoRefresh();
      const { snapshots, errors } = await watchTodos(basalt);
      return { basalt, user, snapshots, errors, first: basalt.auth.session!.access_token };
    });
    const [live, asleep] = await Promise.all(setups);

    // A refresh reaches the socket at once.
    await live!.basalt.auth.refreshSession();
    const refreshed = live!.basalt.auth.session!.access_token;
    expect(refreshed).not.toBe(live!.first);
    expect(wires.live.sent.filter((frame) => frame.type === 'auth').map((frame) => frame.access_token)).toEqual([
      live!.first,
      refreshed,
    ]);
    await waitFor(
      "wires.live.received.filter((frame) => frame.type === 'authenticated').length === 2",
      async () => wires.live.received.filter((frame) => frame.type === 'authenticated').length === 2,
    );

    // Past the first tokens' life (30 s, checked by the server every second).
    await sleep(33_000);
    for (const tab of [live!, asleep!]) {
      await admin(shortTokens, 'POST', '/v1/db/todos', { id: `t-${tab.user.id}`, owner: tab.user.id, data: {} });
    }
    for (const tab of [live!, asleep!]) {
      await waitFor(
        'tab.snapshots.at(-1)?.includes(`t-${tab.user.id}`) === true',
        async () => tab.snapshots.at(-1)?.includes(`t-${tab.user.id}`) === true,
        10_000,
      );
      expect(tab.errors).toEqual([]);
    }
    // The live socket never lost its query; the asleep one lost it, refreshed, and came back.
    expect(wires.live.received.filter((frame) => frame.type === 'error')).toEqual([]);
    expect(wires.asleep.received.some((frame) => frame.type === 'error' && frame.code === 'UNAUTHENTICATED')).toBe(
      true,
    );
    const asleepAuth = wires.asleep.sent.filter((frame) => frame.type === 'auth');
    expect(asleepAuth.length).toBeGreaterThanOrEqual(2);
    expect(asleepAuth.at(-1)?.access_token).toBe(asleep!.basalt.auth.session!.access_token);
    expect(asleepAuth.at(-1)?.access_token).not.toBe(asleep!.first);
    expect(wires.asleep.sent.filter((frame) => frame.type === 'subscribe')).toHaveLength(2);
  }, 60_000);

  it('gives up the user on sign-out: the query of their data ends with FORBIDDEN and gets none of it after', async () => {
    const wire: Wire = { sent: [], received: [] };
    const basalt = client(restartable.url, wire);
    const { user } = await basalt.auth.signUp({ email: `rt-out-${Date.now()}@example.com`, password: PASSWORD });
    const { snapshots, errors } = await watchTodos(basalt);
    await basalt.db.collection('todos').add({ title: 'mine' }, { id: 'mine' });
    await waitFor(
      "snapshots.at(-1)?.includes('mine') === true",
      async () => snapshots.at(-1)?.includes('mine') === true,
    );

    const before = snapshots.length;
    await basalt.auth.signOut();
    expect(wire.sent.at(-1)).toEqual({ type: 'auth', access_token: null });
    await waitFor('errors.length === 1', async () => errors.length === 1);
    expect(errors[0]).toMatchObject({ code: 'FORBIDDEN' });
    await admin(restartable, 'POST', '/v1/db/todos', { id: 'after-sign-out', owner: user.id, data: {} });
    await sleep(1_500);
    // No snapshot removing the user's documents one by one, nor any after.
    expect(snapshots).toHaveLength(before);
    expect(snapshots.flat()).not.toContain('after-sign-out');
    expect(wire.received.filter((frame) => frame.type === 'change' && frame.change === 'removed')).toEqual([]);
    // The socket was signed out before the session ended: the query ended for the sign-out, not an expiry.
    expect(wire.received.filter((frame) => frame.type === 'error').map((frame) => frame.code)).toEqual(['FORBIDDEN']);
  });
});

describe('presence', () => {
  it('keeps the others in view after tracking on a channel already joined', async () => {
    const bob = client(other.url);
    await bob.channel('tracked').track({ name: 'bob' });
    const alice = client(restartable.url);
    const room = alice.channel('tracked');
    await room.subscribe();
    await waitFor(
      'Object.keys(room.presenceState()).length === 1',
      async () => Object.keys(room.presenceState()).length === 1,
    );
    await room.track({ name: 'alice' });
    await waitFor(
      'Object.keys(room.presenceState()).length === 2',
      async () => Object.keys(room.presenceState()).length === 2,
    );
    expect(Object.values(room.presenceState()).flat()).toEqual(
      expect.arrayContaining([{ name: 'alice' }, { name: 'bob' }]),
    );
  });

  it('keys tracked presence by whoever the socket is now, after sign-in and sign-out', async () => {
    const watcher = client(other.url);
    const watch = watcher.channel('who');
    await watch.subscribe();
    const keys = () => Object.keys(watch.presenceState());
    const basalt = client(restartable.url);
    const room = basalt.channel('who');
    await room.track({ name: 'visitor' });
    await waitFor('keys().length === 1', async () => keys().length === 1);
    const anonymousKey = keys()[0];
    expect(anonymousKey).toBeTruthy();
    const { user } = await basalt.auth.signUp({ email: `rt-who-${Date.now()}@example.com`, password: PASSWORD });
    await waitFor(
      'JSON.stringify(keys()) === JSON.stringify([user.id])',
      async () => JSON.stringify(keys()) === JSON.stringify([user.id]),
    );
    expect(Object.values(watch.presenceState())).toEqual([[{ name: 'visitor' }]]);
    await basalt.auth.signOut();
    await waitFor(
      'keys().length === 1 && keys()[0] !== user.id',
      async () => keys().length === 1 && keys()[0] !== user.id,
    );
    expect(Object.values(watch.presenceState())).toEqual([[{ name: 'visitor' }]]);
    // A member joining now reads the same from the server's presence table.
    const late = client(other.url).channel('who');
    await late.subscribe();
    expect(Object.keys(late.presenceState())).toEqual(keys());
  });
});
