import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../server/app.js';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import {
  createCollection,
  createTestDatabase,
  request,
  silentLogger,
  startTestApp,
  waitFor,
  type TestApp,
  type TestDatabase,
} from '../../test/helpers.js';
import {
  createClient,
  increment,
  type BasaltClient,
  type BasaltError,
  type Doc,
  type PendingWrite,
  type QuerySnapshot,
  type SessionStorage,
} from '../src/index.js';
import { memoryPersistence } from '../src/offline/index.js';
import { Proxy, engineOf, recordingWebSocket, watch } from './offline-support.js';
import { clientsStoppedAfterAll } from './sdk-support.js';

// The offline-first SDK against a real server that the tests stop and start again on the
// same port (and, where the network rather than the server goes away, behind a proxy).

interface Todo {
  title: string;
  done: boolean;
}

let database: TestDatabase;
let server: TestApp;
/** The instance serving `server.url` now (null while stopped). */
let running: FastifyInstance | null = null;
let port = 0;

async function stopServer(): Promise<void> {
  await running?.close();
  running = null;
}

async function startServer(): Promise<void> {
  running = await buildApp(server.config, { logger: silentLogger });
  await running.listen({ port, host: '127.0.0.1' });
}

/** What the server stores, read with the service key. */
async function stored(collection: string): Promise<Doc[]> {
  const response = await request(server.url, 'POST', `/v1/db/${collection}/query`, {
    token: server.serviceKey,
    body: { order_by: [['title', 'asc']] },
  });
  return (response.body as { docs: Doc[] }).docs;
}

/**
 * One browser profile: its session storage and offline persistence outlive each client
 * opened on it, as a page reload keeps localStorage and IndexedDB.
 */
function device(options: { sent?: Array<Record<string, unknown>> } = {}) {
  const sessions = new Map<string, string>();
  const storage: SessionStorage = {
    getItem: (key) => sessions.get(key) ?? null,
    setItem: (key, value) => void sessions.set(key, value),
    removeItem: (key) => void sessions.delete(key),
  };
  const persistence = memoryPersistence();
  let current: BasaltClient | null = null;
  return {
    persistence,
    /** Opens the app (again): the previous client is gone as a reloaded page is. */
    open(url = server.url): BasaltClient {
      if (current) unload(current);
      current = createClient(url, {
        storage,
        WebSocket: recordingWebSocket(options.sent ?? []),
        offline: { persistence },
      });
      clients.push(current);
      return current;
    },
  };
}

function unload(basalt: BasaltClient): void {
  engineOf(basalt)?.close();
  basalt.realtime.disconnect();
  basalt.auth.stopAutoRefresh();
}

const titles = (snapshot: QuerySnapshot<Todo> | { docs: Array<Doc<Todo>> }) => snapshot.docs.map((d) => d.data.title);

beforeAll(async () => {
  database = await createTestDatabase();
  server = await startTestApp(database);
  running = server.app;
  port = Number(new URL(server.url).port);
  await createCollection(server, {
    name: 'todos',
    rules: {
      read: 'auth != null && doc.owner == auth.uid',
      create: 'auth != null && incoming.data.title != "refused"',
      update: 'auth != null && doc.owner == auth.uid',
      delete: 'auth != null && doc.owner == auth.uid',
    },
  });
  await createCollection(server, {
    name: 'notes',
    rules: { read: 'auth != null', create: 'auth != null', update: 'auth != null', delete: 'auth != null' },
  });
});

afterAll(async () => {
  await running?.close();
  await database?.drop();
});

const clients = clientsStoppedAfterAll();

describe('offline, with the server stopped and started again', () => {
  it('answers from the cache, queues writes shown at once and across reloads, and lands each once', async () => {
    const sent: Array<Record<string, unknown>> = [];
    const phone = device({ sent });
    let basalt = phone.open();
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    let todos = basalt.db.collection<Todo>('todos');
    for (const title of ['a', 'b', 'c']) await todos.add({ title, done: false });
    let live = watch<Todo>(todos.orderBy('title'));
    await waitFor('the server result', () => live.snaps.some((s) => !s.fromCache && s.docs.length === 3));
    expect(live.last()).toMatchObject({ fromCache: false, hasPendingWrites: false });

    await stopServer();
    await waitFor('fromCache once the socket is gone', () => live.last().fromCache);
    expect(titles(live.last())).toEqual(['a', 'b', 'c']);

    // Reload with the server down: the list renders from the cache.
    basalt = phone.open();
    todos = basalt.db.collection<Todo>('todos');
    live = watch<Todo>(todos.orderBy('title'));
    await waitFor('a cached snapshot', () => live.snaps.length > 0, 2_000, 5);
    expect(live.snaps[0]).toMatchObject({ fromCache: true, hasPendingWrites: false });
    expect(titles(live.snaps[0] as QuerySnapshot<Todo>)).toEqual(['a', 'b', 'c']);
    const [a, b] = live.last().docs as [Doc<Todo>, Doc<Todo>];

    // Writes resolve once queued and are in the live query at once.
    const before = live.snaps.length;
    const d = await todos.add({ title: 'd', done: false });
    expect(d).toMatchObject({ version: 0, data: { title: 'd' } });
    expect(live.snaps.length).toBeGreaterThan(before);
    expect(live.last()).toMatchObject({ fromCache: true, hasPendingWrites: true });
    await todos.add({ title: 'e', done: false });
    await todos.doc(a.id).update({ done: true });
    await todos.doc(b.id).delete();
    expect(titles(live.last())).toEqual(['a', 'c', 'd', 'e']);
    expect(live.last().docs[0]?.data.done).toBe(true);
    expect(live.last().changes.map((c) => `${c.type}:${c.doc.data.title}`)).toEqual(['removed:b']);
    expect(basalt.db.pendingWrites()).toBe(4);
    // get() answers from the cache too, with the pending writes.
    const page = await todos.orderBy('title').get();
    expect(page).toMatchObject({ fromCache: true, hasPendingWrites: true });
    expect(titles(page)).toEqual(['a', 'c', 'd', 'e']);
    expect((await todos.doc(a.id).get())?.data.done).toBe(true);
    expect(await todos.doc(b.id).get()).toBeNull();

    // Reload again: still there.
    basalt = phone.open();
    todos = basalt.db.collection<Todo>('todos');
    live = watch<Todo>(todos.orderBy('title'));
    await waitFor('a cached snapshot', () => live.snaps.length > 0, 2_000, 5);
    expect(live.snaps[0]).toMatchObject({ fromCache: true, hasPendingWrites: true });
    expect(titles(live.snaps[0] as QuerySnapshot<Todo>)).toEqual(['a', 'c', 'd', 'e']);
    expect(basalt.db.pendingWrites()).toBe(4);

    sent.length = 0;
    await startServer();
    await basalt.db.waitForPendingWrites();
    expect(basalt.db.pendingWrites()).toBe(0);
    await waitFor('the confirmed result', () => !live.last().fromCache && !live.last().hasPendingWrites);
    expect(titles(live.last())).toEqual(['a', 'c', 'd', 'e']);
    const server = await stored('todos');
    expect(server.map((doc) => [doc.data.title, doc.data.done, doc.version])).toEqual([
      ['a', true, 2],
      ['c', false, 1],
      ['d', false, 1],
      ['e', false, 1],
    ]);
    // The live query resumed from its stored cursor rather than reading everything again.
    const subscribe = sent.find((frame) => frame.type === 'subscribe');
    expect(typeof subscribe?.resume_from).toBe('string');
    live.stop();
  }, 30_000);

  it('rolls back and reports a write the rules refuse; the rest of the queue lands', async () => {
    const basalt = device().open();
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const todos = basalt.db.collection<Todo>('todos');
    const live = watch<Todo>(todos.orderBy('title'));
    await waitFor('the first snapshot', () => live.snaps.some((s) => !s.fromCache));
    const errors: Array<[BasaltError, PendingWrite]> = [];
    basalt.db.onWriteError((error, write) => errors.push([error, write]));

    await stopServer();
    await waitFor('offline', () => live.last().fromCache);
    await todos.add({ title: 'refused', done: false });
    await todos.add({ title: 'kept', done: false });
    expect(titles(live.last())).toEqual(['kept', 'refused']);

    await startServer();
    await basalt.db.waitForPendingWrites();
    expect(errors).toHaveLength(1);
    expect(errors[0]?.[0].code).toBe('FORBIDDEN');
    expect(errors[0]?.[1].ops[0]).toMatchObject({ op: 'create', data: { title: 'refused' } });
    await waitFor('the refused write rolled back', () => !live.last().hasPendingWrites && !live.last().fromCache);
    expect(titles(live.last())).toEqual(['kept']);
    expect(live.snaps.some((s) => s.changes.some((c) => c.type === 'removed' && c.doc.data.title === 'refused'))).toBe(
      true,
    );
    live.stop();
  }, 30_000);

  it('keeps offline edits of different fields by two clients; signing out clears the cache and the outbox', async () => {
    const first = device().open();
    const second = device().open();
    await first.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    await second.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const note = await first.db.collection('notes').add({ title: 'shared', x: 0, y: 0 });
    // Both have read it (so it is cached) before the server goes.
    expect(await second.db.collection('notes').doc(note.id).get()).toMatchObject({ version: 1 });
    const watched: Array<[Doc | null, { fromCache: boolean; hasPendingWrites: boolean }]> = [];
    const stopWatching = second.db
      .collection('notes')
      .doc(note.id)
      .onSnapshot((doc, metadata) => watched.push([doc, metadata]));
    await waitFor('the document', () => watched.some(([, m]) => !m.fromCache));

    await stopServer();
    await first.db.collection('notes').doc(note.id).update({ x: 1 });
    await second.db.collection('notes').doc(note.id).update({ y: 2 });
    expect(watched.at(-1)?.[0]?.data).toMatchObject({ x: 0, y: 2 });
    expect(watched.at(-1)?.[1]).toMatchObject({ fromCache: true, hasPendingWrites: true });

    await startServer();
    await Promise.all([first.db.waitForPendingWrites(), second.db.waitForPendingWrites()]);
    const doc = (await request(server.url, 'GET', `/v1/db/notes/${note.id}`, { token: server.serviceKey })).body as Doc;
    expect(doc.data).toMatchObject({ x: 1, y: 2 });
    expect(doc.version).toBe(3);
    await waitFor('the listener caught up', () => {
      const [last, metadata] = watched.at(-1) ?? [];
      return last?.version === 3 && !metadata?.fromCache && !metadata?.hasPendingWrites;
    });
    stopWatching();

    // Signing out (possible offline) forgets the cache and the queued writes.
    await stopServer();
    await second.db.collection('notes').doc(note.id).update({ y: 3 });
    expect(second.db.pendingWrites()).toBe(1);
    await second.auth.signOut();
    expect(second.db.pendingWrites()).toBe(0);
    const cached = await second.db.collection('notes').get();
    expect(cached).toMatchObject({ fromCache: true, docs: [] });
    await startServer();
  }, 30_000);
});

describe('the network between client and server', () => {
  let proxy: Proxy;
  beforeAll(async () => {
    proxy = await Proxy.start(server.url);
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('applies a write once when its answer was lost after the server applied it', async () => {
    const basalt = device().open(proxy.url);
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const counter = await basalt.db.collection('notes').add({ title: 'counter', n: 0 });
    proxy.dropNextAnswerTo(/^PATCH \/v1\/db\/notes\/[^\n]*\n(?:[^\n]*\n)*idempotency-key:/im);
    // Resolves as queued: the answer never came, the write waits for a retry.
    const queued = await basalt.db
      .collection('notes')
      .doc(counter.id)
      .update({ n: increment(1) });
    expect(proxy.dropped).toBe(1);
    expect(queued).toMatchObject({ data: { n: 1 } });
    await basalt.db.waitForPendingWrites();
    const doc = (await request(server.url, 'GET', `/v1/db/notes/${counter.id}`, { token: server.serviceKey }))
      .body as Doc;
    expect(doc.data).toMatchObject({ n: 1 });
    expect(doc.version).toBe(2);
  }, 20_000);

  it('keeps the cache under cacheSizeBytes, dropping what was used least recently', async () => {
    const persistence = memoryPersistence();
    const basalt = createClient(proxy.url, { persistSession: false, offline: { persistence, cacheSizeBytes: 4_000 } });
    clients.push(basalt);
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const notes = basalt.db.collection('notes');
    const tag = uniqueEmail('lru');
    for (let i = 10; i < 30; i++) await notes.add({ title: `lru-${i}`, tag, pad: 'x'.repeat(300) });
    const recent = notes.where('tag', '==', tag).orderBy('title').limit(3);
    expect((await recent.get()).fromCache).toBe(false);
    // The cache is written (and trimmed) in the background, one transaction per task.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const stored = (await persistence.getAll('docs')) as Array<[string, { doc: Doc }]>;
    const bytes = stored.reduce((sum, [, cached]) => sum + JSON.stringify(cached.doc).length, 0);
    expect(bytes).toBeLessThanOrEqual(4_000);
    expect(stored.length).toBeLessThan(20);

    proxy.blocked = true;
    proxy.cut();
    try {
      const cached = await recent.get();
      expect(cached.fromCache).toBe(true);
      expect(cached.docs.map((doc) => doc.data.title)).toEqual(['lru-10', 'lru-11', 'lru-12']);
    } finally {
      proxy.blocked = false;
    }
  }, 20_000);

  it('fails a queued write with ifVersion as a conflict when the document changed meanwhile', async () => {
    const basalt = device().open(proxy.url);
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const notes = basalt.db.collection('notes');
    const note = await notes.add({ title: 'contended', x: 0 });
    const errors: BasaltError[] = [];
    basalt.db.onWriteError((error) => errors.push(error));
    const live = watch(notes.where('title', '==', 'contended'));
    await waitFor('the live note', () => live.snaps.some((s) => !s.fromCache && s.docs.length === 1));

    proxy.blocked = true;
    proxy.cut();
    await waitFor('offline', () => live.last().fromCache);
    await notes.doc(note.id).update({ x: 5 }, { ifVersion: 1 });
    await notes.doc(note.id).update({ title: 'contended', y: 1 });
    expect(live.last().docs[0]?.data).toMatchObject({ x: 5, y: 1 });
    // Someone else changes the document meanwhile.
    await request(server.url, 'PATCH', `/v1/db/notes/${note.id}`, {
      token: server.serviceKey,
      body: { data: { x: 7 } },
    });

    proxy.blocked = false;
    await basalt.db.waitForPendingWrites();
    expect(errors.map((error) => error.code)).toEqual(['VERSION_CONFLICT']);
    await waitFor('the conflict rolled back', () => {
      const last = live.last();
      return !last.fromCache && !last.hasPendingWrites && last.docs[0]?.version === 3;
    });
    expect(live.last().docs[0]?.data).toMatchObject({ x: 7, y: 1 });
    live.stop();
  }, 20_000);
});

describe('sending the outbox in batches', () => {
  let proxy: Proxy;
  beforeAll(async () => {
    proxy = await Proxy.start(server.url);
  });
  afterAll(async () => {
    await proxy.close();
  });

  /** The writes of /v1/db that went through the proxy since `from`, as `METHOD path`. */
  const dbWrites = (from = 0) =>
    proxy.requests
      .slice(from)
      .filter((r) => r.method !== 'GET' && r.path.startsWith('/v1/db/') && !r.path.endsWith('/query'))
      .map((r) => `${r.method} ${r.path.replace(/\/[A-Za-z0-9_-]{20}$/, '/:id')}`);

  it('sends queued writes as one batch; a batch whose answer was lost goes again as it was, with its key, after a reload too', async () => {
    const phone = device();
    let basalt = phone.open(proxy.url);
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const tag = uniqueEmail('batched');
    const counter = await basalt.db.collection('notes').add({ title: 'batched counter', tag: 'counter', n: 0 });
    const errors: BasaltError[] = [];
    basalt.db.onWriteError((error) => errors.push(error));

    proxy.blocked = true;
    proxy.cut();
    for (let i = 0; i < 19; i++) await basalt.db.collection('notes').add({ title: `batched ${i}`, tag });
    await basalt.db
      .collection('notes')
      .doc(counter.id)
      .update({ n: increment(1) });
    expect(basalt.db.pendingWrites()).toBe(20);

    // The server applies the batch; its answer never arrives; the network goes again.
    const from = proxy.requests.length;
    const dropped = proxy.dropped;
    proxy.dropNextAnswerTo(/^POST \/v1\/db\/batch /);
    proxy.blocked = false;
    await waitFor('the batch applied, its answer lost', () => proxy.dropped === dropped + 1);
    proxy.blocked = true;
    proxy.cut();

    // Reload, and queue one more write behind the batch in flight.
    basalt = phone.open(proxy.url);
    await basalt.db
      .collection('notes')
      .doc(counter.id)
      .update({ n: increment(10) });
    // The first write was on the wire alone when the network went (its fate unknown): it went
    // again alone; the 19 behind it as the batch, still queued.
    expect(basalt.db.pendingWrites()).toBe(20);
    proxy.blocked = false;
    await basalt.db.waitForPendingWrites();

    const writes = proxy.requests.slice(from).filter((r) => r.path.startsWith('/v1/db/') && r.method !== 'GET');
    const batches = writes.filter((r) => r.path === '/v1/db/batch');
    expect(batches.length).toBeGreaterThanOrEqual(2);
    expect(new Set(batches.map((r) => r.idempotencyKey)).size).toBe(1);
    // Then the write queued after the batch, on its own.
    const sent = dbWrites(from);
    expect(sent[0]).toBe('POST /v1/db/notes');
    expect(sent.slice(1, -1).every((w) => w === 'POST /v1/db/batch')).toBe(true);
    expect(sent.at(-1)).toBe('PATCH /v1/db/notes/:id');
    expect(errors).toEqual([]);
    const doc = (await request(server.url, 'GET', `/v1/db/notes/${counter.id}`, { token: server.serviceKey }))
      .body as Doc;
    expect(doc.data).toMatchObject({ n: 11 });
    expect(doc.version).toBe(3);
    const created = await request(server.url, 'POST', '/v1/db/notes/count', {
      token: server.serviceKey,
      body: { where: [['tag', '==', tag]] },
    });
    expect(created.body).toEqual({ count: 19 });
  }, 30_000);

  it('isolates a write refused inside a batch: rolled back and reported, the others land once and in order', async () => {
    const basalt = device().open(proxy.url);
    await basalt.auth.signUp({ email: uniqueEmail('offline'), password: STRONG_PASSWORD });
    const todos = basalt.db.collection<Todo>('todos');
    const first = await todos.add({ title: 'first', done: false });
    const errors: Array<[BasaltError, PendingWrite]> = [];
    basalt.db.onWriteError((error, write) => errors.push([error, write]));
    const live = watch<Todo>(todos.orderBy('title'));
    await waitFor('the live list', () => live.snaps.some((s) => !s.fromCache && s.docs.length === 1));

    proxy.blocked = true;
    proxy.cut();
    await waitFor('offline', () => live.last().fromCache);
    await todos.add({ title: 'before', done: false });
    await todos.doc(first.id).update({ done: true });
    await todos.add({ title: 'refused', done: false });
    await todos.doc(first.id).update({ title: 'first, renamed' });
    await todos.add({ title: 'after', done: false });
    expect(titles(live.last())).toEqual(['after', 'before', 'first, renamed', 'refused']);

    const from = proxy.requests.length;
    proxy.blocked = false;
    await basalt.db.waitForPendingWrites();

    // The first write was on the wire when the network went: it goes again alone. The batch of
    // the next four fails as a whole; the write before the refused one goes again, the refused
    // one alone (and is refused again), the two after it together.
    expect(dbWrites(from)).toEqual([
      'POST /v1/db/todos',
      'POST /v1/db/batch',
      'PATCH /v1/db/todos/:id',
      'POST /v1/db/todos',
      'POST /v1/db/batch',
    ]);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.[0]).toMatchObject({ code: 'FORBIDDEN', status: 403 });
    expect(errors[0]?.[0].details?.index).toBeUndefined();
    expect(errors[0]?.[1].ops).toMatchObject([{ op: 'create', data: { title: 'refused' } }]);
    await waitFor('the refused write rolled back', () => !live.last().hasPendingWrites && !live.last().fromCache);
    expect(titles(live.last())).toEqual(['after', 'before', 'first, renamed']);
    const kept = await request(server.url, 'POST', '/v1/db/todos/query', {
      token: server.serviceKey,
      body: { where: [['owner', '==', basalt.auth.user?.id]], order_by: [['title', 'asc']] },
    });
    const docs = (kept.body as { docs: Array<Doc<Todo>> }).docs;
    expect(docs.map((doc) => [doc.data.title, doc.data.done, doc.version])).toEqual([
      ['after', false, 1],
      ['before', false, 1],
      ['first, renamed', true, 3],
    ]);
    live.stop();
  }, 30_000);
});
