import { fromPostgresError } from '../../internal/errors.js';
import type { Database, Queryable } from '../../internal/db.js';
import type { LogLine } from './protocol.js';

export type InvocationStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'dead';

export interface InvocationRecord {
  id: string;
  job_id: string | null;
  function: string;
  trigger: string;
  event_id: string | null;
  status: InvocationStatus;
  attempt: number;
  cold_start: boolean;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  error: string | null;
  logs: LogLine[];
  created_at: string;
}

interface InvocationRow {
  id: string;
  job_id: string | null;
  function_name: string;
  trigger: string;
  event_id: string | null;
  status: InvocationStatus;
  attempt: number;
  cold_start: boolean;
  started_at: Date | null;
  finished_at: Date | null;
  duration_ms: number | null;
  error: string | null;
  logs: LogLine[];
  created_at: Date;
}

function toRecord(row: InvocationRow): InvocationRecord {
  return {
    id: row.id,
    job_id: row.job_id,
    function: row.function_name,
    trigger: row.trigger,
    event_id: row.event_id,
    status: row.status,
    attempt: row.attempt,
    cold_start: row.cold_start,
    started_at: row.started_at?.toISOString() ?? null,
    finished_at: row.finished_at?.toISOString() ?? null,
    duration_ms: row.duration_ms,
    error: row.error,
    logs: row.logs,
    created_at: row.created_at.toISOString(),
  };
}

const COLUMNS = `id, job_id, function_name, trigger, event_id, status, attempt, cold_start, started_at, finished_at,
  duration_ms, error, logs, created_at`;

/** A finished run, as recorded. */
export interface InvocationRun {
  id: string;
  functionName: string;
  trigger: string;
  eventId: string | null;
  attempt: number;
  jobId?: string;
  status: InvocationStatus;
  startedAt: Date;
  durationMs: number;
  error: string | null;
  logs: LogLine[];
  cold: boolean;
}

export class InvocationRepository {
  constructor(private readonly db: Database) {}

  /**
   * Records finished runs, many in one statement: a run costs a share of one write. A run
   * cut short by a crash leaves no row; its re-delivery records the next attempt. Given a
   * transaction, the rows commit with whatever else it does (the jobs' completion).
   */
  async record(runs: InvocationRun[], q?: Queryable): Promise<void> {
    if (runs.length === 0) return;
    try {
      await (q ?? this.db.pool).query(
        `INSERT INTO basalt.function_invocations
           (id, function_name, trigger, event_id, status, attempt, job_id, started_at, finished_at, duration_ms, error,
            logs, cold_start)
         SELECT r.id, r.function_name, r.trigger, r.event_id, r.status, r.attempt, r.job_id, r.started_at,
                r.started_at + r.duration_ms * interval '1 millisecond', r.duration_ms, r.error, r.logs, r.cold_start
           FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, function_name text, trigger text, event_id text, status text,
                attempt int, job_id uuid, started_at timestamptz, duration_ms int, error text, logs jsonb, cold_start boolean)`,
        [
          JSON.stringify(
            runs.map((run) => ({
              id: run.id,
              function_name: run.functionName,
              trigger: run.trigger,
              event_id: run.eventId,
              status: run.status,
              attempt: run.attempt,
              job_id: run.jobId ?? null,
              started_at: run.startedAt.toISOString(),
              duration_ms: run.durationMs,
              error: run.error,
              logs: run.logs,
              cold_start: run.cold,
            })),
          ),
        ],
      );
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  /** A dead invocation's job, marking it as handed back for retry; null when it is not dead. */
  async takeDeadForRetry(id: string): Promise<{ functionName: string; jobId: string } | null> {
    try {
      const { rows } = await this.db.query<{ function_name: string; job_id: string }>(
        `UPDATE basalt.function_invocations SET status = 'queued'
          WHERE id = $1 AND status = 'dead' AND job_id IS NOT NULL
          RETURNING function_name, job_id`,
        [id],
      );
      const row = rows[0];
      return row ? { functionName: row.function_name, jobId: row.job_id } : null;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async list(
    functionName: string,
    options: { status?: InvocationStatus; limit: number; before?: string },
  ): Promise<InvocationRecord[]> {
    const params: unknown[] = [functionName, options.limit];
    let filter = '';
    if (options.status) {
      params.push(options.status);
      filter += ` AND status = $${params.length}`;
    }
    if (options.before) {
      params.push(options.before);
      filter += ` AND created_at < $${params.length}::timestamptz`;
    }
    try {
      const { rows } = await this.db.query<InvocationRow>(
        `SELECT ${COLUMNS} FROM basalt.function_invocations
          WHERE function_name = $1${filter}
          ORDER BY created_at DESC, id DESC LIMIT $2`,
        params,
      );
      return rows.map(toRecord);
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async get(id: string): Promise<InvocationRecord | null> {
    try {
      const { rows } = await this.db.query<InvocationRow>(
        `SELECT ${COLUMNS} FROM basalt.function_invocations WHERE id = $1`,
        [id],
      );
      return rows[0] ? toRecord(rows[0]) : null;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }
}
