/**
 * The offline engine (docs/offline.md): a persistent cache of documents and query results,
 * a durable outbox of writes sent in order with their Idempotency-Key, and the views that
 * show every live query the server's result with the pending writes applied. Loaded by
 * createClient only when `offline` is set, so apps without it never download it.
 */
import type { AuthClient } from '../auth.js';
import type { BasaltError } from '../errors.js';
import type {
  LiveAggregateTarget,
  LiveQueries,
  LiveQuery,
  LiveSeed,
  LiveTarget,
  QuerySnapshot,
} from '../live-query.js';
import type { liveQueryOf } from '../live-query.js';
import type { RealtimeClient } from '../realtime.js';
import { seededSocket, shareSocket, type EngineSocket, type SocketKit } from './tab-socket.js';
import type { HttpTransport } from '../transport.js';
import type { Doc } from '../wire.js';
import { applyOp, deepEqual, matches, type OrderKit, type PendingOp } from './local.js';
import {
  indexedDbPersistence,
  memoryPersistence,
  type OfflineChange,
  type OfflineStorage,
  type OfflineStoreName,
} from './persistence.js';
import { coordinateTabs, type TabKit } from './tabs.js';

export type { PendingOp } from './local.js';

export interface OfflineOptions {
  /**
   * Where the cache and the outbox persist: `'indexeddb'` (browsers; the default where
   * IndexedDB exists), `'memory'` (elsewhere), or an `OfflineStorage`.
   */
  persistence?: 'indexeddb' | 'memory' | OfflineStorage;
  /** The cache's bound: least recently used queries and documents go beyond it. Default 40 MB. */
  cacheSizeBytes?: number;
}

/** A queued write, as the outbox keeps it and `onWriteError` reports it: one op, or a batch's ops. */
export interface PendingWrite {
  /** Its place in the outbox, also sent as its `Idempotency-Key`. */
  key: string;
  /** When it was made (ISO): the local `updated_at` of what it writes. */
  at: string;
  ops: PendingOp[];
  /** Sent as one batch (all or nothing). */
  batch?: boolean;
}

/** Called with a queued write the server refused (rules, schema, conflict), after it was rolled back. */
export type WriteErrorListener = (error: BasaltError, write: PendingWrite) => void;

/** A query's or get()'s result with where it came from. */
export interface CachedResult<T> {
  docs: Doc<T>[];
  nextCursor: string | null;
  prevCursor: string | null;
  fromCache: boolean;
  hasPendingWrites: boolean;
}

interface CachedDoc {
  doc: Doc;
  size: number;
  usedAt: number;
}

interface CachedQuery {
  ids: string[];
  cursor: string | null;
  hasMore: boolean;
  usedAt: number;
}

/** A live query as the app sees it. */
interface View {
  target: LiveTarget;
  key: string;
  emit: (snapshot: QuerySnapshot<unknown>) => void;
  /** The server's result, once known (or as cached). */
  server: Doc[] | null;
  hasMore: boolean;
  /** The server confirmed the result since the socket (re)opened. */
  confirmed: boolean;
  shown: Doc[] | null;
  flags: string;
  stop: () => void;
}

/**
 * The request on the wire (or about to go): the writes it carries and its Idempotency-Key.
 * Stored before it is sent, so after a lost answer — in this tab, after a reload or in the
 * tab that takes over — exactly this request goes again with its key, and the server
 * answers it from its first run rather than applying it twice.
 */
interface InFlight {
  key: string;
  writes: string[];
}

interface Waiter {
  resolve(results: unknown[]): void;
  reject(error: unknown): void;
  local: unknown[];
}

const DEFAULT_CACHE_BYTES = 40e6;
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 5_000;
/** After a failed call, reads answer from the cache at once for this long before trying the server again. */
const OFFLINE_READ_MS = 2_000;
/** The server's bound on one `POST /v1/db/batch`. */
const MAX_BATCH_OPS = 500;
/** The JSON of one batch stays under this (the server's body limit is 2 MiB by default). */
const MAX_BATCH_BYTES = 512 * 1024;
const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A 20-character random id, as the server generates them. */
function newId(): string {
  let id = '';
  while (id.length < 20) {
    for (const byte of crypto.getRandomValues(new Uint8Array(24)))
      if (byte < 248 && id.length < 20) id += ID_ALPHABET[byte % 62];
  }
  return id;
}

/**
 * A network failure, a timeout, the token, rate limits and 5xx: the write stays queued and
 * is retried. (Read from the BasaltError's fields: the class stays in the main bundle.)
 */
function retryable(error: unknown): boolean {
  const { status, code } = error as Partial<BasaltError>;
  return (
    typeof status !== 'number' ||
    status === 0 ||
    status === 401 ||
    status === 408 ||
    status === 429 ||
    status >= 500 ||
    code === 'IDEMPOTENCY_PENDING'
  );
}

/** What the engine takes from the main bundle rather than import (see OrderKit). */
export interface OfflineKit extends OrderKit, TabKit, SocketKit {
  liveQueryOf: typeof liveQueryOf;
  /** db.ts's `sendOp`: one write over HTTP (passed in, so the engine does not import db.ts, which imports it). */
  sendOp: (http: HttpTransport, op: PendingOp, headers?: Record<string, string>) => Promise<unknown>;
}

/** The names of the kit's parts, in the order createClient hands them over (OfflineKitParts). */
const KIT_PARTS = [
  'compareValues',
  'documentComparator',
  'fieldValue',
  'typeRank',
  'liveQueryOf',
  'sendOp',
  'tabChannel',
  'BasaltError',
  'LiveSubscription',
] as const;

/**
 * The kit as createClient hands it over: its parts in KIT_PARTS's order, an array rather than
 * an object because every app's main bundle carries this call, and an array's minified form
 * carries no property names.
 */
export type OfflineKitParts = PartsOf<typeof KIT_PARTS>;
type PartsOf<Names extends ReadonlyArray<keyof OfflineKit>> = {
  -readonly [I in keyof Names]: OfflineKit[Names[I] & keyof OfflineKit];
};

function docKey(collection: string, id: string): string {
  return `${collection}/${id}`;
}

/** The cache key of a query: the live query part, and get()'s own options. */
function queryKey(kit: OfflineKit, collection: string, docId: string | undefined, body: Record<string, unknown>) {
  return JSON.stringify([
    collection,
    docId ?? null,
    kit.liveQueryOf(body),
    body.select ?? null,
    body.before ?? null,
    body.limit_to_last ?? null,
  ]);
}

export class OfflineEngine implements LiveQueries {
  declare private docs: Map<string, CachedDoc>;
  declare private queries: Map<string, CachedQuery>;
  declare private outbox: PendingWrite[];
  /** The user the cache belongs to (undefined: not known yet). */
  declare private user: string | null | undefined;
  declare private readonly views: Set<View>;
  /** Documents this client wrote that the server's results may not show yet: key → acknowledged version. */
  declare private readonly fresh: Map<string, number>;
  /** Documents this client deleted that the server's results may still show: key → last version known. */
  declare private readonly gone: Map<string, number>;
  declare private readonly waiters: Map<string, Waiter>;
  declare private readonly idle: Array<() => void>;
  declare private readonly errorListeners: Set<WriteErrorListener>;
  declare private readonly changeListeners: Set<(changes: OfflineChange[]) => void>;
  declare private dirty: Map<string, OfflineChange>;
  declare private inFlight: InFlight | null;
  /** Writes to send alone: they were in a batch the server refused as a whole (see flush). */
  declare private readonly solo: Set<string>;
  declare private chain: Promise<void>;
  declare private writeQueued: boolean;
  declare private owner: boolean;
  /** The last setOwner(true) under way (null: given up since). */
  declare private claim: object | null;
  declare private flushing: boolean;
  declare private attempt: number;
  declare private timer: ReturnType<typeof setTimeout> | null;
  /** When a call last failed for the network (0: the server answers). */
  declare private failedAt: number;
  declare private lastKeyTime: number;
  declare private readonly tab: string;
  declare readonly ready: Promise<void>;

  declare private readonly http: HttpTransport;
  /** The client's realtime socket, or the tabs' shared one (offline/tab-socket.ts). */
  declare private readonly realtime: EngineSocket;
  declare private readonly auth: AuthClient;
  declare private storage: OfflineStorage;
  declare private readonly budget: number;
  declare private readonly kit: OfflineKit;

  // Fields are declared and assigned here, not initialised: class fields would need a
  // runtime helper that the main bundle has too, and that esbuild would then split out
  // into a chunk every app downloads.
  constructor(
    http: HttpTransport,
    realtime: EngineSocket,
    auth: AuthClient,
    storage: OfflineStorage,
    budget: number,
    kit: OfflineKit,
  ) {
    Object.assign(this, {
      http,
      realtime,
      auth,
      storage,
      budget,
      kit,
      docs: new Map<string, CachedDoc>(),
      queries: new Map<string, CachedQuery>(),
      outbox: [],
      idle: [],
      views: new Set<View>(),
      fresh: new Map<string, number>(),
      gone: new Map<string, number>(),
      waiters: new Map<string, Waiter>(),
      errorListeners: new Set<WriteErrorListener>(),
      changeListeners: new Set<(changes: OfflineChange[]) => void>(),
      dirty: new Map<string, OfflineChange>(),
      inFlight: null,
      solo: new Set<string>(),
      chain: Promise.resolve(),
      writeQueued: false,
      owner: true,
      claim: null,
      flushing: false,
      attempt: 0,
      timer: null,
      failedAt: 0,
      lastKeyTime: 0,
      tab: newId().slice(0, 6),
    });
    this.ready = this.start();
  }

  private async start(): Promise<void> {
    try {
      await this.load(true);
    } catch {
      // No usable IndexedDB (private mode, blocked): the app still works, with a memory cache.
      this.storage = memoryPersistence();
    }
    await this.auth.ready;
    await this.belongsTo(this.auth.user?.id ?? null);
    this.auth.onAuthStateChange((event, session) => {
      if (event === 'SIGNED_OUT') void this.clear();
      else if (event === 'SIGNED_IN' && session) void this.belongsTo(this.auth.user?.id ?? null);
    });
    this.realtime.onStatusChange((status) => {
      if (status === 'open') {
        this.failedAt = 0;
        this.kick(true);
      } else if (status === 'reconnecting') {
        for (const view of this.views) view.confirmed = false;
        this.unreachable(true);
      }
    });
    this.kick();
  }

  /**
   * Reads the cache and the outbox from storage (at start, and when another tab changed them).
   * The request in flight is read at start and when this tab takes the outbox over; while it
   * sends, this tab alone changes it, and a re-read must not put an older one back.
   */
  async load(taking = !this.owner): Promise<void> {
    // The read takes its turn among this tab's own storage writes: what the tab staged before
    // is stored first, so the read has it; what it stages meanwhile waits in `dirty` until the
    // read is done (applied below), rather than being stored under the read and missed by it.
    const all = (store: OfflineStoreName) => this.storage.getAll(store);
    const read = this.chain.then(() => Promise.all([all('docs'), all('queries'), all('outbox'), all('meta')]));
    this.chain = read.then(
      () => undefined,
      () => undefined,
    );
    const [docs, queries, outbox, meta] = await read;
    const [before, known] = [this.outbox, this.docs];
    this.docs = new Map(docs as Array<[string, CachedDoc]>);
    this.queries = new Map(queries as Array<[string, CachedQuery]>);
    this.outbox = (outbox as Array<[string, PendingWrite]>)
      .map(([, write]) => write)
      .sort((a, b) => (a.key < b.key ? -1 : 1));
    // What this tab changed while reading is newer than what was read.
    for (const [store, key, value] of this.dirty.values()) {
      if (store === 'outbox') {
        this.outbox = this.outbox.filter((write) => write.key !== key);
        if (value !== undefined) this.outbox.push(value as PendingWrite);
      } else if (store === 'docs' || store === 'queries') {
        const records = this[store] as Map<string, unknown>;
        if (value === undefined) records.delete(key);
        else records.set(key, value);
      }
    }
    // Writes another tab sent and the server accepted: shown (or hidden, deletions) as the
    // sending tab shows them, until this tab's live queries hear of them from the server.
    const left = new Set(this.outbox.map((write) => write.key));
    for (const write of before) {
      if (left.has(write.key)) continue;
      for (const op of write.ops) {
        const key = docKey(op.collection, op.id);
        const cached = this.docs.get(key)?.doc;
        // A refused write left the cache as it was: a create is not there, an update's copy is
        // the server's own (already in its results) and a deletion's document is still there.
        if (op.op !== 'delete') {
          if (cached) this.fresh.set(key, cached.version);
        } else if (!cached) this.gone.set(key, known.get(key)?.doc.version ?? Number.MAX_SAFE_INTEGER);
      }
    }
    this.user = (meta.find(([key]) => key === 'user')?.[1] as string | null | undefined) ?? this.user;
    if (taking) this.inFlight = (meta.find(([key]) => key === 'inflight')?.[1] as InFlight | undefined) ?? null;
    // Another tab sent the last of them: waitForPendingWrites() here is done too.
    if (this.outbox.length === 0) for (const resolve of this.idle.splice(0)) resolve();
    this.renderAll();
  }

  // ---- hand-over points for the tabs layer (offline/tabs.ts) ---------------------------

  /** Whether this tab sends the outbox (one tab at a time does). */
  setOwner(owns: boolean): void {
    const claim = {};
    this.claim = owns ? claim : null;
    if (!owns) this.owner = false;
    // What the previous owner left in flight is read first: it is sent again as it was.
    else
      void this.load(true)
        .catch(() => undefined)
        .then(() => {
          // Not given up (or closed) meanwhile.
          if (this.claim !== claim) return;
          this.owner = true;
          this.kick(true);
        });
  }

  /**
   * Stops this engine (a page being unloaded, or a test standing for a reload): no more
   * sending, retries or views. What is stored stays for the next start.
   */
  close(): void {
    this.owner = false;
    this.claim = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const view of this.views) view.stop();
  }

  /** A queued write that another tab sent and the server refused: this tab's listeners hear of it too. */
  reportWriteError(error: BasaltError, write: PendingWrite): void {
    for (const listener of this.errorListeners) listener(error, write);
  }

  /** Called with the records this tab changed, once they are in storage: tell the other tabs. */
  onLocalChange(listener: (changes: OfflineChange[]) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  // ---- what basalt.db calls ----------------------------------------------------------

  pendingWrites(): number {
    return this.outbox.length;
  }

  waitForPendingWrites(): Promise<void> {
    return this.outbox.length === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }

  onWriteError(listener: WriteErrorListener): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /**
   * Queues a write (one op, or a batch's): applied to the cache and every view at once, then
   * durably stored. Resolves with the server's results, or with the local ones as soon as
   * the server is known to be unreachable; rejects when the server refuses it.
   */
  async write(ops: Array<Omit<PendingOp, 'id'> & { id?: string }>, batch: boolean): Promise<unknown[]> {
    await this.ready;
    // Strictly increasing in this tab, so writes queued in one millisecond keep their order
    // by `created_at` / `updated_at` too (the local time they stamp), not tie and go by id.
    this.lastKeyTime = Math.max(this.lastKeyTime + 1, Date.now());
    const write: PendingWrite = {
      key: `${String(this.lastKeyTime).padStart(13, '0')}-${this.tab}`,
      at: new Date(this.lastKeyTime).toISOString(),
      ops: ops.map((op) => ({ ...op, id: op.id ?? newId() })),
      ...(batch ? { batch } : {}),
    };
    this.outbox.push(write);
    this.put('outbox', write.key, write);
    const local = write.ops.map((op) => (op.op === 'delete' ? null : this.localDoc(op.collection, op.id)));
    this.renderAll();
    const result = new Promise<unknown[]>((resolve, reject) => this.waiters.set(write.key, { resolve, reject, local }));
    await this.chain;
    if (this.failedAt || !this.owner) this.tell(write.key);
    this.kick();
    return result;
  }

  /** A query's result: the server's with the pending writes applied, or the cache's when the server is unreachable. */
  async get<T>(
    collection: string,
    query: object,
    fetch: () => Promise<{ docs: Doc<T>[]; nextCursor: string | null; prevCursor: string | null }>,
    docId?: string,
  ): Promise<CachedResult<T>> {
    await this.ready;
    const body = query as Record<string, unknown>;
    const target: LiveTarget = { collection, docId, query: this.kit.liveQueryOf(body) };
    const key = queryKey(this.kit, collection, docId, body);
    if (!this.failedAt || Date.now() - this.failedAt > OFFLINE_READ_MS) {
      try {
        const result = await fetch();
        this.failedAt = 0;
        if (!body.select) this.store(key, result.docs as Doc[], undefined, false, docId);
        return { ...result, ...this.compute(target, result.docs as Doc[], key), fromCache: false } as CachedResult<T>;
      } catch (error) {
        if (!retryable(error)) throw error;
        this.unreachable();
      }
    }
    return {
      ...this.compute(target, null, key),
      nextCursor: null,
      prevCursor: null,
      fromCache: true,
    } as CachedResult<T>;
  }

  /** A document, as get() gives it (see there). */
  async getDoc<T>(collection: string, id: string, fetch: () => Promise<Doc<T> | null>): Promise<Doc<T> | null> {
    const page = async () => {
      const doc = await fetch();
      return { docs: doc ? [doc] : [], nextCursor: null, prevCursor: null };
    };
    return (await this.get(collection, {}, page, id)).docs[0] ?? null;
  }

  /** Live aggregates are computed by the server alone: no cached groups, no pending writes folded in. */
  subscribeAggregate(
    target: LiveAggregateTarget,
    onGroups: (groups: unknown[]) => void,
    onError?: (error: BasaltError) => void,
  ): () => void {
    return this.realtime.subscribeAggregate(target, onGroups, onError);
  }

  /** Follows a query with the cache and the pending writes merged in (see docs/offline.md). */
  subscribe(
    target: LiveTarget,
    emit: (snapshot: QuerySnapshot<unknown>) => void,
    onError?: (error: BasaltError) => void,
  ): () => void {
    const key = queryKey(this.kit, target.collection, target.docId, (target.query ?? {}) as Record<string, unknown>);
    const cached = this.queries.get(key);
    const cachedDocs = cached?.ids.flatMap((id) => this.docs.get(docKey(target.collection, id))?.doc ?? []);
    const complete = cached !== undefined && cachedDocs?.length === cached.ids.length;
    const seed: LiveSeed = {
      docs: complete ? (cachedDocs as Doc[]) : [],
      cursor: complete ? cached.cursor : null,
      hasMore: complete ? cached.hasMore : false,
    };
    const view: View = {
      target,
      key,
      emit,
      server: complete ? (cachedDocs as Doc[]) : null,
      hasMore: seed.hasMore,
      confirmed: false,
      shown: null,
      flags: '',
      stop: () => undefined,
    };
    this.views.add(view);
    if (complete || this.failedAt) this.render(view);
    const stop = this.realtime.subscribe(
      target,
      (snapshot) => {
        view.server = snapshot.docs as Doc[];
        view.hasMore = snapshot.hasMore;
        view.confirmed = this.realtime.connected;
        this.store(key, view.server, seed.cursor, snapshot.hasMore, target.docId);
        this.render(view);
      },
      onError,
      seed,
    );
    view.stop = () => {
      this.views.delete(view);
      stop();
    };
    return view.stop;
  }

  // ---- views -------------------------------------------------------------------------

  /** The server could not be reached: views still waiting for it show the cache now. */
  private unreachable(always = false): void {
    const first = !this.failedAt;
    this.failedAt = Date.now();
    if (first || always) this.renderAll();
  }

  private renderAll(): void {
    for (const view of this.views) if (view.shown || view.server || this.failedAt) this.render(view);
  }

  /** Shows the view's current result if it changed: the snapshot's changes are the difference to the last one. */
  private render(view: View): void {
    const { docs, hasPendingWrites } = this.compute(view.target, view.server, view.key);
    const fromCache = !view.confirmed;
    const before = new Map((view.shown ?? []).map((doc) => [doc.id, doc]));
    const changes: QuerySnapshot<unknown>['changes'] = [];
    for (const doc of docs) {
      const old = before.get(doc.id);
      if (!old) changes.push({ type: 'added', doc });
      else if (old !== doc && !deepEqual(old, doc)) changes.push({ type: 'modified', doc });
      before.delete(doc.id);
    }
    for (const doc of before.values()) changes.push({ type: 'removed', doc });
    const flags = `${fromCache} ${hasPendingWrites} ${view.hasMore}`;
    const moved = view.shown?.some((doc, i) => docs[i]?.id !== doc.id);
    if (view.shown && changes.length === 0 && flags === view.flags && !moved) return;
    view.shown = docs;
    view.flags = flags;
    view.emit({ docs, changes, hasMore: view.hasMore, fromCache, hasPendingWrites });
  }

  /** The newest copy this client knows of a document the server sent (null: this client deleted it). */
  private newest(doc: Doc): Doc | null {
    const key = docKey(doc.collection, doc.id);
    const deleted = this.gone.get(key);
    if (deleted !== undefined && doc.version <= deleted) return null;
    const cached = this.docs.get(key)?.doc;
    return cached && cached.version > doc.version ? cached : doc;
  }

  private pendingOps(collection: string, id: string): PendingOp[] {
    return this.outbox.flatMap((write) => write.ops.filter((op) => op.collection === collection && op.id === id));
  }

  /** The document with every pending write applied (null: absent). */
  private localDoc(collection: string, id: string): Doc | null {
    const cached = this.docs.get(docKey(collection, id))?.doc;
    let doc = cached ? this.newest(cached) : null;
    for (const write of this.outbox) {
      for (const op of write.ops) {
        if (op.collection === collection && op.id === id) doc = applyOp(doc, op, this.auth.user?.id ?? null, write.at);
      }
    }
    return doc;
  }

  /**
   * What a query shows: the server's result (or the cached one, or every cached document of
   * the collection for a query never run), each document with the pending writes applied,
   * plus the documents pending or fresh writes put into it; filtered, ordered and cut again.
   */
  private compute(target: LiveTarget, server: Doc[] | null, key: string): { docs: Doc[]; hasPendingWrites: boolean } {
    const { collection, docId } = target;
    const query: LiveQuery = target.query ?? {};
    const ofTarget = (doc: Doc) => doc.collection === collection && (docId === undefined || doc.id === docId);
    const listed =
      server ??
      this.queries.get(key)?.ids.flatMap((id) => this.docs.get(docKey(collection, id))?.doc ?? []) ??
      [...this.docs.values()].map((cached) => cached.doc).filter(ofTarget);
    const candidates = new Map<string, Doc | null>(listed.map((doc) => [doc.id, this.newest(doc)]));
    const listedIds = new Set(candidates.keys());
    const touched = new Set<string>();
    for (const write of this.outbox) {
      for (const op of write.ops) if (op.collection === collection && (docId ?? op.id) === op.id) touched.add(op.id);
    }
    // A search or a page after a cursor cannot be judged here: only the server's documents show.
    const local = query.search === undefined && query.after === undefined;
    const prefix = `${collection}/`;
    const fresh = [...this.fresh.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
    const extra = local ? [...touched, ...fresh] : [];
    for (const id of extra) {
      if (candidates.has(id) || (docId !== undefined && id !== docId)) continue;
      const cached = this.docs.get(docKey(collection, id))?.doc;
      if (cached || touched.has(id)) candidates.set(id, cached ? this.newest(cached) : null);
    }
    const docs: Doc[] = [];
    for (const [id, base] of candidates) {
      const doc = touched.has(id) ? this.localDoc(collection, id) : base;
      if (!doc || doc.collection !== collection) continue;
      if ((touched.has(id) || !listedIds.has(id)) && !matches(doc, query.where, this.kit)) continue;
      docs.push(doc);
    }
    docs.sort(this.kit.documentComparator(query.order_by));
    if (query.limit !== undefined && docs.length > query.limit) docs.length = query.limit;
    return { docs, hasPendingWrites: docs.some((doc) => touched.has(doc.id)) };
  }

  // ---- the cache -----------------------------------------------------------------------

  /** Stages a record for storage; every change of one task goes in one transaction. */
  private put(store: OfflineStoreName, key: string, value: unknown): void {
    this.dirty.set(`${store}\n${key}`, [store, key, value]);
    if (this.writeQueued) return;
    this.writeQueued = true;
    this.chain = this.chain
      .then(async () => {
        this.writeQueued = false;
        this.evict();
        const changes = [...this.dirty.values()];
        this.dirty = new Map();
        if (changes.length === 0) return;
        await this.storage.write(changes);
        for (const listener of this.changeListeners) listener(changes);
      })
      .catch(() => undefined);
  }

  private cacheDoc(doc: Doc): void {
    const key = docKey(doc.collection, doc.id);
    const known = this.docs.get(key)?.doc;
    if (known && known.version > doc.version) return;
    const cached: CachedDoc = { doc, size: JSON.stringify(doc).length, usedAt: Date.now() };
    this.docs.set(key, cached);
    this.put('docs', key, cached);
  }

  /** Keeps a server result: its documents, and its ids and cursor (undefined: keep the stored one). */
  private store(key: string, docs: Doc[], cursor: string | null | undefined, hasMore: boolean, docId?: string): void {
    const ids = new Set(docs.map((doc) => doc.id));
    for (const doc of docs) {
      this.cacheDoc(doc);
      const k = docKey(doc.collection, doc.id);
      if ((this.fresh.get(k) ?? Infinity) <= doc.version) this.fresh.delete(k);
    }
    const collection = JSON.parse(key)[0] as string;
    // A deletion the servers' results all caught up with needs hiding no more.
    for (const k of this.gone.keys()) {
      const shown = [...this.views].some((view) => view.server?.some((doc) => docKey(doc.collection, doc.id) === k));
      if (!shown) this.gone.delete(k);
    }
    if (docId !== undefined && docs.length === 0 && this.pendingOps(collection, docId).length === 0) {
      this.docs.delete(docKey(collection, docId));
      this.put('docs', docKey(collection, docId), undefined);
    }
    const previous = this.queries.get(key);
    const record: CachedQuery = {
      ids: [...ids],
      cursor: cursor === undefined ? (previous?.cursor ?? null) : cursor,
      hasMore,
      usedAt: Date.now(),
    };
    if (cursor === undefined && previous?.cursor) return;
    this.queries.set(key, record);
    this.put('queries', key, record);
  }

  /** Drops the least recently used queries, then documents nothing needs, until the cache fits its bound. */
  private evict(): void {
    let size = 0;
    for (const cached of this.docs.values()) size += cached.size;
    for (const query of this.queries.values()) size += query.ids.length * 24;
    if (size <= this.budget) return;
    const live = new Set([...this.views].map((view) => view.key));
    const needed = new Set<string>();
    for (const write of this.outbox) for (const op of write.ops) needed.add(docKey(op.collection, op.id));
    for (const view of this.views) for (const doc of view.shown ?? []) needed.add(docKey(doc.collection, doc.id));
    const byAge = <T extends { usedAt: number }>(entries: Map<string, T>) =>
      [...entries].sort(([, a], [, b]) => a.usedAt - b.usedAt);
    for (const [key, query] of byAge(this.queries)) {
      if (size <= this.budget) break;
      if (live.has(key)) continue;
      this.queries.delete(key);
      this.dirty.set(`queries\n${key}`, ['queries', key, undefined]);
      size -= query.ids.length * 24;
    }
    for (const [key, query] of this.queries) {
      const collection = JSON.parse(key)[0] as string;
      for (const id of query.ids) needed.add(docKey(collection, id));
    }
    for (const [key, cached] of byAge(this.docs)) {
      if (size <= this.budget) break;
      if (needed.has(key)) continue;
      this.docs.delete(key);
      this.dirty.set(`docs\n${key}`, ['docs', key, undefined]);
      size -= cached.size;
    }
  }

  /** The cache belongs to one user: another one signing in starts from nothing. */
  private async belongsTo(user: string | null): Promise<void> {
    if (this.user !== undefined && this.user !== user) await this.clear();
    this.user = user;
    this.put('meta', 'user', user);
    await this.chain;
  }

  /** Forgets the cache and the outbox (sign-out): here, in storage, and so in every tab. */
  async clear(): Promise<void> {
    const unsettled = [...this.waiters.keys()];
    this.docs.clear();
    this.queries.clear();
    this.outbox = [];
    this.inFlight = null;
    this.solo.clear();
    this.fresh.clear();
    this.gone.clear();
    this.dirty.clear();
    for (const key of unsettled) this.tell(key);
    for (const resolve of this.idle.splice(0)) resolve();
    this.chain = this.chain.then(() => this.storage.clear()).catch(() => undefined);
    this.user = undefined;
    this.renderAll();
    await this.chain;
  }

  // ---- the outbox ----------------------------------------------------------------------

  /** The write's caller learns it is queued (resolved with the local results); a refusal is then reported to onWriteError. */
  private tell(key: string): void {
    const waiter = this.waiters.get(key);
    this.waiters.delete(key);
    waiter?.resolve(waiter.local);
  }

  /** Sends the outbox now (or after the backoff under way, unless `now`). */
  private kick(now = false): void {
    if (now && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.timer) void this.flush();
  }

  /**
   * Sends the outbox in order, as few requests as it takes: consecutive writes go together
   * in one `POST /v1/db/batch` (see plan). A batch is all or nothing, so a write the server
   * refuses fails its whole batch: the writes before it are then sent again as a batch of
   * their own, the refused one alone (its own request and its own answer), and the queue goes on.
   */
  private async flush(): Promise<void> {
    if (this.flushing || !this.owner) return;
    this.flushing = true;
    try {
      for (let writes = this.plan(); writes.length > 0; writes = this.plan()) {
        let results: unknown[];
        try {
          results = await this.send(writes);
        } catch (error) {
          if (!this.owner) return;
          // Cleared under the request (sign-out): nothing of it is left to send.
          if (!this.outbox.some((write) => writes.some((sent) => sent.key === write.key))) continue;
          if (retryable(error)) {
            this.unreachable();
            for (const key of [...this.waiters.keys()]) this.tell(key);
            const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this.attempt++);
            this.timer = setTimeout(() => {
              this.timer = null;
              void this.flush();
            }, delay);
            (this.timer as { unref?: () => void }).unref?.();
            return;
          }
          this.attempt = 0;
          if (writes.length === 1) this.settle(writes, null, error as BasaltError);
          else this.isolate(writes, error as BasaltError);
          continue;
        }
        this.attempt = 0;
        this.settle(writes, results, null);
      }
      for (const resolve of this.idle.splice(0)) resolve();
    } finally {
      this.flushing = false;
    }
  }

  /**
   * The writes of the next request: the one in flight again if there is one (its answer was
   * lost), else the first queued write alone when it must go alone, else the queued writes
   * from the first up to the server's bound on a batch or the next write that goes alone.
   */
  private plan(): PendingWrite[] {
    const byKey = new Map(this.outbox.map((write) => [write.key, write]));
    if (this.inFlight) {
      const writes = this.inFlight.writes.flatMap((key) => byKey.get(key) ?? []);
      if (writes.length === this.inFlight.writes.length) return writes;
      this.inFlight = null; // cleared (sign-out) under it
    }
    const planned: PendingWrite[] = [];
    let ops = 0;
    let bytes = 0;
    for (const write of this.outbox) {
      const size = JSON.stringify(write.ops).length;
      if (this.solo.has(write.key)) return planned.length > 0 ? planned : [write];
      if (planned.length > 0 && (ops + write.ops.length > MAX_BATCH_OPS || bytes + size > MAX_BATCH_BYTES)) break;
      planned.push(write);
      ops += write.ops.length;
      bytes += size;
    }
    return planned;
  }

  /**
   * A batch of several writes the server refused as a whole (not for the network): the
   * refusal names the failing op (`details.index`), whose write is then sent alone and
   * the writes before it together again; without an index, each of them goes alone.
   */
  private isolate(writes: PendingWrite[], error: BasaltError): void {
    this.forget();
    const index = error.details?.index;
    let end = 0;
    const failing = typeof index === 'number' ? writes.find((write) => (end += write.ops.length) > index) : undefined;
    for (const write of failing ? [failing] : writes) this.solo.add(write.key);
  }

  /** The request in flight got its final answer: its key is not to be sent again. */
  private forget(): void {
    this.inFlight = null;
    this.put('meta', 'inflight', undefined);
  }

  /**
   * The writes on the wire as one request, with its Idempotency-Key: a write alone as before
   * (its own key), several as one batch (a key of their own). What is sent is stored first,
   * so a retry after a lost answer sends the same request with the same key and gets the
   * first answer.
   */
  private async send(writes: PendingWrite[]): Promise<unknown[]> {
    const [first] = writes as [PendingWrite];
    const keys = writes.map((write) => write.key);
    let inFlight = this.inFlight;
    if (inFlight?.writes.join() !== keys.join()) {
      const key = writes.length === 1 ? first.key : `${first.key}+${writes.length}+${digest(keys)}`;
      inFlight = this.inFlight = { key, writes: keys };
      this.put('meta', 'inflight', inFlight);
      await this.chain;
    }
    const headers = { 'idempotency-key': inFlight.key };
    if (writes.length > 1 || first.batch) {
      const answer = await this.http.request<{ results: unknown[] }>(
        'POST',
        '/v1/db/batch',
        { ops: writes.flatMap((write) => write.ops) },
        headers,
      );
      return answer.results;
    }
    return [(await this.kit.sendOp(this.http, first.ops[0] as PendingOp, headers)) ?? null];
  }

  /**
   * Writes answered (results: theirs, one after the other) or one refused: out of the outbox,
   * their documents into the cache, or its local effect rolled back and the refusal reported.
   */
  private settle(writes: PendingWrite[], results: unknown[] | null, error: BasaltError | null): void {
    const settled = new Set(writes.map((write) => write.key));
    // Cleared under the request (sign-out): nothing of it is kept.
    if (!this.outbox.some((write) => settled.has(write.key))) return;
    this.forget();
    this.outbox = this.outbox.filter((write) => !settled.has(write.key));
    let offset = 0;
    for (const write of writes) {
      this.solo.delete(write.key);
      this.put('outbox', write.key, undefined);
      const own = results?.slice(offset, (offset += write.ops.length)) ?? null;
      write.ops.forEach((op, i) => {
        const key = docKey(op.collection, op.id);
        const doc = own?.[i] as Doc | null | undefined;
        if (!own) return;
        if (op.op === 'delete') {
          this.gone.set(key, this.docs.get(key)?.doc.version ?? Number.MAX_SAFE_INTEGER);
          this.docs.delete(key);
          this.put('docs', key, undefined);
        } else if (doc && doc.data !== null) {
          this.cacheDoc(doc);
          this.fresh.set(key, doc.version);
        }
      });
      const waiter = this.waiters.get(write.key);
      this.waiters.delete(write.key);
      if (waiter) {
        if (error) waiter.reject(error);
        else waiter.resolve(own ?? []);
      } else if (error) {
        for (const listener of this.errorListeners) listener(error, write);
      }
    }
    this.renderAll();
  }
}

/** A short digest of a batch's write keys (FNV-1a), so two batches of one first write have two keys. */
function digest(keys: string[]): string {
  let hash = 0x811c9dc5;
  for (const char of keys.join()) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193);
  return (hash >>> 0).toString(36);
}

/** Starts the engine for a client (createClient loads this module only with `offline`). */
export function startOffline(
  http: HttpTransport,
  realtime: RealtimeClient,
  auth: AuthClient,
  options: OfflineOptions,
  parts: OfflineKitParts,
): OfflineEngine {
  const kit = Object.fromEntries(KIT_PARTS.map((name, i) => [name, parts[i]])) as unknown as OfflineKit;
  const persistence = options.persistence ?? (typeof indexedDB === 'undefined' ? 'memory' : 'indexeddb');
  const host = new URL(http.baseUrl).host;
  const storage =
    persistence === 'memory'
      ? memoryPersistence()
      : persistence === 'indexeddb'
        ? indexedDbPersistence(`basalt.offline.${host}`)
        : persistence;
  const tabs = `basalt.offline:${host}`;
  // The tabs sharing the cache share one socket too: its leader's (offline/tab-socket.ts).
  const own = seededSocket(realtime, kit);
  const socket = persistence === 'indexeddb' ? shareSocket(own, tabs, kit) : undefined;
  const engine = new OfflineEngine(
    http,
    socket ?? own,
    auth,
    storage,
    options.cacheSizeBytes ?? DEFAULT_CACHE_BYTES,
    kit,
  );
  // Before the engine's first send: the tabs decide which one of them sends the shared outbox
  // (and leads the socket).
  if (persistence === 'indexeddb') coordinateTabs(engine, tabs, kit, socket);
  return engine;
}
