// What the SDK needs to coordinate the tabs (and windows, and workers) of one origin: a
// lock that one of them holds at a time, and a way to tell the others that something
// changed. Both degrade to this JavaScript context alone where the platform lacks them.

interface LockManagerLike {
  request<T>(
    name: string,
    options: { signal?: AbortSignal; ifAvailable?: boolean },
    callback: (lock: unknown) => T | Promise<T>,
  ): Promise<T>;
}

interface EventTargetLike {
  addEventListener(type: string, listener: (event: { key?: string | null }) => void): void;
}

interface BroadcastChannelLike {
  onmessage: ((event: unknown) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
  /** Node: a channel must not keep the process alive. */
  unref?: () => void;
}

/** Waiting longer than this for another tab's lock means that tab hangs: go on without it. */
const LOCK_WAIT_MS = 15_000;

/** Lock holders of this context, by name, where the platform has no Web Locks. Made on first use. */
let localLocks: Map<string, Promise<unknown>> | undefined;

const BUSY = {};

/**
 * Runs `task` while holding the lock `name`: across every tab of the origin with Web Locks,
 * else across the clients of this context only. `task` learns whether another tab held the
 * lock first (what that tab wrote may still be on its way to this one).
 */
export async function withLock<T>(name: string, task: (handedOver: boolean) => Promise<T>): Promise<T> {
  const g = globalThis as { navigator?: { locks?: LockManagerLike } };
  const locks = g.navigator?.locks;
  if (locks) {
    const free = await locks.request(name, { ifAvailable: true }, (lock) => (lock ? task(false) : BUSY));
    if (free !== BUSY) return free as T;
    const signal = typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(LOCK_WAIT_MS) : undefined;
    let started = false;
    return locks
      .request(name, { signal }, () => {
        started = true;
        return task(true);
      })
      .catch((error: unknown) => {
        // Only a lock that was never granted is worked around; the task's own failure stands.
        if (started) throw error;
        return task(true);
      });
  }
  localLocks ??= new Map();
  const previous = localLocks.get(name) ?? Promise.resolve();
  // One context shares its storage synchronously: nothing can be on its way.
  const run = previous.then(
    () => task(false),
    () => task(false),
  );
  const tail = run.catch(() => undefined);
  localLocks.set(name, tail);
  void tail.then(() => {
    if (localLocks?.get(name) === tail) localLocks.delete(name);
  });
  return run;
}

/**
 * Calls `onChange` with what another tab says about `name`, and returns the function that
 * tells the others. BroadcastChannel where there is one; else the `storage` event, which fires
 * (with no message) for localStorage writes of other tabs under `storageKey`.
 */
export function tabChannel(
  name: string,
  storageKey: string,
  onChange: (message: unknown) => void,
): (message: unknown) => void {
  const g = globalThis as {
    BroadcastChannel?: new (name: string) => BroadcastChannelLike;
    addEventListener?: EventTargetLike['addEventListener'];
  };
  if (typeof g.BroadcastChannel === 'function') {
    const channel = new g.BroadcastChannel(name);
    channel.onmessage = (event) => onChange((event as { data?: unknown }).data);
    channel.unref?.();
    return (message) => {
      try {
        channel.postMessage(message);
      } catch {
        // A closed channel (page being unloaded) has no one left to tell.
      }
    };
  }
  g.addEventListener?.('storage', (event) => {
    if (event.key === storageKey || event.key === null) onChange(undefined);
  });
  return () => undefined;
}

/** Calls `onWake` when the page comes back: shown again, restored from the back/forward cache, or back online. */
export function onPageWake(onWake: () => void): void {
  const g = globalThis as {
    addEventListener?: EventTargetLike['addEventListener'];
    document?: EventTargetLike & { visibilityState?: string };
  };
  const document = g.document;
  if (!document || !g.addEventListener) return;
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') onWake();
  });
  g.addEventListener('pageshow', () => onWake());
  g.addEventListener('online', () => onWake());
}
