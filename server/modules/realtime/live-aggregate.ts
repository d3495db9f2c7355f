/**
 * Live aggregates (docs/realtime.md#live-aggregates): `/aggregate` as a subscription. The
 * groups are computed in SQL with the subscriber's read rule, as the HTTP call does, and
 * computed again when the collection changes — at most once per interval, however many
 * writes land meanwhile — and sent whole, only when they differ from what was last sent.
 *
 * Re-running the statement (rather than folding each change into the groups in process)
 * keeps one definition of what an aggregate means: the read rule in SQL, the numbers and
 * the order exactly as `/aggregate` answers them, and `avg`, `min` and `max`, which a
 * delete cannot be taken out of without the rows.
 */
import type { AggregateGroup } from '../documents/aggregate.js';
import type { RealtimeConnection } from './connection.js';
import type { RoutedChange } from './live-cursor.js';
import type { LiveDocuments } from './live-sources.js';
import { reportFailure, type SubscriptionContext } from './live-subscription.js';

/** What a live aggregate needs of the manager: the documents module, the log, and its pace. */
export interface AggregateContext extends Pick<SubscriptionContext, 'log'> {
  documents: Pick<LiveDocuments, 'aggregate'>;
  /** The least time between two evaluations (BASALT_REALTIME_AGGREGATE_INTERVAL_MS). */
  intervalMs: number;
}

/** One live aggregate of one connection. */
export class AggregateSubscription {
  closed = false;
  /** The change-feed table (`schema.table`) of its collection. */
  tables: string[] = [];
  onFailed: ((subscription: AggregateSubscription) => void) | null = null;
  /** The groups last sent, serialised; null before the first frame. */
  private sent: string | null = null;
  groupCount = 0;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** A change arrived (or the caller changed) since the running evaluation read the table. */
  private stale = false;
  /** The next evaluation waits for no interval (the caller changed). */
  private urgent = false;
  private lastRunAt = 0;

  constructor(
    readonly id: string,
    readonly connection: RealtimeConnection,
    readonly collection: string,
    readonly input: Record<string, unknown>,
    private readonly context: AggregateContext,
  ) {}

  /** The first evaluation, sent whatever it holds: the subscriber's `aggregate` frame that starts it. */
  async start(): Promise<void> {
    await this.cycle();
  }

  /** Changes of its collection: the groups are computed again, within the interval. */
  deliver(routed: RoutedChange[]): void {
    if (routed.length > 0) this.changed();
  }

  /** The collection changed (or may have: the feed skipped changes): the groups are computed again, within the interval. */
  changed(): void {
    this.schedule();
  }

  /** The connection's caller changed: the groups are those the new caller may read, computed now. */
  callerChanged(): void {
    this.schedule(true);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /**
   * Runs the next evaluation once the interval since the last one has passed (at once if it
   * has, or when `now`). One at a time: changes during a run make one more run after it.
   */
  private schedule(now = false): void {
    if (this.closed) return;
    if (this.running) {
      this.stale = true;
      this.urgent ||= now;
      return;
    }
    if (this.timer && !now) return;
    if (this.timer) clearTimeout(this.timer);
    const wait = now ? 0 : Math.max(0, this.lastRunAt + this.context.intervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, wait);
    // Never what keeps a stopping process alive: its sockets close and drop this anyway.
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.closed) return;
    try {
      await this.cycle();
    } catch (error) {
      this.fail(error);
    }
  }

  /** One evaluation, never two at once (an older answer must not land after a newer one); then the next if due. */
  private async cycle(): Promise<void> {
    this.running = true;
    this.stale = false;
    this.urgent = false;
    try {
      await this.evaluate();
    } finally {
      this.running = false;
    }
    if (this.stale) this.schedule(this.urgent);
  }

  private async evaluate(): Promise<void> {
    this.lastRunAt = Date.now();
    // The caller of this moment: after a sign-out the next evaluation is the new caller's.
    const { groups } = await this.context.documents.aggregate(this.connection.caller, this.collection, this.input);
    if (this.closed) return;
    this.send(groups);
  }

  private send(groups: AggregateGroup[]): void {
    const text = JSON.stringify(groups);
    if (text === this.sent) return;
    this.sent = text;
    this.groupCount = groups.length;
    this.connection.send({ type: 'aggregate', id: this.id, groups });
  }

  private fail(error: unknown): void {
    if (this.closed) return;
    this.close();
    reportFailure(this.connection, this.context.log, this.id, error);
    this.onFailed?.(this);
  }
}
