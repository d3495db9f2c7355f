import { Gauge, type Counter } from 'prom-client';
import type { Database, Queryable } from '../db.js';
import { AppError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { ReconnectingClient } from '../reconnecting-client.js';
import { formatCursor, parseCursor } from './cursor.js';
import {
  ChangeRepository,
  CHANGES_CHANNEL,
  wakeTicker,
  TICKS_CHANNEL,
  tickerSql,
  type ChangeRow,
  type TableFilter,
} from './repository.js';
import { Ticker } from './ticker.js';

export { compareCursors, formatCursor, parseCursor } from './cursor.js';
export type { TableFilter } from './repository.js';

/**
 * One row change from the log, as readers get it: the stored row (`id`, basalt.changes.id
 * as a string, stable: use it as the event id; `tick`, whose cursor is formatCursor(tick);
 * `txid`, shared by the changes of one transaction) with the tick's time as text.
 */
export interface Change extends Omit<ChangeRow, 'tickAt'> {
  /** When the log saw the transaction committed: its tick's time, at most a tick interval late. */
  committedAt: string;
}

/** The changes after `fromCursor` up to and including `cursor`, in commit order. */
export interface ChangeBatch {
  fromCursor: string;
  cursor: string;
  changes: Change[];
}

export type ChangeListener = (batch: ChangeBatch) => void;

/**
 * The tables whose changes a listener needs, as `schema.table` keys, asked for before every
 * read of the log; 'all' for every table. A listener gets at least the changes of its tables
 * (a batch also carries those other listeners asked for), so it still filters by table.
 */
export type ChangeInterest = () => 'all' | Iterable<string>;

/** What a round reads: every table, or just these `schema.table` keys. */
type Wanted = 'all' | Set<string>;

export interface ChangeFeedDeps {
  db: Database;
  log: Logger;
  metrics: Metrics;
  databaseUrl: string;
}

export interface ChangeFeedOptions {
  /**
   * How often the feed looks for new ticks when no NOTIFY arrived, while changes flow
   * (default 250 ms). The poll is only the safety net for a lost notification.
   */
  pollIntervalMs?: number;
  /**
   * The longest the feed's poll stretches to while nothing changes: each poll that finds
   * nothing doubles the wait up to this, and the next change brings it back to
   * pollIntervalMs. Default 5 s (ticks NOTIFY the feed, so the poll is only a safety
   * net); when pollIntervalMs is given and this is not, the poll stays at pollIntervalMs
   * (tests that tick by hand rely on a steady poll).
   */
  idlePollIntervalMs?: number;
  /** How long changes stay readable by readSince (default 24 h). */
  retentionMs?: number;
  /** Run a ticker (default true). Every instance should; only one leads. */
  ticker?: boolean;
  /** Heartbeat tick interval of the leader (default 5 s). */
  heartbeatMs?: number;
  /** How often the leader polls for changes when no NOTIFY arrived (default 250 ms). */
  tickerPollIntervalMs?: number;
  /**
   * How far the leader's poll stretches while nothing commits (default 5 s). It is what
   * finds writes made with plain SQL (they send no NOTIFY); at rest that is no later than
   * the heartbeat tick (5 s), which takes them too, and a write through the API wakes the
   * ticker at once.
   */
  tickerIdlePollIntervalMs?: number;
  /** How often a follower tries to take the lead (default 1 s). */
  leaderRetryMs?: number;
  /** How often the leader prunes (default 60 s). */
  pruneIntervalMs?: number;
}

/** Ticks read per round; a round's changes go to listeners as one batch. */
const TICKS_PER_ROUND = 100;
const PRUNE_BATCH_SIZE = 5_000;
/** How far the polls stretch while nothing changes (see ChangeFeedOptions). */
const IDLE_POLL_INTERVAL_MS = 5_000;
const TICKER_IDLE_POLL_INTERVAL_MS = 5_000;

/**
 * The in-process reader of the change log (see docs/changes.md). Hands every change, once
 * and in commit order, to the listeners of this instance, and answers readSince for
 * clients resuming from a cursor. LISTEN/NOTIFY only wakes it; the log is read from the
 * tables, and a poll catches anything a lost notification would have announced.
 */
export class ChangeFeed {
  private readonly repo: ChangeRepository;
  private readonly ticker: Ticker | null;
  private readonly connection: ReconnectingClient;
  /** Each listener with the tables it needs (null: every table). */
  private readonly listeners = new Map<ChangeListener, ChangeInterest | null>();
  private readonly pollIntervalMs: number;
  private readonly idlePollIntervalMs: number;
  /** The wait before the next poll: pollIntervalMs while changes flow, growing while idle. */
  private pollDelayMs: number;
  private readonly retentionSeconds: number;
  private position: number | null = null;
  private positionAtMs = 0;
  private dbClockOffsetMs = 0;
  private started = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private nudgeTimer: NodeJS.Timeout | null = null;
  private pumping: Promise<void> | null = null;
  private pumpAgain = false;
  private failing = false;
  private readonly changesTotal: Counter;
  private readonly tickGauge: Gauge;

  constructor(
    private readonly deps: ChangeFeedDeps,
    options: ChangeFeedOptions = {},
  ) {
    this.repo = new ChangeRepository(deps.db);
    this.pollIntervalMs = options.pollIntervalMs ?? 250;
    this.idlePollIntervalMs = Math.max(
      this.pollIntervalMs,
      options.idlePollIntervalMs ?? (options.pollIntervalMs === undefined ? IDLE_POLL_INTERVAL_MS : 0),
    );
    this.pollDelayMs = this.pollIntervalMs;
    this.retentionSeconds = Math.max(1, Math.round((options.retentionMs ?? 86_400_000) / 1000));
    const registry = deps.metrics.registry;
    const existing = <T>(name: string): T | undefined => registry.getSingleMetric(name) as T | undefined;
    const lag: Gauge =
      existing<Gauge>('basalt_change_feed_lag_seconds') ??
      new Gauge({
        name: 'basalt_change_feed_lag_seconds',
        help: 'Seconds since the newest tick this instance delivered was recorded (saw-tooth up to the 5 s heartbeat when idle).',
        registers: [registry],
        collect: () => {
          if (this.position !== null) lag.set(Math.max(0, this.lagMs() / 1000));
        },
      });
    this.tickGauge =
      existing<Gauge>('basalt_change_feed_tick') ??
      deps.metrics.gauge('basalt_change_feed_tick', 'The newest change-log tick this instance delivered.');
    this.changesTotal =
      existing<Counter>('basalt_change_feed_changes_total') ??
      deps.metrics.counter(
        'basalt_change_feed_changes_total',
        'Changes this instance read and delivered to its listeners (of the tables they follow).',
      );
    const tickerMetrics = {
      leader:
        existing<Gauge>('basalt_change_feed_leader') ??
        deps.metrics.gauge('basalt_change_feed_leader', '1 while this instance records the change-log ticks.'),
      ticks:
        existing<Counter>('basalt_change_feed_ticks_total') ??
        deps.metrics.counter('basalt_change_feed_ticks_total', 'Change-log ticks recorded by this instance.'),
      pruned:
        existing<Counter<'kind'>>('basalt_change_feed_pruned_total') ??
        deps.metrics.counter('basalt_change_feed_pruned_total', 'Rows pruned from the change log, by kind.', ['kind']),
    };
    this.connection = new ReconnectingClient({
      url: deps.databaseUrl,
      applicationName: 'basalt-change-feed',
      log: deps.log,
      onConnect: async (client) => {
        await tickerSql.listen(client, TICKS_CHANNEL);
        await this.ticker?.attach(client);
        // Ticks may have been recorded while the connection was down.
        this.requestPump();
      },
      onLost: () => this.ticker?.detach(),
      onNotification: (message) => {
        if (message.channel === CHANGES_CHANNEL) this.ticker?.notify();
        else this.requestPump();
      },
    });
    this.ticker =
      options.ticker === false
        ? null
        : new Ticker(
            { connection: this.connection, log: deps.log, repo: this.repo, metrics: tickerMetrics },
            {
              pollIntervalMs: options.tickerPollIntervalMs ?? 250,
              idlePollIntervalMs: Math.max(
                options.tickerPollIntervalMs ?? 250,
                options.tickerIdlePollIntervalMs ?? TICKER_IDLE_POLL_INTERVAL_MS,
              ),
              heartbeatMs: options.heartbeatMs ?? 5_000,
              debounceMs: 5,
              leaderRetryMs: options.leaderRetryMs ?? 1_000,
              retentionSeconds: this.retentionSeconds,
              pruneIntervalMs: options.pruneIntervalMs ?? 60_000,
              pruneBatchSize: PRUNE_BATCH_SIZE,
            },
          );
  }

  /** Begins reading at the newest tick; resolves once currentCursor() is known (or, if Postgres is down, keeps trying). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.ticker?.start();
    void this.connection.start();
    this.schedulePoll();
    await this.initialise().catch((error: unknown) => {
      this.deps.log.error({ err: error }, 'change feed could not read the change log; retrying');
    });
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    if (this.nudgeTimer) clearTimeout(this.nudgeTimer);
    this.nudgeTimer = null;
    // A read stuck on an unreachable Postgres must not hold up shutdown; its result is dropped.
    await Promise.race([this.pumping?.catch(() => undefined), sleep(1_000)]);
    await this.ticker?.stop();
    await this.connection.stop();
  }

  /**
   * A write committed through this instance: tick soon. The leader ticks itself; another
   * instance wakes the leader with a NOTIFY sent outside any write transaction, so it
   * costs no write a turn on Postgres' notification lock. Bursts collapse into one.
   */
  nudge(): void {
    this.pollDelayMs = this.pollIntervalMs;
    if (this.ticker?.isLeader) {
      this.ticker.notify();
      return;
    }
    if (this.nudgeTimer || !this.started) return;
    this.nudgeTimer = setTimeout(() => {
      this.nudgeTimer = null;
      const client = this.connection.current;
      if (client) wakeTicker(client).catch(() => undefined);
    }, 2);
    this.nudgeTimer.unref();
  }

  /** Whether this instance's ticker currently leads (records the ticks). */
  get isLeader(): boolean {
    return this.ticker?.isLeader ?? false;
  }

  /** Position after which everything will be delivered to listeners registered now. */
  currentCursor(): string {
    if (this.position === null) throw new AppError('UNAVAILABLE', 'The change feed is not ready yet.');
    return formatCursor(this.position);
  }

  /**
   * A cursor covering every transaction committed before the call (recording a tick if
   * needed). Once this instance's currentCursor() reaches it, listeners have received every
   * change a query started after this call can see: the way to tie a snapshot to the stream.
   */
  async coveringCursor(): Promise<string> {
    return formatCursor(await this.repo.coveringTick());
  }

  /**
   * Calls `listener` with every batch delivered from now on, synchronously and in order.
   * A batch whose fromCursor is not the previous batch's cursor means changes were lost
   * (this instance fell behind by more than the retention): treat it as a reset.
   *
   * With `interest`, the feed reads from the log only the changes of the tables some listener
   * needs at that moment, so writes to tables nobody follows cost no read at all. The answer
   * may grow at any time (a new live query): the tables it adds are read before the next
   * batch is handed out, so a listener never misses a change of a table it named before that
   * batch was delivered.
   */
  subscribe(listener: ChangeListener, interest?: ChangeInterest): () => void {
    this.listeners.set(listener, interest ?? null);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * Every change after `cursor` up to this instance's current position, in commit order,
   * each once. With `limit`, a page ends on a tick boundary: it stops after the tick in
   * which the `limit`-th change lies, so it holds at least `limit` changes (more when that
   * tick goes on) unless it reached the current position, and its cursor is where the next
   * page starts; a page with fewer than `limit` changes is the last. A cursor ahead of this instance (issued by
   * another that is a few milliseconds ahead) returns no changes and that cursor; the
   * batches this instance delivers next may then include changes at or before it, which
   * callers skip by comparing `change.tick`.
   */
  async readSince(cursor: string, options: { tables?: TableFilter[]; limit?: number } = {}): Promise<ChangeBatch> {
    const after = parseCursor(cursor);
    const limit = options.limit;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
      throw new AppError('INVALID_REQUEST', 'limit must be a positive integer.', { details: { field: 'limit' } });
    }
    const tables: unknown = options.tables;
    if (
      tables !== undefined &&
      (!Array.isArray(tables) ||
        !tables.every(
          (entry: unknown) =>
            typeof (entry as TableFilter | null)?.schema === 'string' &&
            typeof (entry as TableFilter | null)?.table === 'string',
        ))
    ) {
      throw new AppError('INVALID_REQUEST', 'tables must be a list of {schema, table}.', {
        details: { field: 'tables' },
      });
    }
    if (this.position === null) await this.initialise();
    const upto = this.position ?? 0;
    const bounds = await this.repo.tickBounds();
    if (after < bounds.oldest) {
      throw new AppError('CURSOR_EXPIRED', undefined, { details: { cursor, oldest: formatCursor(bounds.oldest) } });
    }
    if (after > bounds.newest) {
      // Not a position of this database's log (restored from a backup, or another database).
      throw new AppError('CURSOR_EXPIRED', 'The cursor is not a position of this change log; start over.', {
        details: { cursor },
      });
    }
    const canonical = formatCursor(after);
    if (after >= upto) return { fromCursor: canonical, cursor: canonical, changes: [] };
    const rows = await this.repo.changesOfTicks(after, upto, {
      tables: options.tables,
      limit: limit === undefined ? null : limit + 1,
    });
    if (limit === undefined || rows.length <= limit) {
      return { fromCursor: canonical, cursor: formatCursor(upto), changes: rows.map(toChange) };
    }
    // Pages end on tick boundaries (a cursor names a tick): finish the tick in which the
    // limit was reached, so a page is short only when it reached the current position.
    const endTick = rows[limit - 1]?.tick ?? upto;
    let kept = rows.slice(0, limit);
    if (rows[limit]?.tick === endTick) {
      const rest = await this.repo.changesOfTicks(endTick - 1, endTick, { tables: options.tables });
      const seen = new Set(kept.map((row) => row.id));
      kept = kept.concat(rest.filter((row) => !seen.has(row.id)));
    }
    return { fromCursor: canonical, cursor: formatCursor(endTick), changes: kept.map(toChange) };
  }

  /** Records a tick now if anything committed since the last (tests, tools); null when not connected or nothing to tick. */
  tickNow(force = false): Promise<number | null> {
    return this.ticker?.tickNow(force) ?? Promise.resolve(null);
  }

  /** Prunes the log now (the leader also does this every minute). */
  async prune(): Promise<{ ticks: number; changes: number; heldBy: string[] }> {
    return this.repo.prune(this.retentionSeconds, PRUNE_BATCH_SIZE);
  }

  /** The durable position of a named consumer (e.g. the functions dispatcher), or null if it never saved one. */
  async consumerCursor(name: string, q?: Queryable): Promise<string | null> {
    const tick = await this.repo.consumerTick(name, q);
    return tick === null ? null : formatCursor(tick);
  }

  /**
   * Saves a consumer's position, in the caller's transaction if given. While saved, pruning
   * keeps every tick after it, so a consumer that stops for good must be removed.
   */
  async saveConsumerCursor(name: string, cursor: string, q?: Queryable): Promise<void> {
    await this.repo.saveConsumerTick(name, parseCursor(cursor), q);
  }

  async removeConsumer(name: string, q?: Queryable): Promise<void> {
    await this.repo.deleteConsumer(name, q);
  }

  /** Time since the newest delivered tick was recorded, on Postgres' clock. */
  private lagMs(): number {
    return Date.now() + this.dbClockOffsetMs - this.positionAtMs;
  }

  private async initialise(): Promise<void> {
    if (this.position !== null) return;
    const newest = await this.repo.newestTick();
    if (this.position !== null) return;
    this.position = newest.id;
    this.positionAtMs = newest.createdAtMs;
    this.dbClockOffsetMs = newest.dbNowMs - Date.now();
    this.tickGauge.set(newest.id);
  }

  /**
   * The safety-net poll. Self-scheduling rather than an interval, so that its wait can grow
   * while nothing changes: an idle instance then wakes a few times a minute, not four
   * times a second (NOTIFY still wakes it at once when a tick is recorded).
   */
  private schedulePoll(): void {
    if (!this.started) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      this.requestPump();
      this.schedulePoll();
      this.pollDelayMs = Math.min(this.pollDelayMs * 2, this.idlePollIntervalMs);
    }, this.pollDelayMs);
    this.pollTimer.unref();
  }

  private requestPump(): void {
    if (!this.started) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = this.pump()
      .then(
        () => {
          if (this.failing) this.deps.log.info('change feed is reading the change log again');
          this.failing = false;
        },
        (error: unknown) => {
          if (!this.failing) this.deps.log.warn({ err: error }, 'change feed failed to read the change log; retrying');
          this.failing = true;
        },
      )
      .finally(() => {
        this.pumping = null;
        if (this.pumpAgain) {
          this.pumpAgain = false;
          this.requestPump();
        }
      });
  }

  private async pump(): Promise<void> {
    if (this.position === null) await this.initialise();
    for (;;) {
      const from = this.position;
      if (from === null || !this.started) return;
      const poll = await this.repo.pollTicks(from, TICKS_PER_ROUND);
      this.dbClockOffsetMs = poll.dbNowMs - Date.now();
      const last = poll.ticks.at(-1);
      if (!last) return;
      let after = from;
      if (poll.oldestTick !== null && poll.oldestTick > from) {
        // The ticks right after our position were pruned: those changes are gone.
        this.deps.log.error(
          { position: from, oldest: poll.oldestTick },
          'change feed fell behind the retention; changes were lost to pruning',
        );
        // The batch's fromCursor then differs from the previous batch's cursor: listeners see the gap.
        after = poll.oldestTick;
      }
      let wanted = this.wanted();
      let rows = after < last.id ? await this.readWanted(after, last.id, wanted) : [];
      if (!this.started || this.position !== from) return;
      // A listener may have named more tables while the read was in flight: read the range
      // again for all of them before delivering. Rare (a new live query on another table),
      // and checked again after each read, so the batch handed out below covers every table
      // named up to that synchronous moment.
      for (let now = this.wanted(); after < last.id && !covers(wanted, now); now = this.wanted()) {
        wanted = now;
        rows = await this.readWanted(after, last.id, wanted);
        if (!this.started || this.position !== from) return;
      }
      this.advance(after, last.id, last.createdAtMs, rows.map(toChange));
      if (poll.ticks.length < TICKS_PER_ROUND) return;
    }
  }

  /** The union of what the listeners need right now. */
  private wanted(): Wanted {
    const tables = new Set<string>();
    for (const interest of this.listeners.values()) {
      if (interest === null) return 'all';
      const named = interest();
      if (named === 'all') return 'all';
      for (const key of named) tables.add(key);
    }
    return tables;
  }

  private readWanted(after: number, upto: number, wanted: Wanted): Promise<ChangeRow[]> {
    if (wanted === 'all') return this.repo.changesOfTicks(after, upto);
    if (wanted.size === 0) return Promise.resolve([]);
    const tables: TableFilter[] = [];
    for (const key of wanted) {
      const dot = key.indexOf('.');
      tables.push({ schema: key.slice(0, dot), table: key.slice(dot + 1) });
    }
    return this.repo.changesOfTicks(after, upto, { tables });
  }

  private advance(from: number, to: number, tickAtMs: number, changes: Change[]): void {
    // Changes flow: poll at the fast interval again (a heartbeat's empty tick does not count).
    if (changes.length > 0) this.pollDelayMs = this.pollIntervalMs;
    this.position = to;
    this.positionAtMs = tickAtMs;
    this.tickGauge.set(to);
    this.changesTotal.inc(changes.length);
    const batch: ChangeBatch = { fromCursor: formatCursor(from), cursor: formatCursor(to), changes };
    for (const listener of [...this.listeners.keys()]) {
      try {
        listener(batch);
      } catch (error) {
        this.deps.log.error({ err: error }, 'a change-feed listener threw');
      }
    }
  }
}

/** Whether a read of `read` holds every change that `needed` asks for. */
function covers(read: Wanted, needed: Wanted): boolean {
  if (read === 'all') return true;
  if (needed === 'all') return false;
  for (const key of needed) if (!read.has(key)) return false;
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function toChange(row: ChangeRow): Change {
  return {
    id: row.id,
    tick: row.tick,
    txid: row.txid,
    schema: row.schema,
    table: row.table,
    op: row.op,
    rowId: row.rowId,
    oldRow: row.oldRow,
    newRow: row.newRow,
    origin: row.origin,
    committedAt: row.tickAt.toISOString(),
  };
}
