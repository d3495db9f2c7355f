/** A realtime channel: broadcast messages and presence. */
import { BasaltError } from './errors.js';
import { frameError, type Frame } from './frames.js';

export interface PresenceEntry<P = unknown> {
  ref: string;
  key: string;
  payload: P;
}
/** Who is in a channel: presence key → the payloads tracked under it (one per tab or device). */
export type PresenceState<P = unknown> = Record<string, P[]>;

/**
 * What the server answered a broadcast: `ok` (on its way to the other members), `error`
 * (refused, e.g. too large, or not sent because the socket is not open), `timed out` (no
 * answer in time; it may or may not have gone out).
 */
export type SendResult = 'ok' | 'error' | 'timed out';

/** The connection a channel talks through (the client's realtime socket). */
export interface ChannelHost {
  /** Whether frames sent now go out at once. */
  connected(): boolean;
  send(frame: Frame): void;
  /** Sends a broadcast frame and resolves with the server's acknowledgement. */
  broadcast(frame: Frame): Promise<SendResult>;
  joinChannel(channel: ChannelMembership): void;
  release(channel: ChannelMembership): void;
}

interface Waiter {
  resolve: () => void;
  reject: (error: BasaltError) => void;
}

/** Called with the whole presence state and what changed. */
export type PresenceCallback<P = unknown> = (
  state: PresenceState<P>,
  diff: { joins: PresenceEntry<P>[]; leaves: PresenceEntry<P>[] },
) => void;

/**
 * The broadcast events of a channel and their payloads, e.g. `{ typing: { who: string } }`
 * (a type literal or an interface). The default takes any event with a payload of unknown type.
 */
export type ChannelEvents = Record<string, unknown>;

/**
 * A channel as the realtime connection handles it: what the app asked for (joined,
 * tracked presence), the frames the server sends it, and the calls waiting for an answer.
 * The app sees it through RealtimeChannel.
 */
export class ChannelMembership {
  private readonly broadcastHandlers = new Map<string, Set<(payload: unknown) => void>>();
  private readonly presenceHandlers = new Set<PresenceCallback>();
  private presence = new Map<string, PresenceEntry>();
  /** Whether the app wants to be in the channel (it rejoins after a reconnect). */
  joined = false;
  tracked: unknown = undefined;
  /** The next presence frame is the full state (sent after the first join on a connection). */
  awaitingState = false;
  /** Joined on the current connection: a later join only replaces the tracked presence. */
  onSocket = false;
  private waiters: Waiter[] = [];
  /** The app's handle on this channel. */
  readonly channel: RealtimeChannel;

  constructor(
    readonly name: string,
    private readonly client: ChannelHost,
  ) {
    this.channel = new RealtimeChannel(this);
  }

  on(type: 'broadcast' | 'presence', args: unknown[]): void {
    if (type === 'broadcast') {
      const [event, callback] = args as [string, (payload: unknown) => void];
      const set = this.broadcastHandlers.get(event) ?? new Set();
      set.add(callback);
      this.broadcastHandlers.set(event, set);
    } else {
      this.presenceHandlers.add(args[0] as PresenceCallback);
    }
  }

  /** Joins the channel; resolves once the server confirmed (presence state known). */
  subscribe(): Promise<void> {
    this.joined = true;
    return this.join();
  }

  /**
   * Broadcasts to the other members (not to this client); resolves with the server's
   * acknowledgement. Throws INVALID_REQUEST before subscribe().
   */
  send(event: string, payload: unknown): Promise<SendResult> {
    if (!this.joined) throw new BasaltError('INVALID_REQUEST', 'Subscribe to the channel before sending.');
    return this.client.broadcast({ type: 'broadcast', channel: this.name, event, payload });
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
    if (this.client.connected()) {
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
        // A join already shown as it is (the state sent on joining lists it too) is not shown again.
        const fresh = joins.filter((entry) => !samePresence(this.presence.get(entry.ref), entry));
        const gone = leaves.filter((entry) => this.presence.has(entry.ref));
        if (fresh.length === 0 && gone.length === 0) break;
        const next = new Map(this.presence);
        for (const entry of fresh) next.set(entry.ref, entry);
        for (const entry of gone) next.delete(entry.ref);
        this.presence = next;
        this.emitPresence(fresh, gone);
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

function samePresence(known: PresenceEntry | undefined, entry: PresenceEntry): boolean {
  return (
    known !== undefined && known.key === entry.key && JSON.stringify(known.payload) === JSON.stringify(entry.payload)
  );
}

/**
 * A channel: broadcast messages and presence shared by everyone who joined it, on any
 * server instance. Get one with `basalt.channel(name)`, or typed with
 * `basalt.channel<{ typing: { who: string } }, { name: string }>(name)`: `E` maps each
 * broadcast event to its payload, `P` is the presence payload. The types are the app's
 * promise about what members send: the server does not check payloads.
 */
export class RealtimeChannel<E extends object = ChannelEvents, P = unknown> {
  declare private readonly membership: ChannelMembership;

  /** Made by the client's realtime connection: use `basalt.channel(name)`. */
  constructor(membership: ChannelMembership) {
    // Not enumerable: the channel shows no bookkeeping (a #private field would need helpers
    // that bundles for older targets split into a chunk of their own, see src/tsconfig.json).
    Object.defineProperty(this, 'membership', { value: membership });
  }

  get name(): string {
    return this.membership.name;
  }

  on<K extends keyof E & string>(type: 'broadcast', event: K, callback: (payload: E[K]) => void): this;
  on(type: 'presence', callback: PresenceCallback<P>): this;
  on(type: 'broadcast' | 'presence', ...args: unknown[]): this {
    this.membership.on(type, args);
    return this;
  }

  /** Joins the channel; resolves once the server confirmed (presence state known). */
  subscribe(): Promise<void> {
    return this.membership.subscribe();
  }

  /**
   * Broadcasts to the other members (not to this client); resolves with the server's
   * acknowledgement. Throws INVALID_REQUEST before subscribe().
   */
  send<K extends keyof E & string>(event: K, payload: E[K]): Promise<SendResult> {
    return this.membership.send(event, payload);
  }

  /** Shares this client's presence payload with the channel (replacing the previous one). */
  track(payload: P): Promise<void> {
    return this.membership.track(payload);
  }

  unsubscribe(): Promise<void> {
    return this.membership.unsubscribe();
  }

  /** The current presence state. */
  presenceState(): PresenceState<P> {
    // Members track what P says (see the class comment).
    return this.membership.presenceState() as PresenceState<P>;
  }
}
