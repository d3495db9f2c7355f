import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../../test/helpers.js';
import { BasaltError, createClient, type AuthChangeEvent, type BasaltClient } from '../src/index.js';
import type { SessionStorage } from '../src/client.js';

const server = useTestApp();
const clients: BasaltClient[] = [];

afterAll(async () => {
  for (const client of clients) client.auth.stopAutoRefresh();
});

const PASSWORD = 'correct horse battery staple 42';

function email(): string {
  return `sdk-${randomBytes(4).toString('hex')}@example.com`;
}

class MemoryStorage implements SessionStorage {
  readonly items = new Map<string, string>();
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    this.items.set(key, value);
  }
  removeItem(key: string) {
    this.items.delete(key);
  }
}

function client(options: { storage?: SessionStorage; fetch?: typeof fetch } = {}): BasaltClient {
  const made = createClient(server.url, { storage: options.storage ?? new MemoryStorage(), fetch: options.fetch });
  clients.push(made);
  return made;
}

function record(basalt: BasaltClient): AuthChangeEvent[] {
  const events: AuthChangeEvent[] = [];
  basalt.auth.onAuthStateChange((event) => events.push(event));
  return events;
}

/** Two clients signed in as one new user: the first signed up, the second signed in. */
async function twoSessionsOfOneUser(): Promise<[BasaltClient, BasaltClient]> {
  const address = email();
  const a = client();
  const b = client();
  await a.auth.signUp({ email: address, password: PASSWORD });
  await b.auth.signIn({ email: address, password: PASSWORD });
  return [a, b];
}

function payload(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Makes the stored session look about to expire, as if time had passed. */
function ageStoredSession(storage: MemoryStorage, expiresInSeconds: number): void {
  const [key, raw] = [...storage.items.entries()][0]!;
  const stored = JSON.parse(raw) as { session: { expires_at: number } };
  stored.session.expires_at = Math.floor(Date.now() / 1000) + expiresInSeconds;
  storage.items.set(key, JSON.stringify(stored));
}

describe('auth in the SDK', () => {
  it('signs up, keeps the session, and sends the token with requests', async () => {
    const basalt = client();
    const events = record(basalt);
    const address = email();
    const { user, session } = await basalt.auth.signUp({ email: address, password: PASSWORD, data: { name: 'Ann' } });
    expect(user.email).toBe(address);
    expect(session).not.toBeNull();
    expect(basalt.auth.session?.access_token).toBe(session!.access_token);
    expect(basalt.auth.user?.id).toBe(user.id);
    expect(events).toEqual(['SIGNED_IN']);
    const me = await basalt.auth.getUser();
    expect(me.user_metadata).toEqual({ name: 'Ann' });
  });

  it('rejects with BasaltError codes', async () => {
    const basalt = client();
    const error = await basalt.auth.signIn({ email: email(), password: 'wrong password' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BasaltError);
    expect((error as BasaltError).code).toBe('INVALID_CREDENTIALS');
    expect((error as BasaltError).status).toBe(400);
    const weak = await basalt.auth.signUp({ email: email(), password: 'password' }).catch((e: unknown) => e);
    expect((weak as BasaltError).code).toBe('WEAK_PASSWORD');
    const verify = await basalt.auth.verify({ type: 'magiclink', token: 'nope' }).catch((e: unknown) => e);
    expect((verify as BasaltError).code).toBe('INVALID_TOKEN');
    await expect(basalt.auth.recover(email())).resolves.toBeUndefined();
  });

  it('restores a persisted session in a new client', async () => {
    const storage = new MemoryStorage();
    const first = client({ storage });
    const address = email();
    await first.auth.signUp({ email: address, password: PASSWORD });
    first.auth.stopAutoRefresh();
    const second = client({ storage });
    await second.auth.ready;
    expect(second.auth.user?.email).toBe(address);
    expect((await second.auth.getUser()).email).toBe(address);
  });

  it('signs out: forgets the session and the server stops accepting its token', async () => {
    const storage = new MemoryStorage();
    const basalt = client({ storage });
    const events = record(basalt);
    await basalt.auth.signUp({ email: email(), password: PASSWORD });
    const token = basalt.auth.session!.access_token;
    await basalt.auth.signOut();
    expect(basalt.auth.session).toBeNull();
    expect(basalt.auth.user).toBeNull();
    expect(storage.items.size).toBe(0);
    expect(events).toEqual(['SIGNED_IN', 'SIGNED_OUT']);
    const response = await fetch(`${server.url}/v1/auth/user`, { headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(401);
  });

  it('refreshes a session about to expire before a request uses it', async () => {
    const storage = new MemoryStorage();
    const first = client({ storage });
    await first.auth.signUp({ email: email(), password: PASSWORD });
    first.auth.stopAutoRefresh();
    const before = first.auth.session!;
    ageStoredSession(storage, 30);
    const basalt = client({ storage });
    const events = record(basalt);
    await basalt.auth.ready;
    // Make the loaded session stale now, so the next request refreshes first.
    (basalt.auth.session as { expires_at: number }).expires_at = Math.floor(Date.now() / 1000) + 2;
    await basalt.auth.getUser();
    expect(events).toContain('TOKEN_REFRESHED');
    expect(basalt.auth.session!.refresh_token).not.toBe(before.refresh_token);
  });

  it('refreshes in the background shortly before expiry', async () => {
    const storage = new MemoryStorage();
    const first = client({ storage });
    await first.auth.signUp({ email: email(), password: PASSWORD });
    first.auth.stopAutoRefresh();
    // 900 s tokens are refreshed 60 s before expiry: 61 s left means in about a second.
    ageStoredSession(storage, 61);
    const basalt = client({ storage });
    const refreshed = new Promise<AuthChangeEvent>((resolve) =>
      basalt.auth.onAuthStateChange((event) => event === 'TOKEN_REFRESHED' && resolve(event)),
    );
    await expect(refreshed).resolves.toBe('TOKEN_REFRESHED');
    expect(basalt.auth.session!.expires_at).toBeGreaterThan(Math.floor(Date.now() / 1000) + 800);
  });

  it('collapses concurrent refreshes into one request', async () => {
    let refreshCalls = 0;
    const counting: typeof fetch = (input, init) => {
      if (String(input).endsWith('/v1/auth/refresh')) refreshCalls++;
      return fetch(input, init);
    };
    const basalt = client({ fetch: counting });
    await basalt.auth.signUp({ email: email(), password: PASSWORD });
    const results = await Promise.all(Array.from({ length: 5 }, () => basalt.auth.refreshSession()));
    expect(refreshCalls).toBe(1);
    expect(new Set(results.map((session) => session?.refresh_token)).size).toBe(1);
    // The one new refresh token works (nothing spent it twice).
    await basalt.auth.refreshSession();
    expect(refreshCalls).toBe(2);
    expect(basalt.auth.session).not.toBeNull();
  });

  it('signs out locally when the session ended on the server', async () => {
    const [a, b] = await twoSessionsOfOneUser();
    const events = record(b);
    await a.auth.signOut({ scope: 'global' });
    expect(await b.auth.refreshSession()).toBeNull();
    expect(b.auth.session).toBeNull();
    expect(events).toEqual(['SIGNED_OUT']);
  });

  it('signs in anonymously and upgrades, keeping the id and getting an authenticated token', async () => {
    const basalt = client();
    const events = record(basalt);
    const { user } = await basalt.auth.signInAnonymously();
    expect(user.is_anonymous).toBe(true);
    expect(payload(basalt.auth.session!.access_token).role).toBe('anon');
    const address = email();
    const upgraded = await basalt.auth.updateUser({ email: address, password: PASSWORD });
    expect(upgraded.id).toBe(user.id);
    expect(upgraded.is_anonymous).toBe(false);
    expect(events).toEqual(['SIGNED_IN', 'USER_UPDATED', 'TOKEN_REFRESHED']);
    expect(payload(basalt.auth.session!.access_token).role).toBe('authenticated');
    const again = client();
    expect((await again.auth.signIn({ email: address, password: PASSWORD })).user.id).toBe(user.id);
  });

  it('builds the OAuth URL outside a browser', async () => {
    const basalt = client();
    const { url } = await basalt.auth.signInWithOAuth({ provider: 'github', redirectTo: 'http://localhost:5173/cb' });
    const parsed = new URL(url);
    expect(`${parsed.origin}${parsed.pathname}`).toBe(`${server.url}/v1/auth/authorize`);
    expect(parsed.searchParams.get('provider')).toBe('github');
    expect(parsed.searchParams.get('redirect_to')).toBe('http://localhost:5173/cb');
  });

  it('takes a session from a redirect URL fragment', async () => {
    const source = client();
    const { user } = await source.auth.signUp({ email: email(), password: PASSWORD });
    source.auth.stopAutoRefresh();
    const s = source.auth.session!;
    const fragment = new URLSearchParams({
      access_token: s.access_token,
      refresh_token: s.refresh_token,
      expires_in: String(s.expires_in),
      expires_at: String(s.expires_at),
      token_type: 'bearer',
    });
    const basalt = client();
    const events = record(basalt);
    const session = await basalt.auth.getSessionFromUrl(`http://localhost:5173/cb#${fragment.toString()}`);
    expect(session?.access_token).toBe(s.access_token);
    expect(basalt.auth.user?.id).toBe(user.id);
    expect(events).toEqual(['SIGNED_IN']);
    expect(await basalt.auth.getSessionFromUrl('http://localhost:5173/cb')).toBeNull();
  });

  it('lists and revokes sessions', async () => {
    const [a] = await twoSessionsOfOneUser();
    const sessions = await a.auth.listSessions();
    expect(sessions).toHaveLength(2);
    const other = sessions.find((session) => !session.current)!;
    await a.auth.revokeSession(other.id);
    expect(await a.auth.listSessions()).toHaveLength(1);
  });
});
