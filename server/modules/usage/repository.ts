import { ADVISORY_LOCKS } from '../../internal/advisory-locks.js';
import type { Database } from '../../internal/db.js';
import { runQuery } from '../../internal/repository.js';
import type { UsageWindow } from './meter.js';

export interface UsageHourRow {
  hour: Date;
  document_reads: string;
  document_writes: string;
  storage_bytes_in: string;
  storage_bytes_out: string;
  storage_bytes_stored: string | null;
  realtime_messages: string;
}

export interface FunctionHourRow {
  hour: Date;
  function_name: string;
  invocations: string;
  errors: string;
  cold_starts: string;
  duration_ms: string;
  gb_seconds: number;
}

/** The usage tables: per-hour counters that every instance adds to. */
export class UsageRepository {
  constructor(private readonly db: Database) {}

  /** Adds one window's figures to its hour's rows, in one transaction. */
  async add(window: UsageWindow, instanceId: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const hour = window.hour;
      const functions = [...window.functions];
      if (functions.length > 0) {
        await runQuery(
          tx,
          `INSERT INTO basalt.usage_function_hours AS u
             (hour, function_name, invocations, errors, cold_starts, duration_ms, gb_seconds)
           SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::float8[])
           ON CONFLICT (hour, function_name) DO UPDATE SET
             invocations = u.invocations + EXCLUDED.invocations,
             errors = u.errors + EXCLUDED.errors,
             cold_starts = u.cold_starts + EXCLUDED.cold_starts,
             duration_ms = u.duration_ms + EXCLUDED.duration_ms,
             gb_seconds = u.gb_seconds + EXCLUDED.gb_seconds`,
          [
            hour,
            functions.map(([name]) => name),
            functions.map(([, f]) => f.invocations),
            functions.map(([, f]) => f.errors),
            functions.map(([, f]) => f.coldStarts),
            functions.map(([, f]) => Math.round(f.durationMs)),
            functions.map(([, f]) => f.gbSeconds),
          ],
        );
      }
      // The stored total is measured (not counted) whenever objects came or went, so that
      // it stays right whatever wrote them; every instance measures the same table.
      await runQuery(
        tx,
        `INSERT INTO basalt.usage_hours AS u
           (hour, document_reads, document_writes, storage_bytes_in, storage_bytes_out, storage_bytes_stored, realtime_messages)
         VALUES ($1, $2, $3, $4, $5,
                 CASE WHEN $6::boolean THEN (SELECT coalesce(sum(size), 0) FROM basalt.objects) END, $7)
         ON CONFLICT (hour) DO UPDATE SET
           document_reads = u.document_reads + EXCLUDED.document_reads,
           document_writes = u.document_writes + EXCLUDED.document_writes,
           storage_bytes_in = u.storage_bytes_in + EXCLUDED.storage_bytes_in,
           storage_bytes_out = u.storage_bytes_out + EXCLUDED.storage_bytes_out,
           storage_bytes_stored = coalesce(EXCLUDED.storage_bytes_stored, u.storage_bytes_stored),
           realtime_messages = u.realtime_messages + EXCLUDED.realtime_messages`,
        [
          hour,
          window.documentReads,
          window.documentWrites,
          window.storageBytesIn,
          window.storageBytesOut,
          window.storageChanged,
          window.realtimeMessages,
        ],
      );
      if (window.peakConnections > 0) {
        await runQuery(
          tx,
          `INSERT INTO basalt.usage_connection_peaks AS u (hour, instance_id, peak) VALUES ($1, $2, $3)
           ON CONFLICT (hour, instance_id) DO UPDATE SET peak = greatest(u.peak, EXCLUDED.peak)`,
          [hour, instanceId, window.peakConnections],
        );
      }
      if (window.activeUsers.size > 0) {
        await runQuery(
          tx,
          `INSERT INTO basalt.usage_active_users (hour, user_id)
           SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING`,
          [hour, [...window.activeUsers]],
        );
      }
    });
  }

  async hours(from: Date, to: Date): Promise<UsageHourRow[]> {
    return runQuery<UsageHourRow>(
      this.db.pool,
      `SELECT * FROM basalt.usage_hours WHERE hour >= $1 AND hour < $2 ORDER BY hour`,
      [from, to],
    );
  }

  /** The stored total last measured before `before`, to carry into the first buckets. */
  async storedBefore(before: Date): Promise<string | null> {
    const rows = await runQuery<{ stored: string }>(
      this.db.pool,
      `SELECT storage_bytes_stored AS stored FROM basalt.usage_hours
       WHERE hour < $1 AND storage_bytes_stored IS NOT NULL ORDER BY hour DESC LIMIT 1`,
      [before],
    );
    return rows[0]?.stored ?? null;
  }

  async functionHours(from: Date, to: Date): Promise<FunctionHourRow[]> {
    return runQuery<FunctionHourRow>(
      this.db.pool,
      `SELECT * FROM basalt.usage_function_hours WHERE hour >= $1 AND hour < $2 ORDER BY hour, function_name`,
      [from, to],
    );
  }

  /** The sum of the instances' peaks, per hour. */
  async connectionPeaks(from: Date, to: Date): Promise<Array<{ hour: Date; peak: string }>> {
    return runQuery(
      this.db.pool,
      `SELECT hour, sum(peak) AS peak FROM basalt.usage_connection_peaks
       WHERE hour >= $1 AND hour < $2 GROUP BY hour`,
      [from, to],
    );
  }

  /** Distinct active users per bucket (`hour` or `day`, in UTC). */
  async activeUsers(
    from: Date,
    to: Date,
    granularity: 'hour' | 'day',
  ): Promise<Array<{ bucket: Date; users: string }>> {
    return runQuery(
      this.db.pool,
      `SELECT date_trunc($3, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, count(DISTINCT user_id) AS users
       FROM basalt.usage_active_users WHERE hour >= $1 AND hour < $2 GROUP BY 1`,
      [from, to, granularity],
    );
  }

  /** Deletes rows older than `before`; one instance at a time (the others skip). */
  async prune(before: Date): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const [lock] = await runQuery<{ locked: boolean }>(tx, 'SELECT pg_try_advisory_xact_lock($1) AS locked', [
        ADVISORY_LOCKS.usagePrune,
      ]);
      if (!lock?.locked) return false;
      for (const table of ['usage_hours', 'usage_function_hours', 'usage_connection_peaks', 'usage_active_users']) {
        await runQuery(tx, `DELETE FROM basalt.${table} WHERE hour < $1`, [before]);
      }
      return true;
    });
  }
}
