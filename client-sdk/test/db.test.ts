import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request, useTestApp } from '../../test/helpers.js';
import { signedInClient } from './sdk-support.js';
import {
  BasaltError,
  arrayRemove,
  arrayUnion,
  createClient,
  deleteField,
  increment,
  or,
  serverTimestamp,
  where,
  type BasaltClient,
} from '../src/index.js';

const server = useTestApp();
let alice: BasaltClient;
let bob: BasaltClient;
let anonymousClient: BasaltClient;

interface Todo {
  title: string;
  done: boolean;
  n?: number;
  tags?: string[];
  at?: string;
  meta?: { a?: number; b?: number };
}

beforeAll(async () => {
  const created = await request(server.url, 'POST', '/v1/admin/collections', {
    token: server.serviceKey,
    body: {
      name: 'todos',
      rules: {
        read: 'auth != null && doc.owner == auth.uid',
        create: 'auth != null',
        update: 'auth != null && doc.owner == auth.uid',
        delete: 'auth != null && doc.owner == auth.uid',
      },
    },
  });
  expect(created.status).toBe(201);
  const dropbox = await request(server.url, 'POST', '/v1/admin/collections', {
    token: server.serviceKey,
    body: { name: 'dropbox', rules: { read: 'false', create: 'auth != null', update: 'auth != null' } },
  });
  expect(dropbox.status).toBe(201);
  [alice, bob] = await Promise.all([signedInClient(server.url), signedInClient(server.url)]);
  anonymousClient = createClient(server.url, { persistSession: false, autoRefreshToken: false });
});

afterAll(async () => {
  for (const client of [alice, bob, anonymousClient]) client?.auth.stopAutoRefresh?.();
});

describe('db.collection', () => {
  it('adds, reads, sets, updates with transforms and deletes', async () => {
    const todos = alice.db.collection<Todo>('todos');
    const added = await todos.add({ title: 'x', done: false });
    expect(added).toMatchObject({ collection: 'todos', version: 1, data: { title: 'x', done: false } });
    expect(added.owner).toBe(alice.auth.user?.id);
    const chosen = await todos.add({ title: 'chosen', done: false }, { id: 'my-id' });
    expect(chosen.id).toBe('my-id');
    expect((await todos.doc(added.id).get())?.data.title).toBe('x');
    expect(await todos.doc('missing').get()).toBeNull();
    const set = await todos.doc('my-id').set({ title: 'replaced', done: true, at: serverTimestamp() });
    expect(set.version).toBe(2);
    expect(set.data.at).toBe(set.updated_at);
    const updated = await todos
      .doc('my-id')
      .update({ n: increment(2), tags: arrayUnion('a', 'b'), meta: { a: 1 }, done: deleteField() }, { ifVersion: 2 });
    expect(updated.data).toEqual({ title: 'replaced', n: 2, tags: ['a', 'b'], at: set.data.at, meta: { a: 1 } });
    const again = await todos.doc('my-id').update({ tags: arrayRemove('a'), meta: { b: 2 } });
    expect(again.data?.tags).toEqual(['b']);
    expect(again.data?.meta).toEqual({ a: 1, b: 2 });
    await todos.doc('my-id').delete();
    expect(await todos.doc('my-id').get()).toBeNull();
  });

  it('rejects with BasaltError and the catalogue code', async () => {
    const todos = alice.db.collection<Todo>('todos');
    const doc = await todos.add({ title: 'v', done: false });
    const conflict = await todos
      .doc(doc.id)
      .update({ done: true }, { ifVersion: 9 })
      .catch((error: unknown) => error);
    expect(conflict).toBeInstanceOf(BasaltError);
    expect((conflict as BasaltError).code).toBe('VERSION_CONFLICT');
    expect((conflict as BasaltError).status).toBe(409);
    const taken = await todos.add({ title: 'dup', done: false }, { id: doc.id }).catch((error: unknown) => error);
    expect((taken as BasaltError).code).toBe('ALREADY_EXISTS');
    const badQuery = await todos
      .limit(5000)
      .get()
      .catch((error: unknown) => error);
    expect((badQuery as BasaltError).code).toBe('INVALID_REQUEST');
    const anonymous = await anonymousClient.db
      .collection('todos')
      .add({ title: 'no' })
      .catch((error: unknown) => error);
    expect((anonymous as BasaltError).code).toBe('FORBIDDEN');
    const missing = await alice.db
      .collection('nope')
      .get()
      .catch((error: unknown) => error);
    expect((missing as BasaltError).code).toBe('NOT_FOUND');
  });

  it('another user sees none of alice’s documents', async () => {
    const doc = await alice.db.collection<Todo>('todos').add({ title: 'secret', done: false });
    const bobs = bob.db.collection<Todo>('todos');
    expect(await bobs.doc(doc.id).get()).toBeNull();
    expect((await bobs.get()).docs).toEqual([]);
    expect(await bobs.count()).toBe(0);
    const update = await bobs
      .doc(doc.id)
      .update({ title: 'mine' })
      .catch((error: unknown) => error);
    expect((update as BasaltError).code).toBe('NOT_FOUND');
  });
});

describe('update', () => {
  it('answers data: null when the caller may update but not read, and says so in its type', async () => {
    const dropbox = alice.db.collection<{ note: string }>('dropbox');
    await dropbox.add({ note: 'first' }, { id: 'slot' });
    const updated = await dropbox.doc('slot').update({ note: 'second' });
    expect(updated.data).toBeNull();
    expect(updated.version).toBe(2);
    // The type makes the caller check: `updated.data.note` does not compile.
    const note: string | null = updated.data === null ? null : updated.data.note;
    expect(note).toBeNull();
  });

  it('refuses dotted keys instead of storing a key with a dot in its name', async () => {
    const todos = alice.db.collection('todos');
    const doc = await todos.add({ title: 'dots', done: false });
    const refused = await todos
      .doc(doc.id)
      .update({ 'meta.a': 1 })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BasaltError);
    expect((refused as BasaltError).code).toBe('INVALID_REQUEST');
    expect((refused as BasaltError).details).toEqual({ field: 'meta.a' });
    const nested = await todos
      .doc(doc.id)
      .update({ meta: { 'x.y': 1 } })
      .catch((error: unknown) => error);
    expect((nested as BasaltError).details).toEqual({ field: 'meta.x.y' });
    expect(() => alice.db.batch().update('todos', doc.id, { 'meta.a': 1 })).toThrow(BasaltError);
    expect((await todos.doc(doc.id).get())?.version).toBe(1);
  });
});

describe('queries', () => {
  it('chains where, orderBy, limit and startAfter, and counts', async () => {
    const todos = bob.db.collection<Todo>('todos');
    for (let i = 0; i < 7; i++) await todos.add({ title: `t${i}`, done: i % 2 === 0, n: i });
    const q = todos.where('done', '==', true).orderBy('n', 'desc').limit(2);
    const first = await q.get();
    expect(first.docs.map((doc) => doc.data.n)).toEqual([6, 4]);
    expect(first.nextCursor).not.toBeNull();
    const second = await q.startAfter(first.nextCursor).get();
    expect(second.docs.map((doc) => doc.data.n)).toEqual([2, 0]);
    // The server looks one document ahead: the last page says so.
    expect(second.nextCursor).toBeNull();
    expect(await q.count()).toBe(4);
    expect(await todos.count()).toBe(7);
    const grouped = await todos
      .where(or(where('n', '<', 1), where('n', '>', 5)))
      .orderBy('n')
      .get();
    expect(grouped.docs.map((doc) => doc.data.n)).toEqual([0, 6]);
    expect(q.toJSON()).toEqual({ where: [['done', '==', true]], order_by: [['n', 'desc']], limit: 2 });
  });
});

describe('batch', () => {
  it('commits create, set, update and delete together', async () => {
    const todos = alice.db.collection<Todo>('todos');
    const existing = await todos.add({ title: 'b', done: false, n: 1 });
    const results = await alice.db
      .batch()
      .create<Todo>('todos', { title: 'new', done: false }, { id: 'batch-new' })
      .set<Todo>('todos', 'batch-set', { title: 'set', done: true })
      .update<Todo>('todos', existing.id, { n: increment(1) }, { ifVersion: 1 })
      .delete('todos', existing.id)
      .commit();
    expect(results).toHaveLength(4);
    expect(results[0]?.id).toBe('batch-new');
    expect(results[2]?.data).toMatchObject({ n: 2 });
    expect(results[3]).toBeNull();
    expect(await todos.doc(existing.id).get()).toBeNull();
  });

  it('fails as a whole and names the failing op', async () => {
    const batch = alice.db
      .batch()
      .create('todos', { title: 'never' }, { id: 'batch-never' })
      .update('todos', 'does-not-exist', { n: 1 });
    const error = await batch.commit().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(BasaltError);
    expect((error as BasaltError).code).toBe('NOT_FOUND');
    expect((error as BasaltError).details).toMatchObject({ index: 1 });
    expect(await alice.db.collection('todos').doc('batch-never').get()).toBeNull();
  });
});
