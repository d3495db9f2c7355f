import { eq, lt, sql } from 'drizzle-orm';
import type pg from 'pg';
import { sessionRevocations } from '../../../db/schema.js';
import type { Database, Queryable } from '../../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../../internal/repository.js';

export const REVOCATION_CHANNEL = 'basalt_revocations';

/** basalt.session_revocations: the sessions every instance's revocation cache must know of. */
export class RevocationRepository {
  constructor(private readonly db: Database) {}

  /** Records revoked sessions inside `q`'s transaction and hints every instance at commit. */
  async record(q: Queryable, sessionIds: string[]): Promise<void> {
    if (sessionIds.length === 0) return;
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(sessionRevocations)
        .values(sessionIds.map((sessionId) => ({ sessionId })))
        .onConflictDoNothing(),
    );
    // A wake-up hint for every instance's cache, delivered at commit; the poll is the carrier.
    await runQuery(q, `SELECT pg_notify('${REVOCATION_CHANNEL}', '')`);
  }

  /** Sessions revoked since `since` (by the database clock), and the database's now. */
  async since(since: Date | null, horizonSeconds: number): Promise<{ ids: string[]; now: Date }> {
    const rows = await runQuery<{ session_id: string | null; now: Date }>(
      this.db.pool,
      `SELECT r.session_id, n.now FROM (SELECT clock_timestamp() AS now) n
         LEFT JOIN basalt.session_revocations r
           ON r.revoked_at > coalesce($1::timestamptz, n.now - make_interval(secs => $2))`,
      [since, horizonSeconds],
    );
    return {
      ids: rows.flatMap((row) => (row.session_id ? [row.session_id] : [])),
      now: rows[0]?.now ?? new Date(),
    };
  }

  async isRevoked(sessionId: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select({ sessionId: sessionRevocations.sessionId })
        .from(sessionRevocations)
        .where(eq(sessionRevocations.sessionId, sessionId)),
    );
    return rows.length > 0;
  }

  /** Subscribes a listener's own session (not a pooled one) to revocation hints. */
  async listen(client: pg.Client): Promise<void> {
    await client.query(`LISTEN ${REVOCATION_CHANNEL}`);
  }

  /** Forgets revocations older than any access token that could still name their session. */
  async sweep(horizonSeconds: number): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db.drizzle
        .delete(sessionRevocations)
        .where(lt(sessionRevocations.revokedAt, sql`now() - make_interval(secs => ${horizonSeconds})`)),
    );
  }
}
