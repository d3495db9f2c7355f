import type { Browser, BrowserContext, Page } from 'playwright-core';
import { haveBrowser, useBrowserSuite } from './browser-support.js';
import { createCollection } from '../../test/documents-support.js';
import { describe, expect, it } from 'vitest';
import { request, type TestApp } from '../../test/helpers.js';

// Two tabs of one browser profile (one chromium context: shared localStorage, Web Locks and
// BroadcastChannel) on one session. Access tokens live 30 s, so both tabs' timers come due
// together, and the server revokes a session on ANY reuse of a rotated refresh token
// (grace 0): a token spent twice would end the session for both. Skipped without chromium.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  env: { BASALT_ACCESS_TOKEN_TTL: '30', BASALT_AUTH_REFRESH_REUSE_GRACE: '0' },
  setup: (app) =>
    createCollection(app, {
      name: 'todos',
      rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null' },
    }),
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

interface Tab {
  events: string[];
  refreshes: number;
  basalt: {
    auth: {
      ready: Promise<void>;
      user: { id: string } | null;
      session: { access_token: string; refresh_token: string; expires_at: number } | null;
      signUp(input: { email: string; password: string }): Promise<{ user: { id: string } }>;
      signOut(): Promise<void>;
      refreshSession(): Promise<{ refresh_token: string } | null>;
      getUser(): Promise<{ id: string }>;
      listSessions(): Promise<Array<{ id: string; current: boolean }>>;
      onAuthStateChange(listener: (event: string) => void): () => void;
    };
  };
}
type Frame = { type: string; access_token?: string | null };
interface LiveClient {
  db: {
    collection(name: string): {
      add(data: unknown, options: { id: string }): Promise<unknown>;
      onSnapshot(callback: (snapshot: { docs: Array<{ id: string }> }) => void): () => void;
    };
  };
}
type TabWindow = { tab: Tab; Basalt: { createClient(url: string, options: unknown): Tab['basalt'] } };

/** Opens a tab with a client that records its auth events and counts its refresh requests. */
async function openTab(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  // Records what the page's websockets send and receive.
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    const frames: { sent: unknown[]; received: unknown[] } = { sent: [], received: [] };
    (window as unknown as { frames: typeof frames }).frames = frames;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        this.addEventListener('message', (event) => frames.received.push(JSON.parse(String(event.data))));
      }
      override send(data: string): void {
        frames.sent.push(JSON.parse(data));
        super.send(data);
      }
    };
  });
  await page.goto(pageUrl);
  await page.evaluate(async (url) => {
    const w = window as unknown as TabWindow;
    const tab = { events: [], refreshes: 0 } as unknown as Tab;
    tab.basalt = w.Basalt.createClient(url, {
      fetch: (input: RequestInfo | URL, init?: RequestInit) => {
        if (String(input).endsWith('/v1/auth/refresh')) tab.refreshes++;
        return fetch(input, init);
      },
    });
    tab.basalt.auth.onAuthStateChange((event) => tab.events.push(event));
    w.tab = tab;
    await tab.basalt.auth.ready;
  }, server.url);
  return page;
}

function state(page: Page) {
  return page.evaluate(() => {
    const { tab } = window as unknown as TabWindow;
    return {
      events: [...tab.events],
      refreshes: tab.refreshes,
      user: tab.basalt.auth.user?.id ?? null,
      refreshToken: tab.basalt.auth.session?.refresh_token ?? null,
      expiresAt: tab.basalt.auth.session?.expires_at ?? null,
    };
  });
}

describe.skipIf(!haveBrowser)('a session shared by browser tabs', () => {
  it('signs in, refreshes and signs out across tabs without refresh-token reuse', async () => {
    const context = await browser.newContext();
    const a = await openTab(context);
    const b = await openTab(context);

    const email = `tabs-${Date.now()}@example.com`;
    const userId = await a.evaluate(
      async ({ email }) => {
        const { tab } = window as unknown as TabWindow;
        const { user } = await tab.basalt.auth.signUp({ email, password: 'correct horse battery staple 42' });
        return user.id;
      },
      { email },
    );
    await expect.poll(async () => (await state(b)).user).toBe(userId);
    expect((await state(b)).events).toEqual(['SIGNED_IN']);
    // B follows the user's todos live: its socket must follow the session A signed in.
    await b.evaluate(() => {
      const w = window as unknown as TabWindow & { todos: string[] | null };
      w.todos = null;
      (w.tab.basalt as unknown as LiveClient).db
        .collection('todos')
        .onSnapshot((snapshot) => (w.todos = snapshot.docs.map((doc) => doc.id)));
    });
    await expect.poll(() => b.evaluate(() => (window as unknown as { todos: string[] | null }).todos)).toEqual([]);
    // A tab opened later starts signed in from storage.
    const c = await openTab(context);
    expect((await state(c)).user).toBe(userId);

    // Both tabs refresh as fast as they can, at the same time.
    const hammer = (page: Page) =>
      page.evaluate(async () => {
        const { tab } = window as unknown as TabWindow;
        const tokens: string[] = [];
        for (let i = 0; i < 15; i++) {
          const session = await tab.basalt.auth.refreshSession();
          if (!session) throw new Error('signed out while refreshing');
          tokens.push(session.refresh_token);
        }
        return tokens;
      });
    const [fromA, fromB] = await Promise.all([hammer(a), hammer(b)]);
    expect(fromA).toHaveLength(15);
    expect(fromB).toHaveLength(15);
    await expect.poll(async () => (await state(c)).refreshToken).toBe((await state(a)).refreshToken);
    expect((await state(b)).refreshToken).toBe((await state(a)).refreshToken);

    // Now the timers: all three tabs come due at the same moment; one request is made.
    const before = await Promise.all([a, b, c].map(state));
    const sent = before.reduce((sum, tab) => sum + tab.refreshes, 0);
    const expiresAt = before[0]!.expiresAt!;
    await expect
      .poll(async () => (await Promise.all([a, b, c].map(state))).every((tab) => tab.expiresAt! > expiresAt), {
        timeout: 40_000,
        interval: 500,
      })
      .toBe(true);
    const after = await Promise.all([a, b, c].map(state));
    expect(after.reduce((sum, tab) => sum + tab.refreshes, 0) - sent).toBe(1);
    expect(new Set(after.map((tab) => tab.refreshToken)).size).toBe(1);

    // B's socket got every new token, so it still follows the todos after the first token
    // expired (the server checks every second and would have dropped the query).
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, (expiresAt + 2) * 1000 - Date.now())));
    await a.evaluate(async () => {
      const { tab } = window as unknown as TabWindow;
      await (tab.basalt as unknown as LiveClient).db.collection('todos').add({}, { id: 'late' });
    });
    await expect
      .poll(() => b.evaluate(() => (window as unknown as { todos: string[] | null }).todos))
      .toEqual(['late']);
    const wire = await b.evaluate(() => (window as unknown as { frames: { sent: Frame[]; received: Frame[] } }).frames);
    expect(wire.received.filter((frame) => frame.type === 'error')).toEqual([]);
    const tokens = wire.sent.filter((frame) => frame.type === 'auth').map((frame) => frame.access_token);
    expect(tokens.length).toBeGreaterThanOrEqual(2);
    expect(tokens.at(-1)).toBe(
      await b.evaluate(() => (window as unknown as TabWindow).tab.basalt.auth.session!.access_token),
    );

    // The session survived: it still works, and the server still lists it.
    for (const page of [a, b, c]) {
      const check = await page.evaluate(async () => {
        const { tab } = window as unknown as TabWindow;
        const user = await tab.basalt.auth.getUser();
        const sessions = await tab.basalt.auth.listSessions();
        return { id: user.id, sessions: sessions.length, current: sessions.filter((s) => s.current).length };
      });
      expect(check).toEqual({ id: userId, sessions: 1, current: 1 });
    }
    for (const page of [a, b, c]) expect((await state(page)).events).not.toContain('SIGNED_OUT');

    // Signing out in one tab signs out the others, and the server ends the session.
    const token = (await b.evaluate(() => (window as unknown as TabWindow).tab.basalt.auth.session!.access_token))!;
    await a.evaluate(() => (window as unknown as TabWindow).tab.basalt.auth.signOut());
    for (const page of [b, c]) {
      await expect.poll(async () => (await state(page)).user).toBeNull();
      expect((await state(page)).events.at(-1)).toBe('SIGNED_OUT');
    }
    const me = await request(server.url, 'GET', '/v1/auth/user', { token });
    expect(me.status).toBe(401);
    await context.close();
  }, 90_000);
});
