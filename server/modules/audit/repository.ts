import { ADVISORY_LOCKS } from '../../internal/advisory-locks.js';
import type { Database, Queryable } from '../../internal/db.js';
import { ISO_TIMESTAMP, runQuery } from '../../internal/repository.js';
import type { AuditEvent, AuditRecord } from './events.js';

/** How the list is narrowed; `typePrefix` matches every type starting with it. */
export interface AuditFilter {
  userId?: string;
  type?: { exact: string } | { prefix: string };
  /** Only events with a smaller id (the cursor of the previous page). */
  before?: string;
  limit: number;
}

const INSERT = {
  name: 'basalt_audit_insert',
  text: `INSERT INTO basalt.audit_log (type, user_id, actor, ip, user_agent, details)
         VALUES ($1, $2, $3, $4, $5, $6)`,
};

/** LIKE's own characters in a prefix are literal. */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** All SQL of the audit log. */
export class AuditRepository {
  constructor(private readonly db: Database) {}

  get pool(): Queryable {
    return this.db.pool;
  }

  /** One row, on `q`: a transaction's client (the event commits with its change) or the pool. */
  async insert(q: Queryable, event: AuditEvent): Promise<void> {
    await runQuery(q, INSERT, [
      event.type,
      event.userId ?? null,
      JSON.stringify(event.actor),
      event.ip ?? null,
      event.userAgent ?? null,
      JSON.stringify(event.details ?? {}),
    ]);
  }

  async list(filter: AuditFilter): Promise<AuditRecord[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    if (filter.userId !== undefined) {
      values.push(filter.userId);
      where.push(`user_id = $${values.length}`);
    }
    if (filter.type !== undefined) {
      if ('exact' in filter.type) {
        values.push(filter.type.exact);
        where.push(`type = $${values.length}`);
      } else {
        values.push(likePrefix(filter.type.prefix));
        where.push(`type LIKE $${values.length}`);
      }
    }
    if (filter.before !== undefined) {
      values.push(filter.before);
      where.push(`id < $${values.length}::bigint`);
    }
    values.push(filter.limit);
    return runQuery<AuditRecord>(
      this.db.pool,
      `SELECT id::text AS id, type, to_char(at AT TIME ZONE 'UTC', ${ISO_TIMESTAMP}) AS at, user_id, actor, ip,
              user_agent, details
         FROM basalt.audit_log
        ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
        -- The table's bigint id, not the text column of the same name in the select list.
        ORDER BY audit_log.id DESC
        LIMIT $${values.length}`,
      values,
    );
  }

  /**
   * Deletes events older than `days`, in batches, if no other instance is pruning (a
   * transaction-level advisory lock per batch: whoever holds it prunes, the others skip).
   * Returns how many rows went, or null when another instance held the lock.
   */
  async prune(days: number, batch = 10_000): Promise<number | null> {
    let deleted = 0;
    for (;;) {
      const outcome = await this.db.transaction(async (tx) => {
        const [lock] = await runQuery<{ locked: boolean }>(tx, 'SELECT pg_try_advisory_xact_lock($1) AS locked', [
          ADVISORY_LOCKS.auditPrune,
        ]);
        if (!lock?.locked) return null;
        const rows = await runQuery<{ n: string }>(
          tx,
          `WITH gone AS (
             DELETE FROM basalt.audit_log
              WHERE id IN (SELECT id FROM basalt.audit_log
                            WHERE at < now() - make_interval(days => $1) ORDER BY at LIMIT $2)
              RETURNING 1)
           SELECT count(*)::text AS n FROM gone`,
          [days, batch],
        );
        return Number(rows[0]?.n ?? 0);
      });
      if (outcome === null) return deleted === 0 ? null : deleted;
      deleted += outcome;
      if (outcome < batch) return deleted;
    }
  }
}
