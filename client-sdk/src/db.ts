/**
 * `basalt.db`: documents, queries, counts and batches over /v1/db. Every call returns a
 * promise that rejects with a BasaltError carrying the server's catalogue code.
 */
import { BasaltError } from './errors.js';
import { liveQueryOf, type LiveQueries } from './live-query.js';
import type { OrderDirection } from './order.js';
import type { HttpTransport } from './transport.js';
import type { Doc, DocChangeType, DocumentData } from './wire.js';

export type { Doc, DocumentData } from './wire.js';
export type { OrderDirection } from './order.js';

export type WhereOp =
  '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'not-in' | 'array-contains' | 'array-contains-any' | 'exists';

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

/** A field transform: computed by the server from the stored value, atomically. */
export type FieldTransform =
  | { readonly $increment: number }
  | { readonly $server_timestamp: true }
  | { readonly $array_union: readonly unknown[] }
  | { readonly $array_remove: readonly unknown[] }
  | { readonly $delete: true };

/** Adds `n` (may be negative or fractional) to a number field; a missing or non-number field counts as 0. */
export function increment(n: number): FieldTransform {
  return { $increment: n };
}
/** The server's time at the write (UTC ISO string with microseconds). */
export function serverTimestamp(): FieldTransform {
  return { $server_timestamp: true };
}
/** Appends the values not already present (deep equality). */
export function arrayUnion(...values: unknown[]): FieldTransform {
  return { $array_union: values };
}
/** Removes every element equal (deep equality) to one of the values. */
export function arrayRemove(...values: unknown[]): FieldTransform {
  return { $array_remove: values };
}
/** Removes the field. */
export function deleteField(): FieldTransform {
  return { $delete: true };
}

/** Data for add/set: each field may be its value or a transform (applied to nothing). */
export type WriteData<T> = { [K in keyof T]: T[K] | FieldTransform };
/** Data for update: a deep partial where any field may be a transform. */
export type UpdateData<T> = {
  [K in keyof T]?: T[K] | FieldTransform | (T[K] extends Record<string, unknown> ? UpdateData<T[K]> : never);
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
  nextCursor: string | null;
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

/** An immutable query: each method returns a new one. */
export class Query<T = DocumentData> {
  constructor(
    protected readonly context: DbContext,
    readonly collection: string,
    protected readonly body: QueryBody = {},
  ) {}

  protected with(change: Partial<QueryBody>): Query<T> {
    return new Query<T>(this.context, this.collection, { ...this.body, ...change });
  }

  /** Adds a condition (ANDed with the others), or a filter built with or(...) / and(...). */
  where(path: string, op: WhereOp, value: unknown): Query<T>;
  where(filter: Filter): Query<T>;
  where(pathOrFilter: string | Filter, op?: WhereOp, value?: unknown): Query<T> {
    const filter: Filter = typeof pathOrFilter === 'string' ? [pathOrFilter, op as WhereOp, value] : pathOrFilter;
    return this.with({ where: [...(this.body.where ?? []), filter] });
  }

  orderBy(path: string, direction: OrderDirection = 'asc'): Query<T> {
    return this.with({ order_by: [...(this.body.order_by ?? []), [path, direction]] });
  }

  /** At most n documents per page (1-1000; the server's default is 100). */
  limit(n: number): Query<T> {
    return this.with({ limit: n });
  }

  /** Continues after a page: pass the `nextCursor` of the previous get(). */
  startAfter(cursor: string | null): Query<T> {
    return this.with({ after: cursor });
  }

  /** Adds each referenced document to results, under `doc.expand[path]` (paths of the collection's refs). */
  expand(...paths: string[]): Query<T> {
    return this.with({ expand: [...(this.body.expand ?? []), ...paths] });
  }

  /**
   * Full-text search (`"a phrase"`, `or`, `-word`) over the collection's search fields,
   * ordered by relevance unless orderBy is given; `highlight` adds `doc.highlights`.
   */
  search(text: string, options: { highlight?: boolean } = {}): Query<T> {
    return this.with({ search: text, ...(options.highlight ? { highlight: true } : {}) });
  }

  /**
   * Groups the matching documents (that the caller may read) and aggregates them:
   * `aggregate({ n: count(), total: sum('price') }, { groupBy: ['status'] })`.
   */
  async aggregate<A extends Record<string, AggregateSpec>>(
    aggregates: A,
    options: AggregateOptions = {},
  ): Promise<Array<AggregateGroup<A>>> {
    const result = await this.context.http.request<{ groups: Array<AggregateGroup<A>> }>(
      'POST',
      `/v1/db/${segment(this.collection)}/aggregate`,
      {
        ...(this.body.where ? { where: this.body.where } : {}),
        aggregates,
        ...(options.groupBy ? { group_by: options.groupBy } : {}),
        ...(options.orderBy ? { order_by: options.orderBy } : {}),
        ...(options.limit !== undefined ? { limit: options.limit } : {}),
      },
    );
    return result.groups;
  }

  /** The query as sent on the wire (realtime subscriptions take the same form). */
  toJSON(): QueryBody {
    return { ...this.body };
  }

  /**
   * Live results over the client's one websocket: called with the first snapshot, then
   * after every change, so `docs` always equals the query's result. Returns the stop function.
   */
  onSnapshot(
    callback: (snapshot: { docs: Doc<T>[]; changes: Array<{ type: DocChangeType; doc: Doc<T> }> }) => void,
    onError?: (error: BasaltError) => void,
  ): () => void {
    return this.context.live.subscribe(
      { collection: this.collection, query: liveQueryOf(this.body) },
      (snapshot) =>
        callback(snapshot as unknown as { docs: Doc<T>[]; changes: Array<{ type: DocChangeType; doc: Doc<T> }> }),
      onError,
    );
  }

  async get(): Promise<QueryResult<T>> {
    const result = await this.context.http.request<{ docs: Doc<T>[]; next_cursor: string | null }>(
      'POST',
      `/v1/db/${segment(this.collection)}/query`,
      this.body,
    );
    return { docs: result.docs, nextCursor: result.next_cursor };
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
      (snapshot) => callback((snapshot.docs[0] as unknown as Doc<T> | undefined) ?? null),
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
