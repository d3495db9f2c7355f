/**
 * Live aggregates (docs/realtime.md#live-aggregates): `subscribe` with `aggregate` sends the
 * groups of `/aggregate`, again when writes change them, at most once per interval, with the
 * subscriber's read rule, and never when they did not change.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { createCollection, request, useTestApp } from './helpers.js';
import { sleep, TestSocket, type Frame } from './realtime-client.js';

const INTERVAL_MS = 300;
const server = useTestApp({
  env: { BASALT_REALTIME_AGGREGATE_INTERVAL_MS: String(INTERVAL_MS), BASALT_REALTIME_MAX_SUBSCRIPTIONS: '3' },
});
const sockets: TestSocket[] = [];
afterAll(() => {
  for (const socket of sockets) socket.close();
});

interface Group {
  key: Record<string, unknown>;
  values: Record<string, number | null>;
}

const BY_STATUS = { group_by: ['status'], aggregates: { n: ['count'], total: ['sum', 'price'] } };

async function open(token?: string): Promise<TestSocket> {
  const socket = await TestSocket.open(server.url, token ? { token } : {});
  sockets.push(socket);
  if (token) await socket.nextOfType('authenticated');
  return socket;
}

async function write(method: string, path: string, token: string, body?: unknown): Promise<void> {
  const response = await request(server.url, method, path, { token, body });
  expect(response.status, response.text).toBeLessThan(300);
}

/** The next `aggregate` frames of subscription `id` until one holds `groups` (each frame differs from the one before). */
async function until(socket: TestSocket, id: string, groups: Group[], timeoutMs = 5_000): Promise<Frame[]> {
  const seen: Frame[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const frame = await socket.next((f) => f.type === 'aggregate' && f.id === id, Math.max(1, deadline - Date.now()));
    seen.push(frame);
    if (JSON.stringify(frame.groups) === JSON.stringify(groups)) return seen;
  }
}

function group(status: string, n: number, total: number | null): Group {
  return { key: { status }, values: { n, total } };
}

describe('live aggregates', () => {
  let alice: { token: string; uid: string };
  let bob: { token: string; uid: string };

  it('sends the groups, then new groups after inserts, updates and deletes, within the interval', async () => {
    await createCollection(server, {
      name: 'orders',
      rules: {
        read: 'auth != null && (doc.owner == auth.uid || doc.data.public == true)',
        create: 'auth != null',
        update: 'auth != null && doc.owner == auth.uid',
        delete: 'auth != null && doc.owner == auth.uid',
      },
    });
    const [a, b] = await Promise.all([signUp(server.url), signUp(server.url)]);
    alice = { token: a.session?.access_token ?? '', uid: a.user.id };
    bob = { token: b.session?.access_token ?? '', uid: b.user.id };

    const socket = await open(alice.token);
    socket.send({ type: 'subscribe', id: 'a1', collection: 'orders', aggregate: BY_STATUS });
    expect(await socket.nextOfType('aggregate', { id: 'a1' })).toEqual({ type: 'aggregate', id: 'a1', groups: [] });

    let started = Date.now();
    await write('PUT', '/v1/db/orders/o1', alice.token, { data: { status: 'open', price: 10 } });
    await write('PUT', '/v1/db/orders/o2', alice.token, { data: { status: 'open', price: 5 } });
    await until(socket, 'a1', [group('open', 2, 15)]);
    // The interval bounds the wait, with room for a loaded machine.
    expect(Date.now() - started).toBeLessThan(INTERVAL_MS + 2_000);

    started = Date.now();
    await write('PATCH', '/v1/db/orders/o2', alice.token, { data: { status: 'done' } });
    await until(socket, 'a1', [group('done', 1, 5), group('open', 1, 10)]);
    await write('DELETE', '/v1/db/orders/o1', alice.token);
    await until(socket, 'a1', [group('done', 1, 5)]);
    expect(Date.now() - started).toBeLessThan(2 * INTERVAL_MS + 3_000);

    // A write that leaves the groups as they were sends nothing.
    const before = socket.all((f) => f.type === 'aggregate').length;
    await write('PATCH', '/v1/db/orders/o2', alice.token, { data: { note: 'no change to status or price' } });
    await sleep(INTERVAL_MS * 3);
    expect(socket.all((f) => f.type === 'aggregate').length).toBe(before);
    socket.close();
  });

  it('coalesces a burst: 200 writes make a few frames, one per interval at most, the last one right', async () => {
    const socket = await open(alice.token);
    socket.send({ type: 'subscribe', id: 'burst', collection: 'orders', aggregate: BY_STATUS });
    await socket.nextOfType('aggregate', { id: 'burst' });
    const started = Date.now();
    // Two hundred transactions, written with plain SQL as another service would.
    for (let i = 0; i < 200; i++) {
      await server.sql.query(`INSERT INTO basalt_data.orders (id, owner, data) VALUES ($1, $2, $3)`, [
        `b${i}`,
        alice.uid,
        { status: 'burst', price: 1 },
      ]);
    }
    const frames = await until(socket, 'burst', [group('burst', 200, 200), group('done', 1, 5)], 10_000);
    const elapsed = Date.now() - started;
    expect(frames.length).toBeGreaterThanOrEqual(1);
    // At most one evaluation per interval (and the one the first write starts at once).
    expect(frames.length).toBeLessThanOrEqual(Math.ceil(elapsed / INTERVAL_MS) + 1);
    expect(frames.length).toBeLessThan(40);
    for (let i = 1; i < frames.length; i++) {
      expect(JSON.stringify(frames[i]?.groups)).not.toBe(JSON.stringify(frames[i - 1]?.groups));
    }
    // Nothing follows the last (right) frame.
    await sleep(INTERVAL_MS * 3);
    expect(socket.all((f) => f.type === 'aggregate' && f.id === 'burst').length).toBe(frames.length + 1);
    await server.sql.query(`DELETE FROM basalt_data.orders WHERE id LIKE 'b%'`);
    await until(socket, 'burst', [group('done', 1, 5)]);
    socket.close();
  });

  it('applies each subscriber’s rules, and re-evaluates when the socket changes user or signs out', async () => {
    const socket = await open(bob.token);
    socket.send({ type: 'subscribe', id: 'b1', collection: 'orders', aggregate: BY_STATUS });
    // Alice's orders are private: Bob counts none of them.
    expect((await socket.nextOfType('aggregate', { id: 'b1' })).groups).toEqual([]);

    await write('PUT', '/v1/db/orders/secret', alice.token, { data: { status: 'open', price: 1000 } });
    await write('PUT', '/v1/db/orders/shared', alice.token, { data: { status: 'open', price: 7, public: true } });
    await write('PUT', '/v1/db/orders/mine', bob.token, { data: { status: 'open', price: 1 } });
    await until(socket, 'b1', [group('open', 2, 8)]);
    // No frame ever counted the private order.
    for (const frame of socket.all((f) => f.type === 'aggregate')) {
      for (const g of frame.groups as Group[]) expect(g.values.total).toBeLessThan(1000);
    }

    // The socket becomes Alice's: her groups, at once (no write needed).
    socket.send({ type: 'auth', access_token: alice.token });
    await until(socket, 'b1', [group('done', 1, 5), group('open', 2, 1007)]);
    // Signed out: the public caller may read nothing of `orders`.
    socket.send({ type: 'auth', access_token: null });
    await until(socket, 'b1', []);
    socket.close();
  });

  it('stops on unsubscribe, counts against the subscription limit, and refuses bad aggregates by id', async () => {
    const socket = await open(alice.token);
    socket.send({ type: 'subscribe', id: 'u1', collection: 'orders', aggregate: { aggregates: { n: ['count'] } } });
    const first = await socket.nextOfType('aggregate', { id: 'u1' });
    expect(first.groups).toEqual([{ key: {}, values: { n: 3 } }]); // not Bob's private order
    socket.send({ type: 'subscribe', id: 'q1', collection: 'orders', query: {} });
    await socket.nextOfType('subscribed', { id: 'q1' });
    socket.send({ type: 'subscribe', id: 'u2', collection: 'orders', aggregate: BY_STATUS });
    await socket.nextOfType('aggregate', { id: 'u2' });
    // The admin listing shows a live aggregate with what it groups and how many groups it sent.
    const listing = await request(server.url, 'GET', '/v1/admin/realtime', { token: server.serviceKey });
    expect(listing.status, listing.text).toBe(200);
    const held = (listing.body as { connections: Array<{ subscriptions: Array<Record<string, unknown>> }> }).connections
      .flatMap((connection) => connection.subscriptions)
      .find((subscription) => subscription.id === 'u2');
    expect(held).toMatchObject({ collection: 'orders', doc_id: null, documents: 2, aggregate: BY_STATUS });
    // The limit (3 here) counts live queries and aggregates together.
    socket.send({ type: 'subscribe', id: 'u3', collection: 'orders', aggregate: BY_STATUS });
    expect(await socket.nextOfType('error', { id: 'u3' })).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { limit: 3 },
    });

    socket.send({ type: 'unsubscribe', id: 'u1' });
    socket.send({ type: 'unsubscribe', id: 'u2' });
    socket.send({ type: 'ping' });
    await socket.nextOfType('pong');
    await write('PUT', '/v1/db/orders/late', alice.token, { data: { status: 'late', price: 1 } });
    await socket.next((f) => f.type === 'change' && f.id === 'q1');
    await sleep(INTERVAL_MS * 3);
    expect(socket.all((f) => f.type === 'aggregate' && (f.id === 'u1' || f.id === 'u2'))).toHaveLength(2);

    // The id is free again; bad aggregates are refused with its id, and take no room.
    const refusals: Array<[Record<string, unknown>, string]> = [
      [{ collection: 'orders', aggregate: { aggregates: { n: ['median', 'price'] } } }, 'INVALID_REQUEST'],
      [
        { collection: 'orders', aggregate: { aggregates: { n: ['count'] }, where: [['x', '~', 1]] } },
        'INVALID_REQUEST',
      ],
      [{ collection: 'orders', aggregate: { aggregates: { n: ['count'] }, limit: 5000 } }, 'INVALID_REQUEST'],
      [{ collection: 'orders', aggregate: [] }, 'INVALID_REQUEST'],
      [{ collection: 'orders', aggregate: { aggregates: { n: ['count'] } }, query: {} }, 'INVALID_REQUEST'],
      [{ collection: 'missing', aggregate: { aggregates: { n: ['count'] } } }, 'NOT_FOUND'],
    ];
    for (const [message, code] of refusals) {
      socket.send({ type: 'subscribe', id: 'u1', ...message });
      expect(await socket.nextOfType('error', { id: 'u1' })).toMatchObject({ code });
    }
    socket.send({ type: 'subscribe', id: 'u1', collection: 'orders', aggregate: { aggregates: { n: ['count'] } } });
    expect((await socket.nextOfType('aggregate', { id: 'u1' })).groups).toEqual([{ key: {}, values: { n: 4 } }]);
    socket.close();
  });
});
