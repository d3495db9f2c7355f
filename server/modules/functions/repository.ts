import { fromPostgresError } from '../../internal/errors.js';
import type { Database } from '../../internal/db.js';
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

export class InvocationRepository {
  constructor(private readonly db: Database) {}

  async start(input: {
    functionName: string;
    trigger: string;
    eventId: string | null;
    attempt: number;
    jobId?: string;
  }): Promise<string> {
    try {
      const { rows } = await this.db.query<{ id: string }>(
        `INSERT INTO basalt.function_invocations (function_name, trigger, event_id, status, attempt, job_id, started_at)
         VALUES ($1, $2, $3, 'running', $4, $5, now()) RETURNING id`,
        [input.functionName, input.trigger, input.eventId, input.attempt, input.jobId ?? null],
      );
      return (rows[0] as { id: string }).id;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async finish(
    id: string,
    result: { status: InvocationStatus; durationMs: number; error: string | null; logs: LogLine[]; cold: boolean },
  ): Promise<void> {
    try {
      await this.db.query(
        `UPDATE basalt.function_invocations
            SET status = $2, duration_ms = $3, error = $4, logs = $5::jsonb, cold_start = $6, finished_at = now()
          WHERE id = $1`,
        [id, result.status, result.durationMs, result.error, JSON.stringify(result.logs), result.cold],
      );
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async markDead(id: string): Promise<void> {
    try {
      await this.db.query(`UPDATE basalt.function_invocations SET status = 'dead' WHERE id = $1`, [id]);
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
