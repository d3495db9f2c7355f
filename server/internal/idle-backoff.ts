/**
 * A periodic task that slows down while nothing happens: it runs every `minMs` at first, and
 * each run that finds nothing to do doubles the wait, up to `maxMs`. A run that finds
 * something, or a `wake()` from outside (a request that needs fresh data, a notification),
 * brings the wait back to `minMs`. So a server at rest polls rarely and one in use polls as
 * often as before. The timer never keeps the process alive.
 */
export interface IdleBackoffOptions {
  minMs: number;
  maxMs: number;
  /** Runs the task; resolves true when it found something (new rows, a change), false when idle. */
  run(): Promise<boolean> | boolean;
  /** Called with a task's error; the run counts as idle. */
  onError?(error: unknown): void;
}

export class IdleBackoff {
  private timer: NodeJS.Timeout | null = null;
  private waitMs: number;
  private running = false;
  private woken = false;
  private stopped = true;

  constructor(private readonly options: IdleBackoffOptions) {
    this.waitMs = options.minMs;
  }

  /** The wait before the next run (tests and metrics). */
  get currentWaitMs(): number {
    return this.waitMs;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.waitMs = this.options.minMs;
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /**
   * Something happened that makes the task worth running often again: the next run comes
   * within `minMs` (sooner if the current wait ends first), and the wait starts over.
   */
  wake(): void {
    if (this.stopped) return;
    // Counted at the next run, which then keeps the shortest wait.
    this.woken = true;
    if (this.running || this.waitMs === this.options.minMs) return;
    this.waitMs = this.options.minMs;
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), this.waitMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = null;
    this.running = true;
    let busy = false;
    try {
      busy = await this.options.run();
    } catch (error) {
      this.options.onError?.(error);
    } finally {
      this.running = false;
    }
    if (this.stopped) return;
    const active = busy || this.woken;
    this.woken = false;
    this.waitMs = active ? this.options.minMs : Math.min(this.options.maxMs, this.waitMs * 2);
    this.schedule();
  }
}
