import { randomUUID } from 'node:crypto';
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
import { isTraceId, traceFromJobOrigin, traceOf, type TraceContext } from '../../internal/trace.js';
import { EventsRepository } from '../events/repository.js';
import type { EventQueues, TopicEvent } from '../events/service.js';
import { eventFor, jobIdFor, type FunctionEvent } from './events.js';
import type { LoadedFunction } from './loader.js';
import { pointerFromRow, type ActivePointer, type DeployRepository } from './deploy-repository.js';
import { InvocationRepository, queueStatementsIn, tryTakeDispatchLead, type InvocationRun } from './repository.js';
import { QueueWake } from './queue-wake.js';
import { QueueRunner, type FinishedJob, type QueuedJob } from './runner.js';
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

/** A run's record, or null when the run could not even start; `final` when no retry may follow. */
interface RunResult {
  run: InvocationRun | null;
  final?: boolean;
}

interface DispatchJob {
  name: string;
  options: Record<string, unknown>;
  id: string;
  data: JobData;
}

/** The pointer table of deploys (migrations/0020), in the change log. */
const DEPLOYS_TABLE = 'function_active';

/** The record of a job whose function was undeployed before it ran: dead, not run. */
function undeployedRun(
  name: string,
  job: QueuedJob<JobData>,
  input: Pick<FunctionEvent, 'id' | 'type'>,
): InvocationRun {
  return {
    id: randomUUID(),
    functionName: name,
    trigger: input.type,
    eventId: input.id,
    attempt: job.retryCount + 1,
    jobId: job.id,
    status: 'dead',
    startedAt: new Date(),
    durationMs: 0,
    error: 'the function was undeployed before this event ran',
    logs: [],
    cold: false,
    ...traceFields(jobTrace(job, input.type === 'schedule')),
  };
}

/**
 * The trace a job's runs join: its origin's, else (a schedule tick, a write made outside
 * any function) one of its own, named after the job, so that every attempt of one job is
 * in the same trace under the same parent.
 */
function jobTrace(job: QueuedJob<JobData>, isSchedule: boolean): TraceContext {
  const joined = isSchedule ? null : traceFromJobOrigin(job.data.origin);
  if (joined) return joined;
  const fromJob = job.id.replace(/-/g, '').toLowerCase();
  return isTraceId(fromJob) ? { traceId: fromJob, parentInvocationId: null } : traceOf(null);
}

function traceFields(trace: TraceContext): Pick<InvocationRun, 'traceId' | 'parentInvocationId'> {
  return { traceId: trace.traceId, parentInvocationId: trace.parentInvocationId };
}

export interface JobData {
  function: string;
  /** The version live when the event committed (in log order); a retry from the admin API re-pins it. */
  version?: number;
  /** A change's event, or a topic's (published: events/service.ts, which also adds `origin` and `seq`). */
  event: FunctionEvent | TopicEvent;
  /** The run whose write (or publish) queued this job, whose trace the job's runs join (docs/tracing.md). */
  origin?: { trace_id: string; parent_invocation_id: string | null };
}

export function queueName(fn: { name: string }): string {
  return `fn-${fn.name}`;
}

const EVENT_KINDS = new Set(['document', 'object', 'auth']);

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
 * cursor. Deploys are rows of the same log (basalt.function_active): the leader applies
 * them in commit order among the writes, so each event is pinned to the version that was
 * live when it committed, and an undeploy dead-letters exactly the events committed before
 * it that have not run. Workers on every instance take jobs (pg-boss hands each to exactly
 * one) and run the pinned version, retry failures with exponential backoff and mark the
 * last failure dead. Schedules use pg-boss's cron, which sends each tick once across
 * instances, and run the version live when the tick is taken.
 *
 * The queue starts with the first deployed function that needs it; sync() follows the
 * instance's live set from then on (queues, runners, schedules) without a restart.
 */
export class FunctionDispatcher implements EventQueues {
  private boss: PgBoss | null = null;
  private starting: Promise<PgBoss> | null = null;
  /** The session whose advisory lock is the dispatch lead. */
  private lock: ReconnectingClient | null = null;
  private leading = false;
  private stopped = false;
  private pumping: Promise<void> | null = null;
  private pumpAgain = false;
  private unsubscribe: (() => void) | null = null;
  private leaderTimer: NodeJS.Timeout | null = null;
  private depthTimer: IdleBackoff | null = null;
  /** One runner per live job function of this instance, with the version whose options shaped it. */
  private readonly runners = new Map<string, { runner: QueueRunner<JobData, RunResult>; shape: string }>();
  private readonly queues = new Map<string, string>();
  /** Queue set-ups under way (ensureQueue): one at a time per queue. */
  private readonly ensuring = new Map<string, Promise<void>>();
  private schedules = new Set<string>();
  /** The pointers as of the dispatch cursor (leader only); null until read. */
  private pointers: Map<string, ActivePointer> | null = null;
  private delivered: ChangeBatch[] = [];
  private deliveredChanges = 0;
  private syncing: Promise<void> = Promise.resolve();
  private readonly invocations: InvocationRepository;
  private readonly events: EventsRepository;
  /** Wakes the runners of the other instances for the jobs sent here, and ours for theirs. */
  private readonly wake: QueueWake;
  constructor(
    private readonly functions: FunctionsService,
    private readonly deploys: DeployRepository,
    private readonly feed: ChangeFeed,
    private readonly db: Database,
    private readonly log: Logger,
    private readonly metrics: DispatcherMetrics,
    private readonly options: DispatcherOptions,
  ) {
    this.invocations = new InvocationRepository(db);
    this.events = new EventsRepository(db);
    this.wake = new QueueWake({
      databaseUrl: options.databaseUrl,
      db,
      log,
      instanceId: randomUUID(),
      listen: options.runWorkers,
      wake: (queues) => this.wakeRunners(queues ?? [...this.runners.keys()]),
    });
  }

  private jobFunctions(): LoadedFunction[] {
    return [
      ...this.functions.byKind('document'),
      ...this.functions.byKind('object'),
      ...this.functions.byKind('auth'),
      ...this.functions.byKind('schedule'),
      ...this.functions.byKind('event'),
    ];
  }

  /** Follows this instance's live set: call after every change of it (serialised). */
  sync(): Promise<void> {
    const next = this.syncing.catch(() => undefined).then(() => this.syncNow());
    this.syncing = next;
    return next;
  }

  private async syncNow(): Promise<void> {
    if (this.stopped) return;
    const live = this.jobFunctions();
    if (live.length === 0 && !this.boss) return;
    const boss = await this.queue();
    for (const fn of live) {
      await this.ensureQueue(boss, fn);
      if (!this.options.runWorkers) continue;
      const shape = `${numberOption(fn.options, 'concurrency')}|${numberOption(fn.options, 'retries')}|${batchSizeOf(fn)}`;
      const current = this.runners.get(queueName(fn));
      if (current?.shape !== shape) {
        // A new version with other limits: the old runner lets its runs finish meanwhile.
        if (current) void current.runner.stop(5_000);
        this.runners.set(queueName(fn), { runner: this.startRunner(boss, fn), shape });
      }
    }
    const names = new Set(live.map(queueName));
    for (const [queue, { runner }] of this.runners) {
      if (names.has(queue)) continue;
      this.runners.delete(queue);
      // Held jobs still start, find their function gone and are dead-lettered (runJob).
      void runner.stop(5_000);
    }
    if (this.options.runWorkers) await this.syncSchedules(boss);
    if (this.options.runWorkers && !this.lock && live.some((fn) => EVENT_KINDS.has(fn.kind))) await this.startLeading();
  }

  /** Starts pg-boss once; every later sync reuses it. */
  private queue(): Promise<PgBoss> {
    this.starting ??= (async () => {
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
      await this.wake.start();
      this.boss = boss;
      this.depthTimer = new IdleBackoff({
        minMs: DEPTH_EVERY_MS,
        maxMs: DEPTH_IDLE_MS,
        run: () => this.refreshQueueDepth(),
        onError: (error) => this.log.debug({ err: error }, 'queue depth unavailable'),
      });
      this.depthTimer.start();
      return boss;
    })();
    this.starting.catch(() => {
      this.starting = null;
    });
    return this.starting;
  }

  /**
   * Creates (or updates) a function's queue, once at a time per queue: a sync and the
   * publishes sent right after a deploy all find the queue missing, and pg-boss's createQueue
   * run concurrently can deadlock (one of them then failed, a sync leaving the function with
   * no runner). A failed attempt is tried again: across instances, the loser of such a race
   * finds the queue there once the winner commits.
   */
  private ensureQueue(boss: PgBoss, fn: { name: string; options: Record<string, unknown> }): Promise<void> {
    const queue = queueName(fn);
    const pending = this.ensuring.get(queue);
    if (pending) return pending.catch(() => undefined).then(() => this.ensureQueue(boss, fn));
    const ensuring = (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.setUpQueue(boss, fn);
        } catch (error) {
          if (attempt >= 3) throw error;
          await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
        }
      }
    })().finally(() => this.ensuring.delete(queue));
    this.ensuring.set(queue, ensuring);
    return ensuring;
  }

  /** Creates (or updates) a function's queue; its jobs carry their own retry and expiry, from their version. */
  private async setUpQueue(boss: PgBoss, fn: { name: string; options: Record<string, unknown> }): Promise<void> {
    const queue = queueName(fn);
    const policy = JSON.stringify(this.jobPolicy(fn.options));
    if (this.queues.get(queue) === policy) return;
    const options = {
      name: queue,
      retryLimit: numberOption(fn.options, 'retries'),
      retryDelay: this.options.retryDelaySeconds ?? 1,
      retryBackoff: true,
      // A job still active past its function's timeout lost its worker (a crash, kill -9):
      // it expires and is delivered again.
      expireInSeconds: Math.ceil(numberOption(fn.options, 'timeout_ms') / 1000) + 10,
    };
    if (await boss.getQueue(queue)) await boss.updateQueue(queue, options);
    else {
      // A publish that finds the queue missing and a sync may create it at once: one wins.
      await boss.createQueue(queue, options).catch(async (error: unknown) => {
        if (!(await boss.getQueue(queue))) throw error;
        await boss.updateQueue(queue, options);
      });
    }
    // Topic events are fetched in key order (fetchInKeyOrder), which this index serves.
    if (fn.options.topic !== undefined) await this.events.indexKeys(queue);
    this.queues.set(queue, policy);
  }

  /** EventQueues: a subscriber's queue, created on a publish that finds it missing. */
  async ensure(fn: { name: string; options: Record<string, unknown> }): Promise<void> {
    await this.ensureQueue(await this.queue(), fn);
  }

  queueOf(fn: { name: string }): string {
    return queueName(fn);
  }

  policy(options: Record<string, unknown>): { retryLimit: number; retryDelay: number; expireInSeconds: number } {
    return this.jobPolicy(options);
  }

  notify(queues: string[]): void {
    this.wakeRunners(queues);
    this.wake.announce(queues);
  }

  /** Jobs were added to these queues: their runners here fetch now rather than at their next poll. */
  private wakeRunners(queues: string[]): void {
    for (const queue of queues) this.runners.get(queue)?.runner.notify();
    if (queues.length > 0) this.depthTimer?.wake();
  }

  private jobPolicy(options: Record<string, unknown>) {
    return {
      retryLimit: numberOption(options, 'retries'),
      retryDelay: this.options.retryDelaySeconds ?? 1,
      retryBackoff: true,
      expireInSeconds: Math.ceil(numberOption(options, 'timeout_ms') / 1000) + 10,
    };
  }

  private async syncSchedules(boss: PgBoss): Promise<void> {
    const wanted = new Map<string, string>();
    for (const fn of this.functions.byKind('schedule')) {
      if (typeof fn.options.cron === 'string') wanted.set(queueName(fn), `${fn.version}|${fn.options.cron}`);
    }
    const key = [...wanted]
      .map(([queue, cron]) => `${queue}=${cron}`)
      .sort()
      .join(',');
    if (this.schedules.has(key)) return;
    for (const fn of this.functions.byKind('schedule')) {
      if (typeof fn.options.cron === 'string') await boss.schedule(queueName(fn), fn.options.cron, {}, { tz: 'UTC' });
    }
    for (const schedule of await boss.getSchedules()) {
      if (schedule.name.startsWith('fn-') && !wanted.has(schedule.name)) await boss.unschedule(schedule.name);
    }
    this.schedules = new Set([key]);
  }

  private async startLeading(): Promise<void> {
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

  private startRunner(boss: PgBoss, fn: LoadedFunction): QueueRunner<JobData, RunResult> {
    const queue = queueName(fn);
    const runner = new QueueRunner<JobData, RunResult>({
      boss,
      queue,
      // A topic's events with one key run one at a time, in publish order (EventsRepository).
      fetch: fn.kind === 'event' ? (limit) => this.events.fetchInKeyOrder<JobData>(queue, limit) : undefined,
      batchSize: batchSizeOf(fn),
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
      run: (jobs) => this.runJobs(fn.name, jobs),
      settle: (finished) => this.settle(queue, finished),
    });
    runner.start();
    return runner;
  }

  /**
   * Runs one job on the version it is pinned to (a schedule tick: the live one). A job of a
   * function no longer deployed here is not run: it is dead-lettered. A run that could not
   * even start comes back with no record (it is failed and retried).
   */
  private async runJobs(name: string, jobs: Array<QueuedJob<JobData>>): Promise<RunResult> {
    const job = jobs[0];
    if (!job) return { run: null };
    try {
      const live = this.functions.find(name);
      const isSchedule = live?.kind === 'schedule' || job.data.event === undefined;
      const input = isSchedule ? scheduleEvent(job) : job.data.event;
      const pinned = !isSchedule && typeof job.data.version === 'number' ? job.data.version : live?.version;
      const fn = live && pinned !== undefined ? await this.functions.versionOf(name, pinned) : null;
      if (!fn) return { run: undeployedRun(name, job, input), final: true };
      // A batch function takes its events as a list; a batch fails or succeeds as a whole.
      const batched = fn.kind === 'event' && typeof fn.options.batch_size === 'number';
      const { run } = await this.functions.execute(fn, batched ? jobs.map((each) => each.data.event) : input, {
        trigger: input.type,
        eventId: input.id,
        attempt: Math.max(...jobs.map((each) => each.retryCount)) + 1,
        jobId: job.id,
        lastAttempt: jobs.every((each) => each.retryCount >= each.retryLimit),
        trace: jobTrace(job, isSchedule),
      });
      return { run };
    } catch (error) {
      this.log.error({ err: error, job: job.id }, 'running a function job failed');
      return { run: null };
    }
  }

  /**
   * Records the finished runs and completes their jobs atomically (for every run that
   * finished meanwhile: one statement when all succeeded, else one transaction), so a run is
   * recorded exactly when its job leaves the active state; failures go back to the queue for
   * retry or the dead letter.
   */
  private async settle(queue: string, finished: Array<FinishedJob<JobData, RunResult>>): Promise<void> {
    const boss = this.boss;
    if (!boss) return;
    const succeeded: string[] = [];
    // A failure names its run, so that retrying a dead batch finds every job of it (retry()).
    const failed: Array<{ id: string; output: { message: string; invocation_id?: string } }> = [];
    const final: string[] = [];
    const runs = new Set<InvocationRun>();
    for (const { job, result } of finished) {
      if (result.run) runs.add(result.run);
      if (result.run?.status === 'succeeded') succeeded.push(job.id);
      else {
        const message = result.run?.error ?? 'the run could not start';
        failed.push({ id: job.id, output: result.run ? { message, invocation_id: result.run.id } : { message } });
      }
      if (result.final) final.push(job.id);
    }
    // The usual case, every run succeeded: one statement records them and completes their jobs.
    if (failed.length === 0 && final.length === 0) {
      await this.invocations.recordAndComplete([...runs], queue, succeeded);
      return;
    }
    await this.db.transaction(async (tx: Tx) => {
      const db = queueStatementsIn(tx);
      // The jobs of one batch share one run: it is recorded once.
      await this.invocations.record([...runs], tx);
      await this.deploys.spendRetries(tx, queue, final);
      if (succeeded.length > 0) await boss.complete(queue, succeeded, { db });
      for (const failure of failed) await boss.fail(queue, failure.id, failure.output, { db });
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
      this.pointers = null;
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
    this.pointers = null;
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
          // What was applied of the batch is not saved: read the pointers again with the cursor.
          this.pointers = null;
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
      // First start: functions react to what commits from now on, with the pointers live now.
      cursor = this.feed.currentCursor();
      const start = cursor;
      await this.db.transaction(async (tx) => {
        await this.feed.saveConsumerCursor(CONSUMER, start, tx);
        await this.deploys.resetDispatchPointers(tx);
      });
      this.pointers = null;
    }
    if (!this.pointers) {
      this.pointers = new Map((await this.deploys.dispatchPointers()).map((pointer) => [pointer.name, pointer]));
    }
    const pointers = this.pointers;
    const batch = this.takeDelivered(cursor) ?? (await this.feed.readSince(cursor, { limit: DISPATCH_BATCH }));
    if (batch.cursor === cursor) return false;
    // In commit order: a deploy changes the pointer for the changes after it; an undeploy
    // dead-letters what was queued before it. Steps run in this order in one transaction.
    const steps: Array<{ jobs: DispatchJob[] } | { undeployed: string }> = [];
    const changed = new Map<string, ActivePointer | null>();
    let jobs: DispatchJob[] = [];
    for (const change of batch.changes) {
      if (change.schema === 'basalt' && change.table === DEPLOYS_TABLE) {
        const pointer = pointerFromRow(change.newRow);
        const name = pointer?.name ?? pointerFromRow(change.oldRow)?.name;
        if (!name) continue;
        if (pointer) pointers.set(name, pointer);
        else {
          pointers.delete(name);
          steps.push({ jobs }, { undeployed: name });
          jobs = [];
        }
        changed.set(name, pointer);
        continue;
      }
      for (const pointer of pointers.values()) {
        if (!EVENT_KINDS.has(pointer.kind)) continue;
        const event = eventFor(pointer, change);
        if (event) {
          jobs.push({
            name: pointer.name,
            options: pointer.options,
            id: jobIdFor(change.id, pointer.name),
            data: {
              function: pointer.name,
              version: pointer.version,
              event,
              ...(change.origin ? { origin: change.origin } : {}),
            },
          });
        }
      }
    }
    steps.push({ jobs });
    const queued = steps.flatMap((step) => ('jobs' in step ? step.jobs : []));
    for (const name of new Set(queued.map((job) => job.name))) {
      const pointer = pointers.get(name);
      await this.ensureQueue(boss, { name, options: pointer?.options ?? {} });
    }
    await this.db.transaction(async (tx: Tx) => {
      const wrapper = queueStatementsIn(tx);
      for (const step of steps) {
        if ('undeployed' in step) {
          const dead = await this.deploys.deadLetterQueue(tx, queueName({ name: step.undeployed }), step.undeployed);
          if (dead > 0)
            this.log.info({ function: step.undeployed, events: dead }, 'undeployed: queued events dead-lettered');
          continue;
        }
        // One statement per step; a job id already present (a re-dispatch) is skipped.
        if (step.jobs.length > 0) {
          await boss.insert(
            step.jobs.map((job) => ({
              id: job.id,
              name: queueName(job),
              data: job.data,
              ...this.jobPolicy(job.options),
            })),
            { db: wrapper },
          );
        }
      }
      await this.deploys.saveDispatchPointers(tx, changed);
      await this.feed.saveConsumerCursor(CONSUMER, batch.cursor, tx);
    });
    for (const job of queued) this.metrics.enqueued.inc({ function: job.name });
    this.notify([...new Set(queued.map(queueName))]);
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

  /**
   * Retries a dead-lettered run: pg-boss moves its job back to the queue with its event id
   * unchanged, to run on the version live now; a dead batch's jobs go back all together.
   * False when the function is not deployed.
   */
  async retry(functionName: string, jobId: string, invocationId: string): Promise<boolean> {
    const fn = this.functions.find(functionName);
    if (!fn) return false;
    const boss = await this.queue();
    const jobIds = await this.deploys.repinDeadRun(queueName(fn), jobId, invocationId, fn.version);
    if (jobIds.length > 0) await boss.retry(queueName(fn), jobIds);
    this.notify([queueName(fn)]);
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
    await this.syncing.catch(() => undefined);
    await this.starting?.catch(() => undefined);
    this.unsubscribe?.();
    if (this.leaderTimer) clearTimeout(this.leaderTimer);
    this.depthTimer?.stop();
    await this.pumping?.catch(() => undefined);
    // Running jobs finish and are settled before the queue stops; any still running after
    // that expire and are delivered again.
    await Promise.all([...this.runners.values()].map(({ runner }) => runner.stop(5_000)));
    this.runners.clear();
    await this.wake.stop();
    await this.lock?.stop();
    this.lock = null;
    this.leading = false;
    await this.boss?.stop({ graceful: true, wait: true, timeout: 5_000 }).catch(() => undefined);
    this.boss = null;
  }
}

/** Events one run takes: a topic subscriber's `batch_size`, else 1. */
function batchSizeOf(fn: LoadedFunction): number {
  return fn.kind === 'event' && typeof fn.options.batch_size === 'number' ? fn.options.batch_size : 1;
}

function scheduleEvent(job: QueuedJob<JobData>): FunctionEvent {
  return { id: `job_${job.id}`, type: 'schedule', at: job.createdOn.toISOString() };
}
