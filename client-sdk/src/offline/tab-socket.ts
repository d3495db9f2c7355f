/**
 * One realtime socket for the tabs of an origin (docs/offline.md, "Many tabs"). The tab that
 * holds the offline lock (offline/tabs.ts) — the leader — opens the socket; the other tabs
 * (followers) hand their live queries and live aggregates to it over a BroadcastChannel, and
 * it subscribes to them on its socket and sends their results back, addressed by tab and
 * subscription. When the leader closes, the next tab to take the lock opens the socket and
 * the followers announce their subscriptions to it again, each with the result and cursor it
 * has, so live queries resume from their cursors as after a reconnect.
 */
import type { BasaltError, ErrorCode, ErrorDetails } from '../errors.js';
import type {
  LiveAggregateTarget,
  LiveSeed,
  LiveSubscription,
  LiveTarget,
  QuerySnapshot,
  SocketSubscription,
} from '../live-query.js';
import type { Frame } from '../frames.js';
import type { RealtimeClient, RealtimeStatus } from '../realtime.js';
import type { tabChannel } from '../tabs.js';

/**
 * What the offline engine uses of the realtime socket: this tab's own (`seededSocket`), or
 * the one the tabs share (`shareSocket`). Its live queries start from what the cache knows.
 */
export interface EngineSocket {
  subscribe(
    target: LiveTarget,
    onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
    onError?: (error: BasaltError) => void,
    seed?: LiveSeed,
  ): () => void;
  subscribeAggregate: RealtimeClient['subscribeAggregate'];
  onStatusChange: RealtimeClient['onStatusChange'];
  readonly connected: boolean;
  readonly connectionStatus: RealtimeStatus;
}

/** A refusal as it crosses to another tab (an Error instance does not survive the channel as itself). */
export interface RefusalMessage {
  code: ErrorCode;
  status: number;
  message: string;
  details?: ErrorDetails;
}

export function toRefusal(error: BasaltError): RefusalMessage {
  return { code: error.code, status: error.status, message: error.message, details: error.details };
}

export function fromRefusal(Error: typeof BasaltError, refusal: RefusalMessage): BasaltError {
  return new Error(refusal.code, refusal.message, { status: refusal.status, details: refusal.details });
}

/** What the socket layer uses of the main bundle (the engine's kit; see offline/tabs.ts TabKit). */
export interface SocketKit {
  tabChannel: typeof tabChannel;
  BasaltError: typeof BasaltError;
  LiveSubscription: typeof LiveSubscription;
}

/** What RealtimeClient keeps private (off its public surface) and the engine uses: see its `follow`. */
interface SocketFollow {
  follow(subscription: SocketSubscription): () => void;
}

/** Subscription ids of this module: unique on the socket beside the realtime client's own (`q1`...). */
let seededIds = 0;

/**
 * This tab's socket for the engine: the realtime client, whose live queries start from the
 * cache's `seed` — its documents and the cursor to resume from, which the server then
 * confirms or brings up to date — and keep `seed.cursor` current, for the cache to store.
 */
export function seededSocket(realtime: RealtimeClient, kit: SocketKit): EngineSocket {
  class SeededSubscription extends kit.LiveSubscription {
    constructor(
      target: LiveTarget,
      onSnapshot: (snapshot: QuerySnapshot<unknown>) => void,
      onError: (error: BasaltError) => void,
      private readonly seed: LiveSeed,
    ) {
      super(`s${seededIds++}`, target, onSnapshot, onError);
      this.docs = new Map(seed.docs.map((doc) => [doc.id, doc]));
      this.cursor = seed.cursor;
      this.hasMore = seed.hasMore;
      this.ready = seed.cursor !== null;
    }

    override handle(frame: Frame): void {
      super.handle(frame);
      this.seed.cursor = this.cursor;
      // The cached result learns here that the server confirmed it, even unchanged.
      if (frame.type === 'subscribed' || frame.type === 'reset') this.schedule(true);
    }
  }
  return {
    subscribe: (target, onSnapshot, onError = logUnhandled, seed = { docs: [], cursor: null, hasMore: false }) =>
      (realtime as unknown as SocketFollow).follow(new SeededSubscription(target, onSnapshot, onError, seed)),
    subscribeAggregate: (target, onGroups, onError) => realtime.subscribeAggregate(target, onGroups, onError),
    onStatusChange: (listener) => realtime.onStatusChange(listener),
    get connected() {
      return realtime.connected;
    },
    get connectionStatus() {
      return realtime.connectionStatus;
    },
  };
}

interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<void>;
}

/** A subscription of this tab's engine. */
interface Follow {
  id: string;
  target: LiveTarget | LiveAggregateTarget;
  /** Live queries: the result and cursor known so far, kept current, which a new leader resumes from. Aggregates have none. */
  seed?: LiveSeed;
  /** A query's snapshot or an aggregate's groups (a method, so either callback fits). */
  onData(data: QuerySnapshot<unknown> | unknown[]): void;
  onError: (error: BasaltError) => void;
  /** Subscribed on this tab's own socket (this tab leads): what stops it. */
  local?: () => void;
}

/** What tabs say to each other about the socket. `from` is the sending tab; `to` and `id` address one tab's subscription. */
type SocketMessage =
  | { type: 'hello'; from: string }
  | { type: 'leader' | 'status'; from: string; status: RealtimeStatus }
  | { type: 'sub'; from: string; id: string; target: LiveTarget | LiveAggregateTarget; seed?: LiveSeed }
  | { type: 'unsub'; from: string; id: string }
  | {
      type: 'data';
      from: string;
      to: string;
      id: string;
      docs?: unknown[];
      hasMore?: boolean;
      cursor?: string | null;
      groups?: unknown[];
    }
  | { type: 'fail'; from: string; to: string; id: string; error: RefusalMessage };

export interface SharedSocket extends EngineSocket {
  /** This tab took the offline lock: it opens the socket and serves the other tabs' subscriptions. */
  lead(): void;
  /** Stops serving and following (the engine is closing). */
  close(): void;
}

function logUnhandled(error: BasaltError): void {
  console.error('Basalt live query failed (pass an error callback to handle it):', error);
}

/**
 * The socket the engine of one tab uses when its tabs are coordinated (`name`:
 * `basalt.offline:<host>`); undefined where there are no Web Locks or no BroadcastChannel, and
 * each client keeps its own socket. Followers never open a socket for live queries: the
 * realtime client connects on its first subscription, and theirs go to the leader.
 */
export function shareSocket(realtime: EngineSocket, name: string, kit: SocketKit): SharedSocket | undefined {
  const g = globalThis as { navigator?: { locks?: LockManagerLike }; BroadcastChannel?: unknown };
  const locks = g.navigator?.locks;
  if (!locks || typeof g.BroadcastChannel !== 'function') return undefined;
  const tab = Math.random().toString(36).slice(2, 10);
  /** The Web Lock each tab holds for its life: the leader waits for it to learn that a follower is gone. */
  const lifeLock = (of: string) => `${name}:tab:${of}`;
  let leading = false;
  let closed = false;
  /** The leading tab this one follows (null: not known yet). */
  let leader: string | null = null;
  /** This tab holds its life lock: the leader can watch it, so its subscriptions may be announced. */
  let alive = false;
  let status: RealtimeStatus = 'idle';
  let nextId = 0;
  let release = (): void => undefined;
  const mine = new Map<string, Follow>();
  /** Leader: the other tabs' subscriptions on its socket, by `<tab> <id>`. */
  const relayed = new Map<string, () => void>();
  /** Leader: the tabs whose life lock it waits for. */
  const watched = new Set<string>();
  const listeners = new Set<(status: RealtimeStatus) => void>();
  const abort = new AbortController();

  const post = kit.tabChannel(`${name}:socket`, `${name}:socket`, (message) => receive(message as SocketMessage));

  const setStatus = (next: RealtimeStatus): void => {
    if (next === status) return;
    status = next;
    for (const listener of [...listeners]) listener(next);
  };

  /** Subscribes on this tab's socket when it leads, else asks the leader (once one is known). */
  const place = (follow: Follow): void => {
    const { id, target, seed } = follow;
    if (leading) {
      const onError = (error: BasaltError) => {
        mine.delete(id);
        follow.onError(error);
      };
      follow.local = seed
        ? realtime.subscribe(target as LiveTarget, (snapshot) => follow.onData(snapshot), onError, seed)
        : realtime.subscribeAggregate(target as LiveAggregateTarget, (groups) => follow.onData(groups), onError);
    } else if (alive && leader) post({ type: 'sub', from: tab, id, target, seed } satisfies SocketMessage);
  };

  const follow = (subscription: Omit<Follow, 'id'>): (() => void) => {
    const id = String(nextId++);
    const entry: Follow = { id, ...subscription };
    mine.set(id, entry);
    place(entry);
    return () => {
      if (!mine.delete(id)) return;
      if (entry.local) entry.local();
      else if (alive && leader) post({ type: 'unsub', from: tab, id } satisfies SocketMessage);
    };
  };

  const end = (key: string): void => {
    const stop = relayed.get(key);
    relayed.delete(key);
    stop?.();
  };
  const endAll = (prefix: string): void => {
    for (const key of [...relayed.keys()]) if (key.startsWith(prefix)) end(key);
  };

  /** Leader: once `other`'s life lock is free, that tab is gone (closed or crashed) and its subscriptions end. */
  const watch = (other: string): void => {
    if (watched.has(other)) return;
    watched.add(other);
    locks
      .request(lifeLock(other), { signal: abort.signal }, async () => {
        watched.delete(other);
        endAll(`${other} `);
      })
      .catch(() => undefined); // aborted: this tab closed first
  };

  /** Leader: follows another tab's subscription on this tab's socket and sends it what comes. */
  const relay = ({ from, id, target, seed }: Extract<SocketMessage, { type: 'sub' }>): void => {
    const key = `${from} ${id}`;
    // Announced again to the same leader (a second hello): it is already followed.
    if (relayed.has(key)) return;
    watch(from);
    const answer = (message: Record<string, unknown>) => post({ ...message, from: tab, to: from, id });
    const onError = (error: BasaltError) => {
      relayed.delete(key);
      answer({ type: 'fail', error: toRefusal(error) });
    };
    relayed.set(
      key,
      seed
        ? realtime.subscribe(
            target as LiveTarget,
            // The subscription keeps `seed.cursor` current before it calls back.
            (snapshot) => answer({ type: 'data', docs: snapshot.docs, hasMore: snapshot.hasMore, cursor: seed.cursor }),
            onError,
            seed,
          )
        : realtime.subscribeAggregate(
            target as LiveAggregateTarget,
            (groups) => answer({ type: 'data', groups }),
            onError,
          ),
    );
  };

  /** Follower: a result or a refusal the leader sent for one of this tab's subscriptions. */
  const deliver = (message: Extract<SocketMessage, { type: 'data' | 'fail' }>): void => {
    const entry = mine.get(message.id);
    if (!entry || entry.local) return;
    if (message.type === 'fail') {
      mine.delete(message.id);
      entry.onError(fromRefusal(kit.BasaltError, message.error));
    } else if (entry.seed) {
      const { docs = [], hasMore = false, cursor = null } = message;
      // What a new leader resumes from, should this one close.
      Object.assign(entry.seed, { docs, hasMore, cursor });
      entry.onData({
        docs: docs as QuerySnapshot<unknown>['docs'],
        changes: [],
        hasMore,
        fromCache: false,
        hasPendingWrites: false,
      });
    } else entry.onData(message.groups ?? []);
  };

  const receive = (message: SocketMessage | undefined): void => {
    if (!message || closed || message.from === tab) return;
    switch (message.type) {
      case 'hello':
        if (leading) post({ type: 'leader', from: tab, status } satisfies SocketMessage);
        return;
      case 'leader':
        if (leading || !alive) return;
        // A new leader (the previous one closed): it hears of every subscription again.
        if (message.from !== leader) {
          leader = message.from;
          for (const entry of mine.values()) place(entry);
        }
        return setStatus(message.status);
      case 'status':
        if (!leading && message.from === leader) setStatus(message.status);
        return;
      case 'sub':
        if (leading) relay(message);
        return;
      case 'unsub':
        if (leading) end(`${message.from} ${message.id}`);
        return;
      default:
        if (!leading && message.to === tab) deliver(message);
    }
  };

  realtime.onStatusChange((next) => {
    if (!leading) return;
    setStatus(next);
    post({ type: 'status', from: tab, status: next } satisfies SocketMessage);
  });

  // Held for the tab's life (the browser releases it when the tab closes); then say hello, and
  // the leader answers with who it is.
  locks
    .request(lifeLock(tab), { signal: abort.signal }, () => {
      alive = true;
      if (!leading) post({ type: 'hello', from: tab } satisfies SocketMessage);
      return new Promise<void>((resolve) => (release = resolve));
    })
    .catch(() => undefined);

  return {
    subscribe: (target, onSnapshot, onError = logUnhandled, seed = { docs: [], cursor: null, hasMore: false }) =>
      follow({ target, seed, onData: onSnapshot, onError }),
    subscribeAggregate: (target, onGroups, onError = logUnhandled) => follow({ target, onData: onGroups, onError }),
    onStatusChange(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    get connected() {
      return leading ? realtime.connected : status === 'open';
    },
    get connectionStatus() {
      return status;
    },
    lead() {
      if (leading || closed) return;
      leading = true;
      leader = tab;
      setStatus(realtime.connectionStatus);
      // What this tab followed through the previous leader, now on its own socket, from where it was.
      for (const entry of mine.values()) place(entry);
      post({ type: 'leader', from: tab, status } satisfies SocketMessage);
    },
    close() {
      if (closed) return;
      closed = true;
      leading = false;
      abort.abort();
      release();
      endAll('');
      for (const entry of mine.values()) entry.local?.();
      mine.clear();
    },
  };
}
