import net from 'node:net';
import pg from 'pg';
import WebSocket from 'ws';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { request, useTestApp, waitFor } from '../../test/helpers.js';
import { createClient, type BasaltClient, type LiveDoc, type QuerySnapshot } from '../src/index.js';
import { clientsStoppedAfterAll, createLiveCollections } from './sdk-support.js';

const one = useTestApp();
const two = useTestApp({ sharing: one });
const clients = clientsStoppedAfterAll();

function client(url: string): BasaltClient {
  const basalt = createClient(url, {
    persistSession: false,
    WebSocket,
  });
  clients.push(basalt);
  return basalt;
}

async function admin(method: string, path: string, body?: unknown): Promise<void> {
  const response = await request(one.url, method, path, { token: one.serviceKey, body });
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${response.text}`);
}

/** Waits, polling often, until `check` holds; a timeout names the condition. */
function until(check: () => boolean, timeoutMs = 8_000): Promise<true> {
  return waitFor(check.toString(), () => check() || null, timeoutMs, 20);
}

/** A TCP proxy in front of a server that can cut every connection and refuse new ones for a while. */
class Proxy {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: number) {}

  async listen(port = 0): Promise<void> {
    const server = net.createServer((socket) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      this.sockets.add(socket).add(upstream);
      socket.pipe(upstream).pipe(socket);
      const close = () => {
        socket.destroy();
        upstream.destroy();
      };
      socket.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }
}

beforeAll(async () => {
  await createLiveCollections(one);
});

describe('live queries in the SDK', () => {
  it('calls back with the snapshot and then each change, with the docs in query order', async () => {
    await admin('PUT', '/v1/db/notes/n2', { data: { list: 'a', rank: 2 } });
    await admin('PUT', '/v1/db/notes/n1', { data: { list: 'a', rank: 1 } });
    const basalt = client(two.url);
    const snapshots: QuerySnapshot[] = [];
    const errors: unknown[] = [];
    const off = basalt.realtime.subscribe(
      { collection: 'notes', query: { where: [['list', '==', 'a']], order_by: [['rank', 'desc']] } },
      (snapshot) => snapshots.push(snapshot as QuerySnapshot),
      (error) => errors.push(error),
    );
    await until(() => snapshots.length === 1);
    expect(snapshots[0]?.docs.map((doc) => doc.id)).toEqual(['n2', 'n1']);
    expect(snapshots[0]?.changes.map((change) => change.type)).toEqual(['added', 'added']);
    await admin('PUT', '/v1/db/notes/n3', { data: { list: 'a', rank: 3 } });
    await until(() => snapshots.length === 2);
    expect(snapshots[1]?.docs.map((doc) => doc.id)).toEqual(['n3', 'n2', 'n1']);
    expect(snapshots[1]?.changes).toEqual([{ type: 'added', doc: expect.objectContaining({ id: 'n3' }) }]);
    await admin('DELETE', '/v1/db/notes/n2');
    await until(() => snapshots.length === 3);
    expect(snapshots[2]?.changes).toEqual([{ type: 'removed', doc: expect.objectContaining({ id: 'n2' }) }]);
    off();
    expect(errors).toEqual([]);
  });

  it('reconnects with backoff and resumes: every missed change arrives once, in order', async () => {
    const proxy = new Proxy(Number(new URL(one.url).port));
    await proxy.listen();
    const basalt = client(`http://127.0.0.1:${proxy.port}`);
    const seen: Array<{ type: string; id: string; n: unknown }> = [];
    let docs: LiveDoc[] = [];
    let snapshots = 0;
    basalt.realtime.subscribe(
      { collection: 'notes', query: { where: [['list', '==', 'r']], limit: 500 } },
      (snapshot) => {
        snapshots++;
        docs = snapshot.docs as LiveDoc[];
        for (const change of snapshot.changes) {
          seen.push({ type: change.type, id: change.doc.id, n: (change.doc.data as { n?: unknown }).n });
        }
      },
    );
    await until(() => snapshots === 1);
    await proxy.cut();
    for (let i = 0; i < 60; i++) await admin('PUT', `/v1/db/notes/r${i}`, { data: { list: 'r', n: 0 } });
    for (let i = 0; i < 40; i++) await admin('PATCH', `/v1/db/notes/r${i}`, { data: { n: 1 } });
    await proxy.listen(proxy.port);
    await until(() => seen.length >= 100, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(seen).toEqual([
      ...Array.from({ length: 60 }, (_, i) => ({ type: 'added', id: `r${i}`, n: 0 })),
      ...Array.from({ length: 40 }, (_, i) => ({ type: 'modified', id: `r${i}`, n: 1 })),
    ]);
    expect(docs).toHaveLength(60);
    await proxy.cut();
  }, 30_000);

  it('follows one document by id', async () => {
    const basalt = client(one.url);
    const values: Array<LiveDoc | null> = [];
    basalt.realtime.subscribe({ collection: 'notes', docId: 'single' }, (snapshot) => {
      values.push((snapshot.docs[0] as LiveDoc | undefined) ?? null);
    });
    await until(() => values.length === 1);
    expect(values[0]).toBeNull();
    await admin('PUT', '/v1/db/notes/single', { data: { v: 1 } });
    await until(() => values.length === 2);
    expect(values[1]?.data).toEqual({ v: 1 });
  });

  it('re-authenticates the socket when the session changes', async () => {
    const basalt = client(one.url);
    const ids: string[][] = [];
    const errors: unknown[] = [];
    await basalt.auth.signUp({ email: `rt-${Date.now()}@example.com`, password: 'correct horse battery staple 42' });
    basalt.realtime.subscribe(
      { collection: 'todos' },
      (snapshot) => ids.push(snapshot.docs.map((doc) => doc.id)),
      (error) => errors.push(error),
    );
    await until(() => ids.length === 1);
    const token = basalt.auth.session?.access_token;
    const created = await request(one.url, 'POST', '/v1/db/todos', {
      token: token ?? '',
      body: { id: 'mine', data: {} },
    });
    expect(created.status).toBe(201);
    await until(() => ids.at(-1)?.includes('mine') === true);
    expect(errors).toEqual([]);
  });
});

describe('after a long disconnect', () => {
  it('turns a reset into the difference, and rejoins channels with their presence', async () => {
    const proxy = new Proxy(Number(new URL(one.url).port));
    await proxy.listen();
    const basalt = client(`http://127.0.0.1:${proxy.port}`);
    const watcher = client(two.url);
    const snapshots: QuerySnapshot[] = [];
    await admin('PUT', '/v1/db/notes/x1', { data: { list: 'x' } });
    await admin('PUT', '/v1/db/notes/x2', { data: { list: 'x' } });
    basalt.realtime.subscribe({ collection: 'notes', query: { where: [['list', '==', 'x']] } }, (snapshot) =>
      snapshots.push(snapshot as QuerySnapshot),
    );
    const room = basalt.channel('rejoin');
    await room.subscribe();
    await room.track({ name: 'traveller' });
    const seen: Array<Record<string, unknown[]>> = [];
    const watch = watcher.channel('rejoin').on('presence', (state) => seen.push(state));
    await watch.subscribe();
    await until(() => snapshots.length === 1 && Object.keys(seen.at(-1) ?? {}).length === 1);

    await proxy.cut();
    await until(() => Object.keys(seen.at(-1) ?? {}).length === 0);
    await admin('DELETE', '/v1/db/notes/x1');
    await admin('PUT', '/v1/db/notes/x3', { data: { list: 'x' } });
    // The log no longer reaches back to the client's cursor: the server answers with a reset.
    const sql = new pg.Client({ connectionString: one.database.url });
    await sql.connect();
    await sql.query('DELETE FROM basalt.change_ticks WHERE id < (SELECT max(id) FROM basalt.change_ticks)');
    await sql.end();
    await proxy.listen(proxy.port);

    await until(() => snapshots.length === 2, 15_000);
    expect(snapshots[1]?.docs.map((doc) => doc.id)).toEqual(['x2', 'x3']);
    expect(snapshots[1]?.changes.map((change) => `${change.type}:${change.doc.id}`).sort()).toEqual([
      'added:x3',
      'removed:x1',
    ]);
    await until(() => JSON.stringify(Object.values(seen.at(-1) ?? {})) === '[[{"name":"traveller"}]]', 15_000);
    await proxy.cut();
  }, 40_000);
});

describe('db onSnapshot', () => {
  it('follows a query built with the db API, and a document', async () => {
    const basalt = client(one.url);
    const notes = basalt.db.collection<{ list: string; rank: number }>('notes');
    const snapshots: Array<{ ids: string[]; changes: string[] }> = [];
    const off = notes
      .where('list', '==', 'db')
      .orderBy('rank', 'asc')
      .limit(2)
      .onSnapshot((snapshot) => {
        snapshots.push({
          ids: snapshot.docs.map((doc) => doc.id),
          changes: snapshot.changes.map((change) => `${change.type}:${change.doc.id}`),
        });
      });
    const docs: Array<number | null> = [];
    const offDoc = notes.doc('d2').onSnapshot((doc) => docs.push(doc ? doc.data.rank : null));
    await until(() => snapshots.length === 1 && docs.length === 1);
    expect(snapshots[0]).toEqual({ ids: [], changes: [] });
    expect(docs).toEqual([null]);
    await notes.doc('d2').set({ list: 'db', rank: 2 });
    await notes.doc('d3').set({ list: 'db', rank: 3 });
    await notes.doc('d1').set({ list: 'db', rank: 1 });
    await until(() => JSON.stringify(snapshots.at(-1)?.ids) === '["d1","d2"]');
    expect(snapshots.flatMap((snapshot) => snapshot.changes)).toEqual([
      'added:d2',
      'added:d3',
      'removed:d3',
      'added:d1',
    ]);
    await until(() => docs.at(-1) === 2);
    await notes.doc('d2').update({ rank: 20 });
    await until(() => docs.at(-1) === 20);
    await until(() => JSON.stringify(snapshots.at(-1)?.ids) === '["d1","d3"]');
    off();
    offDoc();
  });
});

describe('client-side order', () => {
  it('orders by an array position as the server does', async () => {
    const basalt = client(one.url);
    const notes = basalt.db.collection<{ list: string; scores: number[] }>('notes');
    const snapshots: string[][] = [];
    const off = notes
      .where('list', '==', 'scores')
      .orderBy('scores.0', 'desc')
      .onSnapshot((snapshot) => snapshots.push(snapshot.docs.map((doc) => doc.id)));
    await until(() => snapshots.length === 1);
    await notes.doc('s-low').set({ list: 'scores', scores: [1, 99] });
    await notes.doc('s-high').set({ list: 'scores', scores: [9, 0] });
    await notes.doc('s-mid').set({ list: 'scores', scores: [5] });
    const server = await notes.where('list', '==', 'scores').orderBy('scores.0', 'desc').get();
    expect(server.docs.map((doc) => doc.id)).toEqual(['s-high', 's-mid', 's-low']);
    await until(() => JSON.stringify(snapshots.at(-1)) === JSON.stringify(['s-high', 's-mid', 's-low']));
    off();
  });
});

describe('without a WebSocket implementation', () => {
  it('reports UNAVAILABLE to the error callback and rejects channel calls', async () => {
    const original = (globalThis as { WebSocket?: unknown }).WebSocket;
    (globalThis as { WebSocket?: unknown }).WebSocket = undefined;
    try {
      const basalt = createClient(one.url, { persistSession: false });
      const errors: string[] = [];
      basalt.db.collection('notes').onSnapshot(
        () => undefined,
        (error) => errors.push(error.code),
      );
      expect(errors).toEqual(['UNAVAILABLE']);
      await expect(basalt.channel('x').subscribe()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    } finally {
      (globalThis as { WebSocket?: unknown }).WebSocket = original;
    }
  });
});

describe('channels in the SDK', () => {
  it('broadcasts to other members and keeps presence state across instances', async () => {
    const alice = client(one.url);
    const bob = client(two.url);
    const received: unknown[] = [];
    const bobStates: Array<Record<string, unknown[]>> = [];
    const bobRoom = bob
      .channel('room-1')
      .on('broadcast', 'typing', (payload) => received.push(payload))
      .on('presence', (state) => bobStates.push(state));
    await bobRoom.subscribe();
    await bobRoom.track({ name: 'bob' });
    const aliceRoom = alice.channel('room-1');
    await aliceRoom.subscribe();
    await aliceRoom.track({ name: 'alice' });
    expect(await aliceRoom.send('typing', { who: 'alice' })).toBe('ok');
    await until(() => received.length === 1);
    expect(received).toEqual([{ who: 'alice' }]);
    await until(() => Object.keys(bobStates.at(-1) ?? {}).length === 2);
    expect(Object.values(bobStates.at(-1) ?? {}).flat()).toEqual(
      expect.arrayContaining([{ name: 'alice' }, { name: 'bob' }]),
    );
    await aliceRoom.unsubscribe();
    await until(() => Object.keys(bobStates.at(-1) ?? {}).length === 1);
    expect(bobRoom.presenceState()).toEqual({ [Object.keys(bobRoom.presenceState())[0] as string]: [{ name: 'bob' }] });
  });
});

describe('errors do not vanish', () => {
  it('send() resolves with the acknowledgement: error for a payload the server refuses', async () => {
    const alice = client(one.url);
    const room = alice.channel('acks');
    await room.subscribe();
    // Over what one pg_notify carries (the server refuses it) and over a websocket frame (refused here).
    expect(await room.send('big', { blob: 'x'.repeat(10_000) })).toBe('error');
    expect(await room.send('huge', { blob: 'x'.repeat(70_000) })).toBe('error');
    expect(await room.send('small', { n: 1 })).toBe('ok');
    await room.unsubscribe();
  });

  it('logs the error of a live query that has no error callback', async () => {
    const logged = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const basalt = client(one.url);
      basalt.db.collection('misspelt_notes').onSnapshot(() => undefined);
      await until(() => logged.mock.calls.length > 0);
      expect(logged.mock.calls[0]?.[1]).toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      logged.mockRestore();
    }
  });
});
