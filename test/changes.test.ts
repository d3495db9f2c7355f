import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { ConfigError, loadConfig } from '../server/config.js';
import {
  ChangeFeed,
  formatCursor,
  parseCursor,
  type Change,
  type ChangeBatch,
} from '../server/internal/changes/feed.js';
import { Database } from '../server/internal/db.js';
import { AppError } from '../server/internal/errors.js';
import { Metrics } from '../server/internal/metrics.js';
import { Collector, createTrackedTable, duplicates, sleep, sqlClient } from './changes-support.js';
import { createTestDatabase, request, silentLogger, type TestDatabase, useTestApp, waitFor } from './helpers.js';

const server = useTestApp();
let feed: ChangeFeed;
let seen: Collector;

beforeAll(async () => {
  await createTrackedTable(server.database.url, 'items');
  await createTrackedTable(server.database.url, 'other');
  const changes = server.app.platform.changes;
  if (!changes) throw new Error('the app has no change feed');
  feed = changes;
  seen = new Collector(feed);
});

async function expectAppError(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(AppError);
  expect((error as AppError).code).toBe(code);
}

describe('the change feed', () => {
  it('delivers both changes of a transaction held open across a tick, in commit order, each once', async () => {
    const start = feed.currentCursor();
    const early = await sqlClient(server.database.url);
    const late = await sqlClient(server.database.url);
    try {
      await early.query('BEGIN');
      await early.query(`INSERT INTO items (id) VALUES ('held-open')`); // id taken first, committed last
      await late.query(`INSERT INTO items (id) VALUES ('committed-first')`);
      await waitFor('the later transaction', () => seen.has('committed-first'), 10_000, 20);
      // Make sure at least one more tick passes while the first transaction is still open.
      const tickAfterLate = seen.changes.find((c) => c.rowId === 'committed-first')?.tick ?? 0;
      let forced = 0;
      await waitFor('another tick', async () => (forced = (await feed.tickNow(true)) ?? 0) > tickAfterLate, 5_000, 20);
      await waitFor('the feed to pass that tick', () => parseCursor(feed.currentCursor()) >= forced, 5_000, 20);
      expect(seen.has('held-open')).toBe(false);
      await early.query('COMMIT');
      await waitFor('the held-open transaction', () => seen.has('held-open'), 10_000, 20);
    } finally {
      await early.end();
      await late.end();
    }
    const order = seen.rowIds('items').filter((id) => id === 'held-open' || id === 'committed-first');
    expect(order).toEqual(['committed-first', 'held-open']);
    const first = seen.changes.find((c) => c.rowId === 'committed-first')!;
    const second = seen.changes.find((c) => c.rowId === 'held-open')!;
    expect(BigInt(second.id)).toBeLessThan(BigInt(first.id)); // the id order is the opposite of commit order
    expect(second.tick).toBeGreaterThan(first.tick);
    expect(duplicates(seen.changes)).toEqual([]);

    const replay = await feed.readSince(start, { tables: [{ schema: 'public', table: 'items' }] });
    expect(replay.changes.map((c) => c.rowId)).toEqual(['committed-first', 'held-open']);
  });

  it('delivers writes made with a plain SQL client, with old and new rows', async () => {
    const client = await sqlClient(server.database.url);
    try {
      await client.query(`INSERT INTO items (id, v) VALUES ('psql', 1)`);
      await client.query(`UPDATE items SET v = 2 WHERE id = 'psql'`);
      await client.query(`DELETE FROM items WHERE id = 'psql'`);
    } finally {
      await client.end();
    }
    await waitFor('three psql changes', () => seen.changes.filter((c) => c.rowId === 'psql').length === 3, 10_000, 20);
    const changes = seen.changes.filter((c) => c.rowId === 'psql');
    expect(changes.map((c) => c.op)).toEqual(['insert', 'update', 'delete']);
    expect(changes[0]).toMatchObject({ schema: 'public', table: 'items', oldRow: null, newRow: { id: 'psql', v: 1 } });
    expect(changes[1]).toMatchObject({ oldRow: { id: 'psql', v: 1 }, newRow: { id: 'psql', v: 2 } });
    expect(changes[2]).toMatchObject({ oldRow: { id: 'psql', v: 2 }, newRow: null });
    for (const change of changes) {
      expect(typeof change.id).toBe('string');
      expect(Number.isNaN(Date.parse(change.committedAt))).toBe(false);
    }
  });

  it('reads exactly the missed changes since an old cursor, filtered and paged', async () => {
    const cursor = feed.currentCursor();
    const client = await sqlClient(server.database.url);
    try {
      for (let i = 0; i < 6; i++) {
        await client.query(`INSERT INTO items (id) VALUES ($1)`, [`missed-${i}`]);
        await client.query(`INSERT INTO other (id) VALUES ($1)`, [`other-${i}`]);
      }
    } finally {
      await client.end();
    }
    await waitFor('the missed writes', () => seen.has('missed-5') && seen.has('other-5'), 10_000, 20);
    const all = await feed.readSince(cursor);
    const expected = seen.changes.filter((c) => c.tick > parseCursor(cursor));
    expect(all.changes.map((c) => c.id)).toEqual(expected.map((c) => c.id));
    expect(all.fromCursor).toBe(cursor);
    expect(all.cursor).toBe(feed.currentCursor());

    const items = await feed.readSince(cursor, { tables: [{ schema: 'public', table: 'items' }] });
    expect(items.changes.map((c) => c.rowId)).toEqual([0, 1, 2, 3, 4, 5].map((i) => `missed-${i}`));

    // Paging: each page ends on a tick boundary, and the pages together are the whole.
    const paged: Change[] = [];
    let from = cursor;
    for (let page = 0; page < 100; page++) {
      const batch = await feed.readSince(from, { limit: 2 });
      expect(batch.fromCursor).toBe(from);
      paged.push(...batch.changes);
      if (batch.changes.length < 2) {
        expect(batch.cursor).toBe(all.cursor);
        break;
      }
      from = batch.cursor;
    }
    expect(paged.map((c) => c.id)).toEqual(all.changes.map((c) => c.id));

    // The current cursor has nothing after it.
    const none = await feed.readSince(feed.currentCursor());
    expect(none.changes).toEqual([]);
  });

  it('rejects malformed cursors and limits with INVALID_REQUEST', async () => {
    for (const bad of ['', 'v1.', 'v2.5', 'v1.-1', 'v1.ABC', '12', 'v1.zzzzzzzzzzzz', 'v1.5 ']) {
      await expectAppError(feed.readSince(bad), 'INVALID_REQUEST');
    }
    await expectAppError(feed.readSince(feed.currentCursor(), { limit: 0 }), 'INVALID_REQUEST');
    await expectAppError(feed.readSince(feed.currentCursor(), { limit: 1.5 }), 'INVALID_REQUEST');
    const badTables = [{ schema: 'public' }] as unknown as Array<{ schema: string; table: string }>;
    await expectAppError(feed.readSince(feed.currentCursor(), { tables: badTables }), 'INVALID_REQUEST');
    await expectAppError(feed.readSince(42 as unknown as string), 'INVALID_REQUEST');
    // A well-formed cursor this log never issued (e.g. from a restored database).
    await expectAppError(feed.readSince('v1.zzzzzz'), 'CURSOR_EXPIRED');
  });

  it('is not stalled by a long open transaction elsewhere on the server', async () => {
    const elsewhere = await sqlClient(inject('adminDatabaseUrl'));
    const sameDatabase = await sqlClient(server.database.url);
    try {
      // Both hold an xid (and so the server's xmin) while other transactions commit.
      await elsewhere.query('BEGIN');
      await elsewhere.query('SELECT pg_current_xact_id()');
      await sameDatabase.query('BEGIN');
      await sameDatabase.query(`INSERT INTO other (id) VALUES ('long-open')`);
      const client = await sqlClient(server.database.url);
      try {
        for (let i = 0; i < 3; i++) {
          const began = Date.now();
          await client.query(`INSERT INTO items (id) VALUES ($1)`, [`during-long-${i}`]);
          await waitFor(`during-long-${i}`, () => seen.has(`during-long-${i}`), 3_000, 20);
          expect(Date.now() - began).toBeLessThan(3_000);
        }
      } finally {
        await client.end();
      }
      expect(seen.has('long-open')).toBe(false);
      await sameDatabase.query('COMMIT');
      await waitFor('the long transaction', () => seen.has('long-open'), 10_000, 20);
    } finally {
      await elsewhere.query('ROLLBACK').catch(() => undefined);
      await elsewhere.end();
      await sameDatabase.end();
    }
  });

  it('delivers every change of many concurrent writers exactly once', async () => {
    const cursor = feed.currentCursor();
    // Larger runs: CHANGES_STRESS_WRITERS=32 CHANGES_STRESS_ROWS=500 (rows a multiple of 10).
    const writers = Number(process.env.CHANGES_STRESS_WRITERS ?? 8);
    const rowsEach = Number(process.env.CHANGES_STRESS_ROWS ?? 40);
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const client = await sqlClient(server.database.url);
        try {
          for (let i = 0; i < rowsEach; i++) {
            if (i % 10 === 0) {
              // Some transactions write several rows and stay open across ticks before committing.
              await client.query('BEGIN');
              await client.query(`INSERT INTO items (id) VALUES ($1)`, [`s-${w}-${i}`]);
              await sleep(Math.random() * 30);
              await client.query(`INSERT INTO items (id) VALUES ($1)`, [`s-${w}-${i + 1}`]);
              await client.query('COMMIT');
              i++;
            } else {
              await client.query(`INSERT INTO items (id) VALUES ($1)`, [`s-${w}-${i}`]);
            }
          }
        } finally {
          await client.end();
        }
      }),
    );
    const expected = writers * rowsEach;
    const stress = () => seen.changes.filter((c) => c.rowId.startsWith('s-'));
    await waitFor(
      'all stress changes',
      () => stress().length >= expected,
      Math.max(20_000, writers * rowsEach * 10),
      20,
    );
    await sleep(300);
    expect(stress()).toHaveLength(expected);
    expect(new Set(stress().map((c) => c.rowId)).size).toBe(expected);
    expect(duplicates(seen.changes)).toEqual([]);
    // Each writer's own rows arrive in the order it wrote them.
    for (let w = 0; w < writers; w++) {
      const mine = stress()
        .filter((c) => c.rowId.startsWith(`s-${w}-`))
        .map((c) => Number(c.rowId.split('-')[2]));
      expect(mine).toEqual([...mine].sort((a, b) => a - b));
    }
    // The log read back gives the same changes in the same order as delivered live.
    const replay = await feed.readSince(cursor);
    expect(replay.changes.filter((c) => c.rowId.startsWith('s-')).map((c) => c.id)).toEqual(stress().map((c) => c.id));
    // Ticks in delivery never go backwards.
    const ticks = seen.changes.map((c) => c.tick);
    expect(ticks).toEqual([...ticks].sort((a, b) => a - b));
  }, 300_000);

  it('places every change in the same tick as the tick-by-tick definition, for any range', async () => {
    const db = server.app.platform.db;
    const { rows: bounds } = await db.query<{ oldest: string; newest: string }>(
      'SELECT min(id) AS oldest, max(id) AS newest FROM basalt.change_ticks',
    );
    const oldest = Number(bounds[0]?.oldest);
    const newest = Number(bounds[0]?.newest);
    // The definition: visible in tick N's snapshot and not in tick N-1's.
    const reference = async (after: number, upto: number) =>
      (
        await db.query<{ tick: string; id: string }>(
          `SELECT t.id AS tick, c.id FROM basalt.change_ticks t
           JOIN basalt.change_ticks p ON p.id = t.id - 1
           JOIN basalt.changes c ON pg_visible_in_snapshot(c.txid, t.snapshot)
                                AND NOT pg_visible_in_snapshot(c.txid, p.snapshot)
           WHERE t.id > $1 AND t.id <= $2 ORDER BY t.id, c.id`,
          [after, upto],
        )
      ).rows.map((row) => `${row.tick}:${row.id}`);
    const fast = async (after: number, upto: number) =>
      (
        await db.query<{ tick: string; id: string }>(
          'SELECT tick, id FROM basalt.changes_of_ticks($1, $2) ORDER BY tick, id',
          [after, upto],
        )
      ).rows.map((row) => `${row.tick}:${row.id}`);
    const ranges: Array<[number, number]> = [[oldest, newest]];
    for (let i = 0; i < 15; i++) {
      const a = oldest + Math.floor(Math.random() * (newest - oldest));
      ranges.push([a, a + 1 + Math.floor(Math.random() * (newest - a))]);
    }
    for (const [after, upto] of ranges) expect(await fast(after, upto)).toEqual(await reference(after, upto));
    expect((await fast(oldest, newest)).length).toBeGreaterThan(100);
  });

  it('gives a covering cursor that includes every transaction committed before the call', async () => {
    const before = feed.currentCursor();
    const client = await sqlClient(server.database.url);
    try {
      await client.query(`INSERT INTO other (id) VALUES ('covered')`);
    } finally {
      await client.end();
    }
    const covering = await feed.coveringCursor();
    expect(parseCursor(covering)).toBeGreaterThan(parseCursor(before));
    expect(parseCursor(await feed.coveringCursor())).toBeGreaterThanOrEqual(parseCursor(covering));
    await waitFor('the covering tick', () => parseCursor(feed.currentCursor()) >= parseCursor(covering), 5_000, 20);
    const changes = seen.changes.filter((c) => c.rowId === 'covered');
    expect(changes).toHaveLength(1);
    expect(changes[0]!.tick).toBeLessThanOrEqual(parseCursor(covering));
  });

  it('records no ticks while nothing changes, except the heartbeat', async () => {
    const newest = async () => {
      const { rows } = await server.app.platform.db.query<{ id: string }>(
        'SELECT max(id) AS id FROM basalt.change_ticks',
      );
      return Number(rows[0]?.id);
    };
    const before = await newest();
    await sleep(1_500);
    // Polling every 250 ms would have made six; allow the heartbeat and one stray write.
    expect((await newest()) - before).toBeLessThanOrEqual(2);
  });

  it('exports its lag, tick and counts in /metrics', async () => {
    const response = await request(server.url, 'GET', '/metrics', { token: server.serviceKey });
    expect(response.status).toBe(200);
    expect(response.text).toMatch(/basalt_change_feed_lag_seconds \d+(\.\d+)?/);
    expect(response.text).toMatch(/basalt_change_feed_tick [1-9]\d*/);
    expect(response.text).toMatch(/basalt_change_feed_changes_total [1-9]\d*/);
    expect(response.text).toMatch(/basalt_change_feed_leader 1/);
    const lag = Number(/^basalt_change_feed_lag_seconds (\S+)$/m.exec(response.text)?.[1]);
    expect(lag).toBeLessThan(10);
  });
});

/**
 * A database of its own with tracked `tables`, and a feed on it with no ticker: ticks happen
 * only when the test records them, so every read of the feed is one the test caused.
 */
function manualFeed(tables: string[], options: { retentionMs?: number } = {}) {
  const state = {} as { own: TestDatabase; db: Database; feed: ChangeFeed };
  beforeAll(async () => {
    state.own = await createTestDatabase();
    for (const table of tables) await createTrackedTable(state.own.url, table);
    state.db = new Database({ url: state.own.url }, silentLogger);
    state.feed = new ChangeFeed(
      { db: state.db, log: silentLogger, metrics: new Metrics(), databaseUrl: state.own.url },
      { ticker: false, pollIntervalMs: 50, ...options },
    );
    await state.feed.start();
  });
  afterAll(async () => {
    await state.feed?.stop();
    await state.db?.close();
    await state.own?.drop();
  });
  return state;
}

describe('ordering within a tick and retention', () => {
  const state = manualFeed(['items'], { retentionMs: 1_000 });
  let own: TestDatabase;
  let db: Database;
  let manual: ChangeFeed;
  beforeAll(() => {
    ({ own, db, feed: manual } = state);
  });

  async function tick(): Promise<void> {
    await db.query('SELECT basalt.tick()');
  }

  it('orders transactions of one tick so that a row never goes back in time', async () => {
    const got = new Collector(manual);
    const a = await sqlClient(own.url);
    const b = await sqlClient(own.url);
    try {
      await a.query(`INSERT INTO items (id, v) VALUES ('r', 0)`);
      await tick();
      await waitFor('the first row', () => got.has('r'), 5_000, 20);
      // b starts first (its first change has the lowest id) but writes r after a committed.
      await b.query('BEGIN');
      await b.query(`INSERT INTO items (id) VALUES ('b-first')`);
      await a.query('BEGIN');
      await a.query(`UPDATE items SET v = 1 WHERE id = 'r'`);
      await a.query('COMMIT');
      await b.query(`UPDATE items SET v = 2 WHERE id = 'r'`);
      await b.query('COMMIT');
      await tick();
    } finally {
      await a.end();
      await b.end();
    }
    await waitFor('the tick', () => got.changes.length >= 4, 5_000, 20);
    const lastTick = got.changes.slice(1);
    expect(new Set(lastTick.map((c) => c.tick)).size).toBe(1);
    expect(lastTick.map((c) => [c.rowId, c.newRow?.v])).toEqual([
      ['r', 1],
      ['b-first', 0],
      ['r', 2],
    ]);
    // Changes of one transaction share a txid and are contiguous.
    expect(lastTick[1]!.txid).toBe(lastTick[2]!.txid);
  });

  it('returns a transaction larger than the page limit whole', async () => {
    const before = manual.currentCursor();
    await db.query(`INSERT INTO items (id) SELECT 'big-' || g FROM generate_series(1, 5) g`);
    await tick();
    await waitFor('a tick', () => manual.currentCursor() !== before, 5_000, 20);
    const page = await manual.readSince(before, { limit: 2 });
    expect(page.changes.map((c) => c.rowId)).toEqual(['big-1', 'big-2', 'big-3', 'big-4', 'big-5']);
    expect(page.cursor).toBe(manual.currentCursor());
  });

  it('keeps what a registered consumer has not read yet, until it is removed', async () => {
    const consumerAt = manual.currentCursor();
    await manual.saveConsumerCursor('test-dispatcher', consumerAt);
    expect(await manual.consumerCursor('test-dispatcher')).toBe(consumerAt);
    expect(await manual.consumerCursor('nobody')).toBeNull();
    await db.query(`INSERT INTO items (id) VALUES ('for-consumer')`);
    await tick();
    await waitFor('a tick', () => manual.currentCursor() !== consumerAt, 5_000, 20);
    await sleep(1_200);
    await db.query('SELECT basalt.tick()');
    expect((await manual.prune()).heldBy).toEqual(['test-dispatcher']);
    const kept = await manual.readSince(consumerAt);
    expect(kept.changes.map((c) => c.rowId)).toContain('for-consumer');
    await manual.removeConsumer('test-dispatcher');
    await manual.prune();
    await expectAppError(manual.readSince(consumerAt), 'CURSOR_EXPIRED');
  });

  it('answers CURSOR_EXPIRED for a cursor older than the retention, and keeps newer ones', async () => {
    const old = manual.currentCursor();
    await db.query(`INSERT INTO items (id) VALUES ('before-prune')`);
    await tick();
    await waitFor('a tick', () => manual.currentCursor() !== old, 5_000, 20);
    const middle = manual.currentCursor();
    await sleep(1_600);
    await db.query(`INSERT INTO items (id) VALUES ('after-prune')`);
    await tick();
    await waitFor('a tick', () => manual.currentCursor() !== middle, 5_000, 20);
    const pruned = await manual.prune();
    expect(pruned.ticks).toBeGreaterThan(0);
    expect(pruned.changes).toBeGreaterThan(0);
    await expectAppError(manual.readSince(old), 'CURSOR_EXPIRED');
    // The newest tick is kept however old it is, so the newest cursor always works. (Read
    // after the prune: another feed on this database may have ticked in the meantime.)
    const { rows: newest } = await db.query<{ id: string }>('SELECT max(id)::text AS id FROM basalt.change_ticks');
    expect((await manual.readSince(formatCursor(Number(newest[0]?.id)))).changes).toEqual([]);
    const { rows } = await db.query<{ n: string }>(
      `SELECT count(*) AS n FROM basalt.changes WHERE row_id = 'before-prune'`,
    );
    expect(Number(rows[0]?.n)).toBe(0);
  });
});

describe('reading only the tables that listeners follow', () => {
  const state = manualFeed(['items', 'other']);
  let db: Database;
  let manual: ChangeFeed;
  beforeAll(() => {
    ({ db, feed: manual } = state);
  });

  async function writeBoth(id: string): Promise<void> {
    await db.transaction(async (tx) => {
      await tx.query('INSERT INTO items (id) VALUES ($1)', [id]);
      await tx.query('INSERT INTO other (id) VALUES ($1)', [id]);
    });
    await db.query('SELECT basalt.tick()');
  }

  it('hands a listener the changes of its tables, and none of a table nobody follows', async () => {
    const batches: ChangeBatch[] = [];
    const stop = manual.subscribe(
      (batch) => batches.push(batch),
      () => new Set(['public.items']),
    );
    try {
      await writeBoth('only-items');
      await waitFor('the change of items', () => batches.some((b) => b.changes.length > 0), 5_000, 20);
      const changes = batches.flatMap((batch) => batch.changes);
      expect(changes.map((c) => `${c.table}/${c.rowId}`)).toEqual(['items/only-items']);

      // A listener that names no tables gets every table, and so does everyone in that batch.
      const all = new Collector(manual);
      try {
        await writeBoth('both');
        await waitFor('the change of other', () => all.has('both', 'other'), 5_000, 20);
        expect(all.changes.map((c) => `${c.table}/${c.rowId}`)).toEqual(['items/both', 'other/both']);
      } finally {
        all.unsubscribe();
      }
      // Once it left, writes to `other` are not read any more.
      await writeBoth('items-again');
      await waitFor('items', () => batches.some((b) => b.changes.some((c) => c.rowId === 'items-again')), 5_000, 20);
      expect(batches.flatMap((b) => b.changes).filter((c) => c.rowId === 'items-again')).toHaveLength(1);
    } finally {
      stop();
    }
  });

  it('includes a table named while the read was in flight in the batch it hands out', async () => {
    const followed = new Set(['public.items']);
    let armed = false;
    const batches: ChangeBatch[] = [];
    const stop = manual.subscribe(
      (batch) => batches.push(batch),
      () => {
        const now = new Set(followed);
        if (armed) {
          armed = false;
          // Runs while the feed waits for the rows it asked for: like a live query on `other`
          // registered during the read.
          setImmediate(() => followed.add('public.other'));
        }
        return now;
      },
    );
    try {
      await db.transaction(async (tx) => {
        await tx.query(`INSERT INTO items (id) VALUES ('mid-read')`);
        await tx.query(`INSERT INTO other (id) VALUES ('mid-read')`);
      });
      armed = true;
      await db.query('SELECT basalt.tick()');
      await waitFor('the batch', () => batches.some((b) => b.changes.length > 0), 5_000, 20);
      const batch = batches.find((b) => b.changes.length > 0) as ChangeBatch;
      expect(armed).toBe(false);
      expect(batch.changes.map((c) => `${c.table}/${c.rowId}`)).toEqual(['items/mid-read', 'other/mid-read']);
    } finally {
      stop();
    }
  });
});

describe('configuration and process lifetime', () => {
  it('reads BASALT_CHANGE_RETENTION in seconds, 24 h by default', () => {
    expect(loadConfig({}).changeRetentionSeconds).toBe(86_400);
    expect(loadConfig({ BASALT_CHANGE_RETENTION: '3600' }).changeRetentionSeconds).toBe(3600);
    for (const bad of ['0', '1h', '-5', '99999999999']) {
      expect(() => loadConfig({ BASALT_CHANGE_RETENTION: bad })).toThrow(ConfigError);
    }
  });

  it('does not keep the process alive once stopped', async () => {
    const own = await createTestDatabase();
    try {
      const fixture = fileURLToPath(new URL('./changes-exit-fixture.ts', import.meta.url));
      const began = Date.now();
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', fixture, own.url], {
        timeout: 20_000,
      });
      expect(JSON.parse(stdout.trim())).toMatchObject({ leader: true });
      expect(Date.now() - began).toBeLessThan(20_000);
    } finally {
      await own.drop();
    }
  });
});
