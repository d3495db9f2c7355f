import { and, asc, desc, eq, isNotNull, lt, sql, type SQL } from 'drizzle-orm';
import type pg from 'pg';
import type PgBoss from 'pg-boss';
import { functionInvocations } from '../../db/schema.js';
import { ADVISORY_LOCKS } from '../../internal/advisory-locks.js';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../internal/repository.js';
import type { LogLine } from './protocol.js';

/** The runs a trace answers with at most: a trace larger than this is cut (docs/tracing.md). */
export const MAX_TRACE_INVOCATIONS = 1000;

export type InvocationStatus = (typeof functionInvocations.$inferSelect)['status'];

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
  /** The function version that ran; null when none ran (an event dead-lettered by an undeploy). */
  version: number | null;
  /** Its trace (docs/tracing.md); null on runs recorded before traces existed. */
  trace_id: string | null;
  /** The run whose write or publish started this one; null for the first run of a trace. */
  parent_invocation_id: string | null;
}

function toRecord(row: typeof functionInvocations.$inferSelect): InvocationRecord {
  return {
    id: row.id,
    job_id: row.jobId,
    function: row.functionName,
    trigger: row.trigger,
    event_id: row.eventId,
    status: row.status,
    attempt: row.attempt,
    cold_start: row.coldStart,
    started_at: row.startedAt?.toISOString() ?? null,
    finished_at: row.finishedAt?.toISOString() ?? null,
    duration_ms: row.durationMs,
    error: row.error,
    // Written only by record() below, from LogLine[].
    logs: row.logs as LogLine[],
    created_at: row.createdAt.toISOString(),
    version: row.version,
    trace_id: row.traceId,
    parent_invocation_id: row.parentInvocationId,
  };
}

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
  version?: number;
  /** Its trace (docs/tracing.md); absent only on records made before traces existed. */
  traceId?: string;
  /** The run whose write or publish started this one; null for a trace's first run. */
  parentInvocationId?: string | null;
  /** An outside caller's span this run continues (a W3C traceparent): for OTLP export, not stored. */
  parentSpanId?: string | null;
}

/**
 * Inserts the runs given as one jsonb parameter ($1): one short statement however many runs
 * it holds (the builder would bind thirteen parameters per run). Hand-written.
 */
const RECORD_RUNS = `INSERT INTO basalt.function_invocations
    (id, function_name, trigger, event_id, status, attempt, job_id, started_at, finished_at, duration_ms, error,
     logs, cold_start, version, trace_id, parent_invocation_id)
  SELECT r.id, r.function_name, r.trigger, r.event_id, r.status, r.attempt, r.job_id, r.started_at,
         r.started_at + r.duration_ms * interval '1 millisecond', r.duration_ms, r.error, r.logs, r.cold_start, r.version,
         r.trace_id, r.parent_invocation_id
    FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, function_name text, trigger text, event_id text, status text,
         attempt int, job_id uuid, started_at timestamptz, duration_ms int, error text, logs jsonb, cold_start boolean,
         version int, trace_id text, parent_invocation_id uuid)`;

function runsAsJson(runs: InvocationRun[]): string {
  return JSON.stringify(
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
      version: run.version ?? null,
      trace_id: run.traceId ?? null,
      parent_invocation_id: run.parentInvocationId ?? null,
    })),
  );
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
    await runQuery(q ?? this.db.pool, RECORD_RUNS, [runsAsJson(runs)]);
  }

  /**
   * Records finished runs and completes their (succeeded) jobs of `queue` in one statement,
   * so one round trip, atomic as a transaction of the two would be: a run is recorded exactly
   * when its job leaves the active state. As pg-boss's complete, a job no longer active (it
   * expired meanwhile and went back to the queue) is left as it is.
   */
  async recordAndComplete(runs: InvocationRun[], queue: string, jobIds: string[]): Promise<void> {
    await runQuery(
      this.db.pool,
      {
        name: 'basalt-functions-record-complete',
        text: `WITH recorded AS (${RECORD_RUNS} RETURNING 1), completed AS (
           UPDATE basalt_jobs.job SET completed_on = now(), state = 'completed', output = NULL
            WHERE name = $2 AND id = ANY($3::uuid[]) AND state = 'active'
           RETURNING 1
         )
         SELECT (SELECT count(*) FROM recorded) AS recorded, (SELECT count(*) FROM completed) AS completed`,
      },
      [runsAsJson(runs), queue, jobIds],
    );
  }

  /** A dead invocation's job, marking it as handed back for retry; null when it is not dead. */
  async takeDeadForRetry(id: string): Promise<{ functionName: string; jobId: string } | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .update(functionInvocations)
        .set({ status: 'queued' })
        .where(
          and(
            eq(functionInvocations.id, id),
            eq(functionInvocations.status, 'dead'),
            isNotNull(functionInvocations.jobId),
          ),
        )
        .returning({ functionName: functionInvocations.functionName, jobId: functionInvocations.jobId }),
    );
    const row = rows[0];
    return row?.jobId ? { functionName: row.functionName, jobId: row.jobId } : null;
  }

  async list(
    functionName: string,
    options: { status?: InvocationStatus; limit: number; before?: string },
  ): Promise<InvocationRecord[]> {
    const where: SQL[] = [eq(functionInvocations.functionName, functionName)];
    if (options.status) where.push(eq(functionInvocations.status, options.status));
    // The cursor keeps Postgres' microseconds, which a Date would round away.
    if (options.before) where.push(lt(functionInvocations.createdAt, sql`${options.before}::timestamptz`));
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select()
        .from(functionInvocations)
        .where(and(...where))
        .orderBy(desc(functionInvocations.createdAt), desc(functionInvocations.id))
        .limit(options.limit),
    );
    return rows.map(toRecord);
  }

  /** Every recorded run of a trace, in the order they started. */
  async byTrace(traceId: string): Promise<InvocationRecord[]> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select()
        .from(functionInvocations)
        .where(eq(functionInvocations.traceId, traceId))
        .orderBy(asc(functionInvocations.startedAt), asc(functionInvocations.createdAt), asc(functionInvocations.id))
        .limit(MAX_TRACE_INVOCATIONS),
    );
    return rows.map(toRecord);
  }

  async get(id: string): Promise<InvocationRecord | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle.select().from(functionInvocations).where(eq(functionInvocations.id, id)),
    );
    return rows[0] ? toRecord(rows[0]) : null;
  }
}

/** pg-boss's database over a transaction's client, so the queue's statements commit with ours. */
export function queueStatementsIn(tx: Tx): PgBoss.Db {
  return { executeSql: (text, values) => tx.query(text, values) };
}

/**
 * Takes the dispatch lead on the dispatcher's own connection: a session lock, so it must
 * stay on that one connection and goes with it. False while another instance holds it.
 */
export async function tryTakeDispatchLead(client: pg.Client): Promise<boolean> {
  const rows = await runQuery<{ locked: boolean }>(client, 'SELECT pg_try_advisory_lock($1) AS locked', [
    ADVISORY_LOCKS.functionsDispatch,
  ]);
  return rows[0]?.locked === true;
}

/** The pg_notify channel on which instances wake each other's queue runners (queue-wake.ts). */
export const QUEUE_WAKE_CHANNEL = 'basalt_queue_wake';

/** Tells every listening instance that jobs were added to some queues. */
export async function notifyQueueWake(db: Database, payload: string): Promise<void> {
  await runQuery(db.pool, 'SELECT pg_notify($1, $2)', [QUEUE_WAKE_CHANNEL, payload]);
}
