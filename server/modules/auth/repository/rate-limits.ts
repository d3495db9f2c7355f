import { lt, sql } from 'drizzle-orm';
import { rateLimits } from '../../../db/schema.js';
import type { Database, Tx } from '../../../internal/db.js';
import { ADVISORY_LOCK_NAMESPACES } from '../../../internal/advisory-locks.js';
import { mapDatabaseErrors, runQuery } from '../../../internal/repository.js';

/**
 * The rate-limit window start of now, for a window of `$<windowParam>` seconds: by the
 * database clock, so that every instance counts in the same window.
 */
export function windowStartSql(windowParam: number): string {
  return `to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $${windowParam}) * $${windowParam})`;
}

/**
 * basalt.rate_limits: fixed-window counters and "at most once per interval" claims. The
 * counters are hand-written SQL: each is one atomic upsert on the database clock.
 */
export class RateLimitRepository {
  constructor(private readonly db: Database) {}

  /**
   * Adds `amount` to the counter of `key` in the current fixed window and returns the new
   * count and the seconds until the window ends. One atomic upsert: instances never race.
   */
  async hit(key: string, windowSeconds: number, amount: number): Promise<{ count: number; resetSeconds: number }> {
    const [row] = await runQuery<{ count: number; reset_seconds: number }>(
      this.db.pool,
      `INSERT INTO basalt.rate_limits (key, window_start, count)
       VALUES ($1, ${windowStartSql(2)}, $3)
       ON CONFLICT (key, window_start) DO UPDATE SET count = basalt.rate_limits.count + EXCLUDED.count
       RETURNING count,
         ceil(extract(epoch FROM window_start + make_interval(secs => $2) - clock_timestamp()))::int AS reset_seconds`,
      [key, windowSeconds, amount],
    );
    return { count: row!.count, resetSeconds: Math.max(1, row!.reset_seconds) };
  }

  /**
   * Takes one count back from `key` in the current window, never below zero and never into
   * a window that has no count yet (the count it gives back was made in an earlier one).
   */
  async unhit(key: string, windowSeconds: number): Promise<void> {
    await runQuery(
      this.db.pool,
      `UPDATE basalt.rate_limits SET count = count - 1
        WHERE key = $1 AND count > 0 AND window_start = ${windowStartSql(2)}`,
      [key, windowSeconds],
    );
  }

  /**
   * Sliding "at most once per `seconds`" for `key` (e.g. one mail per address a minute):
   * records now and returns true unless an earlier claim is younger than `seconds`. Must
   * run in a transaction: the advisory lock makes concurrent claims on any instance take turns.
   */
  async claimInterval(tx: Tx, key: string, seconds: number): Promise<boolean> {
    await runQuery(tx, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [
      ADVISORY_LOCK_NAMESPACES.intervalClaims,
      key,
    ]);
    const rows = await runQuery(
      tx,
      `INSERT INTO basalt.rate_limits (key, window_start, count)
       SELECT $1, clock_timestamp(), 1
        WHERE NOT EXISTS (
          SELECT 1 FROM basalt.rate_limits
           WHERE key = $1 AND window_start > clock_timestamp() - make_interval(secs => $2))
       RETURNING 1`,
      [key, seconds],
    );
    return rows.length > 0;
  }

  /** Deletes counters of windows long past. */
  async sweep(): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db.drizzle.delete(rateLimits).where(lt(rateLimits.windowStart, sql`now() - interval '1 day'`)),
    );
  }
}
