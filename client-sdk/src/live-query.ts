/** One live query on the client: its copy of the result, its cursor, its snapshots. */
import type { BasaltError } from './errors.js';
import type { Frame } from './frames.js';
import { documentComparator, type OrderDirection } from './order.js';
import type { Doc, DocChangeType } from './wire.js';

/**
 * A document as a live query delivers it: the same type as every API answer.
 * @deprecated Use `Doc`: live queries and get() deliver one document type.
 */
export type LiveDoc<T = Record<string, unknown>> = Doc<T>;

export interface QuerySnapshot<T = Record<string, unknown>> {
  /**
   * The query's result, in its order: with `limit`, its first `limit` documents (after the
   * `startAfter` cursor, if given); without, every match (a query matching more than 1000
   * documents fails with INVALID_REQUEST rather than being cut short).
   */
  docs: Doc<T>[];
  /** What changed since the previous snapshot (the first lists every document as added). */
  changes: Array<{ type: DocChangeType; doc: Doc<T> }>;
  /** With `limit`: more documents match beyond `docs`. Always false without `limit`. */
  hasMore: boolean;
  /**
   * Computed from the offline cache: the query is not (yet, or any more) confirmed by the
   * server. Always false without `offline` (docs/offline.md).
   */
  fromCache: boolean;
  /** Some document of `docs` carries local writes the server has not acknowledged yet. */
  hasPendingWrites: boolean;
}

/**
 * What an offline client knows of a live query before the server answers: its cached result
 * and the cursor to resume from. The offline engine's subscription (offline/tab-socket.ts,
 * `seededSocket`) starts from it and keeps `cursor` current for the cache.
 */
export interface LiveSeed {
  docs: Doc<unknown>[];
  cursor: string | null;
  hasMore: boolean;
}

/** The query part a live query sends: as in `/query` (`after` starts the result after that cursor). */
export interface LiveQuery {
  where?: unknown[];
  order_by?: Array<[string, OrderDirection]>;
  limit?: number;
  after?: string;
  /** Full-text search; the server decides what matches (live searches keep order_by's order, id by default). */
  search?: string;
  /** References to expand in every result; a change to an expanded document modifies the results expanding it. */
  expand?: string[];
}

/** What a live query follows: a query over a collection, or one document with `docId`. */
export interface LiveTarget {
  collection: string;
  docId?: string;
  query?: LiveQuery;
}

/** What a live aggregate follows: the body of `/aggregate` over a collection. */
export interface LiveAggregateTarget {
  collection: string;
  aggregate: Record<string, unknown>;
}

/** Whatever runs live queries for the db module (the client's realtime connection). */
export interface LiveQueries {
  subscribe(
    target: LiveTarget,
    onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    onError?: (error: BasaltError) => void,
  ): () => void;
  subscribeAggregate(
    target: LiveAggregateTarget,
    onGroups: (groups: unknown[]) => void,
    onError?: (error: BasaltError) => void,
  ): () => void;
}

/** What the socket holds for a live query or a live aggregate: its subscribe message and its frames. */
export interface SocketSubscription {
  readonly id: string;
  /** Where to resume from after a reconnect (live queries; null to read afresh). */
  cursor: string | null;
  /** Resubscribed once after the server dropped it for an expired token; a second drop is final. */
  retried: boolean;
  readonly onError: (error: BasaltError) => void;
  message(): Frame;
  handle(frame: Frame): void;
}

/**
 * One live aggregate: the server sends the groups whole when they change (at most once per
 * its interval, 250 ms by default), and again after a reconnect; the callback hears of
 * each different list once.
 */
export class LiveAggregate implements SocketSubscription {
  cursor: string | null = null;
  retried = false;
  private last: string | null = null;

  constructor(
    readonly id: string,
    readonly target: LiveAggregateTarget,
    private readonly onGroups: (groups: unknown[]) => void,
    readonly onError: (error: BasaltError) => void,
  ) {}

  message(): Frame {
    return { type: 'subscribe', id: this.id, collection: this.target.collection, aggregate: this.target.aggregate };
  }

  handle(frame: Frame): void {
    if (frame.type !== 'aggregate' || !Array.isArray(frame.groups)) return;
    this.retried = false;
    const text = JSON.stringify(frame.groups);
    if (text === this.last) return;
    this.last = text;
    this.onGroups(frame.groups);
  }
}

/** One live query: keeps the client's copy and the cursor to resume from. */
export class LiveSubscription implements SocketSubscription {
  docs = new Map<string, Doc<unknown>>();
  cursor: string | null = null;
  ready = false;
  /** Resubscribed once after the server dropped it for an expired token; a second drop is final. */
  retried = false;
  /** Whether documents beyond the window match (the server's `has_more`). */
  hasMore = false;
  private pending: Array<{ type: DocChangeType; doc: Doc<unknown> }> = [];
  /** `hasMore` changed since the last snapshot. */
  private moreChanged = false;
  private flushScheduled = false;
  private readonly compare: (a: Doc<unknown>, b: Doc<unknown>) => number;

  constructor(
    readonly id: string,
    readonly target: LiveTarget,
    private readonly onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    readonly onError: (error: BasaltError) => void,
  ) {
    this.compare = documentComparator(target.query?.order_by);
  }

  message(): Frame {
    return {
      type: 'subscribe',
      id: this.id,
      collection: this.target.collection,
      ...(this.target.docId !== undefined ? { doc_id: this.target.docId } : {}),
      ...(this.target.query !== undefined ? { query: this.target.query } : {}),
      ...(this.cursor !== null ? { resume_from: this.cursor } : {}),
    };
  }

  handle(frame: Frame): void {
    if (typeof frame.cursor === 'string') this.cursor = frame.cursor;
    if (frame.type === 'subscribed' || frame.type === 'reset') {
      if (typeof frame.has_more === 'boolean') this.setHasMore(frame.has_more);
      if (Array.isArray(frame.docs)) this.replace(frame.docs as Doc<unknown>[], !this.ready);
      this.ready = true;
    } else if (frame.type === 'more') {
      if (typeof frame.has_more === 'boolean' && this.setHasMore(frame.has_more)) this.schedule(false);
    } else if (frame.type === 'change') {
      const doc = frame.doc as Doc<unknown>;
      const type = frame.change as DocChangeType;
      const known = this.docs.get(doc.id);
      // A change already reflected (the server replays from the cursor after a reconnect) is skipped.
      if (type === 'removed') {
        if (!known) return;
        this.docs.delete(doc.id);
        // The server may send only `{id}` (when it cannot show the receiver any copy): report
        // the copy this client held, which is what left its result.
        this.push({ type, doc: known });
        return;
      }
      if (known && known.version === doc.version && known.updated_at === doc.updated_at) return;
      this.docs.set(doc.id, doc);
      this.push({ type: type === 'added' && known ? 'modified' : type, doc });
    }
  }

  private setHasMore(hasMore: boolean): boolean {
    if (hasMore === this.hasMore) return false;
    this.hasMore = hasMore;
    this.moreChanged = true;
    return true;
  }

  /**
   * The whole result anew: the first snapshot, or a `reset` (the client was away too long,
   * or the session changed user). Whatever it changes reaches the callback as one snapshot,
   * and a reset that changes nothing makes none.
   */
  private replace(docs: Doc<unknown>[], first: boolean): void {
    const next = new Map(docs.map((doc) => [doc.id, doc]));
    if (first) {
      this.docs = next;
      this.pending.push(...docs.map((doc) => ({ type: 'added' as const, doc })));
      this.schedule(true);
      return;
    }
    for (const [id, doc] of this.docs) if (!next.has(id)) this.push({ type: 'removed', doc });
    for (const [id, doc] of next) {
      const known = this.docs.get(id);
      if (!known) this.push({ type: 'added', doc });
      else if (known.version !== doc.version || known.updated_at !== doc.updated_at)
        this.push({ type: 'modified', doc });
    }
    this.docs = next;
    this.schedule(false);
  }

  private push(change: { type: DocChangeType; doc: Doc<unknown> }): void {
    this.pending.push(change);
    this.schedule(false);
  }

  /**
   * Changes that arrive together reach the callback as one snapshot (`always`: even none).
   * Not private: the offline engine's subscription, started from its cache, calls it too.
   */
  schedule(always: boolean): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      const changes = this.pending;
      this.pending = [];
      const moreChanged = this.moreChanged;
      this.moreChanged = false;
      if (changes.length === 0 && !always && !moreChanged) return;
      this.onSnapshot({
        docs: [...this.docs.values()].sort(this.compare),
        changes,
        hasMore: this.hasMore,
        fromCache: false,
        hasPendingWrites: false,
      });
    });
  }
}

/** The part of a query body a live query takes: all of it (`after` starts the live result after that cursor). */
export function liveQueryOf(body: {
  where?: unknown[];
  order_by?: Array<[string, OrderDirection]>;
  limit?: number;
  after?: string | null;
  search?: string;
  expand?: string[];
}): LiveQuery {
  return {
    ...(body.where !== undefined ? { where: body.where } : {}),
    ...(body.order_by !== undefined ? { order_by: body.order_by } : {}),
    ...(body.limit !== undefined ? { limit: body.limit } : {}),
    ...(typeof body.after === 'string' ? { after: body.after } : {}),
    ...(body.search !== undefined ? { search: body.search } : {}),
    ...(body.expand !== undefined ? { expand: body.expand } : {}),
  };
}
