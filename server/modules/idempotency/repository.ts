import type { Queryable } from '../../internal/db.js';
import { runQuery } from '../../internal/repository.js';

/** A stored key: pending while its first request runs, then done with that request's answer. */
export interface IdempotencyRow {
  requestHash: Buffer;
  state: 'pending' | 'done';
  status: number | null;
  headers: Record<string, string> | null;
  body: Buffer | null;
  /** Seconds since the row was inserted (by the database's clock, the same on every instance). */
  ageSeconds: number;
}

/** SQL of basalt.idempotency_keys (migration 0018). Per-request statements, so hand-written. */
export class IdempotencyRepository {
  constructor(private readonly q: Queryable) {}

  /**
   * Claims the key for a new request: inserts it pending, or takes over a row older than
   * `staleAfterSeconds` (expired, or a pending one whose process died). True when claimed.
   */
  async claim(
    scope: string,
    key: string,
    requestHash: Buffer,
    expireAfterSeconds: number,
    pendingTakeoverSeconds: number,
  ): Promise<boolean> {
    const rows = await runQuery(
      this.q,
      {
        name: 'idempotency_claim',
        text: `INSERT INTO basalt.idempotency_keys AS k (scope, key, request_hash) VALUES ($1, $2, $3)
               ON CONFLICT (scope, key) DO UPDATE
                 SET request_hash = EXCLUDED.request_hash, state = 'pending', status = NULL, headers = NULL,
                     body = NULL, created_at = now()
               WHERE k.created_at < now() - make_interval(secs => $4)
                  OR (k.state = 'pending' AND k.created_at < now() - make_interval(secs => $5))
               RETURNING 1`,
      },
      [scope, key, requestHash, expireAfterSeconds, pendingTakeoverSeconds],
    );
    return rows.length > 0;
  }

  async find(scope: string, key: string): Promise<IdempotencyRow | null> {
    const rows = await runQuery<{
      request_hash: Buffer;
      state: 'pending' | 'done';
      status: number | null;
      headers: Record<string, string> | null;
      body: Buffer | null;
      age: number;
    }>(
      this.q,
      {
        name: 'idempotency_find',
        text: `SELECT request_hash, state, status, headers, body,
                      extract(epoch FROM now() - created_at)::float8 AS age
                 FROM basalt.idempotency_keys WHERE scope = $1 AND key = $2`,
      },
      [scope, key],
    );
    const row = rows[0];
    if (!row) return null;
    return {
      requestHash: row.request_hash,
      state: row.state,
      status: row.status,
      headers: row.headers,
      body: row.body,
      ageSeconds: row.age,
    };
  }

  /** Stores the first request's answer; only the pending row of that request (same hash) is completed. */
  async complete(
    scope: string,
    key: string,
    requestHash: Buffer,
    answer: { status: number; headers: Record<string, string>; body: Buffer },
  ): Promise<void> {
    await runQuery(
      this.q,
      {
        name: 'idempotency_complete',
        text: `UPDATE basalt.idempotency_keys SET state = 'done', status = $4, headers = $5::jsonb, body = $6
                WHERE scope = $1 AND key = $2 AND request_hash = $3 AND state = 'pending'`,
      },
      [scope, key, requestHash, answer.status, JSON.stringify(answer.headers), answer.body],
    );
  }

  /** Releases a pending key whose request ended without an answer worth keeping. */
  async release(scope: string, key: string, requestHash: Buffer): Promise<void> {
    await runQuery(
      this.q,
      {
        name: 'idempotency_release',
        text: `DELETE FROM basalt.idempotency_keys
                WHERE scope = $1 AND key = $2 AND request_hash = $3 AND state = 'pending'`,
      },
      [scope, key, requestHash],
    );
  }

  /** Deletes keys older than the retention, a bounded batch at a time; returns how many. */
  async prune(expireAfterSeconds: number, batch = 5000): Promise<number> {
    const rows = await runQuery(
      this.q,
      `DELETE FROM basalt.idempotency_keys WHERE ctid IN (
         SELECT ctid FROM basalt.idempotency_keys
          WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)
       RETURNING 1`,
      [expireAfterSeconds, batch],
    );
    return rows.length;
  }
}
