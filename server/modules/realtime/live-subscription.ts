import type { Caller } from '../../internal/caller.js';
import { formatCursor } from '../../internal/changes/cursor.js';
import { AppError, isAppError, isUnavailableError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import {
  compareDocuments,
  deepEqual,
  isAfterCursor,
  matchesQuery,
  QUERY_LIMITS,
  type Document,
  type ParsedQuery,
} from '../documents/query.js';
import {
  changeFrame,
  newDocument,
  rowToDocument,
  stableVerdicts,
  type ChangeKind,
  type ReadRule,
} from './change-frames.js';
import { CLOSE_TRY_AGAIN_LATER, type RealtimeConnection } from './connection.js';
import type { RoutedChange } from './live-cursor.js';
import type { FeedChange, LiveDocuments } from './live-sources.js';

/** What every live query of an instance shares: the documents module, the log, and the feed's progress. */
export interface SubscriptionContext {
  documents: LiveDocuments;
  log: Logger;
  /** Resolves once the change feed has handed every change up to `tick` to the subscriptions. */
  waitForTick(tick: number): Promise<void>;
}

/**
 * The most documents a live query without `limit` holds: it is refused past this (see
 * tooManyDocuments), never cut short. Read in one query page, so at most the page maximum.
 */
export const LIVE_QUERY_MAX_DOCUMENTS = QUERY_LIMITS.maxLimit;

/**
 * How many matching documents beyond its window a query with `limit` keeps track of (ids
 * only), so that `has_more` stays known as documents come and go without a read per change.
 */
const SPARE_DOCUMENTS = 16;

/** The error of a live query without `limit` whose result grew (or is) past LIVE_QUERY_MAX_DOCUMENTS. */
export function tooManyDocuments(): AppError {
  return new AppError(
    'INVALID_REQUEST',
    `The live query matches more than ${LIVE_QUERY_MAX_DOCUMENTS} documents, the most one without "limit" may ` +
      'hold; give it a limit (and page with "after"), or narrow its "where".',
    { details: { field: 'limit', limit: LIVE_QUERY_MAX_DOCUMENTS } },
  );
}

/** The error of a live query whose connection changed identity while it held documents the new caller may not read. */
export function lostAccess(): AppError {
  return new AppError(
    'FORBIDDEN',
    'The connection signed out or changed user, and this live query holds documents the new caller may not ' +
      'read; it has stopped. Subscribe again as the new caller.',
    { details: { reason: 'caller_changed' } },
  );
}

/** A subscription's result set read at one exact log position (see Subscription.exactSnapshot). */
export interface ExactSnapshot {
  tick: number;
  candidates: Map<string, Document>;
  /** The window at `tick` is fully known. */
  complete: boolean;
  /** Documents exist beyond the page read. */
  full: boolean;
  /** How many documents beyond the window the page held. */
  room: number;
  upto: RoutedChange[];
  /** The subscriber's read rule the overlay was checked with; frames made from the result use it too. */
  readable: ReadRule;
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

/**
 * The result set of a subscription: a document by id, a query window (order_by + limit,
 * after an optional cursor), or a whole query result (no limit; at most LIVE_QUERY_MAX_DOCUMENTS).
 */
export class View {
  readonly compare: (a: Document, b: Document) => number;
  /**
   * Whether each document matches the query's full-text search. Search (stemming, the
   * collection's language) is Postgres's to decide, so verdicts are fetched in one statement
   * per batch of events (prepare) before the synchronous matching reads them; documents read
   * by the snapshot query matched it there.
   */
  private readonly searchVerdicts = new WeakMap<Document, boolean>();

  constructor(
    readonly collection: string,
    readonly docId: string | null,
    readonly query: ParsedQuery,
    readonly input: { where?: unknown; order_by?: unknown; after?: unknown; search?: string; expand?: string[] },
    /** The client gave `limit`: the window is the first `limit` documents, and `has_more` says if others match. */
    readonly windowed: boolean,
    private readonly searchMatcher: ((docs: Document[]) => Promise<boolean[]>) | null = null,
    private readonly expander: ((docs: Document[]) => Promise<Document[]>) | null = null,
  ) {
    this.compare = compareDocuments(query);
  }

  /** A query without `limit`: every match, refused past LIVE_QUERY_MAX_DOCUMENTS. */
  get unbounded(): boolean {
    return this.docId === null && !this.windowed;
  }

  /** The expanded copy of each event document sent to the subscriber (expand queries). */
  private readonly expandedCopies = new WeakMap<Document, Document>();

  get expands(): boolean {
    return this.expander !== null;
  }

  /** What a frame carries for `doc`: its expanded copy when there is one. */
  outgoing(doc: Document): Document {
    return this.expandedCopies.get(doc) ?? doc;
  }

  /** Expands documents (all of them when `fresh`, else those without a copy), one statement per level. */
  async expand(docs: Array<Document | null>, fresh = false): Promise<Document[]> {
    if (!this.expander) return [];
    const open = [...new Set(docs)].filter(
      (doc): doc is Document => doc !== null && (fresh || (doc.expand === undefined && !this.expandedCopies.has(doc))),
    );
    if (open.length === 0) return [];
    const expanded = await this.expander(open);
    open.forEach((doc, i) => {
      const copy = expanded[i];
      if (copy) this.expandedCopies.set(doc, copy);
    });
    return open;
  }

  get searches(): boolean {
    return this.input.search !== undefined && this.docId === null;
  }

  /** Fetches the search verdicts of documents not yet decided (nothing to do without a search). */
  async prepare(docs: Array<Document | null>): Promise<void> {
    await this.expand(docs);
    if (!this.searches || !this.searchMatcher) return;
    const open = [...new Set(docs)].filter(
      (doc): doc is Document => doc !== null && !this.searchVerdicts.has(doc) && matchesQuery(this.query, doc),
    );
    if (open.length === 0) return;
    const verdicts = await this.searchMatcher(open);
    open.forEach((doc, i) => this.searchVerdicts.set(doc, verdicts[i] === true));
  }

  /** Documents the snapshot query returned: they matched the search in SQL. */
  matchedInSql(docs: Document[]): void {
    if (this.searches) for (const doc of docs) this.searchVerdicts.set(doc, true);
  }

  get limit(): number {
    if (this.docId !== null) return 1;
    return this.windowed ? this.query.limit : LIVE_QUERY_MAX_DOCUMENTS;
  }

  matches(doc: Document): boolean {
    if (this.docId !== null) return doc.id === this.docId;
    return this.matchesBesidesSearch(doc) && (!this.searches || this.searchVerdicts.get(doc) === true);
  }

  /** `where` and `after` (the search, when there is one, is decided in prepare). */
  matchesBesidesSearch(doc: Document): boolean {
    if (this.docId !== null) return doc.id === this.docId;
    const after = this.query.after;
    return matchesQuery(this.query, doc) && (after === null || isAfterCursor(this.query, after, doc));
  }

  /** Every qualifying document of `candidates`, in order. */
  ordered(candidates: Iterable<Document>, readable: (doc: Document) => boolean): Document[] {
    return [...candidates].filter((doc) => this.matches(doc) && readable(doc)).sort(this.compare);
  }

  /** The first `limit` qualifying documents of `candidates`, in order. */
  top(candidates: Iterable<Document>, readable: (doc: Document) => boolean): Document[] {
    return this.ordered(candidates, readable).slice(0, this.limit);
  }
}

const READER_TTL_MS = 5_000;

/**
 * Tells the subscriber its subscription `id` ended with `error`. When Postgres went away
 * (a snapshot, a re-read), the socket is closed instead, rather than the subscription
 * ended: the client reconnects and resumes (or subscribes again).
 */
export function reportFailure(connection: RealtimeConnection, log: Logger, id: string, error: unknown): void {
  if (isUnavailableError(error)) {
    log.warn({ reason: error instanceof Error ? error.message : String(error) }, 'realtime subscription interrupted');
    connection.close(CLOSE_TRY_AGAIN_LATER, 'service unavailable; reconnect and resume');
    return;
  }
  if (!isAppError(error) || error.status >= 500) log.error({ err: error }, 'realtime subscription failed');
  connection.sendError(error, { id });
}

/** One live query of one connection. Events are handled one at a time, in commit order. */
export class Subscription {
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
  /** Ids of documents known to match beyond a window (queries with `limit`), SPARE_DOCUMENTS at most. */
  private beyond = new Set<string>();
  /** Matches beyond the window may exist that `beyond` does not list. */
  private unlisted = false;
  /** The `has_more` the subscriber was last told (null: not told since the subscription (re)started). */
  private toldMore: boolean | null = null;
  /** The change-feed tables (`schema.table`) this subscription listens to: its own, then expanded ones. */
  tables: string[] = [];

  constructor(
    readonly id: string,
    readonly connection: RealtimeConnection,
    readonly view: View,
    readonly table: { schema: string; table: string },
    private readonly context: SubscriptionContext,
  ) {}

  get caller(): Caller {
    return this.connection.caller;
  }

  async readable(): Promise<(doc: Document) => boolean> {
    if (!this.reader || Date.now() - this.readerAt > READER_TTL_MS) {
      this.reader = await this.context.documents.reader(this.caller, this.view.collection);
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
    this.context.documents
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
    // A search needs Postgres's verdicts first: always the queued path.
    const reader =
      this.pending === 0 && this.reader && age <= READER_TTL_MS && !this.view.searches && !this.view.expands
        ? this.reader
        : null;
    if (reader && age > READER_TTL_MS / 2) this.refreshReader();
    if (!reader) {
      this.enqueue(() => this.apply(routed));
      return;
    }
    try {
      if (this.applyWith(routed, reader)) this.enqueue(() => this.resync());
    } catch (error) {
      this.fail(error);
    }
  }

  fail(error: unknown): void {
    if (this.closed) return;
    this.onFailed?.(this);
    reportFailure(this.connection, this.context.log, this.id, error);
  }

  onFailed: ((subscription: Subscription) => void) | null = null;

  /** Sends one `change` frame; the only way a change reaches the subscriber (see changeFrame). */
  sendChange(kind: ChangeKind, doc: Document, cursor: string, readable: ReadRule): void {
    this.connection.sendText(changeFrame(this.id, kind, this.view.outgoing(doc), cursor, readable));
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
    if (!this.view.expands) {
      await this.view.prepare(routed.map(({ change }) => newDocument(change, this.view.collection)));
      if (this.applyWith(routed, await this.readable())) await this.resync();
      return;
    }
    // In runs, in commit order: the query's own changes, and changes to documents it expands.
    for (let start = 0; start < routed.length;) {
      const own = this.ownsChange((routed[start] as RoutedChange).change);
      let end = start + 1;
      while (end < routed.length && this.ownsChange((routed[end] as RoutedChange).change) === own) end++;
      const run = routed.slice(start, end);
      if (own) {
        await this.view.prepare(run.map(({ change }) => newDocument(change, this.view.collection)));
        if (this.applyWith(run, await this.readable())) {
          // The rest waits in the buffer while the window is re-read (see applyWith).
          this.buffer = [...(this.buffer ?? []), ...routed.slice(end)];
          await this.resync();
          return;
        }
      } else {
        await this.refreshExpansions((run.at(-1) as RoutedChange).cursor);
      }
      start = end;
    }
  }

  private ownsChange(change: FeedChange): boolean {
    return change.schema === this.table.schema && change.table === this.table.table;
  }

  /**
   * A referenced document changed: every result is expanded afresh (one statement per level)
   * and each whose expansion differs from what the subscriber holds is sent `modified`.
   */
  private async refreshExpansions(cursor: string): Promise<void> {
    const docs = [...this.window.values()];
    const before = docs.map((doc) => JSON.stringify(this.view.outgoing(doc).expand ?? null));
    await this.view.expand(docs, true);
    const readable = stableVerdicts(await this.readable());
    docs.forEach((doc, i) => {
      if (JSON.stringify(this.view.outgoing(doc).expand ?? null) !== before[i] && readable(doc)) {
        this.sendChange('modified', doc, cursor, readable);
      }
    });
    this.lastCursor = cursor;
  }

  /**
   * Applies the changes with `readable` as the read rule, synchronously. When the window
   * must be re-read at an exact position, stops there: the changes after it are held in
   * the buffer, and true is returned for the caller to resync.
   */
  private applyWith(routed: RoutedChange[], rule: ReadRule): boolean {
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
      // A query without limit holds every match: nothing lies beyond its window to re-read.
      const hidden = !this.view.unbounded;
      if (qualifies && doc) {
        if (known) {
          const worstOther = hidden ? this.worst(doc.id) : null;
          this.window.set(doc.id, doc);
          this.sendChange('modified', doc, cursor, readable);
          // It moved towards the end of a full window: a document outside may now come first.
          if (this.window.size >= limit && worstOther && this.view.compare(doc, worstOther) > 0) {
            return this.holdAfter(routed, i);
          }
        } else if (this.window.size < limit) {
          this.window.set(doc.id, doc);
          this.sendChange('added', doc, cursor, readable);
        } else if (!hidden) {
          throw tooManyDocuments();
        } else {
          const worst = this.worst();
          if (worst && this.view.compare(doc, worst) < 0) {
            this.window.delete(worst.id);
            this.sendChange('removed', worst, cursor, readable);
            this.beyond.delete(doc.id);
            this.noteBeyond(worst.id);
            this.window.set(doc.id, doc);
            this.sendChange('added', doc, cursor, readable);
          } else {
            this.noteBeyond(doc.id);
          }
        }
      } else if (known) {
        const wasFull = this.window.size >= limit;
        this.window.delete(known.id);
        // The copy the subscriber holds, not the row that made it leave (which it may not read).
        this.sendChange('removed', known, cursor, readable);
        if (wasFull && hidden) return this.holdAfter(routed, i);
      } else if (this.unlisted) {
        // The last listed match beyond the window left (or, with none listed, because the
        // window is close to the page size, some match did): whether others remain takes a read.
        const listed = this.beyond.delete(change.rowId);
        if (this.beyond.size === 0 && (listed || this.matchedBefore(change, readable))) {
          return this.holdAfter(routed, i);
        }
      } else {
        this.beyond.delete(change.rowId);
      }
    }
    this.announceMore();
    return false;
  }

  /** Whether the document was a match before this change (its old row). */
  private matchedBefore(change: FeedChange, readable: ReadRule): boolean {
    if (!change.oldRow) return false;
    const old = rowToDocument(this.view.collection, change.oldRow);
    // The search verdict of an old row is not fetched: taken as a match, it costs a re-read at most.
    const matched = this.view.searches ? this.view.matchesBesidesSearch(old) : this.view.matches(old);
    return matched && readable(old);
  }

  /** Whether documents beyond the window match (queries with `limit`; false for the others). */
  get hasMore(): boolean {
    return this.beyond.size > 0 || this.unlisted;
  }

  /** `has_more` for `subscribed` and `reset` frames of queries (a document subscription has none). */
  private moreField(): { has_more?: boolean } {
    return this.view.docId === null ? { has_more: this.hasMore } : {};
  }

  /** A document now known to match beyond the window. */
  private noteBeyond(id: string): void {
    if (this.beyond.has(id)) return;
    if (this.beyond.size < SPARE_DOCUMENTS) this.beyond.add(id);
    else this.unlisted = true;
  }

  /** What lies beyond the window, from every qualifying document read (in order) and whether the read stopped short. */
  trackBeyond(ordered: Document[], more: boolean): void {
    if (!this.view.windowed) return;
    const rest = ordered.slice(this.view.limit);
    this.beyond = new Set(rest.slice(0, SPARE_DOCUMENTS).map((doc) => doc.id));
    this.unlisted = more || rest.length > SPARE_DOCUMENTS;
  }

  /** Tells the subscriber of a window whether documents beyond it match, when that changed (a `more` frame). */
  announceMore(): void {
    if (!this.view.windowed) return;
    const hasMore = this.hasMore;
    if (hasMore === this.toldMore) return;
    this.toldMore = hasMore;
    this.connection.send({ type: 'more', id: this.id, has_more: hasMore });
  }

  /** Holds back the changes after `routed[i]` while the window is re-read; true, to say it must be. */
  private holdAfter(routed: RoutedChange[], i: number): true {
    this.buffer = [...routed.slice(i + 1), ...(this.buffer ?? [])];
    return true;
  }

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
    const page = await this.snapshot(this.readLimit(0));
    if (page.more && this.view.unbounded) throw tooManyDocuments();
    const readable = await this.readable();
    const ordered = page.docs.filter(stableVerdicts(readable));
    this.sendDiff(ordered.slice(0, this.view.limit), cursor, readable);
    this.trackBeyond(ordered, page.more);
    this.announceMore();
  }

  /**
   * Holds the events that arrive from now on, for the re-read recheck() makes: the caller
   * changed, and nothing may be applied with the old caller's rules meanwhile.
   */
  holdForRecheck(): void {
    if (this.lastCursor) this.buffer ??= [];
  }

  /**
   * Re-evaluates the subscription after the caller changed (sign-in, sign-out, another user).
   * When it holds a document the new caller may not read, it ends with FORBIDDEN, as a
   * listener that lost its permission does (it does not turn into the new caller's query
   * document by document). Otherwise the result is read again for the new caller and sent
   * whole, in one `reset` frame: the client sees the change in one snapshot.
   */
  async recheck(): Promise<void> {
    this.invalidateReader();
    if (!this.lastCursor) return; // still starting: its snapshot is read for the new caller
    const readable = await this.readable();
    for (const doc of this.window.values()) if (!readable(doc)) throw lostAccess();
    this.buffer ??= [];
    await this.start('reset');
  }

  setLastCursor(cursor: string): void {
    this.lastCursor = cursor;
  }

  /** The first `limit` documents of the query as the caller may read them now, and whether more match. */
  async snapshot(limit: number): Promise<{ docs: Document[]; more: boolean }> {
    if (this.view.docId !== null) {
      const doc = await this.context.documents.get(this.caller, this.view.collection, this.view.docId);
      return { docs: doc ? [doc] : [], more: false };
    }
    return this.context.documents.query(this.caller, this.view.collection, { ...this.view.input, limit });
  }

  /** How many documents a read of the window takes: the window, `extra`, and spares to tell `has_more`. */
  private readLimit(extra: number): number {
    const spare = this.view.windowed ? Math.max(extra, SPARE_DOCUMENTS) : extra;
    return Math.min(this.view.limit + spare, QUERY_LIMITS.maxLimit);
  }

  /**
   * Reads the result set at one exact log position: run the query, then mark a tick that
   * covers it, wait until the feed has delivered that tick, and overlay every buffered
   * change up to it (the last change of a document wins). The result is the state at
   * that tick, so `subscribed` carries a cursor that means exactly what it says.
   */
  async exactSnapshot(extra: number): Promise<ExactSnapshot> {
    const limit = this.readLimit(extra);
    const { docs, more } = await this.snapshot(limit);
    // A query without limit never holds part of its result.
    if (more && this.view.unbounded) throw tooManyDocuments();
    this.view.matchedInSql(docs);
    const tick = await this.context.documents.markTick();
    await this.context.waitForTick(tick);
    const buffer = this.buffer ?? [];
    const upto = buffer.filter((routed) => routed.change.tick <= tick);
    this.buffer = buffer.filter((routed) => routed.change.tick > tick);
    const readable = await this.readable();
    const candidates = new Map(docs.map((doc) => [doc.id, doc]));
    const last = new Map<string, FeedChange>();
    // Changes to expanded collections need no overlay: the snapshot expanded after them.
    for (const { change } of upto) if (this.ownsChange(change)) last.set(change.rowId, change);
    const overlay = new Map<string, Document | null>();
    for (const [id, change] of last) {
      overlay.set(id, change.newRow ? rowToDocument(this.view.collection, change.newRow) : null);
    }
    await this.view.prepare([...overlay.values()]);
    for (const [id, doc] of overlay) {
      if (doc && this.view.matches(doc) && readable(doc)) candidates.set(id, doc);
      else candidates.delete(id);
    }
    // Documents beyond the page were not read; they are safe to ignore only while the
    // overlaid window still ends before the page's last document, with some document of the
    // page beyond it (so that `has_more` is known too).
    const full = more;
    let complete = !full;
    if (full) {
      const pageEnd = docs[docs.length - 1] as Document;
      const ordered = this.view.ordered(candidates.values(), () => true);
      const end = ordered[this.view.limit - 1];
      complete = end !== undefined && ordered.length > this.view.limit && this.view.compare(end, pageEnd) <= 0;
    }
    return { tick, candidates, complete, full, room: limit - this.view.limit, upto, readable };
  }

  /**
   * An exact snapshot of the window, read again (twice at most) while the window is not
   * fully known; the changes a discarded read overlaid go back to the buffer for the next.
   */
  private async windowSnapshot(): Promise<ExactSnapshot> {
    let result = await this.exactSnapshot(0);
    for (let attempt = 0; !result.complete && attempt < 2; attempt++) {
      this.buffer = [...result.upto, ...(this.buffer ?? [])];
      result = await this.exactSnapshot(0);
    }
    return result;
  }

  /** Sends the whole window (`subscribed`, or `reset` when the client must start over), then goes live. */
  async start(frame: 'subscribed' | 'reset'): Promise<void> {
    const result = await this.windowSnapshot();
    // The query applied the rule in SQL as the caller of that moment; the socket may have
    // changed identity since, so the documents sent are those its rule accepts now.
    const ordered = this.checkedOrder(result);
    const docs = ordered.slice(0, this.view.limit);
    this.window = new Map(docs.map((doc) => [doc.id, doc]));
    this.trackBeyond(ordered, result.full);
    const cursor = formatCursor(result.tick);
    this.setLastCursor(cursor);
    this.connection.send({
      type: frame,
      id: this.id,
      docs: docs.map((doc) => this.view.outgoing(doc)),
      cursor,
      ...this.moreField(),
    });
    this.toldMore = this.view.windowed ? this.hasMore : null;
    if (!result.complete) await this.refill(cursor);
    this.goLive();
  }

  /** The qualifying documents of a snapshot in order; refused past the cap of a query without limit. */
  checkedOrder(result: ExactSnapshot): Document[] {
    const ordered = this.view.ordered(result.candidates.values(), stableVerdicts(result.readable));
    if (this.view.unbounded && ordered.length > LIVE_QUERY_MAX_DOCUMENTS) throw tooManyDocuments();
    return ordered;
  }

  /** Forgets what the subscriber was told of `has_more`, so that the next announceMore() says it again. */
  forgetToldMore(): void {
    this.toldMore = null;
  }

  /**
   * The live window needs re-reading: read it at an exact tick and send the difference with
   * that tick's cursor; the events held back meanwhile follow as usual.
   */
  private async resync(): Promise<void> {
    const result = await this.windowSnapshot();
    const cursor = formatCursor(result.tick);
    const ordered = this.checkedOrder(result);
    this.sendDiff(ordered.slice(0, this.view.limit), cursor, result.readable);
    this.trackBeyond(ordered, result.full);
    if (!result.complete) await this.refill(cursor);
    else this.announceMore();
    this.goLive();
  }

  /** Ends buffering: the events held while the window was read are applied, then events flow straight in. */
  goLive(): void {
    const pending = this.buffer ?? [];
    this.buffer = null;
    if (pending.length > 0) this.enqueue(() => this.apply(pending));
  }
}
