import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeFeed } from '../server/internal/changes/feed.js';
import { Collector, createTrackedTable, duplicates, FlakyProxy, sqlClient } from './changes-support.js';
import { createTestDatabase, startTestApp, type TestApp, type TestDatabase, useTestApp, waitFor } from './helpers.js';

function feedOf(server: TestApp): ChangeFeed {
  const feed = server.app.platform.changes;
  if (!feed) throw new Error('the app has no change feed');
  return feed;
}

async function insert(url: string, ids: string[]): Promise<void> {
  const client = await sqlClient(url);
  try {
    for (const id of ids) await client.query('INSERT INTO items (id) VALUES ($1)', [id]);
  } finally {
    await client.end();
  }
}

describe('two instances on one database', () => {
  const first = useTestApp();
  const second = useTestApp({ sharing: first });

  beforeAll(async () => {
    await createTrackedTable(first.database.url, 'items');
  });

  it('both deliver the same changes at the same ticks, and exactly one instance ticks', async () => {
    const a = new Collector(feedOf(first));
    const b = new Collector(feedOf(second));
    await waitFor('a leader', () => feedOf(first).isLeader || feedOf(second).isLeader, 10_000, 20);
    expect(feedOf(first).isLeader && feedOf(second).isLeader).toBe(false);

    const ids = Array.from({ length: 30 }, (_, i) => `both-${i}`);
    await Promise.all([insert(first.database.url, ids.slice(0, 15)), insert(first.database.url, ids.slice(15))]);
    await waitFor('both instances', () => ids.every((id) => a.has(id) && b.has(id)), 10_000, 20);
    const key = (c: { id: string; tick: number }) => `${c.id}@${c.tick}`;
    const mine = (c: { rowId: string }) => c.rowId.startsWith('both-');
    expect(a.changes.filter(mine).map(key)).toEqual(b.changes.filter(mine).map(key));
    expect(duplicates(a.changes)).toEqual([]);
    expect(duplicates(b.changes)).toEqual([]);
    // A cursor from one instance reads the same on the other.
    const cursor = a.batches[0]?.fromCursor ?? feedOf(first).currentCursor();
    const fromA = await feedOf(first).readSince(cursor);
    const fromB = await feedOf(second).readSince(cursor);
    const upTo = Math.min(...[fromA, fromB].map((batch) => Number.parseInt(batch.cursor.slice(3), 36)));
    const through = (changes: Array<{ id: string; tick: number }>) => changes.filter((c) => c.tick <= upTo).map(key);
    expect(through(fromA.changes)).toEqual(through(fromB.changes));
    expect(through(fromA.changes).length).toBeGreaterThanOrEqual(30);

    const { rows } = await first.app.platform.db.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_locks
       WHERE locktype = 'advisory' AND objid = 7306356 AND granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    );
    expect(Number(rows[0]?.n)).toBe(1);
  });

  it('hands the lead to the other instance when the leader closes', async () => {
    const leader = feedOf(first).isLeader ? first : second;
    const survivor = leader === first ? second : first;
    const seen = new Collector(feedOf(survivor));
    await leader.close();
    const began = Date.now();
    await waitFor('the survivor to lead', () => feedOf(survivor).isLeader, 10_000, 20);
    expect(Date.now() - began).toBeLessThan(5_000);
    await insert(first.database.url, ['after-handover']);
    await waitFor('a change after the handover', () => seen.has('after-handover'), 10_000, 20);
  });
});

describe('Postgres connection loss', () => {
  const server = useTestApp();

  beforeAll(async () => {
    await createTrackedTable(server.database.url, 'items');
  });

  it('reconnects after its connections are terminated and delivers everything', async () => {
    const feed = feedOf(server);
    const seen = new Collector(feed);
    await waitFor('the lead', () => feed.isLeader, 10_000, 20);
    await insert(server.database.url, ['before-kill']);
    await waitFor('before-kill', () => seen.has('before-kill'), 10_000, 20);

    const admin = await sqlClient(server.database.url);
    try {
      const killed = await admin.query<{ n: string }>(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'basalt%'`,
      );
      expect(Number(killed.rows[0]?.n)).toBeGreaterThanOrEqual(2);
      // Written while the feed is reconnecting.
      await admin.query(`INSERT INTO items (id) VALUES ('during-outage-1'), ('during-outage-2')`);
    } finally {
      await admin.end();
    }
    await insert(server.database.url, ['after-kill']);
    await waitFor(
      'the changes written around the outage',
      () => ['during-outage-1', 'during-outage-2', 'after-kill'].every((id) => seen.has(id)),
      15_000,
      20,
    );
    await waitFor('the lead again', () => feed.isLeader, 10_000, 20);
    expect(duplicates(seen.changes)).toEqual([]);
    expect(seen.rowIds()).toEqual(['before-kill', 'during-outage-1', 'during-outage-2', 'after-kill']);
  });
});

describe('a Postgres outage', () => {
  let database: TestDatabase;
  let proxy: FlakyProxy;
  let server: TestApp;

  beforeAll(async () => {
    database = await createTestDatabase();
    await createTrackedTable(database.url, 'items');
    const started = await FlakyProxy.start(database.url);
    proxy = started.proxy;
    // The app reaches Postgres only through the proxy; the test writes directly.
    server = await startTestApp({ ...database, url: started.url });
  });

  afterAll(async () => {
    await server?.close();
    await proxy?.close();
    await database?.drop();
  });

  it('survives Postgres going away for a while and delivers what was written meanwhile', async () => {
    const feed = feedOf(server);
    const seen = new Collector(feed);
    await waitFor('the lead', () => feed.isLeader, 10_000, 20);
    await insert(database.url, ['before-outage']);
    await waitFor('before-outage', () => seen.has('before-outage'), 10_000, 20);
    const outage = proxy.outage(2_000);
    await waitFor('the lead to be lost', () => !feed.isLeader, 5_000, 20);
    await insert(database.url, ['during-outage']);
    await outage;
    await insert(database.url, ['after-outage']);
    await waitFor(
      'the changes around the outage',
      () => seen.has('during-outage') && seen.has('after-outage'),
      20_000,
      20,
    );
    expect(seen.rowIds()).toEqual(['before-outage', 'during-outage', 'after-outage']);
    await waitFor('the lead again', () => feed.isLeader, 10_000, 20);
  });
});
