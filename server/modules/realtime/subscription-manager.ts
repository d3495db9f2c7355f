import { parseCursor } from '../../internal/changes/cursor.js';
import { AppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import { AGGREGATE_LIMITS } from '../documents/aggregate.js';
import { parseQuery } from '../documents/query.js';
import { parseExpandInput } from '../documents/expand.js';
import { isEmptyOrderBy, parseSearchText } from '../documents/search.js';
import { DATA_SCHEMA } from '../documents/sql.js';
import { beginSharedFrames, endSharedFrames } from './change-frames.js';
import type { RealtimeConnection } from './connection.js';
import { parsePosition, routeChanges, safeTick } from './live-cursor.js';
import { resumeSubscription } from './live-resume.js';
import type { ChangeFeedLike, FeedBatch, FeedChange, LiveDocuments } from './live-sources.js';
import { Subscription, View, type SubscriptionContext } from './live-subscription.js';
import { AggregateSubscription } from './live-aggregate.js';

/** What a connection may hold: live queries and live aggregates, under one limit and one id space. */
type Live = Subscription | AggregateSubscription;

/** One live query in the admin listing of connections. */
export interface LiveSubscriptionInfo {
  id: string;
  collection: string;
  doc_id: string | null;
  where: unknown;
  order_by: unknown;
  limit: number;
  /** Documents currently in the subscriber's result set (groups, for a live aggregate). */
  documents: number;
  /** A live aggregate's `group_by` and `aggregates` (absent for live queries). */
  aggregate?: { group_by: unknown; aggregates: unknown };
}

/**
 * Live queries of every connection of this instance. One listener on the change feed
 * routes each change to the subscriptions of its table; each subscription turns it into
 * `change` frames with its subscriber's rules.
 */
export class SubscriptionManager {
  private readonly byTable = new Map<string, Set<Live>>();
  private readonly byConnection = new Map<string, Map<string, Live>>();
  private lastTick: number;
  private lastCursor: string | null = null;
  private tickWaiters: Array<{ tick: number; resolve: () => void }> = [];
  private readonly stopFeed: () => void;
  private readonly context: SubscriptionContext;

  constructor(
    private readonly feed: ChangeFeedLike,
    private readonly documents: LiveDocuments,
    log: Logger,
    private readonly maxPerConnection: number,
    private readonly aggregateIntervalMs: number,
  ) {
    this.context = { documents, log, waitForTick: (tick) => this.waitForTick(tick) };
    this.lastTick = parseCursor(feed.currentCursor());
    // Only the tables that have live queries: writes elsewhere are never read from the log.
    this.stopFeed = feed.subscribe(
      (batch) => this.onBatch(batch),
      () => this.byTable.keys(),
    );
  }

  stop(): void {
    this.stopFeed();
    for (const waiter of this.tickWaiters) waiter.resolve();
    this.tickWaiters = [];
  }

  get count(): number {
    let count = 0;
    for (const subs of this.byConnection.values()) count += subs.size;
    return count;
  }

  /** The live queries one connection holds, as the client asked for them (admin listing). */
  describe(connectionId: string): LiveSubscriptionInfo[] {
    return [...(this.byConnection.get(connectionId)?.values() ?? [])].map((subscription) =>
      subscription instanceof AggregateSubscription ? describeAggregate(subscription) : describeQuery(subscription),
    );
  }

  private onBatch(batch: FeedBatch): void {
    // The feed skipped changes (this instance fell behind past the retention): every
    // subscription starts over with a `reset` rather than miss them silently.
    const gap = this.lastCursor !== null && safeTick(batch.fromCursor) > safeTick(this.lastCursor);
    this.lastCursor = batch.cursor;
    if (gap) this.restartAll();
    const groups = new Map<string, FeedChange[]>();
    for (const change of batch.changes) {
      const key = `${change.schema}.${change.table}`;
      if (!this.byTable.has(key)) continue;
      const list = groups.get(key) ?? [];
      list.push(change);
      groups.set(key, list);
    }
    const corked = new Set<RealtimeConnection>();
    // Corking pays when a socket gets several frames; a lone change goes out socket by socket
    // at once rather than after the whole fan-out.
    const cork = batch.changes.length > 1;
    beginSharedFrames();
    try {
      for (const [key, changes] of groups) {
        const routed = routeChanges(changes, 0, 0);
        for (const subscription of this.byTable.get(key) ?? []) {
          if (cork && !corked.has(subscription.connection)) {
            corked.add(subscription.connection);
            subscription.connection.cork();
          }
          subscription.deliver(routed);
        }
      }
    } finally {
      endSharedFrames();
      for (const connection of corked) connection.uncork();
    }
    const tick = parseCursor(batch.cursor);
    if (tick > this.lastTick) this.lastTick = tick;
    this.releaseWaiters();
  }

  private restartAll(): void {
    for (const subs of this.byConnection.values()) {
      for (const subscription of subs.values()) {
        // A live aggregate reads the table afresh: what the gap skipped is in it.
        if (subscription instanceof AggregateSubscription) {
          subscription.changed();
          continue;
        }
        if (subscription.buffer) continue; // still starting: its snapshot is read after this point anyway
        subscription.buffer = [];
        subscription.enqueue(() => subscription.start('reset'));
      }
    }
  }

  private releaseWaiters(): void {
    const current = Math.max(this.lastTick, safeTick(this.feed.currentCursor()));
    this.lastTick = current;
    const ready = this.tickWaiters.filter((waiter) => waiter.tick <= current);
    this.tickWaiters = this.tickWaiters.filter((waiter) => waiter.tick > current);
    for (const waiter of ready) waiter.resolve();
  }

  /** Resolves once the feed has handed every change up to `tick` to the listeners. */
  private async waitForTick(tick: number, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      this.releaseWaiters();
      if (this.lastTick >= tick) return;
      if (Date.now() > deadline)
        throw new AppError('UNAVAILABLE', 'The change feed is behind; retry the subscription.');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        this.tickWaiters.push({
          tick,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    }
  }

  async subscribe(
    connection: RealtimeConnection,
    message: {
      id: string;
      collection: string;
      doc_id?: string;
      query?: Record<string, unknown>;
      resume_from?: string;
      aggregate?: Record<string, unknown>;
    },
  ): Promise<void> {
    const subs = this.roomFor(connection, message.id);
    if (message.aggregate !== undefined) {
      return this.subscribeAggregate(connection, subs, { ...message, aggregate: message.aggregate });
    }
    const query = parseQuery(message.query ?? {});
    const position = message.resume_from !== undefined ? parsePosition(message.resume_from) : null;
    const table = await this.documents.tableOf(message.collection);
    const input = message.query ?? {};
    const search = message.doc_id === undefined ? (parseSearchText(input.search) ?? undefined) : undefined;
    const expand = message.doc_id === undefined ? parseExpandInput(input.expand) : [];
    // Changes to the expanded collections reach this subscription too (refreshExpansions).
    const expandTables =
      expand.length > 0
        ? (await this.documents.expandTargets(message.collection, expand)).map((name) => `${DATA_SCHEMA}.${name}`)
        : [];
    if (search !== undefined && input.highlight !== undefined) {
      throw new AppError('INVALID_REQUEST', 'Live queries do not take highlight.', { details: { field: 'highlight' } });
    }
    const view = new View(
      message.collection,
      message.doc_id ?? null,
      query,
      {
        ...(input.where !== undefined ? { where: input.where } : {}),
        // A live search keeps the query's order (id by default), not relevance: the window is
        // ordered in process, where ranks are not known.
        ...(input.order_by !== undefined || search !== undefined
          ? { order_by: isEmptyOrderBy(input.order_by) ? [['id', 'asc']] : input.order_by }
          : {}),
        ...(input.after !== undefined && input.after !== null ? { after: input.after } : {}),
        ...(search !== undefined ? { search } : {}),
        ...(expand.length > 0 ? { expand } : {}),
      },
      input.limit !== undefined && input.limit !== null,
      search !== undefined ? (docs) => this.documents.searchMatches(message.collection, search, docs) : null,
      expand.length > 0 ? (docs) => this.documents.expand(connection.caller, message.collection, docs, expand) : null,
    );
    const subscription = new Subscription(message.id, connection, view, table, this.context);
    subscription.onFailed = (failed) => this.remove(failed);

    // Registered before the snapshot is read, so no change can fall between the two.
    this.register(connection, subs, subscription, [`${table.schema}.${table.table}`, ...expandTables]);

    subscription.enqueue(async () => {
      if (position) await resumeSubscription(subscription, position, this.feed);
      else await subscription.start('subscribed');
    });
  }

  /** The connection's subscriptions, checked to have room for one more under the id `id`. */
  private roomFor(connection: RealtimeConnection, id: string): Map<string, Live> {
    const subs = this.byConnection.get(connection.id) ?? new Map<string, Live>();
    if (subs.has(id)) {
      throw new AppError('ALREADY_EXISTS', `Subscription "${id}" already exists on this connection.`);
    }
    if (subs.size >= this.maxPerConnection) {
      throw new AppError('INVALID_REQUEST', `A connection may hold at most ${this.maxPerConnection} subscriptions.`, {
        details: { limit: this.maxPerConnection },
      });
    }
    return subs;
  }

  private register(
    connection: RealtimeConnection,
    subs: Map<string, Live>,
    subscription: Live,
    tables: string[],
  ): void {
    subs.set(subscription.id, subscription);
    this.byConnection.set(connection.id, subs);
    subscription.tables = tables;
    for (const key of tables) {
      const set = this.byTable.get(key) ?? new Set<Live>();
      set.add(subscription);
      this.byTable.set(key, set);
    }
  }

  /**
   * A live aggregate: registered on its table before the first evaluation, so every change
   * committed after that evaluation read the table makes another (live-aggregate.ts).
   */
  private async subscribeAggregate(
    connection: RealtimeConnection,
    subs: Map<string, Live>,
    message: { id: string; collection: string; aggregate: Record<string, unknown> },
  ): Promise<void> {
    const table = await this.documents.tableOf(message.collection);
    const subscription = new AggregateSubscription(message.id, connection, message.collection, message.aggregate, {
      documents: this.documents,
      log: this.context.log,
      intervalMs: this.aggregateIntervalMs,
    });
    subscription.onFailed = (failed) => this.remove(failed);
    this.register(connection, subs, subscription, [`${table.schema}.${table.table}`]);
    try {
      await subscription.start();
    } catch (error) {
      // A bad aggregate, a missing read rule: the subscription never started.
      this.remove(subscription);
      throw error;
    }
  }

  unsubscribe(connection: RealtimeConnection, id: string): boolean {
    const subscription = this.byConnection.get(connection.id)?.get(id);
    if (!subscription) return false;
    this.remove(subscription);
    return true;
  }

  /** Drops every subscription of a connection (it closed, or its token expired). */
  dropAll(connection: RealtimeConnection): Live[] {
    const subs = [...(this.byConnection.get(connection.id)?.values() ?? [])];
    for (const subscription of subs) this.remove(subscription);
    return subs;
  }

  /**
   * The connection's caller changed: each live query ends with FORBIDDEN if it holds a
   * document the new caller may not read, else is read again and sent whole (see Subscription.recheck).
   */
  callerChanged(connection: RealtimeConnection): void {
    for (const subscription of this.byConnection.get(connection.id)?.values() ?? []) {
      if (subscription instanceof AggregateSubscription) {
        subscription.callerChanged();
        continue;
      }
      subscription.invalidateReader();
      subscription.holdForRecheck();
      subscription.enqueue(() => subscription.recheck());
    }
  }

  private remove(subscription: Live): void {
    if (subscription instanceof AggregateSubscription) subscription.close();
    subscription.closed = true;
    const subs = this.byConnection.get(subscription.connection.id);
    subs?.delete(subscription.id);
    if (subs && subs.size === 0) this.byConnection.delete(subscription.connection.id);
    for (const key of subscription.tables) {
      const set = this.byTable.get(key);
      set?.delete(subscription);
      if (set && set.size === 0) this.byTable.delete(key);
    }
  }
}

function describeQuery(subscription: Subscription): LiveSubscriptionInfo {
  return {
    id: subscription.id,
    collection: subscription.view.collection,
    doc_id: subscription.view.docId,
    where: subscription.view.input.where ?? null,
    order_by: subscription.view.input.order_by ?? null,
    limit: subscription.view.limit,
    documents: subscription.window.size,
  };
}

function describeAggregate(subscription: AggregateSubscription): LiveSubscriptionInfo {
  const input = subscription.input;
  return {
    id: subscription.id,
    collection: subscription.collection,
    doc_id: null,
    where: input.where ?? null,
    order_by: input.order_by ?? null,
    limit: typeof input.limit === 'number' ? input.limit : AGGREGATE_LIMITS.defaultLimit,
    documents: subscription.groupCount,
    aggregate: { group_by: input.group_by ?? [], aggregates: input.aggregates ?? null },
  };
}
