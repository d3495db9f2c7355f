/**
 * The client's one realtime websocket: connection, authentication, keepalive and reconnect
 * with backoff, shared by every live query (live-query.ts) and channel (channel.ts).
 */
import { BasaltError } from './errors.js';
import {
  ChannelMembership,
  type ChannelEvents,
  type ChannelHost,
  type RealtimeChannel,
  type SendResult,
} from './channel.js';
import { frameError, type Frame } from './frames.js';
import {
  LiveAggregate,
  LiveSubscription,
  type LiveAggregateTarget,
  type LiveQueries,
  type LiveTarget,
  type QuerySnapshot,
  type SocketSubscription,
} from './live-query.js';
import { onPageWake } from './tabs.js';

export type { ChannelEvents, PresenceCallback, PresenceEntry, PresenceState, SendResult } from './channel.js';
export { RealtimeChannel } from './channel.js';
export type { LiveAggregateTarget, LiveDoc, LiveQuery, LiveTarget, QuerySnapshot } from './live-query.js';
export type { DocChangeType } from './wire.js';

/**
 * An event handler property. Checked bivariantly (as methods are), so that both the DOM's
 * handlers (taking a full `MessageEvent`) and the `ws` package's (taking its own event types)
 * fit, while the SDK's handlers read only the fields named here.
 */
type EventHandler<E> = { bivarianceHack(event: E): void }['bivarianceHack'];

/** The subset of the WebSocket API the SDK uses (the browser's, or the `ws` package on Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: EventHandler<unknown> | null;
  onmessage: EventHandler<{ data: unknown }> | null;
  onclose: EventHandler<{ code: number; reason?: string }> | null;
  onerror: EventHandler<unknown> | null;
}
/**
 * The realtime connection's state: `idle` (nothing needs a socket), `connecting` (the first
 * attempt), `open` (authenticated; live queries and channels are being served),
 * `reconnecting` (the socket was lost and is retried with backoff; live queries resume
 * without a gap when it returns).
 */
export type RealtimeStatus = 'idle' | 'connecting' | 'open' | 'reconnecting';

/** A WebSocket class: `globalThis.WebSocket` in browsers, or `WebSocket` from the `ws` package on Node. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

const OPEN = 1;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 10_000;
const KEEPALIVE_MS = 25_000;
/** After a wake-up (page shown, back online) an open socket must answer a ping this fast, or it is replaced. */
const WAKE_PROBE_MS = 3_000;
/** How long a broadcast waits for the server's acknowledgement. */
const BROADCAST_ACK_MS = 10_000;
/** The server closes the socket (1009) on a larger frame: such a broadcast is refused here instead. */
const MAX_FRAME_BYTES = 64 * 1024;

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
export class RealtimeClient implements LiveQueries {
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
  private readonly subscriptions = new Map<string, SocketSubscription>();
  private readonly channels = new Map<string, ChannelMembership>();
  private status: RealtimeStatus = 'idle';
  private readonly statusListeners = new Set<(status: RealtimeStatus) => void>();
  /** Queries dropped for their token, subscribed again once the server accepts the `auth` sent for them. */
  private readonly awaitingAuth = new Map<string, { subscription: SocketSubscription; dropped: BasaltError }>();
  /** Broadcasts awaiting the server's answer, by the id they were sent with. */
  private readonly acks = new Map<string, (result: SendResult) => void>();

  /** What channels talk through: the socket's internals, kept off the client's public surface. */
  private readonly channelHost: ChannelHost = {
    connected: () => this.isOpen(),
    send: (frame) => this.send(frame),
    broadcast: (frame) => this.broadcast(frame),
    joinChannel: (channel) => this.joinChannel(channel),
    release: (channel) => this.release(channel),
  };

  constructor(private readonly options: RealtimeOptions) {
    onPageWake(() => this.wake());
  }

  /** Follows a query (or one document with `docId`); returns the function that stops it. */
  subscribe(
    target: LiveTarget,
    onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    onError: (error: BasaltError) => void = logUnhandled,
  ): () => void {
    return this.follow(new LiveSubscription(`q${this.nextId++}`, target, onSnapshot, onError));
  }

  /** Follows an aggregate (the body of `/aggregate`): `onGroups` gets each new list of groups; returns the stop function. */
  subscribeAggregate(
    target: LiveAggregateTarget,
    onGroups: (groups: unknown[]) => void,
    onError: (error: BasaltError) => void = logUnhandled,
  ): () => void {
    return this.follow(new LiveAggregate(`q${this.nextId++}`, target, onGroups, onError));
  }

  /**
   * Puts a subscription on the socket; returns the function that stops it. Private to the
   * SDK: the offline engine also follows its own subscriptions, started from its cache, this
   * way (offline/tab-socket.ts), so that code stays out of every app's bundle.
   */
  private follow(subscription: SocketSubscription): () => void {
    const id = subscription.id;
    this.subscriptions.set(id, subscription);
    if (this.isOpen()) this.send(subscription.message());
    else this.connect();
    return () => {
      if (!this.subscriptions.delete(id)) return;
      if (this.isOpen()) this.send({ type: 'unsubscribe', id });
      this.closeIfIdle();
    };
  }

  /** A channel by name (the same one for the same name); see RealtimeChannel for typing its events. */
  channel<E extends object = ChannelEvents, P = unknown>(name: string): RealtimeChannel<E, P> {
    let membership = this.channels.get(name);
    if (!membership) {
      membership = new ChannelMembership(name, this.channelHost);
      this.channels.set(name, membership);
    }
    // Event and presence types are the app's statement about the channel's payloads.
    return membership.channel as unknown as RealtimeChannel<E, P>;
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

  /** The connection's state now: see RealtimeStatus. */
  get connectionStatus(): RealtimeStatus {
    return this.status;
  }

  /** Calls `listener` on every change of the connection's state; returns the function that stops it. */
  onStatusChange(listener: (status: RealtimeStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => {
      this.statusListeners.delete(listener);
    };
  }

  private setStatus(status: RealtimeStatus): void {
    if (status === this.status) return;
    this.status = status;
    for (const listener of [...this.statusListeners]) {
      try {
        listener(status);
      } catch {
        // A failing listener must not break the connection or the other listeners.
      }
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
    this.abandonAcks();
    socket?.close(1000, 'client disconnect');
    this.setStatus('idle');
  }

  private joinChannel(channel: ChannelMembership): void {
    if (this.isOpen()) {
      channel.awaitingState = !channel.onSocket;
      channel.onSocket = true;
      this.send(channel.joinMessage());
    } else this.connect();
  }

  private release(channel: ChannelMembership): void {
    if (!channel.joined) this.closeIfIdle();
  }

  private send(frame: Frame): void {
    if (this.socket && this.socket.readyState === OPEN) this.socket.send(JSON.stringify(frame));
  }

  private broadcast(frame: Frame): Promise<SendResult> {
    if (!this.isOpen()) return Promise.resolve('error');
    const id = `b${this.nextId++}`;
    const text = JSON.stringify({ ...frame, id });
    if (new TextEncoder().encode(text).byteLength > MAX_FRAME_BYTES) return Promise.resolve('error');
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle('timed out'), BROADCAST_ACK_MS);
      (timer as { unref?: () => void }).unref?.();
      const settle = (result: SendResult) => {
        clearTimeout(timer);
        this.acks.delete(id);
        resolve(result);
      };
      this.acks.set(id, settle);
      this.socket?.send(text);
    });
  }

  /** Whether the socket is open and authenticated (the same as `connectionStatus === 'open'`). */
  get connected(): boolean {
    return this.isOpen();
  }

  /** Broadcasts still awaiting an answer get none: the socket they went out on is gone. */
  private abandonAcks(): void {
    for (const settle of [...this.acks.values()]) settle('timed out');
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
    this.setStatus('idle');
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
    if (this.status !== 'reconnecting') this.setStatus('connecting');
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
    this.abandonAcks();
    // A new socket sends auth and every query afresh anyway.
    this.awaitingAuth.clear();
    for (const channel of this.channels.values()) channel.disconnected();
    if (this.hasWork()) {
      this.setStatus('reconnecting');
      this.scheduleReconnect();
    } else this.setStatus('idle');
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
    this.setStatus('open');
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
   * due) and, once the server accepted it, subscribe again, read afresh (a resume would be
   * computed for whoever the socket is now). Without a session any more, or when the server
   * refuses the token (the session was revoked), the query ends with the error instead.
   */
  private async reauthenticate(subscription: SocketSubscription, dropped: BasaltError): Promise<void> {
    const token = await this.options.accessToken().catch(() => null);
    if (!this.subscriptions.has(subscription.id) || !this.isOpen()) return;
    if (token === null) {
      // No session any more: the query ends, rather than carry on as the public caller's.
      this.endQuery(subscription, dropped);
      return;
    }
    this.token = token;
    subscription.cursor = null;
    this.awaitingAuth.set(subscription.id, { subscription, dropped });
    this.send({ type: 'auth', access_token: token });
  }

  /**
   * The server answered an `auth`: the queries waiting for it are subscribed again if the
   * socket is signed in, else end (a revoked session's token is refused, and the socket
   * stays the public caller, which they must not turn into).
   */
  private authAnswered(signedIn: boolean, error: BasaltError | null): void {
    const waiting = [...this.awaitingAuth.values()];
    this.awaitingAuth.clear();
    for (const { subscription, dropped } of waiting) {
      if (this.subscriptions.get(subscription.id) !== subscription) continue;
      if (signedIn) this.send(subscription.message());
      else this.endQuery(subscription, error ?? dropped);
    }
  }

  private endQuery(subscription: SocketSubscription, error: BasaltError): void {
    this.subscriptions.delete(subscription.id);
    subscription.onError(error);
    this.closeIfIdle();
  }

  private dispatch(frame: Frame): void {
    const ack = typeof frame.id === 'string' ? this.acks.get(frame.id) : undefined;
    if (ack && (frame.type === 'sent' || frame.type === 'error')) {
      ack(frame.type === 'sent' ? 'ok' : 'error');
      return;
    }
    if (this.awaitingAuth.size > 0) {
      if (frame.type === 'authenticated') return this.authAnswered(frame.role !== 'public', null);
      // An `auth` refused: an error frame for no query or channel (a dropped message, RATE_LIMITED, is no answer).
      const forSocket = frame.id === undefined && frame.channel === undefined;
      if (frame.type === 'error' && forSocket && frame.code !== 'RATE_LIMITED') {
        return this.authAnswered(false, frameError(frame));
      }
    }
    if (typeof frame.id === 'string') {
      const subscription = this.subscriptions.get(frame.id);
      if (!subscription) return;
      if (frame.type === 'error') {
        if (frame.code === 'UNAUTHENTICATED' && !subscription.retried) {
          subscription.retried = true;
          void this.reauthenticate(subscription, frameError(frame));
          return;
        }
        // The server refused the subscription (rules, bad query): it ends here.
        this.endQuery(subscription, frameError(frame));
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

/**
 * Where errors of listeners without an error callback go: logged, as Firebase does, so a
 * misspelt collection or a refused query does not fail in silence.
 */
function logUnhandled(error: BasaltError): void {
  console.error('Basalt live query failed (pass an error callback to handle it):', error);
}
