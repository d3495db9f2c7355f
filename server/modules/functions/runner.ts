import type PgBoss from 'pg-boss';
import { isUnavailableError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';

/** Settling again after Postgres was unreachable: from 250 ms, doubling to 5 s. */
const SETTLE_RETRY_MIN_MS = 250;
const SETTLE_RETRY_MAX_MS = 5_000;

/**
 * What the runner and the dispatcher read of a job: a fetch of many jobs (a batch
 * subscriber's thousands) returns these columns only, not every column pg-boss keeps.
 */
export type QueuedJob<T> = Pick<PgBoss.JobWithMetadata<T>, 'id' | 'data' | 'retryCount' | 'retryLimit' | 'createdOn'>;

/** A job that ran, waiting to be settled with the others that finished meanwhile. */
export interface FinishedJob<T, R> {
  job: QueuedJob<T>;
  result: R;
}

export interface QueueRunnerOptions<T, R> {
  boss: PgBoss;
  queue: string;
  /** Jobs of this queue running at once in this instance. */
  limit: number;
  /** How long to wait before looking again when the queue was empty and nothing woke the runner. */
  pollIntervalMs: number;
  /**
   * Each fetch that finds the queue empty doubles that wait, up to this (default: no
   * back-off); a fetch that finds jobs, or a notify, brings it back to pollIntervalMs. Jobs
   * sent from this instance notify at once; only jobs from elsewhere (other instances, cron,
   * retries coming due) wait for a poll.
   */
  maxPollIntervalMs?: number;
  log: Logger;
  /**
   * A held job not started within this long is let go unrun (default 5 s): its expiry counts
   * from its fetch and leaves 10 s beyond the run's timeout, so a later start could still be
   * running when it expires and is delivered again.
   */
  maxHoldMs?: number;
  /**
   * Whether fetched jobs may be held for the next free slot (default true). A held job let go
   * unrun spends an attempt when it expires, so a queue whose jobs have no retry left to spend
   * (`retries: 0`) must not hold any: each of its jobs starts as soon as it is fetched.
   */
  holdAhead?: boolean;
  /**
   * Takes up to `limit` jobs in place of pg-boss's fetch (which takes them in queue order),
   * e.g. to hold back jobs that must wait for others.
   */
  fetch?(limit: number): Promise<Array<QueuedJob<T>>>;
  /** Jobs one run takes (default 1): a run of a batch gets up to this many of the jobs at hand. */
  batchSize?: number;
  /**
   * Runs one job, or one batch of them (it should not throw); what it returns is handed to
   * `settle` with each of the jobs.
   */
  run(jobs: Array<QueuedJob<T>>): Promise<R>;
  /**
   * Completes and fails every finished job handed to it, in one go (the dispatcher records
   * their runs and completes their jobs in one transaction). A throw leaves the jobs active:
   * they expire and are delivered again.
   */
  settle(finished: Array<FinishedJob<T, R>>): Promise<void>;
}

/** Runs shorter than this on average let the runner fetch ahead (see QueueRunner). */
const FAST_RUN_MS = 100;
/** Held jobs are at most about this much work for the slots (at the mean run time). */
const HOLD_BUDGET_MS = 1_000;
/** And never more than this many. */
const MAX_HELD = 256;

/**
 * Takes one queue's jobs and runs up to `limit` of them at once, in place of pg-boss's
 * `work()`: pg-boss fetches a batch, waits for the whole batch to finish and then completes
 * it, so every batch waited for its slowest job and paid a fetch, a record and a complete
 * round trip. Here runs start as they are fetched, finished runs are settled together while
 * others still run, and a fetch is made only once half the room is free: each fetch sorts
 * the queue's waiting jobs, so fewer and fuller fetches cost Postgres much less.
 *
 * While runs are fast (under FAST_RUN_MS on average) the runner also holds fetched jobs
 * ready for the next free slot, about HOLD_BUDGET_MS of work at the mean run time (at most
 * MAX_HELD), so a burst is fetched in large batches whatever the concurrency, and the slots
 * never wait on a fetch. A held job is active in the queue from its fetch, so its expiry
 * (the timeout plus 10 s) counts from then; it waits about a second. Were every slot to
 * hang (a service the function calls stops answering), held jobs not started within
 * `maxHoldMs` are let go unrun: they expire and are delivered again, as with any lost
 * worker, rather than run so late that they could expire while running and be run twice at
 * once. Slow functions get no held jobs: each fetched job starts at once.
 */
export class QueueRunner<T, R> {
  private inFlight = 0;
  private held: Array<{ job: QueuedJob<T>; at: number }> = [];
  private finished: Array<FinishedJob<T, R>> = [];
  private settling: Promise<void> | null = null;
  /** Mean run time, exponentially weighted; starts slow so a new queue holds nothing until runs prove fast. */
  private meanRunMs = FAST_RUN_MS * 10;
  private wake: (() => void) | null = null;
  private drained: Array<() => void> = [];
  private notified = false;
  private stopped = false;
  /** Fetches in a row that found the queue empty. */
  private emptyFetches = 0;
  private loop: Promise<void> | null = null;

  constructor(private readonly options: QueueRunnerOptions<T, R>) {}

  start(): void {
    this.loop ??= this.fetchLoop();
  }

  /** New jobs were sent (or retried): look for them now rather than at the next poll. */
  notify(): void {
    this.notified = true;
    this.wake?.();
  }

  /**
   * Stops fetching and waits (at most `timeoutMs`) for the running and held jobs to finish
   * and be settled. Jobs still running past the timeout stay active in the queue: they
   * expire and are delivered again.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    if (this.isDrained()) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.drained.push(resolve);
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    });
    clearTimeout(timer);
  }

  private isDrained(): boolean {
    return this.inFlight === 0 && this.held.length === 0 && this.finished.length === 0 && this.settling === null;
  }

  private checkDrained(): void {
    if (!this.isDrained()) return;
    const waiting = this.drained;
    this.drained = [];
    for (const resolve of waiting) resolve();
  }

  private async fetchLoop(): Promise<void> {
    const { boss, queue, limit, log } = this.options;
    while (!this.stopped) {
      const hold =
        this.options.holdAhead !== false && this.meanRunMs < FAST_RUN_MS
          ? Math.min(MAX_HELD, Math.floor((limit * HOLD_BUDGET_MS) / Math.max(1, this.meanRunMs)))
          : 0;
      const capacity = limit * (this.options.batchSize ?? 1) + hold;
      const room = capacity - this.inFlight - this.held.length;
      if (room < Math.max(1, Math.ceil(capacity / 2))) {
        await this.sleep(null);
        continue;
      }
      this.notified = false;
      let jobs: Array<QueuedJob<T>> = [];
      try {
        jobs = this.options.fetch
          ? await this.options.fetch(room)
          : await boss.fetch<T>(queue, { batchSize: room, includeMetadata: true });
      } catch (error) {
        log.warn({ err: error, queue }, 'fetching function jobs failed');
      }
      const at = performance.now();
      for (const job of jobs) this.held.push({ job, at });
      this.startHeld();
      this.emptyFetches = jobs.length > 0 || this.notified ? 0 : this.emptyFetches + 1;
      // A short batch drained the queue: wait for a wake-up or the next poll.
      if (jobs.length < room && !this.notified && !this.stopped) await this.sleep(this.pollWaitMs());
    }
  }

  /** The wait before the next poll: longer the longer the queue has stayed empty. */
  private pollWaitMs(): number {
    const { pollIntervalMs, maxPollIntervalMs = pollIntervalMs } = this.options;
    return Math.min(maxPollIntervalMs, pollIntervalMs * 2 ** Math.min(this.emptyFetches - 1, 20));
  }

  /** Waits for a wake-up (a notify, a freed slot, stop) or, given a time, that long at most. */
  private sleep(ms: number | null): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const done = () => {
        if (timer) clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      this.wake = done;
      if (ms !== null) {
        timer = setTimeout(done, ms);
        timer.unref();
      }
    });
  }

  private startHeld(): void {
    const oldest = performance.now() - (this.options.maxHoldMs ?? 5_000);
    let letGo = 0;
    while (this.inFlight < this.options.limit && this.held.length > 0) {
      const batch: Array<QueuedJob<T>> = [];
      while (batch.length < (this.options.batchSize ?? 1)) {
        const next = this.held.shift();
        if (!next) break;
        if (next.at < oldest) letGo++;
        else batch.push(next.job);
      }
      if (batch.length > 0) this.begin(batch);
    }
    if (letGo > 0) {
      this.options.log.warn(
        { queue: this.options.queue, jobs: letGo },
        'fetched function jobs waited too long for a free slot; they will be delivered again when they expire',
      );
    }
  }

  private begin(jobs: Array<QueuedJob<T>>): void {
    this.inFlight++;
    const started = performance.now();
    void this.options
      .run(jobs)
      .then(
        (result): Array<FinishedJob<T, R>> => jobs.map((job) => ({ job, result })),
        (error: unknown) => {
          // Left active: they expire and are delivered again.
          this.options.log.error({ err: error, job: jobs[0]?.id }, 'running a function job failed');
          return [];
        },
      )
      .then((finished) => {
        this.inFlight--;
        this.meanRunMs = 0.9 * this.meanRunMs + 0.1 * (performance.now() - started);
        this.finished.push(...finished);
        this.startHeld();
        this.settle();
        this.wake?.();
        this.checkDrained();
      });
  }

  /** Settles what finished, one settle at a time: runs finishing meanwhile join the next one. */
  private settle(): void {
    if (this.settling || this.finished.length === 0) return;
    this.settling = (async () => {
      let retryMs = SETTLE_RETRY_MIN_MS;
      while (this.finished.length > 0) {
        const batch = this.finished;
        this.finished = [];
        try {
          await this.options.settle(batch);
          retryMs = SETTLE_RETRY_MIN_MS;
        } catch (error) {
          if (isUnavailableError(error) && !this.stopped) {
            // Postgres is away (a restart): the runs are done and only their records wait.
            // Settle them again shortly rather than leave the jobs to expire and run twice.
            if (retryMs === SETTLE_RETRY_MIN_MS) {
              this.options.log.warn(
                { queue: this.options.queue, jobs: batch.length },
                'settling function jobs waits for Postgres; retrying',
              );
            }
            this.finished = batch.concat(this.finished);
            await new Promise((resolve) => setTimeout(resolve, retryMs).unref());
            retryMs = Math.min(retryMs * 2, SETTLE_RETRY_MAX_MS);
            continue;
          }
          this.options.log.error(
            { err: error, queue: this.options.queue, jobs: batch.length },
            'settling function jobs failed; they will be delivered again when they expire',
          );
        }
      }
    })().finally(() => {
      this.settling = null;
      this.checkDrained();
    });
  }
}
