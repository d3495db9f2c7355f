/**
 * `basalt.db`: documents, queries, counts and batches over /v1/db. Every call returns a
 * promise that rejects with a BasaltError carrying the server's catalogue code.
 */
import { BasaltError } from './errors.js';
import { liveQueryOf, type LiveQueries } from './live-query.js';
import type { OrderDirection } from './order.js';
import type { HttpTransport } from './transport.js';
import type { FieldPath, PathValue, QueryPath, Selected, WhereOp, WhereValue } from './field-paths.js';
import type { QuerySnapshot } from './live-query.js';
import type { Doc, DocumentData } from './wire.js';

export type { Doc, DocumentData } from './wire.js';
export type { OrderDirection } from './order.js';
export type { FieldPath, PathValue, QueryPath, Selected, SystemField, WhereOp, WhereValue } from './field-paths.js';

/** `[path, op, value]`; path is a dotted path into data, or id, owner, created_at, updated_at. */
export type Condition = [path: string, op: WhereOp, value: unknown];
export interface OrFilter {
  or: Filter[];
}
export interface AndFilter {
  and: Filter[];
}
export type Filter = Condition | OrFilter | AndFilter;

/** A condition, for use inside or(...) and and(...). */
export function where(path: string, op: WhereOp, value: unknown): Condition {
  return [path, op, value];
}

/** Matches documents that match any of the filters. */
export function or(...filters: Filter[]): OrFilter {
  return { or: filters };
}

/** Matches documents that match all of the filters (useful inside or(...)). */
export function and(...filters: Filter[]): AndFilter {
  return { and: filters };
}

// -- field transforms ----------------------------------------------------------

export interface IncrementTransform {
  readonly $increment: number;
}
export interface ServerTimestampTransform {
  readonly $server_timestamp: true;
}
export interface ArrayUnionTransform<E = unknown> {
  readonly $array_union: readonly E[];
}
export interface ArrayRemoveTransform<E = unknown> {
  readonly $array_remove: readonly E[];
}
export interface DeleteFieldTransform {
  readonly $delete: true;
}

/** A field transform: computed by the server from the stored value, atomically. */
export type FieldTransform =
  IncrementTransform | ServerTimestampTransform | ArrayUnionTransform | ArrayRemoveTransform | DeleteFieldTransform;

/** Adds `n` (may be negative or fractional) to a number field; a missing or non-number field counts as 0. */
export function increment(n: number): IncrementTransform {
  return { $increment: n };
}
/** The server's time at the write (UTC ISO string with microseconds): for string fields. */
export function serverTimestamp(): ServerTimestampTransform {
  return { $server_timestamp: true };
}
/** Appends the values not already present (deep equality). */
export function arrayUnion<E>(...values: E[]): ArrayUnionTransform<E> {
  return { $array_union: values };
}
/** Removes every element equal (deep equality) to one of the values. */
export function arrayRemove<E>(...values: E[]): ArrayRemoveTransform<E> {
  return { $array_remove: values };
}
/** Removes the field. */
export function deleteField(): DeleteFieldTransform {
  return { $delete: true };
}

type Includes<V, X> = [Extract<V, X>] extends [never] ? false : true;
type ArrayElement<V> = V extends readonly (infer E)[] ? E : never;

/**
 * The transforms a field of type V takes: increment for numbers, serverTimestamp for strings,
 * arrayUnion/arrayRemove of its elements for arrays, deleteField for any field. Any
 * transform for a field whose type is not known (untyped collections).
 */
export type TransformFor<V> = unknown extends V
  ? FieldTransform
  : | (Includes<V, number> extends true ? IncrementTransform : never)
    | (Includes<V, string> extends true ? ServerTimestampTransform : never)
    | (Includes<V, readonly unknown[]> extends true
        ? | ArrayUnionTransform<ArrayElement<Extract<V, readonly unknown[]>>>
          | ArrayRemoveTransform<ArrayElement<Extract<V, readonly unknown[]>>>
        : never)
    | DeleteFieldTransform;

/** Objects whose fields a write addresses one by one (not arrays, not dates). */
type Nested<V> = V extends readonly unknown[] | Date ? never : V extends object ? V : never;

/** Data for add/set: each field its value or a transform of its type (applied to nothing), nested objects alike. */
export type WriteData<T> = { [K in keyof T]: T[K] | TransformFor<T[K]> | WriteData<Nested<NonNullable<T[K]>>> };
/**
 * Data for update: a deep partial (interfaces and type aliases alike), where each field may be
 * a transform of its type: `update({ meta: { color: 'red' }, views: increment(1) })`.
 */
export type UpdateData<T> = {
  [K in keyof T]?: T[K] | TransformFor<T[K]> | UpdateData<Nested<NonNullable<T[K]>>>;
};

/**
 * An update's answer when the caller may update the document but not read it: its metadata,
 * and `data: null` (the server does not show what the read rule hides).
 */
export type RedactedDoc<T = DocumentData> = Omit<Doc<T>, 'data'> & { data: null };

/** One result of a batch, per op in order: the written document (redacted as by update), or null for a delete. */
export type BatchResult<T = DocumentData> = Doc<T> | RedactedDoc<T> | null;

/**
 * Refuses dotted keys anywhere in an update's data: the server stores `{'meta.color': 1}` as a
 * key named `meta.color`, where a Firestore habit expects the path meta → color. Nested
 * objects say what is meant: `{meta: {color: 1}}` (deep-merged).
 */
function assertNoDottedKeys(patch: unknown, prefix = ''): void {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return;
  for (const [key, value] of Object.entries(patch)) {
    const field = prefix ? `${prefix}.${key}` : key;
    if (key.includes('.')) {
      throw new BasaltError(
        'INVALID_REQUEST',
        `Update keys are field names, not paths: write "${key}" as nested objects (e.g. {a: {b: value}}).`,
        { details: { field } },
      );
    }
    assertNoDottedKeys(value, field);
  }
}

export interface WriteOptions {
  /** Fail with VERSION_CONFLICT unless the stored version is this one. */
  ifVersion?: number;
}

// -- queries ---------------------------------------------------------------------

/** The wire form of a query, as POST /v1/db/:collection/query takes it. */
export interface QueryBody {
  where?: Filter[];
  order_by?: Array<[string, OrderDirection]>;
  limit?: number;
  after?: string | null;
  /** Only documents before this cursor (a `prevCursor` or `nextCursor` of the same query). */
  before?: string | null;
  /** The last n documents of the result (in the query's order) instead of the first `limit`. */
  limit_to_last?: number;
  /** Only these data paths in each document's data (system fields always come). */
  select?: string[];
  /** Full-text search in web-search syntax over the collection's search fields. */
  search?: string;
  highlight?: boolean;
  /** Reference paths to expand (the collection's refs; two levels at most). */
  expand?: string[];
}

// -- aggregations ----------------------------------------------------------------

/** One aggregate of aggregate(): built with count(), sum(path), avg(path), min(path), max(path). */
export type AggregateSpec = readonly ['count'] | readonly ['count' | 'sum' | 'avg' | 'min' | 'max', string];

/** Counts documents; with a path, those whose field is present and not null. */
export function count(path?: string): AggregateSpec {
  return path === undefined ? ['count'] : ['count', path];
}
/** Sums a field's JSON numbers (other values are ignored; null when there is none). */
export function sum(path: string): AggregateSpec {
  return ['sum', path];
}
export function avg(path: string): AggregateSpec {
  return ['avg', path];
}
export function min(path: string): AggregateSpec {
  return ['min', path];
}
export function max(path: string): AggregateSpec {
  return ['max', path];
}

export interface AggregateOptions {
  /** Field paths to group by; none = one group over every matching document. */
  groupBy?: string[];
  /** By a group_by path or an alias, e.g. [['n', 'desc']]. */
  orderBy?: Array<[string, OrderDirection]>;
  /** At most this many groups (1-1000; default 100). */
  limit?: number;
}

/** One group of an aggregation: its key (group_by path → value) and a number (or null) per alias. */
export interface AggregateGroup<A extends Record<string, AggregateSpec>> {
  key: Record<string, unknown>;
  values: { [K in keyof A]: number | null };
}

export interface QueryResult<T> {
  docs: Doc<T>[];
  /** Continues after this page with startAfter(nextCursor); null when no document follows. */
  nextCursor: string | null;
  /**
   * Goes back before this page with endBefore(prevCursor) (with limitToLast for the page just
   * before); null when the query started at the beginning (no startAfter, no limitToLast
   * with more before).
   */
  prevCursor: string | null;
}

function segment(value: string): string {
  return encodeURIComponent(value);
}

function versionHeaders(options: WriteOptions | undefined): Record<string, string> {
  return options?.ifVersion === undefined ? {} : { 'if-match': String(options.ifVersion) };
}

/** What queries and references use: the HTTP transport, and the live queries of the same client. */
export interface DbContext {
  readonly http: HttpTransport;
  readonly live: LiveQueries;
}

/**
 * An immutable query: each method returns a new one. `T` is the collection's data type (its
 * paths and values are checked where the collection is typed), `R` the data each result
 * carries (T, or what select() keeps of it).
 */
export class Query<T = DocumentData, R = T> {
  constructor(
    protected readonly context: DbContext,
    readonly collection: string,
    protected readonly body: QueryBody = {},
  ) {}

  protected with<Next = R>(change: Partial<QueryBody>, drop: Array<keyof QueryBody> = []): Query<T, Next> {
    const body: QueryBody = { ...this.body, ...change };
    for (const key of drop) delete body[key];
    return new Query<T, Next>(this.context, this.collection, body);
  }

  /**
   * Adds a condition (ANDed with the others), or a filter built with or(...) / and(...). On a
   * typed collection the path must exist in T and the value fit the field's type.
   */
  where<P extends QueryPath<T>, Op extends WhereOp>(
    path: P,
    op: Op,
    value: WhereValue<PathValue<T, P>, Op>,
  ): Query<T, R>;
  where(filter: Filter): Query<T, R>;
  where(pathOrFilter: string | Filter, op?: WhereOp, value?: unknown): Query<T, R> {
    const filter: Filter = typeof pathOrFilter === 'string' ? [pathOrFilter, op as WhereOp, value] : pathOrFilter;
    return this.with({ where: [...(this.body.where ?? []), filter] });
  }

  orderBy(path: QueryPath<T>, direction: OrderDirection = 'asc'): Query<T, R> {
    return this.with({ order_by: [...(this.body.order_by ?? []), [path, direction]] });
  }

  /** At most n documents per page, from the start (1-1000; the server's default is 100). */
  limit(n: number): Query<T, R> {
    return this.with({ limit: n }, ['limit_to_last']);
  }

  /**
   * The last n documents (1-1000) of the result, still in the query's order: with
   * endBefore(cursor), the page just before the cursor. get() only; live queries take limit().
   */
  limitToLast(n: number): Query<T, R> {
    return this.with({ limit_to_last: n }, ['limit']);
  }

  /** Continues after a page: pass the `nextCursor` of the previous get(). */
  startAfter(cursor: string | null): Query<T, R> {
    return this.with({ after: cursor });
  }

  /**
   * Only documents before the cursor: pass the `prevCursor` of a page (with limitToLast(n)
   * for the n documents just before it). get() only.
   */
  endBefore(cursor: string | null): Query<T, R> {
    return this.with({ before: cursor });
  }

  /**
   * Only these fields of each document's data (dotted paths into nested objects; system
   * fields always come). The read rule still decides which documents are returned.
   */
  select<P extends FieldPath<T>>(...fields: P[]): Query<T, Selected<T, P>> {
    return this.with<Selected<T, P>>({ select: [...fields] });
  }

  /** Adds each referenced document to results, under `doc.expand[path]` (paths of the collection's refs). */
  expand(...paths: string[]): Query<T, R> {
    return this.with({ expand: [...(this.body.expand ?? []), ...paths] });
  }

  /**
   * Full-text search (`"a phrase"`, `or`, `-word`) over the collection's search fields,
   * ordered by relevance unless orderBy is given; `highlight` adds `doc.highlights`.
   */
  search(text: string, options: { highlight?: boolean } = {}): Query<T, R> {
    return this.with({ search: text, ...(options.highlight ? { highlight: true } : {}) });
  }

  /**
   * Groups the matching documents (that the caller may read) and aggregates them:
   * `await aggregate({ n: count(), total: sum('price') }, { groupBy: ['status'] })`, or live
   * with `.onSnapshot((groups) => …)` (see AggregateQuery).
   */
  aggregate<A extends Record<string, AggregateSpec>>(aggregates: A, options: AggregateOptions = {}): AggregateQuery<A> {
    return new AggregateQuery<A>(this.context, this.collection, {
      ...(this.body.where ? { where: this.body.where } : {}),
      aggregates,
      ...(options.groupBy ? { group_by: options.groupBy } : {}),
      ...(options.orderBy ? { order_by: options.orderBy } : {}),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
    });
  }

  /** The query as sent on the wire (realtime subscriptions take the same form). */
  toJSON(): QueryBody {
    return { ...this.body };
  }

  /**
   * Live results over the client's one websocket: called with the first snapshot, then
   * after every change, so `docs` always equals the query's result. With `limit()` that is
   * the first `limit` matches (after `startAfter`'s cursor, if given) and `hasMore` says
   * whether others match; without, every match, and more than 1000 fail with INVALID_REQUEST
   * (`details.limit`) rather than being cut short. If the session signs out or changes user
   * while the result holds documents the new caller may not read, the listener ends with
   * FORBIDDEN; otherwise it shows the new caller's result in one snapshot. Returns the stop function.
   * Takes where, orderBy, limit and startAfter (and select, applied to each delivered document);
   * throws INVALID_REQUEST for endBefore and limitToLast, which only get() takes.
   */
  onSnapshot(callback: (snapshot: QuerySnapshot<R>) => void, onError?: (error: BasaltError) => void): () => void {
    if (this.body.before != null || this.body.limit_to_last !== undefined) {
      throw new BasaltError(
        'INVALID_REQUEST',
        'Live queries take where, orderBy and limit; endBefore and limitToLast are for get().',
      );
    }
    const select = this.body.select;
    return this.context.live.subscribe(
      { collection: this.collection, query: liveQueryOf(this.body) },
      (snapshot) => {
        // The live query carries what T says a document holds; select() narrows it to R.
        const typed = snapshot as unknown as QuerySnapshot<R>;
        if (!select) return callback(typed);
        const project = (doc: Doc<R>): Doc<R> => ({ ...doc, data: projectData(doc.data, select) as R });
        callback({
          docs: typed.docs.map(project),
          changes: typed.changes.map((change) => ({ type: change.type, doc: project(change.doc) })),
          hasMore: typed.hasMore,
        });
      },
      onError,
    );
  }

  async get(): Promise<QueryResult<R>> {
    const result = await this.context.http.request<{
      docs: Doc<R>[];
      next_cursor: string | null;
      prev_cursor?: string | null;
    }>('POST', `/v1/db/${segment(this.collection)}/query`, this.body);
    return { docs: result.docs, nextCursor: result.next_cursor, prevCursor: result.prev_cursor ?? null };
  }

  /** How many documents match (that the caller may read); limit and cursor are ignored. */
  async count(): Promise<number> {
    const body = this.body.where ? { where: this.body.where } : {};
    const result = await this.context.http.request<{ count: number }>(
      'POST',
      `/v1/db/${segment(this.collection)}/count`,
      body,
    );
    return result.count;
  }
}

/**
 * An aggregation: awaited (or get()), the groups now; with onSnapshot(), the groups now and
 * again whenever writes change them, so a dashboard counter needs no polling.
 */
export class AggregateQuery<A extends Record<string, AggregateSpec>> implements PromiseLike<Array<AggregateGroup<A>>> {
  private answer: Promise<Array<AggregateGroup<A>>> | null = null;

  constructor(
    private readonly context: DbContext,
    readonly collection: string,
    private readonly body: Record<string, unknown>,
  ) {}

  /** The groups now, from `POST /v1/db/:collection/aggregate`. */
  async get(): Promise<Array<AggregateGroup<A>>> {
    const result = await this.context.http.request<{ groups: Array<AggregateGroup<A>> }>(
      'POST',
      `/v1/db/${segment(this.collection)}/aggregate`,
      this.body,
    );
    return result.groups;
  }

  /** Awaiting the aggregation runs it once (get()). */
  then<R1 = Array<AggregateGroup<A>>, R2 = never>(
    onFulfilled?: ((groups: Array<AggregateGroup<A>>) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    this.answer ??= this.get();
    return this.answer.then(onFulfilled, onRejected);
  }

  /**
   * Live groups over the client's one websocket: called with the groups at once, then with
   * the new list whenever writes change it (every group, in the aggregation's order). The
   * server computes them with the caller's read rule, at most once per interval (250 ms by
   * default) however fast the collection changes, and sends nothing when they did not change;
   * after a sign-out or a change of user they are the new caller's. Returns the stop function.
   */
  onSnapshot(callback: (groups: Array<AggregateGroup<A>>) => void, onError?: (error: BasaltError) => void): () => void {
    return this.context.live.subscribeAggregate(
      { collection: this.collection, aggregate: this.body },
      // The server's groups carry the aliases this aggregation asked for.
      (groups) => callback(groups as Array<AggregateGroup<A>>),
      onError,
    );
  }
}

/** The selected paths of `data`, as the server's select does (for live queries, which deliver whole documents). */
function projectData(data: unknown, paths: readonly string[]): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const path of paths) {
    const segments = path.split('.');
    let source: unknown = data;
    for (const segment of segments) {
      source = source !== null && typeof source === 'object' ? (source as Record<string, unknown>)[segment] : undefined;
    }
    if (source === undefined) continue;
    let target = result;
    for (const segment of segments.slice(0, -1)) {
      const next = target[segment];
      target = next !== null && typeof next === 'object' ? (next as Record<string, unknown>) : (target[segment] = {});
    }
    target[segments.at(-1) as string] = source;
  }
  return result;
}

export class DocumentRef<T = DocumentData> {
  constructor(
    private readonly context: DbContext,
    readonly collection: string,
    readonly id: string,
  ) {}

  private get path(): string {
    return `/v1/db/${segment(this.collection)}/${segment(this.id)}`;
  }

  /** The document, or null when it does not exist or the caller may not read it; `expand` adds referenced documents. */
  async get(options: { expand?: string[] } = {}): Promise<Doc<T> | null> {
    const query = options.expand?.length ? `?expand=${options.expand.map(segment).join(',')}` : '';
    try {
      return await this.context.http.request<Doc<T>>('GET', `${this.path}${query}`);
    } catch (error) {
      if (error instanceof BasaltError && error.code === 'NOT_FOUND') return null;
      throw error;
    }
  }

  /** Live document: called with it (or null when absent or unreadable), then after every change. */
  onSnapshot(callback: (doc: Doc<T> | null) => void, onError?: (error: BasaltError) => void): () => void {
    return this.context.live.subscribe(
      { collection: this.collection, docId: this.id },
      // The live query carries documents of the collection, whose data type T names.
      (snapshot) => callback((snapshot.docs[0] as Doc<T> | undefined) ?? null),
      onError,
    );
  }

  /** Replaces the data, or creates the document. */
  set(data: WriteData<T>, options?: WriteOptions): Promise<Doc<T>> {
    return this.context.http.request<Doc<T>>('PUT', this.path, { data }, versionHeaders(options));
  }

  /**
   * Deep-merges into the data; fields may be transforms (increment(1), deleteField(), ...).
   * Keys are field names: a dotted key is refused (INVALID_REQUEST), nest objects instead.
   * When the read rule hides the document from the caller, the result's `data` is null.
   */
  async update(patch: UpdateData<T>, options?: WriteOptions): Promise<Doc<T> | RedactedDoc<T>> {
    assertNoDottedKeys(patch);
    return this.context.http.request<Doc<T> | RedactedDoc<T>>(
      'PATCH',
      this.path,
      { data: patch },
      versionHeaders(options),
    );
  }

  async delete(options?: WriteOptions): Promise<void> {
    await this.context.http.request<void>('DELETE', this.path, undefined, versionHeaders(options));
  }
}

export class CollectionRef<T = DocumentData> extends Query<T> {
  constructor(context: DbContext, collection: string) {
    super(context, collection);
  }

  /** Creates a document; its id is generated unless given. */
  add(data: WriteData<T>, options: { id?: string } = {}): Promise<Doc<T>> {
    return this.context.http.request<Doc<T>>('POST', `/v1/db/${segment(this.collection)}`, {
      ...(options.id !== undefined ? { id: options.id } : {}),
      data,
    });
  }

  doc(id: string): DocumentRef<T> {
    return new DocumentRef<T>(this.context, this.collection, id);
  }
}

interface BatchOpBody {
  op: 'create' | 'set' | 'update' | 'delete';
  collection: string;
  id?: string;
  data?: unknown;
  if_version?: number;
}

/** Up to 500 writes committed together: all or nothing. */
export class WriteBatch {
  private readonly ops: BatchOpBody[] = [];

  constructor(private readonly http: HttpTransport) {}

  create<T = DocumentData>(collection: string, data: WriteData<T>, options: { id?: string } = {}): this {
    this.ops.push({ op: 'create', collection, data, ...(options.id !== undefined ? { id: options.id } : {}) });
    return this;
  }

  set<T = DocumentData>(collection: string, id: string, data: WriteData<T>, options?: WriteOptions): this {
    this.ops.push({ op: 'set', collection, id, data, ...ifVersion(options) });
    return this;
  }

  /** Throws INVALID_REQUEST for a dotted key, as DocumentRef.update does. */
  update<T = DocumentData>(collection: string, id: string, patch: UpdateData<T>, options?: WriteOptions): this {
    assertNoDottedKeys(patch);
    this.ops.push({ op: 'update', collection, id, data: patch, ...ifVersion(options) });
    return this;
  }

  delete(collection: string, id: string, options?: WriteOptions): this {
    this.ops.push({ op: 'delete', collection, id, ...ifVersion(options) });
    return this;
  }

  get size(): number {
    return this.ops.length;
  }

  /**
   * Sends the batch. Resolves with one result per op, in order: the written document,
   * or null for a delete. On failure nothing is written and the BasaltError's
   * `details.index` names the op that failed. `T` is the documents' data type when the
   * ops share one.
   */
  async commit<T = DocumentData>(): Promise<BatchResult<T>[]> {
    const result = await this.http.request<{ results: BatchResult<T>[] }>('POST', '/v1/db/batch', {
      ops: this.ops,
    });
    return result.results;
  }
}

function ifVersion(options: WriteOptions | undefined): { if_version?: number } {
  return options?.ifVersion === undefined ? {} : { if_version: options.ifVersion };
}

export class DbClient {
  private readonly context: DbContext;

  /** `live` runs live queries: the client's realtime connection. */
  constructor(http: HttpTransport, live: LiveQueries) {
    this.context = { http, live };
  }

  collection<T = DocumentData>(name: string): CollectionRef<T> {
    return new CollectionRef<T>(this.context, name);
  }

  batch(): WriteBatch {
    return new WriteBatch(this.context.http);
  }
}
