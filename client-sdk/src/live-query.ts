/** One live query on the client: its copy of the result, its cursor, its snapshots. */
import type { BasaltError } from './errors.js';
import type { Frame } from './frames.js';
import { documentComparator, type OrderDirection } from './order.js';
import type { Doc, DocChangeType } from './wire.js';

/** A document as a live query delivers it (the same shape as every API answer). */
export type LiveDoc<T = Record<string, unknown>> = Doc<T>;

export interface QuerySnapshot<T = Record<string, unknown>> {
  /** The query's result, in its order. */
  docs: LiveDoc<T>[];
  /** What changed since the previous snapshot (the first lists every document as added). */
  changes: Array<{ type: DocChangeType; doc: LiveDoc<T> }>;
}

/** The query part a live query sends: as in `/query`, without `after`. */
export interface LiveQuery {
  where?: unknown[];
  order_by?: Array<[string, OrderDirection]>;
  limit?: number;
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

/** Whatever runs live queries for the db module (the client's realtime connection). */
export interface LiveQueries {
  subscribe(
    target: LiveTarget,
    onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    onError?: (error: BasaltError) => void,
  ): () => void;
}

/** One live query: keeps the client's copy and the cursor to resume from. */
export class LiveSubscription {
  docs = new Map<string, LiveDoc<unknown>>();
  cursor: string | null = null;
  ready = false;
  /** Resubscribed once after the server dropped it for an expired token; a second drop is final. */
  retried = false;
  private pending: Array<{ type: DocChangeType; doc: LiveDoc<unknown> }> = [];
  private flushScheduled = false;
  private readonly compare: (a: LiveDoc<unknown>, b: LiveDoc<unknown>) => number;

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
      if (Array.isArray(frame.docs)) this.replace(frame.docs as LiveDoc<unknown>[], !this.ready);
      this.ready = true;
    } else if (frame.type === 'change') {
      const doc = frame.doc as LiveDoc<unknown>;
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

  private replace(docs: LiveDoc<unknown>[], first: boolean): void {
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
    this.schedule(true);
  }

  private push(change: { type: DocChangeType; doc: LiveDoc<unknown> }): void {
    this.pending.push(change);
    this.schedule(false);
  }

  /** Changes that arrive together reach the callback as one snapshot. */
  private schedule(always: boolean): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      const changes = this.pending;
      this.pending = [];
      if (changes.length === 0 && !always) return;
      this.onSnapshot({ docs: [...this.docs.values()].sort(this.compare), changes });
    });
  }
}

/** The part of a query body a live query takes (`after` does not apply to a live result). */
export function liveQueryOf(body: {
  where?: unknown[];
  order_by?: Array<[string, OrderDirection]>;
  limit?: number;
  search?: string;
  expand?: string[];
}): LiveQuery {
  return {
    ...(body.where !== undefined ? { where: body.where } : {}),
    ...(body.order_by !== undefined ? { order_by: body.order_by } : {}),
    ...(body.limit !== undefined ? { limit: body.limit } : {}),
    ...(body.search !== undefined ? { search: body.search } : {}),
    ...(body.expand !== undefined ? { expand: body.expand } : {}),
  };
}
