import { eq, sql } from 'drizzle-orm';
import type pg from 'pg';
import { changeConsumers } from '../../db/schema.js';
import type { Database, Queryable } from '../db.js';
import { ADVISORY_LOCKS } from '../advisory-locks.js';
import { mapDatabaseErrors, runQuery } from '../repository.js';
import { originFrom, type TraceOrigin } from '../trace.js';

/** Wakes readers after each tick; basalt_changes (from the row trigger) wakes the ticker. */
export const TICKS_CHANNEL = 'basalt_ticks';
export const CHANGES_CHANNEL = 'basalt_changes';

export interface ChangeRow {
  tick: number;
  tickAt: Date;
  id: string;
  txid: string;
  schema: string;
  table: string;
  op: 'insert' | 'update' | 'delete';
  rowId: string;
  oldRow: Record<string, unknown> | null;
  newRow: Record<string, unknown> | null;
  /** The function run whose write this is (migrations/0025); null for every other write. */
  origin?: TraceOrigin | null;
}

export interface TickPoll {
  /** New ticks after the asked one, in id order. */
  ticks: Array<{ id: number; createdAtMs: number }>;
  /** The oldest tick still kept; a position below it has lost changes to pruning. */
  oldestTick: number | null;
  /** Postgres' clock when it answered, so lag is measured on one clock. */
  dbNowMs: number;
}

export interface TickBounds {
  oldest: number;
  newest: number;
}

export interface TableFilter {
  schema: string;
  table: string;
}

interface RawChange {
  tick: string;
  tick_at: Date;
  id: string;
  txid: string;
  table_schema: string;
  table_name: string;
  op: 'insert' | 'update' | 'delete';
  row_id: string;
  old_row: Record<string, unknown> | null;
  new_row: Record<string, unknown> | null;
  origin: unknown;
}

/**
 * All SQL of the change feed: reading ticks and their changes, ticking, pruning, consumer
 * cursors. Only the consumer cursors are plain CRUD (drizzle's builder); the rest reads
 * snapshots and the change-log functions of migrations 0002/0007, so it stays SQL.
 */
export class ChangeRepository {
  constructor(private readonly db: Database) {}

  async pollTicks(after: number, limit: number): Promise<TickPoll> {
    const rows = await runQuery<{
      id: string | null;
      created_ms: number | null;
      oldest: string | null;
      now_ms: number;
    }>(
      this.db.pool,
      {
        name: 'basalt_poll_ticks',
        text: `SELECT t.id, (extract(epoch FROM t.created_at) * 1000)::float8 AS created_ms, m.oldest,
              (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms
       FROM (SELECT min(id) AS oldest FROM basalt.change_ticks) m
       LEFT JOIN LATERAL (
         SELECT id, created_at FROM basalt.change_ticks WHERE id > $1 ORDER BY id LIMIT $2
       ) t ON true
       ORDER BY t.id`,
      },
      [after, limit],
    );
    const first = rows[0];
    return {
      ticks: rows
        .filter((row) => row.id !== null)
        .map((row) => ({ id: Number(row.id), createdAtMs: Number(row.created_ms) })),
      oldestTick: first?.oldest == null ? null : Number(first.oldest),
      dbNowMs: Number(first?.now_ms ?? Date.now()),
    };
  }

  async newestTick(): Promise<{ id: number; createdAtMs: number; dbNowMs: number }> {
    const rows = await runQuery<{ id: string; created_ms: number; now_ms: number }>(
      this.db.pool,
      `SELECT id, (extract(epoch FROM created_at) * 1000)::float8 AS created_ms,
              (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms
       FROM basalt.change_ticks ORDER BY id DESC LIMIT 1`,
    );
    const row = rows[0];
    if (!row) throw new Error('basalt.change_ticks is empty: the change-log migration did not run');
    return { id: Number(row.id), createdAtMs: Number(row.created_ms), dbNowMs: Number(row.now_ms) };
  }

  /** A tick covering every transaction committed before the call (the newest, or a new one). */
  async coveringTick(): Promise<number> {
    const rows = await runQuery<{ id: string }>(this.db.pool, 'SELECT basalt.covering_tick() AS id');
    return Number(rows[0]?.id);
  }

  async tickBounds(): Promise<TickBounds> {
    const rows = await runQuery<{ oldest: string | null; newest: string | null }>(
      this.db.pool,
      'SELECT min(id) AS oldest, max(id) AS newest FROM basalt.change_ticks',
    );
    return { oldest: Number(rows[0]?.oldest ?? 0), newest: Number(rows[0]?.newest ?? 0) };
  }

  /**
   * The changes of ticks (after, upto], in commit order: by tick, then by the last change
   * id of each transaction, then by id. `limit` caps the rows read (null: all).
   */
  async changesOfTicks(
    after: number,
    upto: number,
    options: { tables?: TableFilter[] | undefined; limit?: number | null } = {},
  ): Promise<ChangeRow[]> {
    const tables = options.tables;
    // A named statement: the feed runs it after every tick, and planning it (the inlined
    // function's CTEs) cost several times its execution; prepared, each pooled
    // connection plans it a few times and then reuses the plan.
    const rows = await runQuery<RawChange>(
      this.db.pool,
      {
        name: 'basalt_changes_of_ticks',
        text: `SELECT c.tick, c.tick_at, c.id, c.txid, c.table_schema, c.table_name, c.op, c.row_id, c.old_row, c.new_row,
                c.origin
         FROM basalt.changes_of_ticks($1, $2) c
         WHERE $3::text[] IS NULL
            OR (c.table_schema, c.table_name) IN (SELECT s, t FROM unnest($3::text[], $4::text[]) AS f(s, t))
         ORDER BY c.tick, c.tx_last, c.id
         LIMIT $5`,
      },
      [
        after,
        upto,
        tables ? tables.map((entry) => entry.schema) : null,
        tables ? tables.map((entry) => entry.table) : null,
        options.limit ?? null,
      ],
    );
    return rows.map((row) => ({
      tick: Number(row.tick),
      tickAt: row.tick_at,
      id: row.id,
      txid: row.txid,
      schema: row.table_schema,
      table: row.table_name,
      op: row.op,
      rowId: row.row_id,
      oldRow: row.old_row,
      newRow: row.new_row,
      origin: row.origin === null ? null : originFrom(row.origin),
    }));
  }

  /**
   * Deletes ticks older than the retention (never the newest one, nor any a registered
   * consumer still needs), then every change already delivered by the oldest kept tick:
   * those whose transaction is visible in its snapshot. Pruning by transaction rather
   * than by created_at keeps the changes of a long transaction that committed late.
   */
  async prune(
    retentionSeconds: number,
    batchSize: number,
  ): Promise<{ ticks: number; changes: number; heldBy: string[] }> {
    let ticks = 0;
    for (;;) {
      // Through mapDatabaseErrors rather than runQuery: the loop needs the row count.
      const result = await mapDatabaseErrors(() =>
        this.db.query(
          `WITH bounds AS (
           SELECT (SELECT max(id) FROM basalt.change_ticks) AS newest,
                  (SELECT min(id) FROM basalt.change_ticks
                    WHERE created_at >= clock_timestamp() - make_interval(secs => $1)) AS recent,
                  (SELECT min(tick_id) FROM basalt.change_consumers) AS consumer
         )
         DELETE FROM basalt.change_ticks WHERE id IN (
           SELECT id FROM basalt.change_ticks, bounds
           WHERE id < least(bounds.newest, coalesce(bounds.recent, bounds.newest), coalesce(bounds.consumer, bounds.newest))
           ORDER BY id LIMIT $2
         )`,
          [retentionSeconds, batchSize],
        ),
      );
      ticks += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < batchSize) break;
    }
    let changes = 0;
    for (;;) {
      const result = await mapDatabaseErrors(() =>
        this.db.query(
          `WITH oldest AS (SELECT snapshot FROM basalt.change_ticks ORDER BY id LIMIT 1)
         DELETE FROM basalt.changes WHERE id IN (
           SELECT c.id FROM basalt.changes c, oldest
           WHERE c.txid < pg_snapshot_xmax(oldest.snapshot) AND pg_visible_in_snapshot(c.txid, oldest.snapshot)
           LIMIT $1
         )`,
          [batchSize],
        ),
      );
      changes += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < batchSize) break;
    }
    const rows = await runQuery<{ name: string }>(
      this.db.pool,
      `SELECT c.name FROM basalt.change_consumers c JOIN basalt.change_ticks t ON t.id = c.tick_id
       WHERE t.created_at < clock_timestamp() - make_interval(secs => $1) ORDER BY c.name`,
      [retentionSeconds],
    );
    return { ticks, changes, heldBy: rows.map((row) => row.name) };
  }

  async consumerTick(name: string, q: Queryable = this.db.pool): Promise<number | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .select({ tickId: changeConsumers.tickId })
        .from(changeConsumers)
        .where(eq(changeConsumers.name, name)),
    );
    return rows[0]?.tickId ?? null;
  }

  async saveConsumerTick(name: string, tick: number, q: Queryable = this.db.pool): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(changeConsumers)
        .values({ name, tickId: tick })
        .onConflictDoUpdate({
          target: changeConsumers.name,
          set: { tickId: sql`excluded.tick_id`, updatedAt: sql`now()` },
        }),
    );
  }

  async deleteConsumer(name: string, q: Queryable = this.db.pool): Promise<void> {
    await mapDatabaseErrors(() => this.db.builder(q).delete(changeConsumers).where(eq(changeConsumers.name, name)));
  }
}

/** Tells the leading ticker, on whichever instance, that something committed here. */
export async function wakeTicker(client: pg.Client): Promise<void> {
  await runQuery(client, `NOTIFY ${CHANGES_CHANNEL}`);
}

/** SQL run on the ticker's own session (the lock is a session lock, so it must stay on one connection). */
export const tickerSql = {
  async tryLead(client: pg.Client): Promise<boolean> {
    const rows = await runQuery<{ ok: boolean }>(client, 'SELECT pg_try_advisory_lock($1) AS ok', [
      ADVISORY_LOCKS.ticker,
    ]);
    return rows[0]?.ok === true;
  },
  async shortKeepalives(client: pg.Client): Promise<void> {
    await runQuery(
      client,
      `SELECT set_config('tcp_keepalives_idle', '10', false), set_config('tcp_keepalives_interval', '5', false),
              set_config('tcp_keepalives_count', '3', false)`,
    );
  },
  async resign(client: pg.Client): Promise<void> {
    await runQuery(client, 'SELECT pg_advisory_unlock($1)', [ADVISORY_LOCKS.ticker]);
  },
  async listen(client: pg.Client, channel: string): Promise<void> {
    await runQuery(client, `LISTEN ${channel}`);
  },
  /** Returns the new tick id, or null when nothing committed since the last tick. */
  async tickIfChanged(client: pg.Client, force: boolean): Promise<number | null> {
    const rows = await runQuery<{ id: string | null }>(client, 'SELECT basalt.tick_if_changed($1) AS id', [force]);
    const id = rows[0]?.id;
    return id == null ? null : Number(id);
  },
};
