import type { Caller } from '../../internal/caller.js';
import { formatCursor, parseCursor } from '../../internal/changes/cursor.js';
import { AppError, isAppError, isUnavailableError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import {
  compareDocuments,
  deepEqual,
  matchesQuery,
  normalizeTimestamp,
  parseQuery,
  type Document,
  type JsonObject,
  type ParsedQuery,
} from '../documents/query.js';
import { CLOSE_TRY_AGAIN_LATER, type RealtimeConnection } from './connection.js';

/** One row change as the change feed hands it out. */
export interface FeedChange {
  id: string;
  tick: number;
  schema: string;
  table: string;
  op: 'insert' | 'update' | 'delete';
  rowId: string;
  oldRow: Record<string, unknown> | null;
  newRow: Record<string, unknown> | null;
}

export interface FeedBatch {
  fromCursor: string;
  cursor: string;
  changes: FeedChange[];
}

/** What realtime needs of the change feed (server/internal/changes). */
export interface ChangeFeedLike {
  currentCursor(): string;
  /** `interest` names the tables (`schema.table`) whose changes this listener needs. */
  subscribe(listener: (batch: FeedBatch) => void, interest?: () => 'all' | Iterable<string>): () => void;
  readSince(
    cursor: string,
    options: { tables?: Array<{ schema: string; table: string }>; limit?: number },
  ): Promise<FeedBatch>;
}

/** What realtime needs of the documents module: reads with the caller's rules, and the rules in process. */
export interface LiveDocuments {
  /** The table of a collection, to match change-feed rows; NOT_FOUND when it does not exist. */
  tableOf(collection: string): Promise<{ schema: string; table: string }>;
  /** The query's result as `caller` may see it (read rule applied in SQL). */
  query(caller: Caller, collection: string, query: LiveQueryInput): Promise<Document[]>;
  /** The document if it exists and `caller` may read it. */
  get(caller: Caller, collection: string, id: string): Promise<Document | null>;
  /** The read rule as an in-process predicate for `caller`, evaluated on each event. */
  reader(caller: Caller, collection: string): Promise<(doc: Document) => boolean>;
  /** A tick at or after every transaction committed so far (forces one if needed). */
  markTick(): Promise<number>;
}

/** One live query in the admin listing of connections. */
export interface LiveSubscriptionInfo {
  id: string;
  collection: string;
  doc_id: string | null;
  where: unknown;
  order_by: unknown;
  limit: number;
  /** Documents currently in the subscriber's result set. */
  documents: number;
}

/** A live query as the client sent it: `where`, `order_by`, `limit` of the query API. */
export interface LiveQueryInput {
  where?: unknown;
  order_by?: unknown;
  limit: number;
}

/** A realtime position: a feed cursor, or one inside a tick ("through the first n changes of this table in tick t"). */
interface Position {
  tick: number;
  /** Changes of this subscription's table already delivered from tick `tick + 1`. */
  skip: number;
}

function positionCursor(position: Position): string {
  return position.skip === 0
    ? formatCursor(position.tick)
    : `${formatCursor(position.tick)}.${position.skip.toString(36)}`;
}

function parsePosition(cursor: string): Position {
  const dot = cursor.lastIndexOf('.');
  const parts = cursor.split('.');
  if (parts.length === 3) {
    const skip = parseInt(parts[2] ?? '', 36);
    if (!Number.isSafeInteger(skip) || skip <= 0 || !/^[0-9a-z]{1,6}$/.test(parts[2] ?? '')) {
      throw new AppError('INVALID_REQUEST', 'The cursor is malformed.', { details: { field: 'resume_from' } });
    }
    return { tick: parseCursor(cursor.slice(0, dot)), skip };
  }
  try {
    return { tick: parseCursor(cursor), skip: 0 };
  } catch {
    throw new AppError('INVALID_REQUEST', 'The cursor is malformed.', { details: { field: 'resume_from' } });
  }
}

/** A change routed to a subscription, with the cursor a client resumes from after it. */
interface RoutedChange {
  change: FeedChange;
  cursor: string;
}

function timestamp(value: unknown): string {
  if (typeof value === 'string') return normalizeTimestamp(value) ?? value;
  return new Date(0).toISOString();
}

/** A collection row from the change log (to_jsonb of the row) as the API's document. */
export function rowToDocument(collection: string, row: Record<string, unknown>): Document {
  const data = row.data;
  return {
    id: String(row.id),
    collection,
    owner: typeof row.owner === 'string' ? row.owner : null,
    version: typeof row.version === 'number' ? row.version : Number(row.version ?? 1),
    created_at: timestamp(row.created_at),
    updated_at: timestamp(row.updated_at),
    data: typeof data === 'object' && data !== null && !Array.isArray(data) ? (data as JsonObject) : {},
  };
}

/** Documents of changes and their JSON, made once per change however many subscribers it reaches. */
const newDocuments = new WeakMap<FeedChange, Document | null>();
const documentJsonCache = new WeakMap<FrameDocument, string>();

/**
 * A `removed` frame's `doc` when the subscriber may no longer read its last copy (the rule
 * changed, or the socket now speaks for someone else): the id alone says what to drop.
 */
interface RemovedId {
  id: string;
}

/** What the `doc` of a `change` frame holds. */
type FrameDocument = Document | RemovedId;

/** A read rule as one delivery evaluates it. */
type ReadRule = (doc: Document) => boolean;

/**
 * The read rule with one verdict per document for the span of one delivery, so that what
 * decided a document's place in the window and what the frame gate checks cannot disagree
 * (a rule that reads `now` could otherwise flip between the two evaluations).
 */
function stableVerdicts(readable: ReadRule): ReadRule {
  const verdicts = new Map<Document, boolean>();
  return (doc) => {
    let verdict = verdicts.get(doc);
    if (verdict === undefined) {
      verdict = readable(doc);
      verdicts.set(doc, verdict);
    }
    return verdict;
  };
}

/**
 * What a `change` frame may carry to a subscriber whose read rule is `readable`. Every change
 * frame, live or replayed, is built from this, so no frame can carry a row the receiver's rule
 * rejects. `removed` carries the subscriber's last copy (the one it was sent, or held at its
 * resume position) when the rule still accepts it, else only the id: never the row that made
 * the document leave, which is exactly what the subscriber may not see. An `added` or
 * `modified` document the rule rejects would be a bug in the window logic: it is refused, and
 * the subscription fails, rather than sent.
 */
function frameDocument(kind: ChangeKind, doc: Document, readable: ReadRule): FrameDocument {
  if (readable(doc)) return doc;
  if (kind === 'removed') return { id: doc.id };
  throw new AppError('INTERNAL', 'A live query was about to send a document its subscriber may not read.');
}

function newDocument(change: FeedChange, collection: string): Document | null {
  let doc = newDocuments.get(change);
  if (doc === undefined) {
    doc = change.newRow ? rowToDocument(collection, change.newRow) : null;
    newDocuments.set(change, doc);
  }
  return doc;
}

interface SharedFrame {
  id: string;
  kind: ChangeKind;
  cursor: string;
  frame: Buffer;
}

/**
 * Frames made during one synchronous fan-out (SubscriptionManager.onBatch), by document:
 * subscribers whose frames are byte for byte the same (same document, kind, cursor and
 * subscription id) share one encoded Buffer. A document has one or a few distinct frames,
 * so a short list beats building a string key per delivery. Null outside a batch.
 */
let batchFrames: Map<FrameDocument, SharedFrame[]> | null = null;

function changeText(id: string, kind: ChangeKind, doc: FrameDocument, cursor: string): string {
  return `{"type":"change","id":${JSON.stringify(id)},"change":"${kind}","doc":${documentJson(doc)},"cursor":${JSON.stringify(cursor)}}`;
}

function changeFrame(id: string, kind: ChangeKind, doc: FrameDocument, cursor: string): string | Buffer {
  if (batchFrames === null) return changeText(id, kind, doc, cursor);
  let frames = batchFrames.get(doc);
  if (!frames) {
    frames = [];
    batchFrames.set(doc, frames);
  }
  for (const shared of frames) {
    if (shared.id === id && shared.kind === kind && shared.cursor === cursor) return shared.frame;
  }
  const frame = Buffer.from(changeText(id, kind, doc, cursor));
  frames.push({ id, kind, cursor, frame });
  return frame;
}

function documentJson(doc: FrameDocument): string {
  let json = documentJsonCache.get(doc);
  if (json === undefined) {
    json = JSON.stringify(doc);
    documentJsonCache.set(doc, json);
  }
  return json;
}

/** Which copy of a document is newer: creation time first (a deleted and re-created id starts at version 1). */
function compareStamps(a: Document, b: Document): number {
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? -1 : 1;
  return a.version - b.version;
}

function sameDocument(a: Document, b: Document): boolean {
  return (
    a.version === b.version &&
    a.owner === b.owner &&
    a.updated_at === b.updated_at &&
    a.created_at === b.created_at &&
    deepEqual(a.data, b.data)
  );
}

/** The result set of a subscription: a document by id, or a query window (order_by + limit). */
class View {
  readonly compare: (a: Document, b: Document) => number;

  constructor(
    readonly collection: string,
    readonly docId: string | null,
    readonly query: ParsedQuery,
    readonly input: { where?: unknown; order_by?: unknown },
  ) {
    this.compare = compareDocuments(query);
  }

  get limit(): number {
    return this.docId !== null ? 1 : this.query.limit;
  }

  matches(doc: Document): boolean {
    return this.docId !== null ? doc.id === this.docId : matchesQuery(this.query, doc);
  }

  /** The first `limit` qualifying documents of `candidates`, in order. */
  top(candidates: Iterable<Document>, readable: (doc: Document) => boolean): Document[] {
    return [...candidates]
      .filter((doc) => this.matches(doc) && readable(doc))
      .sort(this.compare)
      .slice(0, this.limit);
  }
}

type ChangeKind = 'added' | 'modified' | 'removed';

const MAX_REPLAY_CHANGES = 20_000;
const READER_TTL_MS = 5_000;

/** One live query of one connection. Events are handled one at a time, in commit order. */
class Subscription {
  /** The client's copy: exactly what it has been told, by id. */
  window = new Map<string, Document>();
  /** Events that arrive while the snapshot is being taken. */
  buffer: RoutedChange[] | null = [];
  closed = false;
  private queue: Promise<void> = Promise.resolve();
  /** Work queued or running; while there is none, events are applied at once (deliver's fast path). */
  private pending = 0;
  private reader: ((doc: Document) => boolean) | null = null;
  private readerAt = 0;
  private lastCursor = '';

  constructor(
    readonly id: string,
    readonly connection: RealtimeConnection,
    readonly view: View,
    readonly table: { schema: string; table: string },
    private readonly documents: LiveDocuments,
    private readonly log: Logger,
  ) {}

  get caller(): Caller {
    return this.connection.caller;
  }

  async readable(): Promise<(doc: Document) => boolean> {
    if (!this.reader || Date.now() - this.readerAt > READER_TTL_MS) {
      this.reader = await this.documents.reader(this.caller, this.view.collection);
      this.readerAt = Date.now();
    }
    return this.reader;
  }

  /** The caller changed (new token): rules must be re-read. */
  invalidateReader(): void {
    this.reader = null;
    this.readerGeneration++;
  }

  /** Bumped when the caller changes, so a refresh begun before does not install the old caller's rules. */
  private readerGeneration = 0;
  private refreshing = false;

  /**
   * Re-reads the rules in the background once the reader is half its age limit old, so a
   * subscription that keeps receiving events finds fresh rules at hand and never waits
   * for them on the fast path.
   */
  private refreshReader(): void {
    if (this.refreshing) return;
    this.refreshing = true;
    const generation = this.readerGeneration;
    this.documents
      .reader(this.caller, this.view.collection)
      .then((reader) => {
        if (generation !== this.readerGeneration || this.closed) return;
        this.reader = reader;
        this.readerAt = Date.now();
      })
      .catch(() => undefined) // the next event re-reads them on the queued path, which reports failures
      .finally(() => {
        this.refreshing = false;
      });
  }

  enqueue(work: () => Promise<void>): void {
    this.pending++;
    this.queue = this.queue.then(async () => {
      try {
        if (this.closed) return;
        await work();
      } catch (error) {
        this.fail(error);
      } finally {
        this.pending--;
      }
    });
  }

  /**
   * Takes the changes of one feed batch. The fast path: with nothing queued before them and
   * the rules at hand, they are applied here and now (no promise per subscriber and event,
   * and the frames go out while the manager holds the sockets corked); otherwise they wait
   * their turn in the queue.
   */
  deliver(routed: RoutedChange[]): void {
    if (this.closed) return;
    if (this.buffer) {
      this.buffer.push(...routed);
      return;
    }
    const age = Date.now() - this.readerAt;
    const reader = this.pending === 0 && this.reader && age <= READER_TTL_MS ? this.reader : null;
    if (reader && age > READER_TTL_MS / 2) this.refreshReader();
    if (!reader) {
      this.enqueue(() => this.apply(routed));
      return;
    }
    try {
      const resyncAt = this.applyWith(routed, reader);
      if (resyncAt !== null) this.enqueue(() => this.resync(resyncAt));
    } catch (error) {
      this.fail(error);
    }
  }

  fail(error: unknown): void {
    if (this.closed) return;
    if (isUnavailableError(error)) {
      // Postgres went away while the subscription was being read (a snapshot, a re-read):
      // close the socket rather than end the subscription; the client resumes from its cursor.
      this.log.warn(
        { reason: error instanceof Error ? error.message : String(error) },
        'realtime subscription interrupted',
      );
      this.onFailed?.(this);
      this.connection.close(CLOSE_TRY_AGAIN_LATER, 'service unavailable; reconnect and resume');
      return;
    }
    if (!isAppError(error) || error.status >= 500) this.log.error({ err: error }, 'realtime subscription failed');
    this.connection.sendError(error, { id: this.id });
    this.onFailed?.(this);
  }

  onFailed: ((subscription: Subscription) => void) | null = null;

  /** Sends one `change` frame; the only way a change reaches the subscriber (see frameDocument). */
  sendChange(kind: ChangeKind, doc: Document, cursor: string, readable: ReadRule): void {
    this.connection.sendText(changeFrame(this.id, kind, frameDocument(kind, doc, readable), cursor));
  }

  private worst(excluding?: string): Document | null {
    let worst: Document | null = null;
    for (const doc of this.window.values()) {
      if (doc.id === excluding) continue;
      if (worst === null || this.view.compare(doc, worst) > 0) worst = doc;
    }
    return worst;
  }

  /** The live path: each event changes the client's copy so that it stays equal to the query's result. */
  async apply(routed: RoutedChange[]): Promise<void> {
    const resyncAt = this.applyWith(routed, await this.readable());
    if (resyncAt !== null) await this.resync(resyncAt);
  }

  /**
   * Applies the changes with `readable` as the read rule, synchronously. When the window
   * must be re-read at an exact position, stops there: the changes after it are held in
   * the buffer, and the cursor to re-read at is returned for the caller to resync.
   */
  private applyWith(routed: RoutedChange[], rule: ReadRule): string | null {
    const readable = stableVerdicts(rule);
    for (let i = 0; i < routed.length; i++) {
      const { change, cursor } = routed[i] as RoutedChange;
      this.lastCursor = cursor;
      const doc = newDocument(change, this.view.collection);
      const known = this.window.get(change.rowId);
      const qualifies = doc !== null && this.view.matches(doc) && readable(doc);
      const limit = this.view.limit;
      if (doc && known) {
        // A window refill may already have shown a newer copy than this event carries.
        const order = compareStamps(doc, known);
        if (order < 0 || (order === 0 && sameDocument(doc, known))) continue;
      }
      if (qualifies && doc) {
        if (known) {
          const worstOther = this.worst(doc.id);
          this.window.set(doc.id, doc);
          this.sendChange('modified', doc, cursor, readable);
          // It moved towards the end of a full window: a document outside may now come first.
          if (this.window.size >= limit && worstOther && this.view.compare(doc, worstOther) > 0) {
            return this.holdAfter(routed, i);
          }
        } else if (this.window.size < limit) {
          this.window.set(doc.id, doc);
          this.sendChange('added', doc, cursor, readable);
        } else {
          const worst = this.worst();
          if (worst && this.view.compare(doc, worst) < 0) {
            this.window.delete(worst.id);
            this.sendChange('removed', worst, cursor, readable);
            this.window.set(doc.id, doc);
            this.sendChange('added', doc, cursor, readable);
          }
        }
      } else if (known) {
        const wasFull = this.window.size >= limit;
        this.window.delete(known.id);
        // The copy the subscriber holds, not the row that made it leave (which it may not read).
        this.sendChange('removed', known, cursor, readable);
        if (wasFull) return this.holdAfter(routed, i);
      }
    }
    return null;
  }

  /** Holds back the changes after `routed[i]` while the window is re-read at its cursor, which it returns. */
  private holdAfter(routed: RoutedChange[], i: number): string {
    this.buffer = [...routed.slice(i + 1), ...(this.buffer ?? [])];
    return (routed[i] as RoutedChange).cursor;
  }

  /**
   * Re-reads the window at an exact log position (the manager's snapshot procedure) and
   * sends the difference with that position's cursor; events after it follow as usual.
   * Without the manager (never in practice) it falls back to a plain re-query.
   */
  private async resync(cursor: string): Promise<void> {
    if (this.onResync) await this.onResync(this);
    else {
      const pending = this.buffer ?? [];
      this.buffer = null;
      await this.refill(cursor);
      if (pending.length > 0) this.enqueue(() => this.apply(pending));
    }
  }

  onResync: ((subscription: Subscription) => Promise<void>) | null = null;

  /**
   * Sends what turns the client's copy into `next` (a window read afresh), all at `cursor`.
   * Documents of `next` that `rule` rejects are left out: the window was read with the
   * caller the subscription had when the read began, and the socket may speak for another
   * one by now.
   */
  sendDiff(next: Document[], cursor: string, rule: ReadRule): void {
    const readable = stableVerdicts(rule);
    const visible = next.filter(readable);
    const nextIds = new Set(visible.map((doc) => doc.id));
    for (const doc of [...this.window.values()]) {
      if (!nextIds.has(doc.id)) {
        this.window.delete(doc.id);
        this.sendChange('removed', doc, cursor, readable);
      }
    }
    for (const doc of visible) {
      const known = this.window.get(doc.id);
      if (!known) {
        this.window.set(doc.id, doc);
        this.sendChange('added', doc, cursor, readable);
      } else if (compareStamps(doc, known) > 0 || !sameDocument(doc, known)) {
        this.window.set(doc.id, doc);
        this.sendChange('modified', doc, cursor, readable);
      }
    }
    this.lastCursor = cursor;
  }

  /** Re-runs the query and sends the difference (fallback when no exact position can be had). */
  async refill(cursor: string): Promise<void> {
    const docs = await this.snapshot(this.view.limit);
    this.sendDiff(docs, cursor, await this.readable());
  }

  /** Re-evaluates the window after the caller changed, so documents the new caller may not read go away. */
  async recheck(): Promise<void> {
    this.invalidateReader();
    if (!this.lastCursor) return;
    this.buffer ??= [];
    await this.resync(this.lastCursor);
  }

  setLastCursor(cursor: string): void {
    this.lastCursor = cursor;
  }

  async snapshot(limit: number): Promise<Document[]> {
    if (this.view.docId !== null) {
      const doc = await this.documents.get(this.caller, this.view.collection, this.view.docId);
      return doc ? [doc] : [];
    }
    return this.documents.query(this.caller, this.view.collection, { ...this.view.input, limit });
  }
}

/**
 * Live queries of every connection of this instance. One listener on the change feed
 * routes each change to the subscriptions of its table; each subscription turns it into
 * `change` frames with its subscriber's rules.
 */
export class SubscriptionManager {
  private readonly byTable = new Map<string, Set<Subscription>>();
  private readonly byConnection = new Map<string, Map<string, Subscription>>();
  private lastTick: number;
  private lastCursor: string | null = null;
  private tickWaiters: Array<{ tick: number; resolve: () => void }> = [];
  private readonly stopFeed: () => void;

  constructor(
    private readonly feed: ChangeFeedLike,
    private readonly documents: LiveDocuments,
    private readonly log: Logger,
    private readonly maxPerConnection: number,
  ) {
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
    return [...(this.byConnection.get(connectionId)?.values() ?? [])].map((subscription) => ({
      id: subscription.id,
      collection: subscription.view.collection,
      doc_id: subscription.view.docId,
      where: subscription.view.input.where ?? null,
      order_by: subscription.view.input.order_by ?? null,
      limit: subscription.view.query.limit,
      documents: subscription.window.size,
    }));
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
    batchFrames = new Map();
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
      batchFrames = null;
      for (const connection of corked) connection.uncork();
    }
    const tick = parseCursor(batch.cursor);
    if (tick > this.lastTick) this.lastTick = tick;
    this.releaseWaiters();
  }

  private restartAll(): void {
    for (const subs of this.byConnection.values()) {
      for (const subscription of subs.values()) {
        if (subscription.buffer) continue; // still starting: its snapshot is read after this point anyway
        subscription.buffer = [];
        subscription.enqueue(() => this.start(subscription, 'reset'));
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
    message: { id: string; collection: string; doc_id?: string; query?: Record<string, unknown>; resume_from?: string },
  ): Promise<void> {
    const subs = this.byConnection.get(connection.id) ?? new Map<string, Subscription>();
    if (subs.has(message.id)) {
      throw new AppError('ALREADY_EXISTS', `Subscription "${message.id}" already exists on this connection.`);
    }
    if (subs.size >= this.maxPerConnection) {
      throw new AppError('INVALID_REQUEST', `A connection may hold at most ${this.maxPerConnection} subscriptions.`, {
        details: { limit: this.maxPerConnection },
      });
    }
    if (message.query && 'after' in message.query) {
      throw new AppError('INVALID_REQUEST', 'A live query cannot start "after" a cursor; use "limit" and "order_by".');
    }
    const query = parseQuery(message.query ?? {});
    const position = message.resume_from !== undefined ? parsePosition(message.resume_from) : null;
    const table = await this.documents.tableOf(message.collection);
    const input = message.query ?? {};
    const view = new View(message.collection, message.doc_id ?? null, query, {
      ...(input.where !== undefined ? { where: input.where } : {}),
      ...(input.order_by !== undefined ? { order_by: input.order_by } : {}),
    });
    const subscription = new Subscription(message.id, connection, view, table, this.documents, this.log);
    subscription.onFailed = (failed) => this.remove(failed);
    subscription.onResync = (target) => this.resync(target);

    // Registered before the snapshot is read, so no change can fall between the two.
    subs.set(message.id, subscription);
    this.byConnection.set(connection.id, subs);
    const key = `${table.schema}.${table.table}`;
    const set = this.byTable.get(key) ?? new Set<Subscription>();
    set.add(subscription);
    this.byTable.set(key, set);

    subscription.enqueue(async () => {
      if (position) await this.resume(subscription, position);
      else await this.start(subscription, 'subscribed');
    });
  }

  unsubscribe(connection: RealtimeConnection, id: string): boolean {
    const subscription = this.byConnection.get(connection.id)?.get(id);
    if (!subscription) return false;
    this.remove(subscription);
    return true;
  }

  /** Drops every subscription of a connection (it closed, or its token expired). */
  dropAll(connection: RealtimeConnection): Subscription[] {
    const subs = [...(this.byConnection.get(connection.id)?.values() ?? [])];
    for (const subscription of subs) this.remove(subscription);
    return subs;
  }

  /** The connection's caller changed: re-read rules and drop what the new caller may not see. */
  callerChanged(connection: RealtimeConnection): void {
    for (const subscription of this.byConnection.get(connection.id)?.values() ?? []) {
      subscription.invalidateReader();
      subscription.enqueue(() => subscription.recheck());
    }
  }

  private remove(subscription: Subscription): void {
    subscription.closed = true;
    const subs = this.byConnection.get(subscription.connection.id);
    subs?.delete(subscription.id);
    if (subs && subs.size === 0) this.byConnection.delete(subscription.connection.id);
    const key = `${subscription.table.schema}.${subscription.table.table}`;
    const set = this.byTable.get(key);
    set?.delete(subscription);
    if (set && set.size === 0) this.byTable.delete(key);
  }

  /**
   * Reads the result set at one exact log position: run the query, then mark a tick that
   * covers it, wait until the feed has delivered that tick, and overlay every buffered
   * change up to it (the last change of a document wins). The result is the state at
   * that tick, so `subscribed` carries a cursor that means exactly what it says.
   */
  private async exactSnapshot(
    subscription: Subscription,
    extra: number,
  ): Promise<{
    tick: number;
    candidates: Map<string, Document>;
    /** The window at `tick` is fully known. */
    complete: boolean;
    /** The page read was full: documents exist beyond it. */
    full: boolean;
    /** How many documents beyond the window the page held. */
    room: number;
    upto: RoutedChange[];
    /** The subscriber's read rule the overlay was checked with; frames made from the result use it too. */
    readable: ReadRule;
  }> {
    const limit = Math.min(subscription.view.limit + extra, 1000);
    const docs = await subscription.snapshot(limit);
    const tick = await this.documents.markTick();
    await this.waitForTick(tick);
    const buffer = subscription.buffer ?? [];
    const upto = buffer.filter((routed) => routed.change.tick <= tick);
    subscription.buffer = buffer.filter((routed) => routed.change.tick > tick);
    const readable = await subscription.readable();
    const candidates = new Map(docs.map((doc) => [doc.id, doc]));
    const last = new Map<string, FeedChange>();
    for (const { change } of upto) last.set(change.rowId, change);
    for (const [id, change] of last) {
      const doc = change.newRow ? rowToDocument(subscription.view.collection, change.newRow) : null;
      if (doc && subscription.view.matches(doc) && readable(doc)) candidates.set(id, doc);
      else candidates.delete(id);
    }
    // Documents beyond a full page were not read; they are safe to ignore only while the
    // overlaid window still ends before the page's last document.
    const full = docs.length >= limit;
    let complete = !full;
    if (full) {
      const pageEnd = docs[docs.length - 1] as Document;
      const top = subscription.view.top(candidates.values(), () => true);
      const end = top[subscription.view.limit - 1];
      complete = end !== undefined && subscription.view.compare(end, pageEnd) <= 0;
    }
    return { tick, candidates, complete, full, room: limit - subscription.view.limit, upto, readable };
  }

  private async start(subscription: Subscription, frame: 'subscribed' | 'reset'): Promise<void> {
    let result = await this.exactSnapshot(subscription, 0);
    for (let attempt = 0; !result.complete && attempt < 2; attempt++) {
      subscription.buffer = [...result.upto, ...(subscription.buffer ?? [])];
      result = await this.exactSnapshot(subscription, 0);
    }
    // The query applied the rule in SQL as the caller of that moment; the socket may have
    // changed identity since, so the documents sent are those its rule accepts now.
    const docs = subscription.view.top(result.candidates.values(), stableVerdicts(result.readable));
    subscription.window = new Map(docs.map((doc) => [doc.id, doc]));
    const cursor = formatCursor(result.tick);
    subscription.setLastCursor(cursor);
    subscription.connection.send({ type: frame, id: subscription.id, docs, cursor });
    if (!result.complete) await subscription.refill(cursor);
    this.goLive(subscription);
  }

  /** A live window needs re-reading: read it at an exact tick and send the difference with that tick's cursor. */
  private async resync(subscription: Subscription): Promise<void> {
    let result = await this.exactSnapshot(subscription, 0);
    for (let attempt = 0; !result.complete && attempt < 2; attempt++) {
      subscription.buffer = [...result.upto, ...(subscription.buffer ?? [])];
      result = await this.exactSnapshot(subscription, 0);
    }
    const cursor = formatCursor(result.tick);
    subscription.sendDiff(subscription.view.top(result.candidates.values(), result.readable), cursor, result.readable);
    if (!result.complete) await subscription.refill(cursor);
    this.goLive(subscription);
  }

  private goLive(subscription: Subscription): void {
    const pending = subscription.buffer ?? [];
    subscription.buffer = null;
    if (pending.length > 0) subscription.enqueue(() => subscription.apply(pending));
  }

  /**
   * Resume: the client holds the result at `position`. Read every change since, rebuild
   * the window the client has (the documents touched since, rolled back to their old rows),
   * then replay the changes one by one and send how the window changed at each. Ends with
   * the window at the current tick, then goes live.
   */
  private async resume(subscription: Subscription, position: Position): Promise<void> {
    let missed: FeedChange[];
    try {
      missed = await this.readMissed(subscription, position);
    } catch (error) {
      // Older than the retention (or not a position this log knows): the client starts over.
      if (isAppError(error) && error.status < 500) {
        await this.start(subscription, 'reset');
        return;
      }
      throw error;
    }
    if (missed.length > MAX_REPLAY_CHANGES) {
      await this.start(subscription, 'reset');
      return;
    }
    // A document subscription ignores the rest of its table (cursors still count all of it).
    const docId = subscription.view.docId;
    const relevant = (change: FeedChange) => docId === null || change.rowId === docId;
    const touched = new Set(missed.filter(relevant).map((change) => change.rowId));
    for (const routed of subscription.buffer ?? []) if (relevant(routed.change)) touched.add(routed.change.rowId);
    const result = await this.exactSnapshot(subscription, touched.size + 16);
    const seen = new Set(missed.map((change) => change.id));
    const combined = [...missed, ...result.upto.map((routed) => routed.change).filter((c) => !seen.has(c.id))];
    const routedAll = routeChanges(unseen(combined, position), position.tick, position.skip).filter((routed) =>
      relevant(routed.change),
    );
    const all = routedAll.map((routed) => routed.change);
    const allTouched = new Set(all.map((change) => change.rowId));
    // At most `room` documents moved, so at least `limit` untouched ones lie in the page and
    // nothing beyond it can enter the window at any point of the replay.
    if (result.full && allTouched.size > result.room) {
      // More documents moved than the page had room for: too much changed; start over.
      subscription.buffer = [...result.upto, ...(subscription.buffer ?? [])];
      await this.start(subscription, 'reset');
      return;
    }
    // Roll the touched documents back to the state before their first missed change.
    const state = new Map(result.candidates);
    const first = new Map<string, FeedChange>();
    for (const change of all) if (!first.has(change.rowId)) first.set(change.rowId, change);
    const collection = subscription.view.collection;
    for (const [id, change] of first) {
      if (change.oldRow) state.set(id, rowToDocument(collection, change.oldRow));
      else state.delete(id);
    }
    // The rolled-back rows are history: each is replayed only if the subscriber's rule accepts it now.
    const readable = stableVerdicts(result.readable);
    const qualifies = (doc: Document) => subscription.view.matches(doc) && readable(doc);
    let window = new Map(subscription.view.top(state.values(), qualifies).map((doc) => [doc.id, doc]));
    subscription.connection.send({ type: 'subscribed', id: subscription.id, cursor: positionCursor(position) });
    for (const { change, cursor } of routedAll) {
      if (change.newRow) state.set(change.rowId, rowToDocument(collection, change.newRow));
      else state.delete(change.rowId);
      const next = new Map(subscription.view.top(state.values(), qualifies).map((doc) => [doc.id, doc]));
      // A document that left is removed as the client holds it, never as the row that hid it.
      for (const [id, doc] of window) if (!next.has(id)) subscription.sendChange('removed', doc, cursor, readable);
      for (const [id, doc] of next) {
        const before = window.get(id);
        if (!before) subscription.sendChange('added', doc, cursor, readable);
        else if (before !== doc) subscription.sendChange('modified', doc, cursor, readable);
      }
      window = next;
    }
    subscription.window = window;
    subscription.setLastCursor(formatCursor(result.tick));
    this.goLive(subscription);
  }

  private async readMissed(subscription: Subscription, position: Position): Promise<FeedChange[]> {
    const missed: FeedChange[] = [];
    const pageSize = 5_000;
    let cursor = formatCursor(position.tick);
    for (let page = 0; page < 100; page++) {
      const batch = await this.feed.readSince(cursor, { tables: [subscription.table], limit: pageSize });
      missed.push(...batch.changes);
      if (batch.changes.length < pageSize || batch.cursor === cursor || missed.length > MAX_REPLAY_CHANGES) break;
      cursor = batch.cursor;
    }
    return missed;
  }
}

/**
 * The changes a client at `position` has not seen: later ticks, minus the first `skip`
 * changes of the tick right after (it left in the middle of that tick). Changes at or
 * before the position can appear when the position came from an instance a little ahead.
 */
function unseen(changes: FeedChange[], position: Position): FeedChange[] {
  let dropped = 0;
  return changes.filter((change) => {
    if (change.tick <= position.tick) return false;
    if (change.tick === position.tick + 1 && dropped < position.skip) {
      dropped++;
      return false;
    }
    return true;
  });
}

function safeTick(cursor: string): number {
  try {
    return parseCursor(cursor);
  } catch {
    return 0;
  }
}

/**
 * Gives each change (all of one table, in commit order) the cursor to resume from after
 * it: the tick's own cursor after its last change, else a position inside the tick.
 */
function routeChanges(changes: FeedChange[], skipTick: number, skip: number): RoutedChange[] {
  const routed: RoutedChange[] = [];
  let index = 0;
  for (let i = 0; i < changes.length; i++) {
    const change = changes[i] as FeedChange;
    const previous = changes[i - 1];
    if (!previous || previous.tick !== change.tick) index = change.tick === skipTick + 1 ? skip : 0;
    index++;
    const next = changes[i + 1];
    const lastOfTick = !next || next.tick !== change.tick;
    routed.push({
      change,
      cursor: lastOfTick ? formatCursor(change.tick) : positionCursor({ tick: change.tick - 1, skip: index }),
    });
  }
  return routed;
}
