import { AuthClient, defaultStorage } from './auth.js';
import { DbClient, sendOp } from './db.js';
import { BasaltError } from './errors.js';
import { EventsClient } from './events.js';
import { FunctionsClient } from './functions.js';
import { LiveSubscription, liveQueryOf, type LiveQueries } from './live-query.js';
import { compareValues, documentComparator, fieldValue, typeRank } from './order.js';
import type { OfflineEngine, OfflineOptions } from './offline/engine.js';
import { RealtimeClient, type ChannelEvents, type RealtimeChannel, type WebSocketConstructor } from './realtime.js';
import { StorageClient } from './storage.js';
import { tabChannel } from './tabs.js';
import { HttpTransport, type RetryOptions, type SessionStorage } from './transport.js';

export { HttpTransport } from './transport.js';
export type { RetryOptions, SessionStorage } from './transport.js';

export interface ClientOptions {
  storage?: SessionStorage;
  persistSession?: boolean;
  fetch?: typeof globalThis.fetch;
  /** Default `globalThis.WebSocket`; on Node 20 pass `WebSocket` from the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** Key of the stored session; default `basalt.auth.<host>`. */
  storageKey?: string;
  /** Refresh the access token before it expires; default true. */
  autoRefreshToken?: boolean;
  /** In a browser, sign in from `#access_token=...` after an OAuth or email redirect; default true. */
  detectSessionInUrl?: boolean;
  /**
   * Tabs share the stored session: they take turns refreshing it and follow each other's
   * sign-in, refresh and sign-out. Default: on when the storage is localStorage. Turn it on
   * for another storage that tabs share; never for per-user storage on a server.
   */
  syncTabs?: boolean;
  /**
   * Idempotent calls (GET, HEAD, PUT, DELETE) answered 503 or 429 are tried again, waiting as
   * `Retry-After` asks or with backoff: default 3 attempts, at most 5 s apart. `false` turns it off.
   */
  retry?: RetryOptions | false;
  /**
   * Offline-first (docs/offline.md): a persistent cache answers reads when the server cannot
   * be reached, and writes apply locally at once and wait in a durable outbox. Its code loads
   * only when this is set.
   */
  offline?: OfflineOptions;
}

export interface BasaltClient {
  readonly url: string;
  readonly auth: AuthClient;
  /** Documents: collections, queries, batches. */
  readonly db: DbClient;
  /** The shared realtime websocket (live queries and channels). */
  readonly realtime: RealtimeClient;
  /**
   * A realtime channel: broadcast and presence. Type its events and presence payload with
   * `channel<{ typing: { who: string } }, { name: string }>('room')`.
   */
  channel<E extends object = ChannelEvents, P = unknown>(name: string): RealtimeChannel<E, P>;
  /** Files in buckets. */
  readonly storage: StorageClient;
  /** HTTP functions. */
  readonly functions: FunctionsClient;
  /** Topics: publish events to the functions subscribed to them. */
  readonly events: EventsClient;
}

let warnedNoStorage = false;

/**
 * Node has no localStorage: without a `storage`, a session lives only as long as the process,
 * which surprises a script that signs in once and expects to stay signed in. Said once per
 * process; `persistSession: false` says it is meant.
 */
function warnNoSessionStorage(): void {
  if (warnedNoStorage) return;
  warnedNoStorage = true;
  console.warn(
    'Basalt: no session storage here (no localStorage), so the session is kept in memory only and lost when the ' +
      'process ends. Pass `storage` ({ getItem, setItem, removeItem }) to createClient to keep it, or ' +
      '`persistSession: false` to say that memory is meant.',
  );
}

/** Live queries through the offline engine, which loads asynchronously: subscribed once it is there. */
function deferred(engine: Promise<OfflineEngine>): LiveQueries {
  const later =
    (method: keyof LiveQueries) =>
    (...args: unknown[]): (() => void) => {
      // undefined: not subscribed yet; null: stopped.
      let stop: (() => void) | undefined | null;
      void engine.then((ready) => {
        if (stop === undefined) stop = (ready[method] as (...args: unknown[]) => () => void)(...args);
      });
      return () => {
        stop?.();
        stop = null;
      };
    };
  return { subscribe: later('subscribe'), subscribeAggregate: later('subscribeAggregate') };
}

export function createClient(url: string, options: ClientOptions = {}): BasaltClient {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const http = new HttpTransport(url, fetchImpl, options.retry);
  const storage = options.persistSession === false ? null : (options.storage ?? defaultStorage());
  if (storage === null && options.persistSession !== false) warnNoSessionStorage();
  const auth = new AuthClient(http, {
    storage,
    storageKey: options.storageKey ?? `basalt.auth.${new URL(http.baseUrl).host}`,
    autoRefreshToken: options.autoRefreshToken ?? true,
    detectSessionInUrl: options.detectSessionInUrl ?? true,
    syncTabs: options.syncTabs,
  });
  const realtime = new RealtimeClient({
    baseUrl: http.baseUrl,
    WebSocket: options.WebSocket,
    accessToken: () => http.getAccessToken(),
  });
  // The socket carries the session too: re-authenticate it on sign-in, refresh and sign-out,
  // at once and in order (a sign-out reaches the socket before the server ends the session).
  auth.onAuthStateChange(
    (event, session) =>
      void realtime.setAuth(session?.access_token ?? null, event === 'SIGNED_IN' || event === 'SIGNED_OUT'),
  );
  const offline = options.offline
    ? import('./offline/engine.js')
        .then((m) =>
          m.startOffline(http, realtime, auth, options.offline ?? {}, [
            compareValues,
            documentComparator,
            fieldValue,
            typeRank,
            liveQueryOf,
            sendOp,
            tabChannel,
            BasaltError,
            LiveSubscription,
          ]),
        )
        // Ready: its cache and outbox are read.
        .then(async (engine) => (await engine.ready, engine))
    : undefined;
  return {
    url: http.baseUrl,
    auth,
    db: new DbClient(http, offline ? deferred(offline) : realtime, offline),
    realtime,
    channel: <E extends object = ChannelEvents, P = unknown>(name: string) => realtime.channel<E, P>(name),
    storage: new StorageClient(http),
    functions: new FunctionsClient(http),
    events: new EventsClient(http),
  };
}
