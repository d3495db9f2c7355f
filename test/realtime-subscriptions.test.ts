import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signUp, type AuthBody } from './auth-helpers.js';
import { request, startTestApp, useTestApp, type TestApp } from './helpers.js';
import { sleep, TestSocket, type Frame } from './realtime-client.js';

interface Doc {
  id: string;
  version: number;
  owner: string | null;
  data: Record<string, unknown>;
}

const one = useTestApp({ env: { BASALT_REALTIME_AUTH_CHECK_MS: '500' } });
const two = useTestApp({ env: { BASALT_REALTIME_AUTH_CHECK_MS: '500' }, sharing: one });
const sockets: TestSocket[] = [];

async function open(app: TestApp, token?: string): Promise<TestSocket> {
  const socket = await TestSocket.open(app.url, token ? { token } : {});
  sockets.push(socket);
  return socket;
}

async function admin(method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await request(one.url, method, path, { token: one.serviceKey, body });
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${response.text}`);
  return response.body;
}

/** The client's copy after applying `subscribed`/`reset` and `change` frames, in order. */
class Copy {
  docs = new Map<string, Doc>();
  cursor = '';
  apply(frame: Frame): void {
    if (frame.type === 'subscribed' || frame.type === 'reset') {
      if (Array.isArray(frame.docs)) this.docs = new Map((frame.docs as Doc[]).map((doc) => [doc.id, doc]));
    } else if (frame.type === 'change') {
      const doc = frame.doc as Doc;
      if (frame.change === 'removed') {
        expect(this.docs.has(doc.id), `removed ${doc.id} that the client did not have`).toBe(true);
        this.docs.delete(doc.id);
      } else {
        if (frame.change === 'added') expect(this.docs.has(doc.id), `added ${doc.id} twice`).toBe(false);
        else expect(this.docs.has(doc.id), `modified ${doc.id} unknown to the client`).toBe(true);
        this.docs.set(doc.id, doc);
      }
    }
    if (typeof frame.cursor === 'string') this.cursor = frame.cursor;
  }
  ids(): string[] {
    return [...this.docs.keys()].sort();
  }
}

/** Waits until the frames of subscription `id` make the copy equal to what `expected` returns. */
async function converge(socket: TestSocket, copy: Copy, id: string, expected: () => Promise<string[]>): Promise<void> {
  const deadline = Date.now() + 8_000;
  let want = await expected();
  for (;;) {
    if (JSON.stringify(copy.ids()) === JSON.stringify([...want].sort())) return;
    const remaining = deadline - Date.now();
    if (remaining <= 0) expect(copy.ids()).toEqual([...want].sort());
    try {
      copy.apply(await socket.next((frame) => frame.id === id, Math.min(remaining, 500)));
    } catch {
      want = await expected();
    }
  }
}

async function queryIds(collection: string, query: unknown, token: string): Promise<string[]> {
  const response = await request(one.url, 'POST', `/v1/db/${collection}/query`, { token, body: query });
  return ((response.body as { docs: Doc[] }).docs ?? []).map((doc) => doc.id);
}

beforeAll(async () => {
  await admin('POST', '/v1/admin/collections', {
    name: 'items',
    rules: { read: 'true' },
  });
  await admin('POST', '/v1/admin/collections', {
    name: 'todos',
    rules: {
      read: 'auth != null && (doc.owner == auth.uid || doc.data.public == true)',
      create: 'auth != null',
      update: 'auth != null && doc.owner == auth.uid',
      delete: 'auth != null && doc.owner == auth.uid',
    },
  });
});

afterAll(() => {
  for (const socket of sockets) socket.close();
});

describe('live queries', () => {
  it('sends the snapshot, then added, modified and removed as the query result changes', async () => {
    await admin('PUT', '/v1/db/items/a1', { data: { kind: 'a', n: 1 } });
    const socket = await open(one, one.serviceKey);
    socket.send({ type: 'subscribe', id: 'q', collection: 'items', query: { where: [['kind', '==', 'a']] } });
    const subscribed = await socket.nextOfType('subscribed', { id: 'q' });
    expect((subscribed.docs as Doc[]).map((doc) => doc.id)).toEqual(['a1']);
    expect(subscribed.cursor).toMatch(/^v1\./);

    await admin('PUT', '/v1/db/items/a2', { data: { kind: 'a', n: 2 } });
    expect(await socket.nextOfType('change', { id: 'q' })).toMatchObject({ change: 'added', doc: { id: 'a2' } });
    await admin('PATCH', '/v1/db/items/a1', { data: { n: 10 } });
    expect(await socket.nextOfType('change', { id: 'q' })).toMatchObject({
      change: 'modified',
      doc: { id: 'a1', version: 2, data: { kind: 'a', n: 10 } },
    });
    await admin('PATCH', '/v1/db/items/a2', { data: { kind: 'b' } });
    // `removed` carries the copy the client holds, not the row that made it leave.
    expect(await socket.nextOfType('change', { id: 'q' })).toMatchObject({
      change: 'removed',
      doc: { id: 'a2', version: 1, data: { kind: 'a', n: 2 } },
    });
    await admin('DELETE', '/v1/db/items/a1');
    const removed = await socket.nextOfType('change', { id: 'q' });
    expect(removed).toMatchObject({ change: 'removed', doc: { id: 'a1', data: { n: 10 } } });
    // Writes outside the query send nothing.
    await admin('PUT', '/v1/db/items/b1', { data: { kind: 'b' } });
    await sleep(300);
    expect(socket.all((frame) => frame.type === 'change' && frame.id === 'q')).toHaveLength(4);
  });

  it('follows one document by id', async () => {
    const socket = await open(two, two.serviceKey);
    socket.send({ type: 'subscribe', id: 'd', collection: 'items', doc_id: 'single' });
    expect(await socket.nextOfType('subscribed', { id: 'd' })).toMatchObject({ docs: [] });
    await admin('PUT', '/v1/db/items/single', { data: { v: 1 } });
    expect(await socket.nextOfType('change', { id: 'd' })).toMatchObject({ change: 'added', doc: { id: 'single' } });
    await admin('PUT', '/v1/db/items/other', { data: { v: 1 } });
    await admin('PATCH', '/v1/db/items/single', { data: { v: 2 } });
    expect(await socket.nextOfType('change', { id: 'd' })).toMatchObject({
      change: 'modified',
      doc: { data: { v: 2 } },
    });
    await admin('DELETE', '/v1/db/items/single');
    expect(await socket.nextOfType('change', { id: 'd' })).toMatchObject({ change: 'removed', doc: { id: 'single' } });
  });

  it('delivers a write made with plain SQL, across instances', async () => {
    const socket = await open(two, two.serviceKey);
    socket.send({ type: 'subscribe', id: 'sql', collection: 'items', query: { where: [['kind', '==', 'sql']] } });
    await socket.nextOfType('subscribed', { id: 'sql' });
    await one.sql.query(`INSERT INTO basalt_data.items (id, owner, data) VALUES ('s1', NULL, '{"kind":"sql"}')`);
    const added = await socket.nextOfType('change', { id: 'sql' });
    expect(added).toMatchObject({
      change: 'added',
      doc: { id: 's1', version: 1, collection: 'items', data: { kind: 'sql' } },
    });
    expect((added.doc as { created_at: string }).created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });

  it('delivers a transaction held open and a later one that committed first, in commit order, each once', async () => {
    const socket = await open(one, one.serviceKey);
    socket.send({ type: 'subscribe', id: 'tx', collection: 'items', query: { where: [['kind', '==', 'tx']] } });
    await socket.nextOfType('subscribed', { id: 'tx' });
    const early = new pg.Client({ connectionString: one.database.url });
    await early.connect();
    try {
      await early.query('BEGIN');
      await early.query(`INSERT INTO basalt_data.items (id, data) VALUES ('tx-early', '{"kind":"tx"}')`);
      await one.sql.query(`INSERT INTO basalt_data.items (id, data) VALUES ('tx-late', '{"kind":"tx"}')`);
      expect(await socket.nextOfType('change', { id: 'tx' })).toMatchObject({ doc: { id: 'tx-late' } });
      await sleep(300);
      await early.query('COMMIT');
    } finally {
      await early.end();
    }
    expect(await socket.nextOfType('change', { id: 'tx' })).toMatchObject({ change: 'added', doc: { id: 'tx-early' } });
    await sleep(500);
    expect(socket.all((frame) => frame.type === 'change' && frame.id === 'tx')).toHaveLength(2);
  });

  it('resumes from a cursor with exactly the changes missed, on another instance', async () => {
    const first = await open(one, one.serviceKey);
    const query = { where: [['kind', '==', 'resume']], limit: 500 };
    first.send({ type: 'subscribe', id: 'r', collection: 'items', query });
    const copy = new Copy();
    copy.apply(await first.nextOfType('subscribed', { id: 'r' }));
    first.close();
    await first.waitClosed();

    for (let i = 0; i < 50; i++) {
      await one.sql.query(`INSERT INTO basalt_data.items (id, data) VALUES ($1, '{"kind":"resume"}')`, [`r${i}`]);
    }
    await one.sql.query(
      `UPDATE basalt_data.items SET data = data || '{"n": 1}' WHERE id IN (SELECT 'r' || g FROM generate_series(0, 49) g)`,
    );
    await one.sql.query(
      `UPDATE basalt_data.items SET data = data || '{"other": true}' WHERE data->>'kind' <> 'resume'`,
    );

    const second = await open(two, two.serviceKey);
    second.send({ type: 'subscribe', id: 'r', collection: 'items', query, resume_from: copy.cursor });
    const subscribed = await second.nextOfType('subscribed', { id: 'r' });
    expect(subscribed.docs).toBeUndefined();
    const changes: Frame[] = [];
    for (let i = 0; i < 100; i++) changes.push(await second.nextOfType('change', { id: 'r' }));
    expect(changes.slice(0, 50).map((frame) => [frame.change, (frame.doc as Doc).id])).toEqual(
      Array.from({ length: 50 }, (_, i) => ['added', `r${i}`]),
    );
    expect(changes.slice(50).every((frame) => frame.change === 'modified')).toBe(true);
    for (const frame of changes) copy.apply(frame);
    expect(copy.ids()).toEqual((await queryIds('items', query, one.serviceKey)).sort());
    await sleep(500);
    expect(second.all((frame) => frame.type === 'change' && frame.id === 'r')).toHaveLength(100);
  });

  it('applies the read rule per subscriber', async () => {
    const alice: AuthBody = await signUp(one.url);
    const bob: AuthBody = await signUp(one.url);
    const aliceToken = alice.session?.access_token as string;
    const bobToken = bob.session?.access_token as string;
    const a = await open(one, aliceToken);
    const b = await open(two);
    b.send({ type: 'auth', access_token: bobToken });
    await b.nextOfType('authenticated');
    await a.nextOfType('authenticated');
    a.send({ type: 'subscribe', id: 't', collection: 'todos' });
    b.send({ type: 'subscribe', id: 't', collection: 'todos' });
    await a.nextOfType('subscribed', { id: 't' });
    await b.nextOfType('subscribed', { id: 't' });
    const post = (token: string, id: string, data: unknown) =>
      request(one.url, 'POST', '/v1/db/todos', { token, body: { id, data } });
    expect((await post(aliceToken, 'alice-private', { title: 'a' })).status).toBe(201);
    expect((await post(bobToken, 'bob-private', { title: 'b' })).status).toBe(201);
    expect((await post(aliceToken, 'alice-public', { title: 'p', public: true })).status).toBe(201);
    const aCopy = new Copy();
    const bCopy = new Copy();
    await converge(a, aCopy, 't', () => queryIds('todos', {}, aliceToken));
    await converge(b, bCopy, 't', () => queryIds('todos', {}, bobToken));
    expect(aCopy.ids()).toEqual(['alice-private', 'alice-public']);
    expect(bCopy.ids()).toEqual(['alice-public', 'bob-private']);
    // The document stops being readable for bob: he gets "removed".
    await request(one.url, 'PATCH', '/v1/db/todos/alice-public', {
      token: aliceToken,
      body: { data: { public: false } },
    });
    expect(await b.nextOfType('change', { id: 't' })).toMatchObject({ change: 'removed', doc: { id: 'alice-public' } });
    expect(await a.nextOfType('change', { id: 't' })).toMatchObject({
      change: 'modified',
      doc: { id: 'alice-public' },
    });
  });

  it('re-reads the window in one reset when the socket signs in, and ends it with FORBIDDEN when it signs out', async () => {
    const carol = await signUp(one.url);
    const token = carol.session?.access_token as string;
    const created = await request(one.url, 'POST', '/v1/db/todos', { token, body: { id: 'carol-1', data: {} } });
    expect(created.status).toBe(201);
    const socket = await open(two);
    socket.send({ type: 'subscribe', id: 'c', collection: 'todos' });
    const copy = new Copy();
    copy.apply(await socket.nextOfType('subscribed', { id: 'c' }));
    expect(copy.ids()).toEqual([]);
    socket.send({ type: 'auth', access_token: token });
    await socket.nextOfType('authenticated');
    const reset = await socket.nextOfType('reset', { id: 'c' });
    copy.apply(reset);
    expect(copy.ids()).toEqual((await queryIds('todos', {}, token)).sort());
    expect(copy.ids()).toContain('carol-1');
    socket.send({ type: 'auth', access_token: null });
    await socket.nextOfType('authenticated', { role: 'public' });
    expect(await socket.nextOfType('error', { id: 'c' })).toMatchObject({ code: 'FORBIDDEN' });
    expect(socket.all((frame) => frame.id === 'c' && frame.type === 'change')).toEqual([]);
  });

  it('keeps a limit window equal to the query result', async () => {
    for (const n of [1, 2, 3, 4, 5]) await admin('PUT', `/v1/db/items/w${n}`, { data: { kind: 'w', n } });
    const query = { where: [['kind', '==', 'w']], order_by: [['n', 'asc']], limit: 3 };
    const socket = await open(two, two.serviceKey);
    socket.send({ type: 'subscribe', id: 'w', collection: 'items', query });
    const copy = new Copy();
    const subscribed = await socket.nextOfType('subscribed', { id: 'w' });
    copy.apply(subscribed);
    expect((subscribed.docs as Doc[]).map((doc) => doc.id)).toEqual(['w1', 'w2', 'w3']);
    const expected = () => queryIds('items', query, one.serviceKey);

    await admin('DELETE', '/v1/db/items/w2');
    await converge(socket, copy, 'w', expected);
    expect(copy.ids()).toEqual(['w1', 'w3', 'w4']);
    await admin('PUT', '/v1/db/items/w0', { data: { kind: 'w', n: 0 } });
    await converge(socket, copy, 'w', expected);
    expect(copy.ids()).toEqual(['w0', 'w1', 'w3']);
    await admin('PATCH', '/v1/db/items/w0', { data: { n: 100 } });
    await converge(socket, copy, 'w', expected);
    expect(copy.ids()).toEqual(['w1', 'w3', 'w4']);
    await admin('PATCH', '/v1/db/items/w1', { data: { kind: 'x' } });
    await converge(socket, copy, 'w', expected);
    expect(copy.ids()).toEqual(['w3', 'w4', 'w5']);
    await one.sql.query(`DELETE FROM basalt_data.items WHERE data->>'kind' = 'w'`);
    await converge(socket, copy, 'w', expected);
    expect(copy.ids()).toEqual([]);
  });

  it('refuses the 101st subscription of a connection', async () => {
    const socket = await open(one, one.serviceKey);
    for (let i = 0; i < 100; i++) socket.send({ type: 'subscribe', id: `s${i}`, collection: 'items', doc_id: `x${i}` });
    socket.send({ type: 'subscribe', id: 's100', collection: 'items', doc_id: 'x100' });
    const error = await socket.nextOfType('error', { id: 's100' });
    expect(error.code).toBe('INVALID_REQUEST');
    expect(error.details).toEqual({ limit: 100 });
    for (let i = 0; i < 100; i++) await socket.nextOfType('subscribed', { id: `s${i}` }, 10_000);
    socket.send({ type: 'subscribe', id: 's0', collection: 'items', doc_id: 'x0' });
    socket.send({ type: 'unsubscribe', id: 's1' });
    socket.send({ type: 'subscribe', id: 's101', collection: 'items', doc_id: 'x101' });
    expect(await socket.nextOfType('error', { id: 's0' })).toMatchObject({ code: 'ALREADY_EXISTS' });
    await socket.nextOfType('subscribed', { id: 's101' });
  }, 30_000);

  it('answers unknown collections and bad queries with an error frame for that id', async () => {
    const socket = await open(one, one.serviceKey);
    socket.send({ type: 'subscribe', id: 'nope', collection: 'nothing_here' });
    expect(await socket.nextOfType('error', { id: 'nope' })).toMatchObject({ code: 'NOT_FOUND' });
    socket.send({ type: 'subscribe', id: 'bad', collection: 'items', query: { where: [['n', '~~', 1]] } });
    expect(await socket.nextOfType('error', { id: 'bad' })).toMatchObject({ code: 'INVALID_REQUEST' });
    socket.send({ type: 'subscribe', id: 'cur', collection: 'items', resume_from: 'not-a-cursor' });
    expect(await socket.nextOfType('error', { id: 'cur' })).toMatchObject({ code: 'INVALID_REQUEST' });
    const user = await signUp(one.url);
    const userSocket = await open(one, user.session?.access_token);
    await userSocket.nextOfType('authenticated');
    await admin('POST', '/v1/admin/collections', { name: 'secrets' });
    userSocket.send({ type: 'subscribe', id: 'sec', collection: 'secrets' });
    expect(await userSocket.nextOfType('error', { id: 'sec' })).toMatchObject({ code: 'FORBIDDEN' });
  });

  it('stops delivery with an error when the session is revoked', async () => {
    const user = await signUp(one.url);
    const token = user.session?.access_token as string;
    const socket = await open(two, token);
    await socket.nextOfType('authenticated');
    socket.send({ type: 'subscribe', id: 'rv', collection: 'todos' });
    await socket.nextOfType('subscribed', { id: 'rv' });
    const signOut = await request(one.url, 'POST', '/v1/auth/signout', { token, body: { scope: 'local' } });
    expect(signOut.status).toBe(204);
    const started = Date.now();
    const error = await socket.nextOfType('error', { id: 'rv' }, 8_000);
    expect(error.code).toBe('UNAUTHENTICATED');
    expect(Date.now() - started).toBeLessThan(6_500);
    await request(one.url, 'POST', '/v1/db/todos', { token: one.serviceKey, body: { data: { public: true } } });
    await sleep(300);
    expect(socket.all((frame) => frame.type === 'change' && frame.id === 'rv')).toHaveLength(0);
  });

  it('stops delivery with an error when the token expires without renewal, and keeps it with a fresh token', async () => {
    const shortLived = await startTestApp(
      one.database,
      { BASALT_REALTIME_AUTH_CHECK_MS: '200' },
      // Long enough for b's renewal to land first on a loaded machine; a simply lets it run out.
      { auth: { ...one.config.auth, accessTokenTtlSeconds: 8 } },
    );
    try {
      const expiring = await signUp(shortLived.url);
      const renewed = await signUp(shortLived.url);
      const a = await open(shortLived, expiring.session?.access_token);
      const b = await open(shortLived, renewed.session?.access_token);
      for (const socket of [a, b]) {
        await socket.nextOfType('authenticated');
        socket.send({ type: 'subscribe', id: 'exp', collection: 'todos' });
        await socket.nextOfType('subscribed', { id: 'exp' });
      }
      // Renewed a few seconds in, so b's fresh token outlives a's by that much.
      await sleep(3_000);
      const refreshed = await request(shortLived.url, 'POST', '/v1/auth/refresh', {
        body: { refresh_token: renewed.session?.refresh_token },
      });
      expect(refreshed.status).toBe(200);
      b.send({ type: 'auth', access_token: (refreshed.body as AuthBody).session?.access_token });
      await b.nextOfType('authenticated');
      const error = await a.nextOfType('error', { id: 'exp' }, 15_000);
      expect(error.code).toBe('UNAUTHENTICATED');
      await sleep(1_000);
      expect(b.all((frame) => frame.type === 'error')).toEqual([]);
    } finally {
      await shortLived.close();
    }
  });

  it('sends reset when the cursor is older than the retention', async () => {
    await one.sql.query(`DELETE FROM basalt.change_ticks WHERE id < (SELECT max(id) FROM basalt.change_ticks)`);
    const socket = await open(one, one.serviceKey);
    socket.send({ type: 'subscribe', id: 'old', collection: 'items', doc_id: 'w3', resume_from: 'v1.1' });
    const reset = await socket.nextOfType('reset', { id: 'old' });
    expect(reset.docs).toEqual([]);
    expect(reset.cursor).toMatch(/^v1\./);
  });
});
