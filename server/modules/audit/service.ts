import type { Caller } from '../../internal/caller.js';
import type { Queryable } from '../../internal/db.js';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import type { Logger } from '../../internal/log.js';
import type { AuditEvent, AuditRecord } from './events.js';
import type { AuditFilter, AuditRepository } from './repository.js';

export interface AuditQuery {
  user_id?: string;
  /** An exact type, or a prefix ending in `.` or `*` (`auth.`, `admin.users.*`). */
  type?: string;
  before?: string;
  limit?: number;
}

export const AUDIT_PAGE_DEFAULT = 50;
export const AUDIT_PAGE_MAX = 500;
/** Longest text kept of a user agent. */
const USER_AGENT_MAX = 512;

/**
 * The audit log (docs/auth.md#audit-log). Every module records through `record`:
 *
 * - with `{tx}`: the event is written in that transaction, so it commits and rolls back with
 *   the change it records; a failure to write it fails the change;
 * - without: the event is written on its own at once (a failed sign-in, which changes
 *   nothing). Such a write never fails its caller: an error is logged and counted.
 */
export class AuditLog {
  constructor(
    private readonly repo: AuditRepository,
    private readonly options: { log: Logger; retentionDays: number; onWriteFailed?: () => void },
  ) {}

  async record(event: AuditEvent, options: { tx?: Queryable } = {}): Promise<void> {
    const clean = { ...event, ip: event.ip || null, userAgent: event.userAgent?.slice(0, USER_AGENT_MAX) ?? null };
    if (options.tx) {
      await this.repo.insert(options.tx, clean);
      return;
    }
    try {
      await this.repo.insert(this.repo.pool, clean);
    } catch (error) {
      this.options.onWriteFailed?.();
      this.options.log.error({ err: error, audit: { type: event.type } }, 'could not write an audit event');
    }
  }

  /** `GET /v1/admin/audit`: newest first, `before` the id of the last event of the previous page. */
  async list(caller: Caller, query: AuditQuery): Promise<{ events: AuditRecord[]; next_before: string | null }> {
    requireService(caller);
    const limit = query.limit ?? AUDIT_PAGE_DEFAULT;
    if (!Number.isInteger(limit) || limit < 1 || limit > AUDIT_PAGE_MAX) {
      throw new AppError('INVALID_REQUEST', `"limit" must be 1–${AUDIT_PAGE_MAX}.`, { details: { field: 'limit' } });
    }
    const filter: AuditFilter = { limit };
    if (query.user_id !== undefined) filter.userId = query.user_id;
    if (query.before !== undefined) filter.before = query.before;
    if (query.type !== undefined && query.type !== '') {
      const type = query.type;
      if (type.endsWith('*')) filter.type = { prefix: type.slice(0, -1) };
      else if (type.endsWith('.')) filter.type = { prefix: type };
      else filter.type = { exact: type };
    }
    const events = await this.repo.list(filter);
    return { events, next_before: events.length === limit ? (events.at(-1)?.id ?? null) : null };
  }

  /** Deletes events past the retention; null when another instance is pruning now. */
  prune(): Promise<number | null> {
    return this.repo.prune(this.options.retentionDays);
  }
}
