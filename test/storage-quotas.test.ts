import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StorageBackend } from '../server/modules/storage/backends/index.js';
import { signUp, type SignedUp } from './auth-helpers.js';
import { createBucket, errorCode, request, type TestApp } from './helpers.js';
import { startStorageTestServer, type StorageTestServer } from './storage-helpers.js';

interface Usage {
  bytes: number;
  objects: number;
}

function bytes(n: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(n).fill(7);
}

describe.each(['fs', 's3'] as const)('storage quotas (%s backend)', (backendKind) => {
  let storage: StorageTestServer | undefined;
  let server: TestApp;
  let sql: pg.Pool;
  let backend: StorageBackend;
  let alice: SignedUp;
  let bob: SignedUp;

  beforeAll(async () => {
    storage = await startStorageTestServer(backendKind);
    ({ server, sql, backend } = storage);
    alice = await signUp(server.url);
    bob = await signUp(server.url);
  });

  afterAll(async () => {
    await storage?.close();
  });

  const open = { write: 'auth != null', read: 'auth != null', delete: 'auth != null' };

  function put(bucket: string, path: string, body: Uint8Array<ArrayBuffer>, token: string, upsert = false) {
    return request(server.url, 'PUT', `/v1/storage/${bucket}/${path}`, {
      token,
      headers: { 'content-type': 'application/octet-stream', ...(upsert ? { 'x-upsert': 'true' } : {}) },
      rawBody: body,
    });
  }

  /** A multipart upload: its size is not declared, so the quota is decided when it commits. */
  function postForm(bucket: string, path: string, body: Uint8Array<ArrayBuffer>, token: string) {
    const form = new FormData();
    form.append('file', new Blob([body], { type: 'application/octet-stream' }), 'f.bin');
    return fetch(`${server.url}/v1/storage/${bucket}/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
  }

  async function usage(bucket: string): Promise<Usage> {
    const res = await request(server.url, 'GET', `/v1/admin/buckets/${bucket}`, { token: server.serviceKey });
    expect(res.status, res.text).toBe(200);
    return (res.body as { usage: Usage }).usage;
  }

  async function keysIn(bucket: string): Promise<number> {
    let n = 0;
    for await (const _ of backend.list(`${bucket}/`)) n++;
    return n;
  }

  async function pending(): Promise<number> {
    const { rows } = await sql.query<{ n: string }>('SELECT count(*) AS n FROM basalt.storage_pending');
    return Number(rows[0]?.n);
  }

  it('sets and shows quotas and usage through the admin API', async () => {
    await createBucket(server, { name: 'q-admin', max_total_bytes: 1000, max_bytes_per_user: 400, rules: open });
    expect(await usage('q-admin')).toEqual({ bytes: 0, objects: 0 });
    expect((await put('q-admin', 'a.bin', bytes(100), alice.token)).status).toBe(201);
    expect((await put('q-admin', 'b.bin', bytes(50), bob.token)).status).toBe(201);
    expect((await put('q-admin', 'c.bin', bytes(30), server.serviceKey)).status).toBe(201);
    expect(await usage('q-admin')).toEqual({ bytes: 180, objects: 3 });

    const list = await request(server.url, 'GET', '/v1/admin/buckets', { token: server.serviceKey });
    const listed = (list.body as { buckets: Array<{ name: string; usage: Usage; max_total_bytes: number }> }).buckets;
    expect(listed.find((b) => b.name === 'q-admin')).toMatchObject({
      max_total_bytes: 1000,
      usage: { bytes: 180, objects: 3 },
    });

    const perUser = await request(server.url, 'GET', '/v1/admin/buckets/q-admin/usage', { token: server.serviceKey });
    expect(perUser.status, perUser.text).toBe(200);
    const report = perUser.body as { bytes: number; users: Array<{ owner: string; bytes: number; objects: number }> };
    expect(report.bytes).toBe(180);
    expect(report.users).toEqual(
      [
        { owner: alice.id, bytes: 100, objects: 1 },
        { owner: bob.id, bytes: 50, objects: 1 },
      ].sort((a, b) => (a.owner < b.owner ? -1 : 1)),
    );
    const one = await request(server.url, 'GET', `/v1/admin/buckets/q-admin/usage?owner=${bob.id}`, {
      token: server.serviceKey,
    });
    expect((one.body as { users: unknown[] }).users).toEqual([{ owner: bob.id, bytes: 50, objects: 1 }]);

    const denied = await request(server.url, 'GET', '/v1/admin/buckets/q-admin/usage', { token: alice.token });
    expect(denied.status).toBe(403);
    const bad = await request(server.url, 'PATCH', '/v1/admin/buckets/q-admin', {
      token: server.serviceKey,
      body: { max_total_bytes: -1 },
    });
    expect(bad.status).toBe(400);
    const cleared = await request(server.url, 'PATCH', '/v1/admin/buckets/q-admin', {
      token: server.serviceKey,
      body: { max_total_bytes: null },
    });
    expect(cleared.body).toMatchObject({ max_total_bytes: null, max_bytes_per_user: 400 });
  });

  it('refuses an upload over the bucket quota with QUOTA_EXCEEDED and stores nothing (PUT and multipart)', async () => {
    await createBucket(server, { name: 'q-total', max_total_bytes: 1000, rules: open });
    expect((await put('q-total', 'one.bin', bytes(600), alice.token)).status).toBe(201);
    const over = await put('q-total', 'two.bin', bytes(500), bob.token);
    expect(over.status, over.text).toBe(413);
    expect(errorCode(over.body)).toBe('QUOTA_EXCEEDED');
    expect((over.body as { error: { details: unknown } }).error.details).toEqual({
      quota: 'max_total_bytes',
      used: 600,
      limit: 1000,
    });
    const form = await postForm('q-total', 'three.bin', bytes(500), bob.token);
    const formBody = (await form.json()) as { error: { code: string; details: unknown } };
    expect(form.status).toBe(413);
    expect(formBody.error).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      details: { quota: 'max_total_bytes', limit: 1000 },
    });
    expect(await usage('q-total')).toEqual({ bytes: 600, objects: 1 });
    expect(await keysIn('q-total')).toBe(1);
    expect(await pending()).toBe(0);
    // Exactly up to the limit is allowed.
    expect((await put('q-total', 'four.bin', bytes(400), bob.token)).status).toBe(201);
    expect(await usage('q-total')).toEqual({ bytes: 1000, objects: 2 });
  });

  it('charges each owner separately, and counts an overwrite by its growth', async () => {
    await createBucket(server, { name: 'q-user', max_bytes_per_user: 300, rules: open });
    expect((await put('q-user', 'a1', bytes(200), alice.token)).status).toBe(201);
    expect((await put('q-user', 'b1', bytes(300), bob.token)).status).toBe(201);
    const over = await put('q-user', 'a2', bytes(150), alice.token);
    expect(over.status).toBe(413);
    expect((over.body as { error: { details: unknown } }).error.details).toEqual({
      quota: 'max_bytes_per_user',
      used: 200,
      limit: 300,
    });
    // Overwriting 200 bytes with 300 grows alice's usage by 100: exactly her limit.
    expect((await put('q-user', 'a1', bytes(300), alice.token, true)).status).toBe(201);
    const grow = await put('q-user', 'a1', bytes(301), alice.token, true);
    expect(grow.status).toBe(413);
    // Shrinking is always allowed, and frees room.
    expect((await put('q-user', 'a1', bytes(100), alice.token, true)).status).toBe(201);
    expect((await put('q-user', 'a2', bytes(200), alice.token)).status).toBe(201);
    // Deleting frees room too.
    const del = await request(server.url, 'DELETE', '/v1/storage/q-user/b1', { token: bob.token });
    expect(del.status).toBe(204);
    expect((await put('q-user', 'b2', bytes(300), bob.token)).status).toBe(201);
    const perUser = await request(server.url, 'GET', '/v1/admin/buckets/q-user/usage', { token: server.serviceKey });
    const users = (perUser.body as { users: Array<{ owner: string; bytes: number }> }).users;
    expect(users.find((u) => u.owner === alice.id)?.bytes).toBe(300);
    expect(users.find((u) => u.owner === bob.id)?.bytes).toBe(300);
  });

  it('counts writes made with plain SQL', async () => {
    await createBucket(server, { name: 'q-sql', max_total_bytes: 10_000 });
    await put('q-sql', 'x', bytes(100), server.serviceKey);
    await sql.query(`UPDATE basalt.objects SET size = 250 WHERE bucket = 'q-sql' AND path = 'x'`);
    expect(await usage('q-sql')).toEqual({ bytes: 250, objects: 1 });
    await sql.query(`DELETE FROM basalt.objects WHERE bucket = 'q-sql'`);
    expect(await usage('q-sql')).toEqual({ bytes: 0, objects: 0 });
  });

  it('lets no two concurrent uploads squeeze under the limit together', async () => {
    await createBucket(server, { name: 'q-race', max_total_bytes: 10_000, max_bytes_per_user: 6_000, rules: open });
    // 8 uploads of 3,000 bytes at once into a 10,000-byte bucket: exactly 3 fit.
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => put('q-race', `f${i}`, bytes(3000), i % 2 === 0 ? alice.token : bob.token)),
    );
    const stored = results.filter((r) => r.status === 201).length;
    const refused = results.filter((r) => r.status === 413 && errorCode(r.body) === 'QUOTA_EXCEEDED').length;
    expect(stored).toBe(3);
    expect(refused).toBe(5);
    const used = await usage('q-race');
    expect(used.bytes).toBe(9000);
    expect(await keysIn('q-race')).toBe(3);
    expect(await pending()).toBe(0);
    // Each user holds at most 6,000 bytes.
    const perUser = await request(server.url, 'GET', '/v1/admin/buckets/q-race/usage', { token: server.serviceKey });
    for (const user of (perUser.body as { users: Array<{ bytes: number }> }).users) {
      expect(user.bytes).toBeLessThanOrEqual(6000);
    }
  });

  it('decides undeclared sizes at commit, also under concurrency', async () => {
    await createBucket(server, { name: 'q-race-form', max_total_bytes: 1000, rules: open });
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => postForm('q-race-form', `f${i}`, bytes(400), alice.token)),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 201, 413, 413, 413, 413]);
    expect(await usage('q-race-form')).toEqual({ bytes: 800, objects: 2 });
    expect(await keysIn('q-race-form')).toBe(2);
    expect(await pending()).toBe(0);
  });
  it('charges copies and moves across buckets to the destination, refusing them over a quota', async () => {
    await createBucket(server, { name: 'q-src', max_total_bytes: 1000, rules: open });
    await createBucket(server, { name: 'q-dst', max_total_bytes: 1000, max_bytes_per_user: 200, rules: open });
    const transfer = (kind: 'move' | 'copy', body: Record<string, unknown>) =>
      request(server.url, 'POST', `/v1/storage/${kind}`, { token: alice.token, body: { bucket: 'q-src', ...body } });
    expect((await put('q-src', 'a.bin', bytes(150), alice.token)).status).toBe(201);
    expect((await put('q-src', 'm.bin', bytes(100), alice.token)).status).toBe(201);

    const copied = await transfer('copy', { from: 'a.bin', to: 'a1.bin', to_bucket: 'q-dst' });
    expect(copied.status, copied.text).toBe(201);
    expect(await usage('q-dst')).toEqual({ bytes: 150, objects: 1 });
    // A second copy would make alice's bytes in q-dst 300, over her 200.
    const overCopy = await transfer('copy', { from: 'a.bin', to: 'a2.bin', to_bucket: 'q-dst' });
    expect(overCopy.status).toBe(413);
    expect(overCopy.body).toMatchObject({
      error: { code: 'QUOTA_EXCEEDED', details: { quota: 'max_bytes_per_user' } },
    });
    expect(await usage('q-dst')).toEqual({ bytes: 150, objects: 1 });
    expect(await keysIn('q-dst')).toBe(1);
    expect(await pending()).toBe(0);
    // Within its bucket a copy is charged too.
    expect((await transfer('copy', { from: 'a.bin', to: 'a-copy.bin' })).status).toBe(201);
    expect(await usage('q-src')).toEqual({ bytes: 400, objects: 3 });

    // Moving m.bin (100) into q-dst: alice would hold 250 there.
    const overMove = await transfer('move', { from: 'm.bin', to: 'm.bin', to_bucket: 'q-dst' });
    expect(overMove.status).toBe(413);
    expect(errorCode(overMove.body)).toBe('QUOTA_EXCEEDED');
    expect(await usage('q-src')).toEqual({ bytes: 400, objects: 3 });
    expect(await usage('q-dst')).toEqual({ bytes: 150, objects: 1 });
    // Replacing a1.bin (150) frees its bytes first: the move fits.
    const moved = await transfer('move', { from: 'm.bin', to: 'a1.bin', to_bucket: 'q-dst', upsert: true });
    expect(moved.status, moved.text).toBe(200);
    expect(await usage('q-src')).toEqual({ bytes: 300, objects: 2 });
    expect(await usage('q-dst')).toEqual({ bytes: 100, objects: 1 });
    // A move keeps the object's bytes where they are (under q-src's prefix), so nothing is copied.
    expect(await keysIn('q-dst')).toBe(0);
    expect(await keysIn('q-src')).toBe(3);
    // A move within a bucket changes no usage.
    expect((await transfer('move', { from: 'a.bin', to: 'renamed.bin' })).status).toBe(200);
    expect(await usage('q-src')).toEqual({ bytes: 300, objects: 2 });

    // A bulk delete frees what it deletes, and only that.
    const removed = await request(server.url, 'DELETE', '/v1/storage/q-src', {
      token: alice.token,
      body: { paths: ['renamed.bin', 'a-copy.bin', 'none.bin'] },
    });
    expect(removed.status, removed.text).toBe(200);
    expect(await usage('q-src')).toEqual({ bytes: 0, objects: 0 });
    expect(await keysIn('q-src')).toBe(1);
    expect(await usage('q-dst')).toEqual({ bytes: 100, objects: 1 });
    expect(await pending()).toBe(0);
  });
});
