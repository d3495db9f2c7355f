/**
 * Where the auth session persists (localStorage in browsers, any SessionStorage elsewhere), and
 * how tabs that share it tell each other of changes (BroadcastChannel, else the `storage`
 * event: see tabs.ts). The auth client keeps the state machine; this keeps the bytes.
 */
import { tabChannel } from './tabs.js';
import type { SessionStorage } from './transport.js';
import type { Session, User } from './wire.js';

export interface Stored {
  session: Session;
  user: User;
  /**
   * When this state was written (ms, bumped to stay increasing). A tab may see another tab's
   * message before its storage write: a stored state older than one already seen is stale.
   */
  seq?: number;
}

/** What a tab tells the others after changing the stored session: the new state, or null for signed out. */
interface TabMessage {
  seq: number;
  state: Stored | null;
}

export class SessionStore {
  private announce: (message: TabMessage) => void = () => undefined;

  constructor(
    private readonly storage: SessionStorage,
    private readonly key: string,
  ) {}

  /** Whether this is the browser's localStorage (shared by the tabs of an origin). */
  isLocalStorage(): boolean {
    try {
      return this.storage === (globalThis as { localStorage?: unknown }).localStorage;
    } catch {
      return false;
    }
  }

  /**
   * Starts telling other tabs of each save, and hearing theirs: `onState` gets a state another
   * tab saved with its seq; `onStorageChanged` is called when only the storage itself changed.
   */
  shareWithTabs(onState: (state: Stored | null, seq: number) => void, onStorageChanged: () => void): void {
    this.announce = tabChannel(`basalt.auth:${this.key}`, this.key, (message) => {
      const told = message as TabMessage | undefined;
      if (typeof told?.seq === 'number') onState(told.state, told.seq);
      else onStorageChanged();
    });
  }

  /** The stored state, or null when there is none or it is unreadable. */
  async load(): Promise<Stored | null> {
    try {
      const raw = await this.storage.getItem(this.key);
      if (!raw) return null;
      const parsed = JSON.parse(raw) as Partial<Stored>;
      if (typeof parsed.session?.refresh_token !== 'string' || typeof parsed.user?.id !== 'string') return null;
      return parsed as Stored;
    } catch {
      return null;
    }
  }

  /** Stores `state` (null: signed out) and tells the other tabs. */
  async save(state: Stored | null, seq: number): Promise<void> {
    if (state) await this.storage.setItem(this.key, JSON.stringify(state));
    else await this.storage.removeItem(this.key);
    this.announce({ seq, state });
  }
}

/** localStorage when the environment has a working one, else nothing (memory only). */
export function defaultStorage(): SessionStorage | null {
  try {
    const storage = (globalThis as { localStorage?: SessionStorage }).localStorage;
    if (!storage) return null;
    const probe = '__basalt_probe__';
    storage.setItem(probe, '1');
    storage.removeItem(probe);
    return storage;
  } catch {
    return null;
  }
}
