/**
 * Many tabs, one offline cache (docs/offline.md, "Many tabs"). The tabs of an origin share
 * the IndexedDB cache and outbox; one of them at a time — the holder of a Web Lock — sends
 * the outbox, so no write goes out twice from two tabs. The others only queue into the shared
 * outbox and follow what changes, told over a BroadcastChannel. A closing tab's lock is
 * released by the browser and the next waiting tab takes over the sending.
 */
import type { BasaltError } from '../errors.js';
import type { tabChannel } from '../tabs.js';
import { fromRefusal, toRefusal, type RefusalMessage, type SharedSocket } from './tab-socket.js';

/**
 * What the tabs layer uses of the main bundle, handed in by createClient (the engine's kit):
 * importing it here would make the bundler split it into a chunk every app downloads.
 */
export interface TabKit {
  tabChannel: typeof tabChannel;
  BasaltError: typeof BasaltError;
}

/** What the tabs layer drives in the offline engine. */
export interface TabEngine {
  /** Whether this tab sends the outbox. */
  setOwner(owns: boolean): void;
  /** Called with what this tab changed (`[store, key, value]`), once it is stored. */
  onLocalChange(
    listener: (changes: ReadonlyArray<readonly [store: string, key: string, value?: unknown]>) => void,
  ): () => void;
  /** Re-reads the shared storage and recomputes every view: another tab changed it. */
  load(): Promise<void>;
  /** Called when the server refused a queued write (in the tab that sent it). */
  onWriteError(listener: (error: BasaltError, write: unknown) => void): () => void;
  /** Tells this tab's listeners of a write another tab sent and the server refused. */
  reportWriteError?(error: BasaltError, write: unknown): void;
}

interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<void>;
}

/** What tabs tell each other. */
type TabMessage =
  { type: 'changed'; from: string } | { type: 'write-error'; from: string; error: RefusalMessage; write: unknown };

export interface TabCoordination {
  /** This tab holds the lock: it sends the outbox. */
  readonly owner: boolean;
  /** Gives the lock up (and stops listening): the next tab takes over. */
  close(): void;
}

/**
 * Joins the tabs of `name` (e.g. `basalt.offline:<host>`): waits for the lock and sends the
 * outbox while holding it, tells the other tabs what this one stored, and reloads what they
 * stored. Where there are no Web Locks (Node, old browsers) this client owns its outbox alone.
 * `socket`, the tabs' shared realtime socket (offline/tab-socket.ts), is led by the same tab:
 * the holder of the lock.
 */
export function coordinateTabs(
  engine: TabEngine,
  name: string,
  kit: TabKit,
  socket?: Pick<SharedSocket, 'lead' | 'close'>,
): TabCoordination {
  const tab = Math.random().toString(36).slice(2, 10);
  let owner = false;
  let closed = false;

  // Reloads coalesce: a burst of changes from another tab costs one re-read.
  let reloading: Promise<void> | null = null;
  let again = false;
  const reload = (): void => {
    if (reloading) {
      again = true;
      return;
    }
    reloading = engine
      .load()
      .catch(() => undefined)
      .then(() => {
        reloading = null;
        if (again && !closed) {
          again = false;
          reload();
        }
      });
  };

  const tell = kit.tabChannel(name, name, (message) => {
    if (closed) return;
    const said = message as TabMessage | undefined;
    // The storage-event fallback carries no message: something changed, read it again.
    if (!said) return reload();
    if (said.from === tab) return;
    if (said.type === 'changed') reload();
    else if (said.type === 'write-error')
      engine.reportWriteError?.(fromRefusal(kit.BasaltError, said.error), said.write);
  });
  // Only the outbox and the cache's owner concern the others: each tab gets the server's
  // results for its own live queries (through the shared socket, offline/tab-socket.ts), so
  // cached query results need no message; the request in flight is the sending tab's own
  // (the next one reads it when it takes over).
  const stopChanges = engine.onLocalChange((changes) => {
    if (changes.some(([store, key]) => store === 'outbox' || (store === 'meta' && key !== 'inflight'))) {
      tell({ type: 'changed', from: tab } satisfies TabMessage);
    }
  });
  // The sending tab tells the others of refusals, so the tab that queued the write hears it too.
  const stopErrors = engine.onWriteError((error, write) => {
    if (!owner) return;
    tell({ type: 'write-error', from: tab, error: toRefusal(error), write } satisfies TabMessage);
  });

  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
  let giveUp = (): void => undefined;
  if (!locks) {
    owner = true;
    engine.setOwner(true);
  } else {
    engine.setOwner(false);
    const abort = new AbortController();
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    locks
      .request(name, { signal: abort.signal }, async () => {
        if (closed) return;
        owner = true;
        engine.setOwner(true);
        socket?.lead();
        // Held for the tab's life: the browser releases it when the tab closes.
        await held;
        owner = false;
        engine.setOwner(false);
      })
      .catch(() => undefined); // aborted: closed while waiting
    giveUp = () => {
      abort.abort();
      release();
    };
  }

  return {
    get owner() {
      return owner;
    },
    close() {
      if (closed) return;
      closed = true;
      stopChanges();
      stopErrors();
      socket?.close();
      giveUp();
    },
  };
}
