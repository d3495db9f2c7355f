import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { createBucket, createCollection, errorCode, request, useTestApp } from './helpers.js';

const server = useTestApp();

const OPEN = { read: 'true', create: 'auth != null', update: 'auth != null', delete: 'auth != null' };

async function count(collection: string): Promise<number> {
  const { rows } = await server.sql.query<{ n: string }>(`SELECT count(*) AS n FROM basalt_data.${collection}`);
  return Number(rows[0]?.n);
}

function post(token: string, collection: string, key: string | undefined, body: unknown) {
  return request(server.url, 'POST', `/v1/db/${collection}`, {
    token,
    body,
    headers: key === undefined ? {} : { 'idempotency-key': key },
  });
}

describe('Idempotency-Key on writes', () => {
  it('a retry with the same key and request gets the first answer and writes nothing again', async () => {
    await createCollection(server, { name: 'orders', rules: OPEN });
    const user = await signUp(server.url);
    const first = await post(user.token, 'orders', 'order-1', { data: { total: 5 } });
    expect(first.status).toBe(201);
    const again = await post(user.token, 'orders', 'order-1', { data: { total: 5 } });
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get('etag')).toBe(first.headers.get('etag'));
    expect(again.headers.get('content-type')).toMatch(/application\/json/);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(await count('orders')).toBe(1);

    // Without a key, the same body writes again.
    expect((await post(user.token, 'orders', undefined, { data: { total: 5 } })).status).toBe(201);
    expect(await count('orders')).toBe(2);
  });

  it('the same key with another body, path or method is 422 IDEMPOTENCY_MISMATCH and runs nothing', async () => {
    const user = await signUp(server.url);
    expect((await post(user.token, 'orders', 'k-mismatch', { data: { total: 1 } })).status).toBe(201);
    const before = await count('orders');
    const other = await post(user.token, 'orders', 'k-mismatch', { data: { total: 2 } });
    expect(other.status).toBe(422);
    expect(errorCode(other.body)).toBe('IDEMPOTENCY_MISMATCH');
    const put = await request(server.url, 'PUT', '/v1/db/orders/x1', {
      token: user.token,
      body: { data: { total: 1 } },
      headers: { 'idempotency-key': 'k-mismatch' },
    });
    expect(put.status).toBe(422);
    expect(await count('orders')).toBe(before);
  });

  it('replays errors too (a 409 stays a 409), and a PATCH with a transform applies once', async () => {
    const user = await signUp(server.url);
    const created = await post(user.token, 'orders', undefined, { id: 'counter', data: { n: 0 } });
    expect(created.status).toBe(201);
    const dup = await post(user.token, 'orders', 'k-dup', { id: 'counter', data: { n: 0 } });
    expect(dup.status).toBe(409);
    const dupAgain = await post(user.token, 'orders', 'k-dup', { id: 'counter', data: { n: 0 } });
    expect(dupAgain.status).toBe(409);
    expect(dupAgain.body).toEqual(dup.body);

    const patch = () =>
      request(server.url, 'PATCH', '/v1/db/orders/counter', {
        token: user.token,
        body: { data: { n: { $increment: 1 } } },
        headers: { 'idempotency-key': 'k-inc' },
      });
    expect((await patch()).status).toBe(200);
    expect((await patch()).status).toBe(200);
    const doc = await request(server.url, 'GET', '/v1/db/orders/counter', { token: user.token });
    expect((doc.body as { data: { n: number } }).data.n).toBe(1);
  });

  it('keys are per caller: another user with the same key runs their own request and never sees the first answer', async () => {
    const alice = await signUp(server.url);
    const bob = await signUp(server.url);
    const a = await post(alice.token, 'orders', 'shared-key', { data: { who: 'alice' } });
    const b = await post(bob.token, 'orders', 'shared-key', { data: { who: 'bob' } });
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    expect((b.body as { id: string }).id).not.toBe((a.body as { id: string }).id);
    expect((b.body as { owner: string }).owner).toBe(bob.user.id);
    // Bob replaying Alice's exact request gets his own answer, not hers.
    const replayAsBob = await post(bob.token, 'orders', 'shared-key', { data: { who: 'alice' } });
    expect(replayAsBob.status).toBe(422);
    expect(replayAsBob.text).not.toContain((a.body as { id: string }).id);
  });

  it('concurrent duplicates: the second waits for the first and replays it (one write)', async () => {
    const user = await signUp(server.url);
    const before = await count('orders');
    // Holds the table so the first request stays in flight while the duplicate arrives.
    const blocker = new pg.Client({ connectionString: server.database.url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE basalt_data.orders IN EXCLUSIVE MODE');
    const first = post(user.token, 'orders', 'k-race', { data: { n: 1 } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = post(user.token, 'orders', 'k-race', { data: { n: 1 } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { rows } = await server.sql.query(`SELECT state FROM basalt.idempotency_keys WHERE key = 'k-race'`);
    expect(rows).toEqual([{ state: 'pending' }]);
    await blocker.query('COMMIT');
    await blocker.end();
    const [a, b] = await Promise.all([first, second]);
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    expect(b.body).toEqual(a.body);
    expect(await count('orders')).toBe(before + 1);
  });

  it('many concurrent duplicates write exactly once', async () => {
    const user = await signUp(server.url);
    const before = await count('orders');
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => post(user.token, 'orders', 'k-burst', { data: { n: 2 } })),
    );
    for (const answer of answers) expect(answer.status).toBe(201);
    expect(new Set(answers.map((answer) => (answer.body as { id: string }).id)).size).toBe(1);
    expect(await count('orders')).toBe(before + 1);
  });

  it('refuses malformed and oversized keys with 400, before running anything', async () => {
    const user = await signUp(server.url);
    const before = await count('orders');
    for (const key of ['x'.repeat(256), 'tab\there', 'é']) {
      const answer = await request(server.url, 'POST', '/v1/db/orders', {
        token: user.token,
        body: { data: {} },
        headers: { 'idempotency-key': Buffer.from(key, 'utf8').toString('latin1') },
      });
      expect(answer.status, key).toBe(400);
      expect(errorCode(answer.body)).toBe('INVALID_REQUEST');
    }
    expect((await post(user.token, 'orders', 'x'.repeat(255), { data: {} })).status).toBe(201);
    expect(await count('orders')).toBe(before + 1);
  });

  it('expired keys (over 24 h) are run anew and pruned', async () => {
    const user = await signUp(server.url);
    expect((await post(user.token, 'orders', 'k-old', { data: { v: 1 } })).status).toBe(201);
    await server.sql.query(
      `UPDATE basalt.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'k-old'`,
    );
    // Another request under the expired key is no mismatch: the key is free again.
    expect((await post(user.token, 'orders', 'k-old', { data: { v: 2 } })).status).toBe(201);
    await server.sql.query(
      `UPDATE basalt.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'k-old'`,
    );
    const { IdempotencyRepository } = await import('../server/modules/idempotency/repository.js');
    const pruned = await new IdempotencyRepository(server.sql).prune(24 * 3600);
    expect(pruned).toBeGreaterThanOrEqual(1);
    const { rows } = await server.sql.query(`SELECT 1 FROM basalt.idempotency_keys WHERE key = 'k-old'`);
    expect(rows).toEqual([]);
  });

  it('a POST query is guarded like every POST: another query under its key is a mismatch', async () => {
    const user = await signUp(server.url);
    const body = { where: [['total', '==', 5]] };
    const headers = { 'idempotency-key': 'k-query' };
    await request(server.url, 'POST', '/v1/db/orders/query', { token: user.token, body, headers });
    const other = await request(server.url, 'POST', '/v1/db/orders/query', {
      token: user.token,
      body: { where: [] },
      headers,
    });
    expect(other.status).toBe(422);
  });

  it('storage uploads: the key binds method, path, caller, length and type; a retry stores nothing again', async () => {
    await createBucket(server, { name: 'files' });
    const put = (body: string, type = 'text/plain') =>
      request(server.url, 'PUT', '/v1/storage/files/a.txt', {
        token: server.serviceKey,
        rawBody: new TextEncoder().encode(body),
        headers: { 'content-type': type, 'idempotency-key': 'upload-1' },
      });
    const first = await put('hello');
    expect(first.status).toBe(201);
    // Without x-upsert a second real upload would be 409: the replay is the first 201.
    const again = await put('hello');
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    const longer = await put('hello world');
    expect(longer.status).toBe(422);
    expect(errorCode(longer.body)).toBe('IDEMPOTENCY_MISMATCH');
    const retyped = await put('hello', 'application/octet-stream');
    expect(retyped.status).toBe(422);

    const del = () =>
      request(server.url, 'DELETE', '/v1/storage/files/a.txt', {
        token: server.serviceKey,
        headers: { 'idempotency-key': 'delete-1' },
      });
    expect((await del()).status).toBe(204);
    const delAgain = await del();
    expect(delAgain.status).toBe(204);
    expect(delAgain.headers.get('idempotent-replayed')).toBe('true');
  });
});
