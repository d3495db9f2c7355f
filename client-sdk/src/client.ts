import { AuthClient, defaultStorage } from './auth.js';
import { DbClient } from './db.js';
import { BasaltError } from './errors.js';
import { RealtimeClient, registerRealtime, type RealtimeChannel, type WebSocketConstructor } from './realtime.js';
import { StorageClient } from './storage.js';

/** Key-value storage for the session: localStorage in browsers, anything with the same three calls elsewhere. */
export interface SessionStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

export interface ClientOptions {
  storage?: SessionStorage;
  persistSession?: boolean;
  fetch?: typeof globalThis.fetch;
  WebSocket?: typeof globalThis.WebSocket;
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
}

/** The low-level HTTP layer every SDK module shares: base URL, JSON bodies, catalogue errors. */
export class HttpTransport {
  readonly baseUrl: string;
  /** The fetch in use; storage calls it directly for streamed bodies and downloads. */
  readonly fetchImpl: typeof globalThis.fetch;
  private accessToken: () => string | null | Promise<string | null> = () => null;

  constructor(baseUrl: string, fetchImpl: typeof globalThis.fetch) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = fetchImpl;
  }

  /** The auth module installs the current access token's source here; it may refresh the token first. */
  useAccessToken(source: () => string | null | Promise<string | null>): void {
    this.accessToken = source;
  }

  /** The token the next request would carry (e.g. for a websocket's auth message). */
  async getAccessToken(): Promise<string | null> {
    return this.accessToken();
  }

  /** `options.anonymous` sends no token: sign-in calls must not carry a stale one. */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    options: { anonymous?: boolean } = {},
  ): Promise<T> {
    const token = options.anonymous ? null : await this.accessToken();
    const init: RequestInit = {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    };
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, init);
    } catch (cause) {
      throw new BasaltError('UNAVAILABLE', 'The Basalt server could not be reached.', { status: 0, cause });
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (!response.ok) throw BasaltError.fromResponse(response.status, parsed);
    return parsed as T;
  }
}

export interface BasaltClient {
  readonly url: string;
  readonly http: HttpTransport;
  readonly auth: AuthClient;
  /** Documents: collections, queries, batches. */
  readonly db: DbClient;
  /** The shared realtime websocket (live queries and channels). */
  readonly realtime: RealtimeClient;
  /** A realtime channel: broadcast and presence. */
  channel(name: string): RealtimeChannel;
  /** Files in buckets. */
  readonly storage: StorageClient;
}

export function createClient(url: string, options: ClientOptions = {}): BasaltClient {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const http = new HttpTransport(url, fetchImpl);
  const auth = new AuthClient(http, {
    storage: options.persistSession === false ? null : (options.storage ?? defaultStorage()),
    storageKey: options.storageKey ?? `basalt.auth.${new URL(http.baseUrl).host}`,
    autoRefreshToken: options.autoRefreshToken ?? true,
    detectSessionInUrl: options.detectSessionInUrl ?? true,
    syncTabs: options.syncTabs,
  });
  const realtime = new RealtimeClient({
    baseUrl: http.baseUrl,
    WebSocket: options.WebSocket as unknown as WebSocketConstructor | undefined,
    accessToken: () => http.getAccessToken(),
  });
  // The socket carries the session too: re-authenticate it on sign-in, refresh and sign-out,
  // at once and in order (a sign-out reaches the socket before the server ends the session).
  auth.onAuthStateChange(
    (event, session) =>
      void realtime.setAuth(session?.access_token ?? null, event === 'SIGNED_IN' || event === 'SIGNED_OUT'),
  );
  registerRealtime(http, realtime);
  return {
    url: http.baseUrl,
    http,
    auth,
    db: new DbClient(http),
    realtime,
    channel: (name) => realtime.channel(name),
    storage: new StorageClient(http),
  };
}
