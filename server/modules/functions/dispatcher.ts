import type pg from 'pg';
import PgBoss from 'pg-boss';
import type { Counter, Gauge } from 'prom-client';
import { parseCursor, type ChangeBatch, type ChangeFeed } from '../../internal/changes/feed.js';
import type { Tx } from '../../internal/db.js';
import type { Database } from '../../internal/db.js';
import { IdleBackoff } from '../../internal/idle-backoff.js';
import type { Logger } from '../../internal/log.js';
import { isConnectionError } from '../../internal/errors.js';
import type { Metrics } from '../../internal/metrics.js';
import { ReconnectingClient } from '../../internal/reconnecting-client.js';
import { eventFor, jobIdFor, type FunctionEvent } from './events.js';
import type { LoadedFunction } from './loader.js';
import { InvocationRepository, queueStatementsIn, tryTakeDispatchLead, type InvocationRun } from './repository.js';
import { QueueRunner, type FinishedJob } from './runner.js';
import { numberOption, type FunctionsService } from './service.js';

/** The change feed's durable cursor of the dispatcher. */
const CONSUMER = 'functions';
/** How often an instance that does not lead asks for the lead again. */
const LEAD_RETRY_MS = 2_000;
const PGBOSS_SCHEMA = 'basalt_jobs';
/** Runs of one function at once in an instance, whatever its concurrency: the pool keeps this many warm workers at most. */
const MAX_RUNS_PER_QUEUE = 32;

/** A queue that stays empty is polled less and less often, down to once per this (runner.ts). */
const MAX_POLL_INTERVAL_MS = 15_000;
/** Queue depths are read every 5 s while any queue holds jobs, and down to once a minute while all stay empty. */
const DEPTH_EVERY_MS = 5_000;
const DEPTH_IDLE_MS = 60_000;

/** Changes read from the log per dispatch transaction (a page ends on a tick boundary, so it may hold more). */
const DISPATCH_BATCH = 500;
/** Delivered changes kept for the dispatcher; beyond this it has fallen behind and reads the log. */
const MAX_DELIVERED_CHANGES = 20_000;

/** A run's record, or null when the run could not even start. */
interface RunResult {
  run: InvocationRun | null;
}

export interface JobData {
  function: string;
  event: FunctionEvent;
}

export function queueName(fn: LoadedFunction): string {
  return `fn-${fn.name}`;
}

/** Created once per app: a reload builds a new dispatcher but keeps counting in the same metrics. */
export interface DispatcherMetrics {
  enqueued: Counter<'function'>;
  queueDepth: Gauge<'function'>;
}

export function dispatcherMetrics(metrics: Metrics): DispatcherMetrics {
  return {
    enqueued: metrics.counter('basalt_function_events_enqueued_total', 'Function jobs enqueued from the change log.', [
      'function',
    ]),
    queueDepth: metrics.gauge('basalt_function_queue_depth', 'Function jobs waiting or retrying, by function.', [
      'function',
    ]),
  };
}

export interface DispatcherOptions {
  databaseUrl: string;
  /**
   * The worker role: dispatch events, run jobs, send schedule ticks and maintain the queue.
   * Without it (an API-only instance) the queue is only written to, e.g. by a retry.
   */
  runWorkers: boolean;
  /** Seconds before the first retry; later retries back off exponentially. */
  retryDelaySeconds?: number;
}

/**
 * Turns committed changes into durable jobs and runs them.
 *
 * One leader (a session advisory lock) reads the change log from its durable cursor and,
 * in one transaction, enqueues one pg-boss job per (change, function) — with a job id
 * derived from both, so a re-dispatch after a crash inserts nothing twice — and moves the
 * cursor. Workers on every instance take jobs (pg-boss hands each to exactly one), retry
 * failures with exponential backoff and mark the last failure dead. Schedules use
 * pg-boss's cron, which sends each tick once across instances.
 */
export class FunctionDispatcher {
  private boss: PgBoss | null = null;
  /** The session whose advisory lock is the dispatch lead. */
  private lock: ReconnectingClient | null = null;
  private leading = false;
  private stopped = false;
  private pumping: Promise<void> | null = null;
  private pumpAgain = false;
  private unsubscribe: (() => void) | null = null;
  private leaderTimer: NodeJS.Timeout | null = null;
  private depthTimer: IdleBackoff | null = null;
  private readonly runners = new Map<string, QueueRunner<JobData, RunResult>>();
  private delivered: ChangeBatch[] = [];
  private deliveredChanges = 0;
  private readonly invocations: InvocationRepository;
  constructor(
    private readonly functions: FunctionsService,
    private readonly feed: ChangeFeed,
    private readonly db: Database,
    private readonly log: Logger,
    private readonly metrics: DispatcherMetrics,
    private readonly options: DispatcherOptions,
  ) {
    this.invocations = new InvocationRepository(db);
  }

  private eventFunctions(): LoadedFunction[] {
    return [...this.functions.byKind('document'), ...this.functions.byKind('object'), ...this.functions.byKind('auth')];
  }

  private jobFunctions(): LoadedFunction[] {
    return [...this.eventFunctions(), ...this.functions.byKind('schedule')];
  }

  async start(): Promise<void> {
    if (this.jobFunctions().length === 0) return;
    const boss = new PgBoss({
      connectionString: this.options.databaseUrl,
      schema: PGBOSS_SCHEMA,
      max: 4,
      application_name: 'basalt-jobs',
      supervise: this.options.runWorkers,
      schedule: this.options.runWorkers,
      migrate: true,
      // Expired jobs (their worker died mid-run) are failed, hence retried, within seconds.
      maintenanceIntervalSeconds: 5,
    });
    let quietUntil = 0;
    boss.on('error', (error) => {
      if (!isConnectionError(error)) {
        this.log.error({ err: error }, 'job queue error');
        return;
      }
      // Postgres unreachable: pg-boss's pool reconnects by itself. Its timers would log
      // several lines a second for the whole outage; one every half minute tells as much.
      if (Date.now() < quietUntil) return;
      quietUntil = Date.now() + 30_000;
      this.log.warn({ reason: error.message }, 'job queue cannot reach Postgres; retrying');
    });
    await boss.start();
    this.boss = boss;
    for (const fn of this.jobFunctions()) {
      const queue = queueName(fn);
      await boss.createQueue(queue, {
        name: queue,
        retryLimit: numberOption(fn.options, 'retries'),
        retryDelay: this.options.retryDelaySeconds ?? 1,
        retryBackoff: true,
        // A job still active past its function's timeout lost its worker (a crash, kill -9):
        // it expires and is delivered again.
        expireInSeconds: Math.ceil(numberOption(fn.options, 'timeout_ms') / 1000) + 10,
      });
      if (this.options.runWorkers && fn.kind === 'schedule' && typeof fn.options.cron === 'string') {
        await boss.schedule(queue, fn.options.cron, {}, { tz: 'UTC' });
      }
      if (this.options.runWorkers) await this.startWorkers(boss, fn);
    }
    this.depthTimer = new IdleBackoff({
      minMs: DEPTH_EVERY_MS,
      maxMs: DEPTH_IDLE_MS,
      run: () => this.refreshQueueDepth(),
      onError: (error) => this.log.debug({ err: error }, 'queue depth unavailable'),
    });
    this.depthTimer.start();
    const scheduled = new Set(this.functions.byKind('schedule').map(queueName));
    for (const schedule of this.options.runWorkers ? await boss.getSchedules() : []) {
      if (schedule.name.startsWith('fn-') && !scheduled.has(schedule.name)) await boss.unschedule(schedule.name);
    }
    if (this.options.runWorkers && this.eventFunctions().length > 0) {
      this.unsubscribe = this.feed.subscribe((batch) => {
        this.remember(batch);
        this.pump();
      });
      this.lock = new ReconnectingClient({
        url: this.options.databaseUrl,
        applicationName: 'basalt-dispatch',
        log: this.log,
        onConnect: (client) => this.tryLead(client),
        onLost: () => this.lostLead(),
      });
      await this.lock.start();
    }
  }

  private async startWorkers(boss: PgBoss, fn: LoadedFunction): Promise<void> {
    const queue = queueName(fn);
    const runner = new QueueRunner<JobData, RunResult>({
      boss,
      queue,
      // Up to `concurrency` runs at once, within the warm workers the pool keeps for a
      // function; the service's per-function semaphore still bounds runs across HTTP and
      // event invocations.
      limit: Math.min(numberOption(fn.options, 'concurrency'), MAX_RUNS_PER_QUEUE),
      pollIntervalMs: 2_000,
      maxPollIntervalMs: MAX_POLL_INTERVAL_MS,
      // Holding jobs ahead could let one expire unrun, which spends an attempt: only for
      // functions that have one to spare.
      holdAhead: numberOption(fn.options, 'retries') > 0,
      log: this.log,
      run: (job) => this.runJob(fn, job),
      settle: (finished) => this.settle(queue, finished),
    });
    runner.start();
    this.runners.set(queue, runner);
  }

  /** Runs one job; a run that could not even start comes back with no record (it is failed and retried). */
  private async runJob(fn: LoadedFunction, job: PgBoss.JobWithMetadata<JobData>): Promise<RunResult> {
    try {
      const current = this.functions.find(fn.name) ?? fn;
      const input = fn.kind === 'schedule' ? scheduleEvent(job) : job.data.event;
      const { run } = await this.functions.execute(current, input, {
        trigger: input.type,
        eventId: input.id,
        attempt: job.retryCount + 1,
        jobId: job.id,
        lastAttempt: job.retryCount >= job.retryLimit,
      });
      return { run };
    } catch (error) {
      this.log.error({ err: error, job: job.id }, 'running a function job failed');
      return { run: null };
    }
  }

  /**
   * Records the finished runs and completes their jobs in one transaction (one statement
   * each for every run that finished meanwhile), so a run is recorded exactly when its job
   * leaves the active state; failures go back to the queue for retry or the dead letter.
   */
  private async settle(queue: string, finished: Array<FinishedJob<JobData, RunResult>>): Promise<void> {
    const boss = this.boss;
    if (!boss) return;
    const succeeded: string[] = [];
    const failed: Array<{ id: string; message: string }> = [];
    for (const { job, result } of finished) {
      if (result.run?.status === 'succeeded') succeeded.push(job.id);
      else failed.push({ id: job.id, message: result.run?.error ?? 'the run could not start' });
    }
    await this.db.transaction(async (tx: Tx) => {
      const db = queueStatementsIn(tx);
      await this.invocations.record(
        finished.flatMap(({ result }) => (result.run ? [result.run] : [])),
        tx,
      );
      if (succeeded.length > 0) await boss.complete(queue, succeeded, { db });
      for (const failure of failed) await boss.fail(queue, failure.id, { message: failure.message }, { db });
    });
  }

  /**
   * Takes the dispatch lead (a session lock on the lock connection) when nobody holds it,
   * asking again every few seconds while another instance does. The lead goes with the
   * connection: the reconnecting client reports the loss, and asks again once back.
   */
  private async tryLead(client: pg.Client): Promise<void> {
    if (this.stopped || this.lock?.current !== client || this.leading) return;
    const leading = await tryTakeDispatchLead(client);
    if (this.stopped || this.lock?.current !== client) return;
    this.leading = leading;
    if (this.leading) {
      this.log.info('this instance dispatches function events');
      this.pump();
      return;
    }
    this.leaderTimer = setTimeout(() => {
      this.leaderTimer = null;
      this.tryLead(client).catch((error: unknown) => this.lock?.reset(error));
    }, LEAD_RETRY_MS);
    this.leaderTimer.unref();
  }

  private lostLead(): void {
    if (this.leaderTimer) clearTimeout(this.leaderTimer);
    this.leaderTimer = null;
    if (this.leading) this.log.warn('function dispatcher lost its lead with its connection');
    this.leading = false;
  }

  /** Dispatches until the cursor reaches the feed's position; coalesces concurrent wake-ups. */
  private pump(): void {
    if (!this.leading || this.stopped) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = (async () => {
      do {
        this.pumpAgain = false;
        try {
          while (await this.dispatchOnce()) {
            if (this.stopped || !this.leading) break;
          }
        } catch (error) {
          this.log.error({ err: error }, 'dispatching function events failed; retrying');
          await new Promise((resolve) => setTimeout(resolve, 1_000));
          this.pumpAgain = true;
        }
      } while (this.pumpAgain && !this.stopped && this.leading);
    })().finally(() => {
      this.pumping = null;
    });
  }

  /** One batch: returns true when there may be more to read. */
  private async dispatchOnce(): Promise<boolean> {
    const boss = this.boss;
    if (!boss) return false;
    let cursor = await this.feed.consumerCursor(CONSUMER);
    if (cursor === null) {
      // First start: functions react to what commits from now on.
      cursor = this.feed.currentCursor();
      await this.feed.saveConsumerCursor(CONSUMER, cursor);
    }
    const batch = this.takeDelivered(cursor) ?? (await this.feed.readSince(cursor, { limit: DISPATCH_BATCH }));
    if (batch.cursor === cursor) return false;
    const functions = this.eventFunctions();
    const jobs: Array<{ fn: LoadedFunction; id: string; data: JobData }> = [];
    for (const change of batch.changes) {
      for (const fn of functions) {
        const event = eventFor(fn, change);
        if (event) jobs.push({ fn, id: jobIdFor(change.id, fn.name), data: { function: fn.name, event } });
      }
    }
    await this.db.transaction(async (tx: Tx) => {
      const wrapper = queueStatementsIn(tx);
      // One statement per batch; a job id already present (a re-dispatch) is skipped.
      if (jobs.length > 0) {
        await boss.insert(
          jobs.map((job) => ({ id: job.id, name: queueName(job.fn), data: job.data })),
          { db: wrapper },
        );
      }
      await this.feed.saveConsumerCursor(CONSUMER, batch.cursor, tx);
    });
    for (const job of jobs) {
      this.metrics.enqueued.inc({ function: job.fn.name });
      this.runners.get(queueName(job.fn))?.notify();
    }
    if (jobs.length > 0) this.depthTimer?.wake();
    // More to read only if the feed has moved past what was dispatched; a later delivery pumps again.
    return this.delivered.length > 0 || batch.cursor !== this.feed.currentCursor();
  }

  /** Keeps a batch the feed delivered, for the leader to dispatch without reading the log again. */
  private remember(batch: ChangeBatch): void {
    if (!this.leading) return;
    if (this.deliveredChanges + batch.changes.length > MAX_DELIVERED_CHANGES) {
      // Far behind: the log is read page by page instead.
      this.delivered = [];
      this.deliveredChanges = 0;
      return;
    }
    this.delivered.push(batch);
    this.deliveredChanges += batch.changes.length;
  }

  /**
   * The delivered batches that continue from `cursor` (up to about DISPATCH_BATCH changes),
   * as one batch; null when none does (a new leader, a gap, or batches dropped while far
   * behind), and the log is read instead. These are the very rows readSince would return:
   * the feed reads every change of its new ticks, in commit order.
   */
  private takeDelivered(cursor: string): ChangeBatch | null {
    const at = parseCursor(cursor);
    while (this.delivered[0] && parseCursor(this.delivered[0].cursor) <= at) this.forgetFirst();
    const first = this.delivered[0];
    if (!first || first.fromCursor !== cursor) return null;
    let changes = first.changes;
    let end = first.cursor;
    this.forgetFirst();
    for (let next = this.delivered[0]; next; next = this.delivered[0]) {
      if (next.fromCursor !== end || changes.length + next.changes.length > DISPATCH_BATCH) break;
      changes = changes.concat(next.changes);
      end = next.cursor;
      this.forgetFirst();
    }
    return { fromCursor: cursor, cursor: end, changes };
  }

  private forgetFirst(): void {
    const batch = this.delivered.shift();
    if (batch) this.deliveredChanges -= batch.changes.length;
  }

  /** Retries a dead-lettered job: pg-boss moves it back to the queue with its event id unchanged. */
  async retry(functionName: string, jobId: string): Promise<boolean> {
    const fn = this.functions.find(functionName);
    if (!this.boss || !fn) return false;
    await this.boss.retry(queueName(fn), jobId);
    this.runners.get(queueName(fn))?.notify();
    return true;
  }

  /** Reads every queue's depth into the gauge; true when any queue holds jobs. */
  async refreshQueueDepth(): Promise<boolean> {
    if (!this.boss) return false;
    let waiting = false;
    for (const fn of this.jobFunctions()) {
      const depth = await this.boss.getQueueSize(queueName(fn));
      this.metrics.queueDepth.set({ function: fn.name }, depth);
      if (depth > 0) waiting = true;
    }
    return waiting;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.leaderTimer) clearTimeout(this.leaderTimer);
    this.depthTimer?.stop();
    await this.pumping?.catch(() => undefined);
    // Running jobs finish and are settled before the queue stops; any still running after
    // that expire and are delivered again.
    await Promise.all([...this.runners.values()].map((runner) => runner.stop(5_000)));
    this.runners.clear();
    await this.lock?.stop();
    this.lock = null;
    this.leading = false;
    await this.boss?.stop({ graceful: true, wait: true, timeout: 5_000 }).catch(() => undefined);
    this.boss = null;
  }
}

function scheduleEvent(job: PgBoss.JobWithMetadata<JobData>): FunctionEvent {
  return { id: `job_${job.id}`, type: 'schedule', at: job.createdOn.toISOString() };
}
