import type { Logger } from '../../internal/log.js';
import type { InvocationRun } from './repository.js';

export interface RecorderOptions {
  /** Runs written in one statement at most. */
  maxBatch?: number;
  /** Runs waiting beyond this make the next caller wait for a write (backpressure, never dropping). */
  maxPending?: number;
  /** Pause after a failed write before trying the same runs again. */
  retryMs?: number;
  /**
   * Under load, at least this long between the starts of two writes: the runs that end
   * meanwhile share the next statement, so a busy instance commits a few dozen times a second
   * rather than once per turn of its event loop. A run that ends after a quiet spell is still
   * written on the next turn.
   */
  minIntervalMs?: number;
}

/**
 * Writes HTTP function runs after their response: a run is queued when it ends and written
 * on the next turn of the event loop, together with every run that ended meanwhile, one
 * INSERT per batch; under load, writes start `minIntervalMs` apart at the closest. That is
 * one write for many calls instead of a database round trip (and a commit) in front of every
 * response; at rest a row lands a few milliseconds after its response.
 *
 * Nothing is dropped: a failed write is retried with the same runs, and while more than
 * `maxPending` runs wait, `add` makes its caller wait for room. What a crash of the process
 * loses is what was queued or being written at that moment (see docs/functions.md).
 */
export class InvocationRecorder {
  private pending: InvocationRun[] = [];
  private writing: Promise<void> | null = null;
  private scheduled = false;
  /** The wait before the next write, while the last one started less than minIntervalMs ago. */
  private spacingTimer: NodeJS.Timeout | null = null;
  /** When the last write started (performance.now()). */
  private lastWriteAt = -Infinity;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly waiters: Array<() => void> = [];
  private readonly maxBatch: number;
  private readonly maxPending: number;
  private readonly retryMs: number;
  private readonly minIntervalMs: number;

  constructor(
    private readonly write: (runs: InvocationRun[]) => Promise<void>,
    private readonly log: Logger,
    options: RecorderOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 500;
    this.maxPending = options.maxPending ?? 10_000;
    this.retryMs = options.retryMs ?? 1000;
    this.minIntervalMs = options.minIntervalMs ?? 20;
  }

  get backlog(): number {
    return this.pending.length;
  }

  /** Queues a finished run; resolves at once unless the backlog is full. */
  add(run: InvocationRun): Promise<void> | null {
    this.pending.push(run);
    this.schedule();
    if (this.pending.length <= this.maxPending) return null;
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Resolves once every run queued before the call is written (or the write failed and will be retried). */
  async flush(): Promise<void> {
    while (this.pending.length > 0 || this.writing) {
      if (this.writing) await this.writing;
      else if (this.retryTimer) return;
      else await this.writeBatch();
    }
  }

  /** Writes what is queued, retrying failures a few times, for a clean shutdown. */
  async close(): Promise<void> {
    for (let attempt = 0; attempt < 5 && (this.pending.length > 0 || this.writing); attempt++) {
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = null;
      await this.flush();
      if (this.pending.length > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(this.retryMs, 200)));
    }
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pending.length > 0) {
      this.log.error(`${this.pending.length} function invocation record(s) could not be written at shutdown`);
      this.pending = [];
    }
    this.release();
  }

  private schedule(): void {
    if (this.scheduled || this.writing || this.retryTimer) return;
    this.scheduled = true;
    const wait = this.lastWriteAt + this.minIntervalMs - performance.now();
    const write = () => {
      this.scheduled = false;
      this.spacingTimer = null;
      if (!this.writing && !this.retryTimer) void this.writeBatch();
    };
    // The next turn: the runs that end in this one go into the same statement. Right after
    // another write, a little later: the runs of the turns between go in too.
    // Timers count whole milliseconds (a fraction is dropped): rounded up, the spacing holds.
    if (wait <= 0) setImmediate(write);
    else this.spacingTimer = setTimeout(write, Math.ceil(wait));
  }

  /** A write now (flush, close) makes the spaced one pointless. */
  private cancelSpacing(): void {
    if (!this.spacingTimer) return;
    clearTimeout(this.spacingTimer);
    this.spacingTimer = null;
    this.scheduled = false;
  }

  private writeBatch(): Promise<void> {
    this.cancelSpacing();
    const batch = this.pending.splice(0, this.maxBatch);
    if (batch.length === 0) return Promise.resolve();
    this.lastWriteAt = performance.now();
    const writing = this.write(batch).then(
      () => {
        this.writing = null;
        this.release();
        if (this.pending.length > 0) this.schedule();
      },
      (error: unknown) => {
        this.writing = null;
        // Back in front, in order: the next write tries them again.
        this.pending.unshift(...batch);
        this.log.error({ err: error }, `writing ${batch.length} function invocation record(s) failed; retrying`);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.schedule();
        }, this.retryMs);
        this.retryTimer.unref();
      },
    );
    this.writing = writing;
    return writing;
  }

  /** Lets waiting callers go while the backlog is under its limit. */
  private release(): void {
    while (this.waiters.length > 0 && this.pending.length <= this.maxPending) this.waiters.shift()?.();
  }
}
