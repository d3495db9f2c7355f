/**
 * `basalt/functions`: the helpers a file in the functions folder uses to declare what
 * it reacts to. Each helper returns a plain, typed definition that the server loads.
 */
import type { ErrorCode } from '../client-sdk/src/errors.js';
import type { Doc, StorageObject } from '../client-sdk/src/wire.js';

export type { ErrorCode, StorageObject };

export interface FunctionOptions {
  /** Attempts after the first failure before the event is dead-lettered. */
  retries?: number;
  timeout_ms?: number;
  memory_mb?: number;
  concurrency?: number;
  /** Workers kept warm on each instance that runs the function, never reaped: 0 to `concurrency` (default 0). */
  min_warm?: number;
  /** Seconds an idle worker lives before it ends (1 to 86400; default 300, or BASALT_FUNCTIONS_IDLE_TIMEOUT_MS). */
  idle_timeout_s?: number;
  /** Names of environment variables the function may read through ctx.env. */
  env?: string[];
  /** Names of secrets (set with the admin API or `basalt secrets set`) the function reads through ctx.secrets. */
  secrets?: string[];
  /**
   * Least privilege: the collections, buckets and topics ctx.db / ctx.storage / ctx.events
   * (and ctx.asCaller) may touch; anything else is FORBIDDEN. Without `access`, all of them;
   * with it, a kind left out means none of that kind.
   */
  access?: { collections?: string[]; buckets?: string[]; topics?: string[] };
}

export interface FunctionLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export type WhereOperator =
  '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'not-in' | 'array-contains' | 'array-contains-any' | 'exists';

/** A query on a collection, as in the client SDK; it runs with the service role. */
export interface FunctionQuery<T = Record<string, unknown>> {
  where(path: string, op: WhereOperator, value: unknown): FunctionQuery<T>;
  orderBy(path: string, direction?: 'asc' | 'desc'): FunctionQuery<T>;
  limit(limit: number): FunctionQuery<T>;
  startAfter(cursor: string): FunctionQuery<T>;
  get(): Promise<{ docs: StoredDocument<T>[]; nextCursor: string | null }>;
  count(): Promise<number>;
}

export interface FunctionDocumentRef<T = Record<string, unknown>> {
  get(): Promise<StoredDocument<T> | null>;
  set(data: T): Promise<StoredDocument<T>>;
  update(data: Partial<T> | Record<string, unknown>, options?: { ifVersion?: number }): Promise<StoredDocument<T>>;
  delete(): Promise<void>;
}

export interface FunctionCollection<T = Record<string, unknown>> extends FunctionQuery<T> {
  add(data: T, options?: { id?: string }): Promise<StoredDocument<T>>;
  doc(id: string): FunctionDocumentRef<T>;
}

/** ctx.db: the document API with the service role (rules do not apply). */
export interface FunctionDb {
  collection<T = Record<string, unknown>>(name: string): FunctionCollection<T>;
}

export interface FunctionBucket {
  upload(
    path: string,
    body: string | Uint8Array,
    options?: { contentType?: string; upsert?: boolean },
  ): Promise<unknown>;
  download(path: string): Promise<Uint8Array>;
  remove(path: string): Promise<void>;
  list(options?: { prefix?: string; limit?: number; after?: string }): Promise<unknown>;
}

/** ctx.storage: the storage API with the service role. */
export interface FunctionStorage {
  from(bucket: string): FunctionBucket;
}

/** ctx.events: publishes to a topic (docs/events.md). */
export interface FunctionEvents {
  /**
   * Publishes `payload` to every function subscribed to `topic`; resolves with the event's id
   * once it is committed. Events with one `key` run in publish order, one at a time per
   * function; `delay_seconds` (0 to 900) holds the delivery back.
   */
  publish(topic: string, payload: unknown, options?: { key?: string; delay_seconds?: number }): Promise<{ id: string }>;
  /**
   * Publishes up to 1,000 events to `topic` at once, all of them or none (one transaction);
   * resolves with their ids, in order, once they are committed. Each event runs in list order
   * among the events of its `key`. A refused event (too large, a bad key) refuses the batch,
   * naming its index.
   */
  publishMany(
    topic: string,
    events: Array<{ payload: unknown; key?: string; delay_seconds?: number }>,
  ): Promise<{ ids: string[] }>;
}

export interface FunctionContext {
  log: FunctionLog;
  events: FunctionEvents;
  /** Only the environment variables the function declares in its `env` option. */
  env: Record<string, string | undefined>;
  db: FunctionDb;
  storage: FunctionStorage;
  /** The secrets the function declares in its `secrets` option that exist (never in the process environment). */
  secrets: Readonly<Record<string, string>>;
  /**
   * The trace this invocation belongs to (32 hex digits, W3C): the writes, uploads and
   * publishes it makes carry it, so the runs they trigger share it (docs/tracing.md).
   */
  trace_id: string;
  /**
   * HTTP functions only: ctx.db and ctx.storage acting as the verified caller of the request,
   * with the collections' and buckets' rules applied (FORBIDDEN where they deny).
   */
  asCaller?: { db: FunctionDb; storage: FunctionStorage };
}

/** A stored document, as the API and every event carry it (the wire contract's shape). */
export type StoredDocument<T = Record<string, unknown>> = Doc<T>;

export interface FunctionEvent<T = Record<string, unknown>> {
  id: string;
  type: string;
  at: string;
  collection?: string;
  before?: StoredDocument<T> | null;
  after?: StoredDocument<T> | null;
  bucket?: string;
  /** The object as the storage API shows it: on upload the new one, on delete the removed one. */
  object?: StorageObject | null;
  user?: Record<string, unknown> | null;
}

/** An event of a topic, as onEvent handlers receive it (API.md "Events, queues and usage"). */
export interface TopicEvent<P = unknown> {
  /** The same for every subscriber and every attempt: use it to make a handler idempotent. */
  id: string;
  type: 'event';
  topic: string;
  payload: P;
  key: string | null;
  published_at: string;
  trace_id: string;
}

export interface HttpRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  /** The parsed body: JSON for `application/json`, the text for `text/plain`, else null. */
  body: unknown;
  /** The body's bytes as sent (empty without one), e.g. to check a webhook's signature. */
  rawBody: Uint8Array;
  auth: Record<string, unknown> | null;
}

/**
 * What an HTTP handler returns: a `Response` (the global of Node 20) sets the status (200–599),
 * headers and body; any other value is sent as JSON with status 200.
 */
export type HttpResult = Response | unknown;

type EventHandler = (event: FunctionEvent, ctx: FunctionContext) => unknown;
type TopicHandler<P> = (event: TopicEvent<P>, ctx: FunctionContext) => unknown;
type TopicBatchHandler<P> = (events: Array<TopicEvent<P>>, ctx: FunctionContext) => unknown;

/** onEvent's options: the topic, and with `batch_size` (1 to 100) a run takes up to that many events as a list. */
export interface TopicOptions extends FunctionOptions {
  topic: string;
  batch_size?: number;
}
type HttpHandler = (request: HttpRequest, ctx: FunctionContext) => HttpResult | Promise<HttpResult>;

export type FunctionDefinition =
  | {
      kind: 'document';
      options: FunctionOptions & { collection: string; on: 'create' | 'update' | 'delete' | 'write' };
      handler: EventHandler;
    }
  | { kind: 'object'; options: FunctionOptions & { bucket: string; on: 'upload' | 'delete' }; handler: EventHandler }
  | { kind: 'auth'; options: FunctionOptions & { on: 'user.created' | 'user.deleted' }; handler: EventHandler }
  | { kind: 'http'; options: FunctionOptions & { method?: string }; handler: HttpHandler }
  | { kind: 'schedule'; options: FunctionOptions & { cron: string }; handler: EventHandler }
  | { kind: 'event'; options: TopicOptions; handler: TopicHandler<never> | TopicBatchHandler<never> };

export function onDocument(
  options: FunctionOptions & { collection: string; on: 'create' | 'update' | 'delete' | 'write' },
  handler: EventHandler,
): FunctionDefinition {
  return { kind: 'document', options, handler };
}

export function onObject(
  options: FunctionOptions & { bucket: string; on: 'upload' | 'delete' },
  handler: EventHandler,
): FunctionDefinition {
  return { kind: 'object', options, handler };
}

export function onAuth(
  options: FunctionOptions & { on: 'user.created' | 'user.deleted' },
  handler: EventHandler,
): FunctionDefinition {
  return { kind: 'auth', options, handler };
}

export function http(
  optionsOrHandler: (FunctionOptions & { method?: string }) | HttpHandler,
  handler?: HttpHandler,
): FunctionDefinition {
  if (typeof optionsOrHandler === 'function') return { kind: 'http', options: {}, handler: optionsOrHandler };
  if (!handler) throw new TypeError('http(options, handler): the handler is missing');
  return { kind: 'http', options: optionsOrHandler, handler };
}

export function schedule(options: FunctionOptions & { cron: string }, handler: EventHandler): FunctionDefinition {
  return { kind: 'schedule', options, handler };
}

/**
 * Subscribes to a topic: the handler gets every event published to it, at least once (the
 * same `id` on a retry), retried and dead-lettered like a trigger's event. With
 * `batch_size`, a run gets a list of up to that many events, and fails or succeeds as one.
 */
export function onEvent<P = unknown>(
  options: TopicOptions & { batch_size: number },
  handler: TopicBatchHandler<P>,
): FunctionDefinition;
export function onEvent<P = unknown>(
  options: TopicOptions & { batch_size?: undefined },
  handler: TopicHandler<P>,
): FunctionDefinition;
export function onEvent<P = unknown>(
  options: TopicOptions,
  handler: TopicHandler<P> | TopicBatchHandler<P>,
): FunctionDefinition {
  return { kind: 'event', options, handler: handler as TopicHandler<never> };
}
