import type pg from 'pg';
import type { Counter, Gauge } from 'prom-client';
import type { Logger } from '../log.js';
import type { ReconnectingClient } from '../reconnecting-client.js';
import { CHANGES_CHANNEL, tickerSql, type ChangeRepository } from './repository.js';

export interface TickerOptions {
  /** How often the leader checks for committed changes when no NOTIFY arrived, while changes flow. */
  pollIntervalMs: number;
  /** How far that check's interval stretches while nothing changes (doubling from pollIntervalMs). */
  idlePollIntervalMs: number;
  /** A tick is recorded at least this often, even when nothing changed, so lag stays measurable. */
  heartbeatMs: number;
  /** Ticks asked for within this long of the previous one are answered by one tick. */
  debounceMs: number;
  /** How often a follower tries to take over the lead. */
  leaderRetryMs: number;
  retentionSeconds: number;
  pruneIntervalMs: number;
  pruneBatchSize: number;
}

export interface TickerMetrics {
  leader: Gauge;
  ticks: Counter;
  pruned: Counter<'kind'>;
}

/**
 * Records ticks. Every instance runs one; the one holding a session advisory lock on the
 * feed's dedicated connection leads, the others retry the lock every `leaderRetryMs`, so
 * when the leader dies (its session ends) another takes over within about that long.
 * Sharing the feed's connection keeps an instance at one connection outside the pool.
 */
export class Ticker {
  private leading = false;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private pollDelayMs = 0;
  private debounceTimer: NodeJS.Timeout | null = null;
  private pruneTimer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private tickAgain = false;
  private lastTickAt = 0;
  /** When the latest tick was started (recorded or not), for spacing ticks `debounceMs` apart. */
  private tickStartedAt = 0;
  private pruning: Promise<void> | null = null;

  constructor(
    private readonly deps: {
      connection: ReconnectingClient;
      log: Logger;
      repo: ChangeRepository;
      metrics: TickerMetrics;
    },
    private readonly options: TickerOptions,
  ) {}

  private get connection(): ReconnectingClient {
    return this.deps.connection;
  }

  /** Whether this instance currently records the ticks. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Begins trying to lead; the feed calls attach() on each (re)connect of the shared connection. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const client = this.connection.current;
    if (client) void this.attach(client).catch((error: unknown) => this.connection.reset(error));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    // Work stuck on an unreachable Postgres must not hold up shutdown.
    const settle = (work: Promise<void> | null) => work?.catch(() => undefined);
    await Promise.race([Promise.all([settle(this.ticking), settle(this.pruning)]), delay(1_000)]);
    const client = this.connection.current;
    if (this.leading && client) await tickerSql.resign(client).catch(() => undefined);
    this.setLeading(false);
  }

  /** Records a tick now if anything committed since the last one (the leader does this on its own). */
  async tickNow(force = false): Promise<number | null> {
    const client = this.connection.current;
    if (!client) return null;
    return tickerSql.tickIfChanged(client, force);
  }

  /** Deletes changes and ticks older than the retention; the leader does this periodically. */
  prune(): Promise<void> {
    this.pruning ??= this.deps.repo
      .prune(this.options.retentionSeconds, this.options.pruneBatchSize)
      .then(({ ticks, changes, heldBy }) => {
        this.deps.metrics.pruned.inc({ kind: 'ticks' }, ticks);
        this.deps.metrics.pruned.inc({ kind: 'changes' }, changes);
        if (ticks + changes > 0) this.deps.log.debug({ ticks, changes }, 'pruned the change log');
        if (heldBy.length > 0) {
          this.deps.log.warn(
            { consumers: heldBy },
            'change-log consumers behind the retention keep old changes from being pruned; remove those no longer used',
          );
        }
      })
      .finally(() => {
        this.pruning = null;
      });
    return this.pruning;
  }

  /** The shared connection is (re)connected: try to lead on it. A throw means it is unusable. */
  async attach(client: pg.Client): Promise<void> {
    if (this.stopped) return;
    // If this instance vanishes without closing its socket (network partition), Postgres
    // must notice within seconds, not the OS default of hours, to release the lead.
    await tickerSql.shortKeepalives(client).catch((error: unknown) => {
      this.deps.log.debug({ err: error }, 'could not shorten TCP keepalives of the ticker session');
    });
    await this.tryLead(client);
  }

  /** The shared connection is gone, and the lead with it (the lock was its session's). */
  detach(): void {
    this.clearTimers();
    if (this.leading) this.deps.log.warn('change ticker lost its lead with its connection');
    this.setLeading(false);
  }

  private async tryLead(client: pg.Client): Promise<void> {
    if (this.stopped || this.connection.current !== client) return;
    if (await tickerSql.tryLead(client)) {
      await tickerSql.listen(client, CHANGES_CHANNEL);
      this.setLeading(true);
      this.deps.log.info('this instance now records change-log ticks');
      this.lastTickAt = 0;
      this.pollDelayMs = this.options.pollIntervalMs;
      this.schedulePoll();
      this.pruneTimer = setInterval(
        () => void this.prune().catch((error: unknown) => this.pruneFailed(error)),
        this.options.pruneIntervalMs,
      );
      this.pruneTimer.unref();
      this.requestTick();
      return;
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.tryLead(client).catch((error: unknown) => this.connection.reset(error));
    }, this.options.leaderRetryMs);
    this.retryTimer.unref();
  }

  /**
   * The safety net for a lost NOTIFY: a check at pollIntervalMs while changes flow, whose
   * wait doubles up to idlePollIntervalMs while checks find nothing, so an idle leader
   * queries Postgres a few times a minute rather than four times a second. It still
   * checks often enough for the heartbeat tick to stay within a poll of heartbeatMs.
   */
  private schedulePoll(): void {
    if (!this.leading || this.stopped) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      this.requestTick();
      this.schedulePoll();
      this.pollDelayMs = Math.min(this.pollDelayMs * 2, this.options.idlePollIntervalMs);
    }, this.pollDelayMs);
    this.pollTimer.unref();
  }

  private pruneFailed(error: unknown): void {
    this.deps.log.warn({ err: error }, 'pruning the change log failed; will retry');
  }

  /** A change committed (NOTIFY basalt_changes). Debounced: a burst becomes one tick. */
  notify(): void {
    this.requestTick();
  }

  /**
   * A commit after a quiet spell is ticked at once (its subscribers wait no debounce); within
   * a burst, ticks start at least `debounceMs` apart, so one tick covers many commits.
   */
  private requestTick(): void {
    if (!this.leading || this.stopped || this.debounceTimer) return;
    const wait = Math.max(0, this.tickStartedAt + this.options.debounceMs - Date.now());
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      this.runTick();
    }, wait);
    this.debounceTimer.unref();
  }

  private runTick(): void {
    if (this.ticking) {
      this.tickAgain = true;
      return;
    }
    this.tickStartedAt = Date.now();
    this.ticking = this.tickOnce().finally(() => {
      this.ticking = null;
      if (this.tickAgain && this.leading && !this.stopped) {
        this.tickAgain = false;
        this.runTick();
      }
    });
  }

  private async tickOnce(): Promise<void> {
    const client = this.connection.current;
    if (!client || !this.leading) return;
    const force = Date.now() - this.lastTickAt >= this.options.heartbeatMs;
    try {
      const id = await tickerSql.tickIfChanged(client, force);
      if (id !== null) {
        this.lastTickAt = Date.now();
        this.deps.metrics.ticks.inc();
        // Something committed (not just a heartbeat): check at the fast interval again.
        if (!force) this.pollDelayMs = this.options.pollIntervalMs;
      }
    } catch (error) {
      if (this.stopped) return;
      // Whatever failed (timeout, lost socket), a fresh session is the safe way on: the
      // lock goes with the old one, and some instance leads again within a retry.
      this.connection.reset(error);
    }
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    this.deps.metrics.leader.set(leading ? 1 : 0);
  }

  private clearTimers(): void {
    for (const timer of [this.retryTimer, this.debounceTimer, this.pollTimer]) if (timer) clearTimeout(timer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.retryTimer = this.pollTimer = this.debounceTimer = this.pruneTimer = null;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
