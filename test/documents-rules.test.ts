import { beforeAll, describe, expect, it } from 'vitest';
import { errorCode, request, useTestApp } from './helpers.js';
import { signUp, type SignedUp } from './auth-helpers.js';
import { createCollection, type Doc } from './documents-support.js';

const server = useTestApp();
let alice: SignedUp;
let bob: SignedUp;

const OWNER_ONLY = {
  read: 'auth != null && doc.owner == auth.uid',
  create: 'auth != null && incoming.owner == auth.uid',
  update: 'auth != null && doc.owner == auth.uid && incoming.owner == doc.owner',
  delete: 'auth != null && doc.owner == auth.uid',
};

function as(user: SignedUp | null, method: string, path: string, body?: unknown, headers?: Record<string, string>) {
  return request(server.url, method, path, { body, token: user?.token, headers });
}

beforeAll(async () => {
  await createCollection(server, { name: 'private', rules: OWNER_ONLY, indexes: ['n'] });
  await createCollection(server, {
    name: 'posts',
    rules: {
      read: 'doc.data.public == true || (auth != null && doc.owner == auth.uid)',
      create: 'auth != null && size(incoming.data.title) <= 10',
      update: 'auth != null && doc.owner == auth.uid',
    },
  });
  await createCollection(server, { name: 'locked' });
  await createCollection(server, { name: 'writeonly', rules: { create: 'true' } });
  [alice, bob] = await Promise.all([signUp(server.url), signUp(server.url)]);
});

describe('two users cannot read or change each other’s private documents', () => {
  let aliceDoc: Doc;

  beforeAll(async () => {
    const a = await as(alice, 'POST', '/v1/db/private', { id: 'alice-1', data: { n: 1, secret: 'a' } });
    expect(a.status).toBe(201);
    aliceDoc = a.body as Doc;
    expect(aliceDoc.owner).toBe(alice.id);
    for (let i = 0; i < 3; i++) {
      expect((await as(bob, 'POST', '/v1/db/private', { data: { n: i, secret: 'b' } })).status).toBe(201);
    }
    expect((await as(alice, 'POST', '/v1/db/private', { data: { n: 2, secret: 'a' } })).status).toBe(201);
  });

  it('get: the owner reads it; the other user and the public get 404', async () => {
    expect((await as(alice, 'GET', '/v1/db/private/alice-1')).status).toBe(200);
    const byBob = await as(bob, 'GET', '/v1/db/private/alice-1');
    expect(byBob.status).toBe(404);
    expect(errorCode(byBob.body)).toBe('NOT_FOUND');
    expect((await as(null, 'GET', '/v1/db/private/alice-1')).status).toBe(404);
  });

  it('query and count: each sees only their own', async () => {
    const aliceQuery = (await as(alice, 'POST', '/v1/db/private/query', {})).body as { docs: Doc[] };
    expect(aliceQuery.docs).toHaveLength(2);
    expect(aliceQuery.docs.every((doc) => doc.owner === alice.id)).toBe(true);
    const bobQuery = (await as(bob, 'POST', '/v1/db/private/query', { where: [['secret', '==', 'a']] })).body as {
      docs: Doc[];
    };
    expect(bobQuery.docs).toEqual([]);
    const bobByOwner = (await as(bob, 'POST', '/v1/db/private/query', { where: [['owner', '==', alice.id]] })).body as {
      docs: Doc[];
    };
    expect(bobByOwner.docs).toEqual([]);
    const bobOr = (
      await as(bob, 'POST', '/v1/db/private/query', {
        where: [
          {
            or: [
              ['id', '==', 'alice-1'],
              ['n', '>=', 0],
            ],
          },
        ],
      })
    ).body as { docs: Doc[] };
    expect(bobOr.docs.every((doc) => doc.owner === bob.id)).toBe(true);
    expect(bobOr.docs).toHaveLength(3);
    expect((await as(alice, 'POST', '/v1/db/private/count', {})).body).toEqual({ count: 2 });
    expect((await as(bob, 'POST', '/v1/db/private/count', {})).body).toEqual({ count: 3 });
    expect((await as(bob, 'POST', '/v1/db/private/count', { where: [['secret', '==', 'a']] })).body).toEqual({
      count: 0,
    });
    expect((await as(null, 'POST', '/v1/db/private/count', {})).body).toEqual({ count: 0 });
    expect(
      (await request(server.url, 'POST', '/v1/db/private/count', { body: {}, token: server.serviceKey })).body,
    ).toEqual({
      count: 5,
    });
  });

  it('patch, put and delete by the other user change nothing', async () => {
    const patch = await as(bob, 'PATCH', '/v1/db/private/alice-1', { data: { secret: 'stolen' } });
    expect(patch.status).toBe(404);
    const put = await as(bob, 'PUT', '/v1/db/private/alice-1', { data: { secret: 'stolen' } });
    expect([403, 404]).toContain(put.status);
    const del = await as(bob, 'DELETE', '/v1/db/private/alice-1');
    expect(del.status).toBe(404);
    const withVersion = await as(bob, 'PATCH', '/v1/db/private/alice-1', { data: { n: 9 } }, { 'if-match': '5' });
    expect(withVersion.status).toBe(404);
    const stored = (await as(alice, 'GET', '/v1/db/private/alice-1')).body as Doc;
    expect(stored).toEqual(aliceDoc);
  });

  it('batch ops on the other user’s document fail as a whole and change nothing', async () => {
    for (const op of [
      { op: 'update', collection: 'private', id: 'alice-1', data: { secret: 'stolen' } },
      { op: 'set', collection: 'private', id: 'alice-1', data: { secret: 'stolen' } },
      { op: 'delete', collection: 'private', id: 'alice-1' },
    ]) {
      const response = await as(bob, 'POST', '/v1/db/batch', {
        ops: [{ op: 'create', collection: 'private', id: 'bob-batch', data: {} }, op],
      });
      expect([403, 404], op.op).toContain(response.status);
      expect((response.body as { error: { details: { index: number } } }).error.details.index).toBe(1);
    }
    expect((await as(bob, 'GET', '/v1/db/private/bob-batch')).status).toBe(404);
    expect((await as(alice, 'GET', '/v1/db/private/alice-1')).body).toEqual(aliceDoc);
  });

  it('a user cannot create a document owned by someone else or take ownership by update', async () => {
    // owner is always the caller: incoming.owner == auth.uid holds, so the write lands as the caller's.
    const created = (await as(bob, 'POST', '/v1/db/private', { id: 'bob-own', data: {} })).body as Doc;
    expect(created.owner).toBe(bob.id);
  });

  it('the owner can patch and delete', async () => {
    const patched = await as(alice, 'PATCH', '/v1/db/private/alice-1', { data: { n: { $increment: 1 } } });
    expect(patched.status).toBe(200);
    expect((patched.body as Doc).data.n).toBe(2);
    expect((await as(alice, 'DELETE', '/v1/db/private/alice-1')).status).toBe(204);
  });
});

describe('rule paths', () => {
  it('create rules see incoming; a denied create is 403 FORBIDDEN', async () => {
    const ok = await as(alice, 'POST', '/v1/db/posts', { id: 'p1', data: { title: 'short', public: false } });
    expect(ok.status).toBe(201);
    const long = await as(alice, 'POST', '/v1/db/posts', { data: { title: 'much too long title' } });
    expect(long.status).toBe(403);
    expect(errorCode(long.body)).toBe('FORBIDDEN');
    const anonymous = await as(null, 'POST', '/v1/db/posts', { data: { title: 'x' } });
    expect(anonymous.status).toBe(403);
  });

  it('a readable document whose update rule denies is 403, an unreadable one 404', async () => {
    await as(alice, 'PUT', '/v1/db/posts/p2', { data: { title: 'pub', public: true } });
    expect((await as(bob, 'GET', '/v1/db/posts/p2')).status).toBe(200);
    expect((await as(null, 'GET', '/v1/db/posts/p2')).status).toBe(200);
    const bobPatch = await as(bob, 'PATCH', '/v1/db/posts/p2', { data: { title: 'mine' } });
    expect(bobPatch.status).toBe(403);
    const bobPatchPrivate = await as(bob, 'PATCH', '/v1/db/posts/p1', { data: { title: 'mine' } });
    expect(bobPatchPrivate.status).toBe(404);
  });

  it('a missing rule means only the service key: delete without a rule is refused', async () => {
    const response = await as(alice, 'DELETE', '/v1/db/posts/p2');
    expect(response.status).toBe(403);
    expect((await as(alice, 'GET', '/v1/db/posts/p2')).status).toBe(200);
    const service = await request(server.url, 'DELETE', '/v1/db/posts/p2', { token: server.serviceKey });
    expect(service.status).toBe(204);
  });

  it('a collection without rules is closed to users and open to the service key', async () => {
    expect((await as(alice, 'POST', '/v1/db/locked', { data: {} })).status).toBe(403);
    expect((await as(alice, 'POST', '/v1/db/locked/query', {})).status).toBe(403);
    expect((await as(null, 'POST', '/v1/db/locked/count', {})).status).toBe(403);
    const created = await request(server.url, 'POST', '/v1/db/locked', {
      body: { id: 'l1', data: {} },
      token: server.serviceKey,
    });
    expect(created.status).toBe(201);
    expect((await as(alice, 'GET', '/v1/db/locked/l1')).status).toBe(404);
    expect((await as(alice, 'PUT', '/v1/db/locked/l1', { data: {} })).status).toBe(404);
  });

  it('a write-only collection accepts creates it will not show back', async () => {
    const created = await as(null, 'POST', '/v1/db/writeonly', { id: 'w1', data: { msg: 'hi' } });
    expect(created.status).toBe(201);
    expect((created.body as Doc).owner).toBeNull();
    expect((await as(null, 'GET', '/v1/db/writeonly/w1')).status).toBe(404);
  });

  it('a merge the caller may not read back withholds the data', async () => {
    await createCollection(server, {
      name: 'inbox',
      rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null', update: 'auth != null' },
    });
    await as(alice, 'PUT', '/v1/db/inbox/box', { data: { secret: 'only alice', count: 1 } });
    const patched = await as(bob, 'PATCH', '/v1/db/inbox/box', { data: { count: { $increment: 1 } } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ id: 'box', version: 2, data: null });
    const batch = await as(bob, 'POST', '/v1/db/batch', {
      ops: [{ op: 'update', collection: 'inbox', id: 'box', data: { count: { $increment: 1 } } }],
    });
    expect(batch.status).toBe(200);
    expect((batch.body as { results: Array<{ data: unknown }> }).results[0]?.data).toBeNull();
    const own = await as(alice, 'PATCH', '/v1/db/inbox/box', { data: { seen: true } });
    expect((own.body as Doc).data).toEqual({ secret: 'only alice', count: 3, seen: true });
  });

  it('rules changed through the admin API apply at once', async () => {
    const patch = await request(server.url, 'PATCH', '/v1/admin/collections/locked', {
      body: { rules: { read: 'true' } },
      token: server.serviceKey,
    });
    expect(patch.status).toBe(200);
    expect((await as(alice, 'GET', '/v1/db/locked/l1')).status).toBe(200);
    expect(((await as(null, 'POST', '/v1/db/locked/count', {})).body as { count: number }).count).toBe(1);
    await request(server.url, 'PATCH', '/v1/admin/collections/locked', {
      body: { rules: { read: null } },
      token: server.serviceKey,
    });
    expect((await as(alice, 'GET', '/v1/db/locked/l1')).status).toBe(404);
  });

  it('a forged or expired token is 401, never a document', async () => {
    const forged = await request(server.url, 'GET', '/v1/db/posts/p1', { token: `${alice.token.slice(0, -4)}AAAA` });
    expect(forged.status).toBe(401);
  });
});
