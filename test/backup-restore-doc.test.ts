import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChangeRepository } from '../server/internal/changes/repository.js';
import { Database } from '../server/internal/db.js';
import { migrate } from '../server/internal/migrations.js';
import { createCollection } from './documents-support.js';
import { createTestDatabase, request, silentLogger, startTestApp, waitFor } from './helpers.js';
import type { TestApp, TestDatabase } from './helpers.js';
import { PrivateCluster } from './private-postgres.js';

/**
 * docs/backup-restore.md: a change log restored into a new cluster (as a logical dump does)
 * carries snapshots of the old cluster's transaction ids; the page's SQL block re-bases it,
 * after which new changes are delivered, survive pruning, and old cursors expire.
 */

/** The SQL block the page gives for a dump restored into a new cluster. */
async function rebaseSql(): Promise<string> {
  const page = await readFile(path.resolve(import.meta.dirname, '../docs/backup-restore.md'), 'utf8');
  const block = /before starting Basalt[\s\S]*?```sql\n([\s\S]*?)\n```/.exec(page)?.[1];
  if (!block) throw new Error('docs/backup-restore.md has no SQL block for a logical restore');
  return block;
}

async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

interface Tick {
  id: string;
  snapshot: string;
  created_at: Date;
}

let source: TestDatabase;
let cluster: PrivateCluster;
let sourceTicks: Tick[];
const apps: TestApp[] = [];

/** A database of the new cluster holding the source's ticks, as a restored dump would; re-based or not. */
async function restoredDatabase(name: string, rebase: boolean): Promise<string> {
  const url = await cluster.createDatabase(name);
  await migrate(url, silentLogger);
  const sql = await rebaseSql();
  await withClient(url, async (client) => {
    await client.query('DELETE FROM basalt.change_ticks');
    for (const tick of sourceTicks) {
      await client.query(
        'INSERT INTO basalt.change_ticks (id, snapshot, created_at) VALUES ($1, $2::pg_snapshot, $3)',
        [tick.id, tick.snapshot, tick.created_at],
      );
    }
    if (rebase) await client.query(sql);
  });
  return url;
}

/**
 * Starts Basalt on `url`, waits for its first tick, writes a document, and tells whether
 * the change log holds the write once a tick covers it, and again after pruning.
 */
async function writeThenPrune(url: string, name: string): Promise<{ delivered: boolean; afterPrune: boolean }> {
  const app = await startTestApp({ url, name, drop: async () => undefined });
  apps.push(app);
  const database = new Database({ url, max: 2 }, silentLogger);
  try {
    const repository = new ChangeRepository(database);
    const restoredNewest = (await repository.tickBounds()).newest;
    await waitFor('a tick of the new cluster', async () => (await repository.tickBounds()).newest > restoredNewest);
    const before = (await repository.tickBounds()).newest;
    await createCollection(app, { name: 'notes', rules: { read: 'true' } });
    const created = await request(app.url, 'POST', '/v1/db/notes', {
      body: { id: 'after-restore', data: { n: 2 } },
      token: app.serviceKey,
    });
    expect(created.status).toBe(201);
    const holdsWrite = async () =>
      (await repository.changesOfTicks(before, (await repository.tickBounds()).newest)).some(
        (change) => change.rowId === 'after-restore',
      );
    const delivered = await waitFor('the write in a tick', holdsWrite).catch(() => false);
    await repository.prune(86_400, 5_000);
    return { delivered, afterPrune: await holdsWrite() };
  } finally {
    await database.close();
  }
}

beforeAll(async () => {
  // A source database whose every tick was recorded after its cluster used thousands of
  // transaction ids, as in any database that has run for a while.
  source = await createTestDatabase({ migrate: false });
  await withClient(source.url, async (client) => {
    for (let i = 0; i < 3000; i++) await client.query('SELECT pg_current_xact_id()');
  });
  await migrate(source.url, silentLogger);
  const app = await startTestApp(source);
  try {
    await createCollection(app, { name: 'notes', rules: { read: 'true' } });
    const created = await request(app.url, 'POST', '/v1/db/notes', { body: { data: { n: 1 } }, token: app.serviceKey });
    expect(created.status).toBe(201);
    await waitFor('a tick after the write', () =>
      withClient(source.url, async (client) => {
        const { rows } = await client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM basalt.changes_of_ticks(0, (SELECT max(id) FROM basalt.change_ticks))`,
        );
        return (rows[0]?.n ?? 0) > 0;
      }),
    );
  } finally {
    await app.close();
  }
  sourceTicks = await withClient(source.url, async (client) => {
    const { rows } = await client.query<Tick>(
      'SELECT id::text, snapshot::text, created_at FROM basalt.change_ticks ORDER BY id',
    );
    return rows;
  });
  // The new cluster: its transaction ids start low.
  cluster = await PrivateCluster.create();
  await cluster.start();
}, 120_000);

afterAll(async () => {
  for (const app of apps) await app.close();
  await cluster?.destroy();
  await source?.drop();
});

describe('a change log restored into a new cluster', () => {
  it('as restored: a new write is read once, then pruned as if already delivered', async () => {
    const url = await restoredDatabase('restored_as_is', false);
    expect(await writeThenPrune(url, 'restored_as_is')).toEqual({ delivered: true, afterPrune: false });
  }, 60_000);

  it('re-based with the page’s block: one tick after the last, and new writes are kept', async () => {
    const url = await restoredDatabase('restored_rebased', true);
    const lastSourceTick = Number(sourceTicks.at(-1)?.id);
    const ticks = await withClient(url, async (client) => {
      const { rows } = await client.query<{ id: string }>('SELECT id::text FROM basalt.change_ticks ORDER BY id');
      return rows.map((row) => Number(row.id));
    });
    // Every earlier cursor is now below the oldest tick: CURSOR_EXPIRED, a reset for live queries.
    expect(ticks).toEqual([lastSourceTick + 1]);
    expect(await writeThenPrune(url, 'restored_rebased')).toEqual({ delivered: true, afterPrune: true });
  }, 60_000);
});
