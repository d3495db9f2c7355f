import { BasaltError, isErrorCode } from './errors.js';
import { onPageWake } from './tabs.js';

/** A document as the server sends it. */
export interface LiveDoc<T = Record<string, unknown>> {
  id: string;
  collection: string;
  owner: string | null;
  version: number;
  created_at: string;
  updated_at: string;
  data: T;
}

export type DocChangeType = 'added' | 'modified' | 'removed';

export interface QuerySnapshot<T = Record<string, unknown>> {
  /** The query's result, in its order. */
  docs: LiveDoc<T>[];
  /** What changed since the previous snapshot (the first lists every document as added). */
  changes: Array<{ type: DocChangeType; doc: LiveDoc<T> }>;
}

/** The query part a live query sends: as in `/query`, without `after`. */
export interface LiveQuery {
  where?: unknown[];
  order_by?: Array<[string, 'asc' | 'desc']>;
  limit?: number;
}

/** The subset of the WebSocket API the SDK uses (the browser's, or the `ws` package on Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface PresenceEntry<P = unknown> {
  ref: string;
  key: string;
  payload: P;
}
/** Who is in a channel: presence key → the payloads tracked under it (one per tab or device). */
export type PresenceState<P = unknown> = Record<string, P[]>;

type Frame = { type: string } & Record<string, unknown>;

const OPEN = 1;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 10_000;
const KEEPALIVE_MS = 25_000;
/** After a wake-up (page shown, back online) an open socket must answer a ping this fast, or it is replaced. */
const WAKE_PROBE_MS = 3_000;

function frameError(frame: Frame): BasaltError {
  const code = isErrorCode(frame.code) ? frame.code : 'INTERNAL';
  return new BasaltError(code, typeof frame.message === 'string' ? frame.message : undefined);
}

// Document order as the server sorts (see docs/realtime.md): missing < null < booleans <
// numbers < strings < arrays < objects; strings by code point; ties by id.
function typeRank(value: unknown): number {
  if (value === undefined) return 0;
  if (value === null) return 1;
  switch (typeof value) {
    case 'boolean':
      return 2;
    case 'number':
      return 3;
    case 'string':
      return 4;
    default:
      return Array.isArray(value) ? 5 : 6;
  }
}

function compareStrings(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff ? x + 0x10000 : x;
    const ys = y >= 0xd800 && y <= 0xdfff ? y + 0x10000 : y;
    return xs < ys ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

function compareValues(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  if (typeof a === 'boolean' && typeof b === 'boolean') return a === b ? 0 : a ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return a === b ? 0 : a < b ? -1 : 1;
  if (typeof a === 'string' && typeof b === 'string') return compareStrings(a, b);
  return 0;
}

const SYSTEM_FIELDS = new Set(['id', 'owner', 'created_at', 'updated_at']);

function fieldValue(doc: LiveDoc<unknown>, path: string): unknown {
  if (SYSTEM_FIELDS.has(path)) return (doc as unknown as Record<string, unknown>)[path];
  // As the server reads paths: a numeric segment indexes an array, other keys must be own.
  let value: unknown = doc.data;
  for (const part of path.split('.')) {
    if (typeof value !== 'object' || value === null) return undefined;
    if (Array.isArray(value)) {
      if (!/^\d+$/.test(part)) return undefined;
      value = value[Number(part)];
    } else {
      value = Object.prototype.hasOwnProperty.call(value, part) ? (value as Record<string, unknown>)[part] : undefined;
    }
  }
  return value;
}

function comparator(orderBy: LiveQuery['order_by'] = []): (a: LiveDoc<unknown>, b: LiveDoc<unknown>) => number {
  const idDirection = (orderBy.at(-1)?.[1] ?? 'asc') === 'asc' ? 1 : -1;
  return (a, b) => {
    for (const [path, direction] of orderBy) {
      const order = compareValues(fieldValue(a, path), fieldValue(b, path));
      if (order !== 0) return direction === 'desc' ? -order : order;
    }
    return compareStrings(a.id, b.id) * idDirection;
  };
}

/** One live query: keeps the client's copy and the cursor to resume from. */
class LiveSubscription {
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
    readonly target: { collection: string; docId?: string; query?: LiveQuery },
    private readonly onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    readonly onError: (error: BasaltError) => void,
  ) {
    this.compare = comparator(target.query?.order_by);
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
      } else {
        if (known && known.version === doc.version && known.updated_at === doc.updated_at) return;
        this.docs.set(doc.id, doc);
      }
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

interface Waiter {
  resolve: () => void;
  reject: (error: BasaltError) => void;
}

/**
 * A channel: broadcast messages and presence shared by everyone who joined it, on any
 * server instance.
 */
export class RealtimeChannel {
  private readonly broadcastHandlers = new Map<string, Set<(payload: unknown) => void>>();
  private readonly presenceHandlers = new Set<
    (state: PresenceState, diff: { joins: PresenceEntry[]; leaves: PresenceEntry[] }) => void
  >();
  private presence = new Map<string, PresenceEntry>();
  /** Whether the app wants to be in the channel (it rejoins after a reconnect). */
  joined = false;
  tracked: unknown = undefined;
  /** The next presence frame is the full state (sent after the first join on a connection). */
  awaitingState = false;
  /** Joined on the current connection: a later join only replaces the tracked presence. */
  onSocket = false;
  private waiters: Waiter[] = [];

  constructor(
    readonly name: string,
    private readonly client: RealtimeClient,
  ) {}

  on(type: 'broadcast', event: string, callback: (payload: unknown) => void): this;
  on(
    type: 'presence',
    callback: (state: PresenceState, diff: { joins: PresenceEntry[]; leaves: PresenceEntry[] }) => void,
  ): this;
  on(type: 'broadcast' | 'presence', ...args: unknown[]): this {
    if (type === 'broadcast') {
      const [event, callback] = args as [string, (payload: unknown) => void];
      const set = this.broadcastHandlers.get(event) ?? new Set();
      set.add(callback);
      this.broadcastHandlers.set(event, set);
    } else {
      this.presenceHandlers.add(
        args[0] as (state: PresenceState, diff: { joins: PresenceEntry[]; leaves: PresenceEntry[] }) => void,
      );
    }
    return this;
  }

  /** Joins the channel; resolves once the server confirmed (presence state known). */
  subscribe(): Promise<void> {
    this.joined = true;
    return this.join();
  }

  /** Broadcasts to the other members (not to this client). */
  send(event: string, payload: unknown): void {
    if (!this.joined) throw new BasaltError('INVALID_REQUEST', 'Subscribe to the channel before sending.');
    this.client.send({ type: 'broadcast', channel: this.name, event, payload });
  }

  /** Shares this client's presence payload with the channel (replacing the previous one). */
  track(payload: unknown): Promise<void> {
    this.joined = true;
    this.tracked = payload;
    return this.join();
  }

  async unsubscribe(): Promise<void> {
    if (!this.joined) return;
    this.joined = false;
    this.tracked = undefined;
    if (this.client.connected) {
      const left = this.wait();
      this.client.send({ type: 'leave', channel: this.name });
      this.onSocket = false;
      await left.catch(() => undefined);
    }
    this.setPresence(new Map());
    this.client.release(this);
  }

  /** The current presence state. */
  presenceState(): PresenceState {
    const state: PresenceState = {};
    for (const entry of this.presence.values()) (state[entry.key] ??= []).push(entry.payload);
    return state;
  }

  private join(): Promise<void> {
    const done = this.wait();
    this.client.joinChannel(this);
    return done;
  }

  private wait(): Promise<void> {
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** The join message for (re)joining. */
  joinMessage(): Frame {
    return {
      type: 'join',
      channel: this.name,
      ...(this.tracked !== undefined ? { presence: this.tracked } : {}),
    };
  }

  handle(frame: Frame): void {
    switch (frame.type) {
      case 'broadcast':
        for (const callback of this.broadcastHandlers.get(String(frame.event)) ?? []) callback(frame.payload);
        break;
      case 'presence': {
        const joins = (frame.joins ?? []) as PresenceEntry[];
        const leaves = (frame.leaves ?? []) as PresenceEntry[];
        if (this.awaitingState) {
          this.awaitingState = false;
          this.setPresence(new Map(joins.map((entry) => [entry.ref, entry])));
          break;
        }
        const next = new Map(this.presence);
        for (const entry of joins) next.set(entry.ref, entry);
        for (const entry of leaves) next.delete(entry.ref);
        this.presence = next;
        this.emitPresence(joins, leaves);
        break;
      }
      case 'joined':
      case 'left':
        for (const waiter of this.waiters.splice(0)) waiter.resolve();
        break;
      case 'error':
        for (const waiter of this.waiters.splice(0)) waiter.reject(frameError(frame));
        break;
    }
  }

  /** Pending subscribe/track/unsubscribe calls fail with `error`. */
  fail(error: BasaltError): void {
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }

  /** The connection dropped: pending calls fail unless they are retried on reconnect. */
  disconnected(): void {
    this.onSocket = false;
    if (!this.joined) for (const waiter of this.waiters.splice(0)) waiter.reject(new BasaltError('UNAVAILABLE'));
  }

  private setPresence(next: Map<string, PresenceEntry>): void {
    const joins = [...next.values()].filter((entry) => !this.presence.has(entry.ref));
    const leaves = [...this.presence.values()].filter((entry) => !next.has(entry.ref));
    this.presence = next;
    if (joins.length > 0 || leaves.length > 0) this.emitPresence(joins, leaves);
  }

  private emitPresence(joins: PresenceEntry[], leaves: PresenceEntry[]): void {
    const state = this.presenceState();
    for (const callback of this.presenceHandlers) callback(state, { joins, leaves });
  }
}

export interface RealtimeOptions {
  baseUrl: string;
  WebSocket: WebSocketConstructor | undefined;
  /** The access token to authenticate the socket with (refreshed if needed). */
  accessToken: () => Promise<string | null>;
}

/**
 * The client's one websocket, shared by every live query and channel. Connects on first
 * use, reconnects with backoff (at once when the page wakes up or comes back online) and
 * resumes each query from its last cursor, so callbacks see every change once and in
 * order across disconnects, sleep and server restarts.
 */
export class RealtimeClient {
  private socket: WebSocketLike | null = null;
  private connecting = false;
  /** The socket is open and has been sent the auth, queries and channels: new ones go straight out. */
  private live = false;
  private lastFrameAt = 0;
  private keepalive: ReturnType<typeof setInterval> | null = null;
  private probe: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private nextId = 1;
  /** The token most recently given to the socket; `undefined` until known. */
  private token: string | null | undefined = undefined;
  private readonly subscriptions = new Map<string, LiveSubscription>();
  private readonly channels = new Map<string, RealtimeChannel>();

  constructor(private readonly options: RealtimeOptions) {
    onPageWake(() => this.wake());
  }

  /** Follows a query (or one document with `docId`); returns the function that stops it. */
  subscribe(
    target: { collection: string; docId?: string; query?: LiveQuery },
    onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    onError: (error: BasaltError) => void = () => undefined,
  ): () => void {
    const id = `q${this.nextId++}`;
    const subscription = new LiveSubscription(id, target, onSnapshot, onError);
    this.subscriptions.set(id, subscription);
    if (this.isOpen()) this.send(subscription.message());
    else this.connect();
    return () => {
      if (!this.subscriptions.delete(id)) return;
      if (this.isOpen()) this.send({ type: 'unsubscribe', id });
      this.closeIfIdle();
    };
  }

  channel(name: string): RealtimeChannel {
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new RealtimeChannel(name, this);
      this.channels.set(name, channel);
    }
    return channel;
  }

  /**
   * The session changed: give the socket the new token (`null` signs it out; without an
   * argument the current one is fetched). When the user changed (sign-in, sign-out), the
   * server re-reads every live query for the new identity; cursors of the old one are
   * dropped so a later reconnect reads afresh, and tracked presence is tracked again under
   * the new user.
   */
  async setAuth(token?: string | null, identityChanged = false): Promise<void> {
    if (identityChanged) for (const subscription of this.subscriptions.values()) subscription.cursor = null;
    const next = token === undefined ? await this.options.accessToken() : token;
    // A user update keeps the token: nothing to tell the socket.
    if (next === this.token && !identityChanged) return;
    this.token = next;
    if (!this.isOpen()) return;
    this.send({ type: 'auth', access_token: next });
    if (!identityChanged) return;
    // Presence is keyed by the user when it is tracked: leave and join again as the new one.
    for (const channel of this.channels.values()) {
      if (!channel.joined || !channel.onSocket || channel.tracked === undefined) continue;
      this.send({ type: 'leave', channel: channel.name });
      channel.awaitingState = true;
      this.send(channel.joinMessage());
    }
  }

  /** Closes the socket and forgets every query and channel. */
  disconnect(): void {
    this.subscriptions.clear();
    this.channels.clear();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const socket = this.socket;
    this.socket = null;
    this.live = false;
    this.stopKeepalive();
    socket?.close(1000, 'client disconnect');
  }

  /** @internal */
  joinChannel(channel: RealtimeChannel): void {
    if (this.isOpen()) {
      channel.awaitingState = !channel.onSocket;
      channel.onSocket = true;
      this.send(channel.joinMessage());
    } else this.connect();
  }

  /** @internal */
  release(channel: RealtimeChannel): void {
    if (!channel.joined) this.closeIfIdle();
  }

  /** @internal */
  send(frame: Frame): void {
    if (this.socket && this.socket.readyState === OPEN) this.socket.send(JSON.stringify(frame));
  }

  /** Whether the socket is open and authenticated (frames sent now go out at once). */
  get connected(): boolean {
    return this.isOpen();
  }

  private isOpen(): boolean {
    return this.live && this.socket !== null && this.socket.readyState === OPEN;
  }

  private hasWork(): boolean {
    return this.subscriptions.size > 0 || [...this.channels.values()].some((channel) => channel.joined);
  }

  private closeIfIdle(): void {
    if (this.hasWork() || !this.socket) return;
    const socket = this.socket;
    this.socket = null;
    this.live = false;
    this.stopKeepalive();
    socket.close(1000, 'idle');
  }

  private connect(): void {
    if (this.socket || this.connecting || this.reconnectTimer) return;
    const Impl = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Impl) {
      const error = new BasaltError('UNAVAILABLE', 'No WebSocket implementation: pass `WebSocket` to createClient.');
      for (const subscription of this.subscriptions.values()) subscription.onError(error);
      this.subscriptions.clear();
      for (const channel of this.channels.values()) channel.fail(error);
      return;
    }
    this.connecting = true;
    const url = `${this.options.baseUrl.replace(/^http/, 'ws')}/v1/realtime`;
    const socket = new Impl(url);
    this.socket = socket;
    socket.onopen = () => {
      this.connecting = false;
      void this.opened(socket);
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      this.lastFrameAt = Date.now();
      // The server answers: this connection works, so the next loss starts the backoff over.
      this.attempt = 0;
      let frame: Frame;
      try {
        frame = JSON.parse(String(event.data)) as Frame;
      } catch {
        return;
      }
      this.dispatch(frame);
    };
    socket.onerror = () => undefined;
    socket.onclose = () => {
      this.connecting = false;
      this.lost(socket);
    };
  }

  /** The socket closed or went silent: forget it and reconnect if anything still needs it. */
  private lost(socket: WebSocketLike): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.live = false;
    this.stopKeepalive();
    for (const channel of this.channels.values()) channel.disconnected();
    if (this.hasWork()) this.scheduleReconnect();
  }

  /** `lost`, and closes the socket: it is taken for dead (half-open TCP never reports a close). */
  private dead(socket: WebSocketLike): void {
    this.lost(socket);
    socket.close(4000, 'no answer to ping');
  }

  /**
   * Pings the server every KEEPALIVE_MS: a socket that received nothing since the previous
   * ping is taken for dead.
   */
  private startKeepalive(socket: WebSocketLike): void {
    this.stopKeepalive();
    let lastPingAt = Date.now();
    const timer = setInterval(() => {
      if (this.socket !== socket) return this.stopKeepalive();
      if (this.lastFrameAt < lastPingAt) return this.dead(socket);
      lastPingAt = Date.now();
      this.send({ type: 'ping' });
    }, KEEPALIVE_MS);
    (timer as { unref?: () => void }).unref?.();
    this.keepalive = timer;
  }

  private stopKeepalive(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    if (this.probe) clearTimeout(this.probe);
    this.keepalive = this.probe = null;
  }

  /**
   * The page was shown again, restored, or came back online. A pending reconnect happens now
   * (backoff reset); an open socket, which may have died while the machine slept or the
   * network changed, must answer a ping within WAKE_PROBE_MS.
   */
  private wake(): void {
    if (!this.hasWork()) return;
    this.attempt = 0;
    if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.connect();
      return;
    }
    const socket = this.socket;
    if (!socket || !this.live || this.probe) return;
    const sentAt = Date.now();
    this.send({ type: 'ping' });
    this.probe = setTimeout(() => {
      this.probe = null;
      if (this.socket === socket && this.lastFrameAt < sentAt) this.dead(socket);
    }, WAKE_PROBE_MS);
  }

  private async opened(socket: WebSocketLike): Promise<void> {
    const token = await this.options.accessToken().catch(() => null);
    if (this.socket !== socket || socket.readyState !== OPEN) return;
    this.live = true;
    this.lastFrameAt = Date.now();
    this.startKeepalive(socket);
    // The server handles messages in order: auth first, then every query and channel.
    this.token = token;
    if (token) this.send({ type: 'auth', access_token: token });
    for (const subscription of this.subscriptions.values()) this.send(subscription.message());
    for (const channel of this.channels.values()) {
      if (!channel.joined) continue;
      channel.awaitingState = true;
      channel.onSocket = true;
      this.send(channel.joinMessage());
    }
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer) return;
    // Exponential backoff with jitter (half fixed, half random), so that the clients of a
    // restarted server do not all come back in the same instant.
    const base = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.attempt);
    this.attempt++;
    const delay = base / 2 + Math.random() * (base / 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.hasWork()) this.connect();
    }, delay);
  }

  /**
   * The server dropped a query because the socket's token expired (a page asleep past its
   * token's life) or its session ended. Give the socket the current token (refreshed if
   * due; null once signed out) and subscribe again, read afresh: the server may not take the
   * token, and a resume would be computed for whoever the socket is now.
   */
  private async reauthenticate(subscription: LiveSubscription): Promise<void> {
    const token = await this.options.accessToken().catch(() => null);
    if (!this.subscriptions.has(subscription.id) || !this.isOpen()) return;
    this.token = token;
    this.send({ type: 'auth', access_token: token });
    subscription.cursor = null;
    this.send(subscription.message());
  }

  private dispatch(frame: Frame): void {
    if (typeof frame.id === 'string') {
      const subscription = this.subscriptions.get(frame.id);
      if (!subscription) return;
      if (frame.type === 'error') {
        if (frame.code === 'UNAUTHENTICATED' && !subscription.retried) {
          subscription.retried = true;
          void this.reauthenticate(subscription);
          return;
        }
        // The server refused the subscription (rules, bad query): it ends here.
        this.subscriptions.delete(frame.id);
        subscription.onError(frameError(frame));
        this.closeIfIdle();
        return;
      }
      if (frame.type === 'subscribed') subscription.retried = false;
      subscription.handle(frame);
      return;
    }
    if (typeof frame.channel === 'string') {
      this.channels.get(frame.channel)?.handle(frame);
    }
  }
}

const registry = new WeakMap<object, RealtimeClient>();

/** Ties a realtime client to the HTTP transport of the same BasaltClient (db refs carry only the transport). */
export function registerRealtime(http: object, realtime: RealtimeClient): void {
  registry.set(http, realtime);
}

/** The realtime client of the BasaltClient that owns `http`. */
export function realtimeFor(http: object): RealtimeClient {
  const realtime = registry.get(http);
  if (!realtime) throw new BasaltError('UNAVAILABLE', 'This client has no realtime connection.');
  return realtime;
}

/** The part of a query body a live query takes (`after` does not apply to a live result). */
export function liveQueryOf(body: {
  where?: unknown[];
  order_by?: Array<[string, 'asc' | 'desc']>;
  limit?: number;
}): LiveQuery {
  return {
    ...(body.where !== undefined ? { where: body.where } : {}),
    ...(body.order_by !== undefined ? { order_by: body.order_by } : {}),
    ...(body.limit !== undefined ? { limit: body.limit } : {}),
  };
}
