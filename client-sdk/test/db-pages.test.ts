// Backward paging (endBefore, limitToLast) and projection (select) against a real server.
import { beforeAll, describe, expect, it } from 'vitest';
import { createCollection, errorCode, request, useTestApp } from '../../test/helpers.js';
import { signedInClient } from './sdk-support.js';
import { BasaltError, type BasaltClient } from '../src/index.js';

const server = useTestApp();
let alice: BasaltClient;
let bob: BasaltClient;

interface Item {
  n: number;
  label: string;
  secret: string;
  meta: { color: string; size: number };
}

beforeAll(async () => {
  await createCollection(server, {
    name: 'items',
    rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null' },
  });
  [alice, bob] = await Promise.all([signedInClient(server.url), signedInClient(server.url)]);
  const items = alice.db.collection<Item>('items');
  for (let n = 1; n <= 7; n++) {
    await items.add(
      { n, label: `item ${n}`, secret: `s${n}`, meta: { color: n % 2 ? 'red' : 'blue', size: n } },
      { id: `i${n}` },
    );
  }
  await bob.db
    .collection<Item>('items')
    .add({ n: 4, label: 'bob', secret: 'b', meta: { color: 'red', size: 0 } }, { id: 'bob4' });
});

const numbers = (docs: Array<{ data: { n: number } }>) => docs.map((doc) => doc.data.n);

describe('backward paging', () => {
  it('pages forward with startAfter and back with endBefore + limitToLast, in the query order', async () => {
    const byN = alice.db.collection<Item>('items').orderBy('n');
    const first = await byN.limit(3).get();
    expect(numbers(first.docs)).toEqual([1, 2, 3]);
    expect(first.prevCursor).toBeNull();
    const second = await byN.limit(3).startAfter(first.nextCursor).get();
    expect(numbers(second.docs)).toEqual([4, 5, 6]);
    const third = await byN.limit(3).startAfter(second.nextCursor).get();
    expect(numbers(third.docs)).toEqual([7]);
    expect(third.nextCursor).toBeNull();

    // Back from the third page: the three documents just before it.
    const back = await byN.limitToLast(3).endBefore(third.prevCursor).get();
    expect(numbers(back.docs)).toEqual([4, 5, 6]);
    expect(back.nextCursor).not.toBeNull();
    const backAgain = await byN.limitToLast(3).endBefore(back.prevCursor).get();
    expect(numbers(backAgain.docs)).toEqual([1, 2, 3]);
    expect(backAgain.prevCursor).toBeNull();
    // And forward again from a page reached backwards.
    expect(numbers((await byN.limit(2).startAfter(backAgain.nextCursor).get()).docs)).toEqual([4, 5]);
  });

  it('limitToLast alone is the end of the result; descending orders and ranges work', async () => {
    const items = alice.db.collection<Item>('items');
    const last = await items.orderBy('n').limitToLast(2).get();
    expect(numbers(last.docs)).toEqual([6, 7]);
    expect(last.nextCursor).toBeNull();
    expect(last.prevCursor).not.toBeNull();
    const desc = await items.orderBy('n', 'desc').limitToLast(2).get();
    expect(numbers(desc.docs)).toEqual([2, 1]);
    // Without orderBy the order is by id, and the end of it is still well defined.
    expect((await items.limitToLast(2).get()).docs.map((doc) => doc.id)).toEqual(['i6', 'i7']);
    // A window between two cursors.
    const all = await items.orderBy('n').limit(1).get();
    const tail = await items.orderBy('n').limitToLast(1).get();
    const middle = await items.orderBy('n').startAfter(all.nextCursor).endBefore(tail.prevCursor).get();
    expect(numbers(middle.docs)).toEqual([2, 3, 4, 5, 6]);
    // limit() after limitToLast() pages from the start again.
    expect(numbers((await items.orderBy('n').limitToLast(2).limit(2).get()).docs)).toEqual([1, 2]);
  });

  it('applies the read rule: another user’s documents are never in a page', async () => {
    const page = await bob.db.collection<Item>('items').orderBy('n').limitToLast(5).get();
    expect(page.docs.map((doc) => doc.id)).toEqual(['bob4']);
  });

  it('refuses a cursor of another order, or limitToLast out of range, with INVALID_REQUEST', async () => {
    const items = alice.db.collection<Item>('items');
    const page = await items.orderBy('n').limit(2).get();
    const wrongOrder = await items
      .orderBy('n')
      .orderBy('label')
      .endBefore(page.nextCursor)
      .get()
      .catch((e: unknown) => e);
    expect(wrongOrder).toBeInstanceOf(BasaltError);
    expect((wrongOrder as BasaltError).code).toBe('INVALID_REQUEST');
    expect((wrongOrder as BasaltError<'INVALID_REQUEST'>).details?.field).toBe('before');
    for (const body of [{ limit_to_last: 0 }, { limit_to_last: 1001 }, { before: 'not a cursor!' }, { before: 7 }]) {
      const response = await request(server.url, 'POST', '/v1/db/items/query', { token: server.serviceKey, body });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
    expect(() => items.limitToLast(2).onSnapshot(() => undefined)).toThrow(BasaltError);
  });
});

describe('select', () => {
  it('returns only the selected data paths, nested as stored, with every system field', async () => {
    const result = await alice.db
      .collection<Item>('items')
      .where('n', '<=', 2)
      .orderBy('n')
      .select('label', 'meta.color')
      .get();
    expect(result.docs.map((doc) => doc.data)).toEqual([
      { label: 'item 1', meta: { color: 'red' } },
      { label: 'item 2', meta: { color: 'blue' } },
    ]);
    const doc = result.docs[0];
    expect(doc).toMatchObject({ id: 'i1', collection: 'items', version: 1, owner: alice.auth.user?.id });
    expect(typeof doc?.created_at).toBe('string');
    // Cursors still come from the full documents: paging a projection works.
    const page = await alice.db.collection<Item>('items').orderBy('meta.size').select('n').limit(2).get();
    expect(page.docs.map((d) => d.data)).toEqual([{ n: 1 }, { n: 2 }]);
    const next = await alice.db
      .collection<Item>('items')
      .orderBy('meta.size')
      .select('n')
      .limit(2)
      .startAfter(page.nextCursor)
      .get();
    expect(next.docs.map((d) => d.data)).toEqual([{ n: 3 }, { n: 4 }]);
  });

  it('still applies the read rule, and leaves out absent paths', async () => {
    const result = await bob.db.collection('items').select('secret', 'missing.path').get();
    expect(result.docs.map((doc) => doc.data)).toEqual([{ secret: 'b' }]);
    const nothing = await request(server.url, 'POST', '/v1/db/items/query', { body: { select: ['secret'] } });
    expect(nothing.status).toBe(200);
    expect(nothing.body).toMatchObject({ docs: [] });
  });

  it('refuses bad paths and too many paths with INVALID_REQUEST', async () => {
    for (const select of [['$bad'], [''], 'label', Array.from({ length: 101 }, (_, i) => `f${i}`), [1]]) {
      const response = await request(server.url, 'POST', '/v1/db/items/query', {
        token: server.serviceKey,
        body: { select },
      });
      expect(response.status, JSON.stringify(select).slice(0, 80)).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
  });
});
