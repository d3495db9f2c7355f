import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../server/internal/net.js';
import { BasaltProcess } from './basalt-process.js';
import { errorCode, request, waitFor } from './helpers.js';
import { PrivateCluster } from './private-postgres.js';
import { sleep, TestSocket, type Frame } from './realtime-client.js';

/**
 * What an operator does to the database under a running Basalt: `pg_ctl stop -m immediate`
 * (a crash, as far as Basalt's connections can tell) and a start 3 s later, on a cluster of
 * the test's own, with a real server in a child process taking writes, a live query, a
 * function trigger, presence, and the listeners of collections and revocations.
 */

/** A trigger that records every created note; idempotent (the event's document id is the key). */
const AUDIT_FUNCTION = `
import { onDocument } from 'basalt/functions';
export default onDocument({ collection: 'notes', on: 'create' }, async (event, ctx) => {
  const id = event.after?.id;
  if (id) await ctx.db.collection('audit').doc(id).set({ note: id });
});
`;

let cluster: PrivateCluster;
let databaseUrl: string;

beforeAll(async () => {
  cluster = await PrivateCluster.create();
  await cluster.start();
  databaseUrl = await cluster.createDatabase('basalt');
}, 60_000);

afterAll(async () => {
  await cluster?.destroy();
});

interface Answer {
  status: number;
  code: string | undefined;
  retryAfter: string | null;
}

function addedIds(socket: TestSocket, subscription: string): string[] {
  return socket
    .all((frame) => frame.type === 'change' && frame.id === subscription && frame.change === 'added')
    .map((frame) => (frame.doc as { id: string }).id);
}

function sessionIdOf(token: string): string {
  const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
    session_id: string;
  };
  return payload.session_id;
}

async function sql(text: string, values: unknown[] = []): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(text, values);
  } finally {
    await client.end();
  }
}

describe('a Postgres restart under a running Basalt', () => {
  let basalt: BasaltProcess;

  beforeAll(async () => {
    basalt = await BasaltProcess.spawn(
      // A slow revocation poll: a revocation seen quickly after the restart came through LISTEN.
      { DATABASE_URL: databaseUrl, BASALT_AUTH_REVOCATION_POLL_MS: '4000' },
      { 'audit.ts': AUDIT_FUNCTION },
    );
    await basalt.ready();
  }, 60_000);

  afterAll(async () => {
    await basalt?.stop();
  });

  it('costs nothing but a pause: 503s while down, then every surface recovers', { timeout: 60_000 }, async () => {
    const service = { authorization: `Bearer ${basalt.serviceKey}` };
    for (const name of ['notes', 'audit']) {
      const created = await request(basalt.url, 'POST', '/v1/admin/collections', {
        headers: service,
        body: { name, rules: { read: 'true', create: 'true' } },
      });
      expect(created.status).toBe(201);
    }
    const anonymous = await request(basalt.url, 'POST', '/v1/auth/anonymous');
    const token = (anonymous.body as { session: { access_token: string } }).session.access_token;

    // A signed-in subscriber (its token is re-checked every second, through the outage too).
    const subscriber = await TestSocket.open(basalt.url, { token });
    subscriber.send({
      type: 'subscribe',
      id: 'notes',
      collection: 'notes',
      query: { order_by: [['created_at', 'desc']], limit: 1000 },
    });
    await subscriber.nextOfType('subscribed', { id: 'notes' }, 10_000);
    const present = await TestSocket.open(basalt.url);
    present.send({ type: 'join', channel: 'room', presence: { name: 'before' } });
    await present.nextOfType('joined', { channel: 'room' });

    // A create every 25 ms, and a readiness probe every 250 ms, all along.
    const acknowledged: string[] = [];
    const acknowledgedAt: number[] = [];
    const failed: Answer[] = [];
    const readiness: Array<{ at: number; status: number }> = [];
    let running = true;
    const writer = (async () => {
      for (let i = 0; running; i++) {
        const answer = await request(basalt.url, 'POST', '/v1/db/notes', { body: { data: { i } } });
        if (answer.status === 201) {
          acknowledged.push((answer.body as { id: string }).id);
          acknowledgedAt.push(Date.now());
        }
        if (answer.status !== 201) {
          failed.push({
            status: answer.status,
            code: errorCode(answer.body),
            retryAfter: answer.headers.get('retry-after'),
          });
        }
        await sleep(25);
      }
    })();
    const prober = (async () => {
      while (running) {
        const answer = await request(basalt.url, 'GET', '/readyz');
        readiness.push({ at: Date.now(), status: answer.status });
        await sleep(250);
      }
    })();

    await sleep(1_000);
    await cluster.stop('immediate');
    const downAt = Date.now();
    // A live query asked for while Postgres is away cannot start: the socket is closed with
    // 1013 (try again later), so that the client reconnects and subscribes again.
    const late = await TestSocket.open(basalt.url);
    late.send({ type: 'subscribe', id: 'late', collection: 'notes' });
    expect(await late.waitClosed(5_000)).toBe(1013);
    await sleep(Math.max(0, downAt + 3_000 - Date.now()));
    await cluster.start();
    const upAt = Date.now();
    await waitFor('the server is ready again', async () => readiness.at(-1)?.status === 200, 30_000);
    await sleep(3_000);
    running = false;
    await Promise.all([writer, prober]);

    // While down: every failure is 503 UNAVAILABLE with Retry-After, never a 500.
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.filter((answer) => answer.status !== 503 || answer.code !== 'UNAVAILABLE')).toEqual([]);
    expect(failed.every((answer) => Number(answer.retryAfter) >= 1)).toBe(true);
    // /readyz: 503 while down, 200 again within 30 s of Postgres being back.
    expect(readiness.some((probe) => probe.at > downAt && probe.at < upAt && probe.status === 503)).toBe(true);
    const readyAgain = readiness.find((probe) => probe.at > upAt && probe.status === 200);
    expect(readyAgain && readyAgain.at - upAt).toBeLessThan(30_000);

    // No acknowledged write is lost, and writes went on after the restart.
    expect(acknowledgedAt.filter((at) => at < downAt).length).toBeGreaterThan(0);
    expect(acknowledgedAt.filter((at) => at > upAt).length).toBeGreaterThan(10);
    const stored = await request(basalt.url, 'POST', '/v1/db/notes/query', { headers: service, body: { limit: 1000 } });
    const storedIds = new Set((stored.body as { docs: Array<{ id: string }> }).docs.map((doc) => doc.id));
    expect(acknowledged.filter((id) => !storedIds.has(id))).toEqual([]);

    // The live query delivers every acknowledged create exactly once, on the socket that
    // stayed open all along.
    await waitFor(
      'every acknowledged create reached the subscriber',
      async () => {
        const seen = new Set(addedIds(subscriber, 'notes'));
        return acknowledged.every((id) => seen.has(id));
      },
      15_000,
    );
    const added = addedIds(subscriber, 'notes');
    expect(added.length).toBe(new Set(added).size);
    expect(subscriber.closeCode).toBeNull();
    expect(subscriber.all((frame: Frame) => frame.type === 'error' || frame.type === 'reset')).toEqual([]);

    // The trigger ran for every acknowledged create (the dispatcher took its lead back).
    await waitFor(
      'the trigger ran for every acknowledged create',
      async () => {
        const audit = await request(basalt.url, 'POST', '/v1/db/audit/query', {
          headers: service,
          body: { limit: 1000 },
        });
        const ids = new Set((audit.body as { docs: Array<{ id: string }> }).docs.map((doc) => doc.id));
        return acknowledged.every((id) => ids.has(id));
      },
      20_000,
    );

    // Presence: a join after the restart reaches the member from before it (through the
    // realtime listener's new connection, or its catch-up when it reconnects after the
    // join), and the newcomer sees that member.
    const newcomer = await TestSocket.open(basalt.url);
    newcomer.send({ type: 'join', channel: 'room', presence: { name: 'after' } });
    const state = await newcomer.nextOfType('presence', { channel: 'room' });
    expect((state.joins as Array<{ payload: unknown }>).map((entry) => entry.payload)).toContainEqual({
      name: 'before',
    });
    await present.next(
      (frame) =>
        frame.type === 'presence' &&
        (frame.joins as Array<{ payload: unknown }>).some(
          (entry) => JSON.stringify(entry.payload) === '{"name":"after"}',
        ),
      // The listener may still be between two reconnect attempts (up to 5 s apart); what it
      // missed meanwhile is caught up from the presence table once it is back.
      10_000,
    );

    // Collections: a rule changed with plain SQL applies at once (the listener is back),
    // not after the cache's 30 s.
    await sql(`UPDATE basalt.collections SET rules = rules || '{"create": "false"}' WHERE name = 'notes'`);
    await waitFor(
      'the changed rule applies',
      async () => (await request(basalt.url, 'POST', '/v1/db/notes', { body: { data: {} } })).status === 403,
      3_000,
    );

    // Revocations: a session revoked with plain SQL is refused long before the next 4 s poll.
    expect((await request(basalt.url, 'GET', '/v1/auth/user', { token })).status).toBe(200);
    const revokedAt = Date.now();
    await sql('INSERT INTO basalt.session_revocations (session_id) VALUES ($1)', [sessionIdOf(token)]);
    await sql(`SELECT pg_notify('basalt_revocations', '')`);
    await waitFor(
      'the revoked session is refused',
      async () => (await request(basalt.url, 'GET', '/v1/auth/user', { token })).status === 401,
      5_000,
    );
    expect(Date.now() - revokedAt).toBeLessThan(2_000);

    // The outage was logged as such: warnings, and no process crash.
    expect(basalt.child.exitCode).toBeNull();
    const messages = basalt.logLines().map((line) => line.msg ?? '');
    expect(messages.some((msg) => msg.includes('basalt-change-feed: lost its Postgres connection'))).toBe(true);
    expect(messages.some((msg) => msg.includes('basalt-change-feed: reconnected to Postgres'))).toBe(true);
    for (const socket of [subscriber, present, newcomer]) socket.close();
  });
});

describe('a Postgres that is down when Basalt starts', () => {
  it('is retried with a log line per try, then start gives up with one line', { timeout: 60_000 }, async () => {
    const port = await freePort(); // nothing listens there
    const basalt = await BasaltProcess.spawn({
      DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/basalt`,
      BASALT_DB_CONNECT_TIMEOUT_MS: '2000',
    });
    try {
      expect(await basalt.exited()).toBe(1);
      const tries = basalt.logLines().filter((line) => /^database not reachable \(try \d+: /.test(line.msg ?? ''));
      expect(tries.length).toBeGreaterThanOrEqual(2);
      expect(tries.every((line) => line.level === 40)).toBe(true);
      expect(basalt.output.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(
          new RegExp(
            `^basalt: cannot start: database postgres://postgres@127\\.0\\.0\\.1:${port}/basalt unreachable after \\d+ tries: .*ECONNREFUSED`,
          ),
        ),
      ]);
    } finally {
      await basalt.stop();
    }
  });

  it('starts as soon as Postgres comes up within the wait', { timeout: 60_000 }, async () => {
    await cluster.stop('fast');
    const basalt = await BasaltProcess.spawn({ DATABASE_URL: databaseUrl, BASALT_DB_CONNECT_TIMEOUT_MS: '30000' });
    try {
      await waitFor(
        'a failed try is logged',
        async () => basalt.logLines().some((line) => line.msg?.startsWith('database not reachable')),
        20_000,
      );
      await cluster.start();
      await basalt.ready();
      expect((await request(basalt.url, 'GET', '/readyz')).status).toBe(200);
    } finally {
      await basalt.stop();
    }
  });
});
