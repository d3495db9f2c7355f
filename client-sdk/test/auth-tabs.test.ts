import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { useTestApp, waitFor } from '../../test/helpers.js';
import { createClient, type AuthChangeEvent, type BasaltClient } from '../src/index.js';
import type { SessionStorage } from '../src/client.js';

// Clients sharing one stored session, as the tabs of a browser do: here in one Node process
// (`syncTabs: true`, as the storage is not localStorage), where the SDK coordinates them with
// BroadcastChannel and its in-process lock (Node 20 has no Web Locks). The server revokes a session on ANY reuse of a rotated refresh token
// (grace 0), so one token spent twice would show.

const server = useTestApp({ env: { BASALT_AUTH_REFRESH_REUSE_GRACE: '0' } });
const clients: BasaltClient[] = [];

afterAll(async () => {
  for (const client of clients) client.auth.stopAutoRefresh();
});

const PASSWORD = 'correct horse battery staple 42';

class MemoryStorage implements SessionStorage {
  readonly items = new Map<string, string>();
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  // Asynchronous like IndexedDB-backed stores: the SDK must not interleave its writes.
  async setItem(key: string, value: string) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    this.items.set(key, value);
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
}

/** A "tab": a client on the shared storage, counting the refresh requests it sends. */
function tab(storage: SessionStorage, storageKey: string) {
  const counter = { refreshes: 0 };
  const counting: typeof fetch = (input, init) => {
    if (String(input).endsWith('/v1/auth/refresh')) counter.refreshes++;
    return fetch(input, init);
  };
  const basalt = createClient(server.url, { storage, storageKey, fetch: counting, syncTabs: true });
  clients.push(basalt);
  const events: AuthChangeEvent[] = [];
  basalt.auth.onAuthStateChange((event) => events.push(event));
  return { basalt, events, counter };
}

/** Waits, polling often, until `check` holds; a timeout names the condition. */
function until(check: () => boolean, timeoutMs = 5_000): Promise<true> {
  return waitFor(check.toString(), () => check() || null, timeoutMs, 10);
}

function key(): string {
  return `basalt.auth.tabs-${randomBytes(4).toString('hex')}`;
}

describe('a session shared by tabs', () => {
  it('follows sign-in, refresh and sign-out of another tab, with auth events', async () => {
    const storage = new MemoryStorage();
    const storageKey = key();
    const a = tab(storage, storageKey);
    const b = tab(storage, storageKey);
    await Promise.all([a.basalt.auth.ready, b.basalt.auth.ready]);
    const { user } = await a.basalt.auth.signUp({
      email: `tabs-${randomBytes(4).toString('hex')}@example.com`,
      password: PASSWORD,
    });
    await until(() => b.basalt.auth.user?.id === user.id);
    expect(b.events).toEqual(['SIGNED_IN']);

    const fresh = await a.basalt.auth.refreshSession();
    await until(() => b.basalt.auth.session?.refresh_token === fresh?.refresh_token);
    expect(b.events).toEqual(['SIGNED_IN', 'TOKEN_REFRESHED']);
    expect(b.counter.refreshes).toBe(0);
    expect((await b.basalt.auth.getUser()).id).toBe(user.id);

    await a.basalt.auth.updateUser({ data: { theme: 'dark' } });
    await until(() => b.basalt.auth.user?.user_metadata.theme === 'dark');
    expect(b.events.at(-1)).toBe('USER_UPDATED');

    await a.basalt.auth.signOut();
    await until(() => b.basalt.auth.session === null);
    expect(b.events.at(-1)).toBe('SIGNED_OUT');
  });

  it('refreshes concurrently from many tabs, many times, without ever spending a token twice', async () => {
    const storage = new MemoryStorage();
    const storageKey = key();
    const tabs = [tab(storage, storageKey), tab(storage, storageKey), tab(storage, storageKey)];
    const [first] = tabs;
    await first!.basalt.auth.signUp({
      email: `tabs-${randomBytes(4).toString('hex')}@example.com`,
      password: PASSWORD,
    });
    await until(() => tabs.every((t) => t.basalt.auth.session !== null));
    for (let round = 0; round < 10; round++) {
      const sessions = await Promise.all(tabs.map((t) => t.basalt.auth.refreshSession()));
      // Every tab ends on the one session of this round: the first refreshed, the others took it.
      expect(sessions.every((session) => session !== null)).toBe(true);
      expect(new Set(sessions.map((session) => session!.refresh_token)).size).toBe(1);
    }
    const total = tabs.reduce((sum, t) => sum + t.counter.refreshes, 0);
    expect(total).toBe(10);
    // The session is alive on the server: reuse would have revoked it (grace 0).
    const sessions = await first!.basalt.auth.listSessions();
    expect(sessions.filter((session) => session.current)).toHaveLength(1);
    for (const t of tabs) {
      expect(t.events).not.toContain('SIGNED_OUT');
      expect((await t.basalt.auth.getUser()).id).toBe(first!.basalt.auth.user!.id);
    }
  });

  it('does not write a stale session over one another tab stored since', async () => {
    const storage = new MemoryStorage();
    const storageKey = key();
    const a = tab(storage, storageKey);
    await a.basalt.auth.signUp({ email: `tabs-${randomBytes(4).toString('hex')}@example.com`, password: PASSWORD });
    const b = tab(storage, storageKey);
    await b.basalt.auth.ready;
    b.basalt.auth.stopAutoRefresh();
    // A refreshes; B saves its user before hearing of it. Storage must keep A's session.
    const refreshed = a.basalt.auth.refreshSession();
    const user = b.basalt.auth.getUser();
    const [fresh] = await Promise.all([refreshed, user]);
    await until(() => b.basalt.auth.session?.refresh_token === fresh?.refresh_token);
    const stored = JSON.parse(storage.items.get(storageKey)!) as { session: { refresh_token: string } };
    expect(stored.session.refresh_token).toBe(fresh?.refresh_token);
    expect(await b.basalt.auth.refreshSession()).not.toBeNull();
    expect(b.events).not.toContain('SIGNED_OUT');
  });

  it('keeps clients with storages of their own apart (a server holding one client per user)', async () => {
    const storageKey = key();
    const make = () => {
      const basalt = createClient(server.url, { storage: new MemoryStorage(), storageKey });
      clients.push(basalt);
      return basalt;
    };
    const [alice, bob] = [make(), make()];
    const { user } = await alice.auth.signUp({
      email: `tabs-${randomBytes(4).toString('hex')}@example.com`,
      password: PASSWORD,
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(bob.auth.session).toBeNull();
    await bob.auth.signInAnonymously();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(alice.auth.user?.id).toBe(user.id);
    expect(bob.auth.user?.id).not.toBe(user.id);
  });
});
