import type { Browser } from 'playwright-core';
import { haveBrowser, useBrowserSuite } from './browser-support.js';
import { describe, expect, it } from 'vitest';
import { type TestApp } from '../../test/helpers.js';

// The SDK in a real browser (Debian's chromium): localStorage persistence, the session in
// the URL fragment after a redirect, and OAuth navigation. Skipped where chromium is absent.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({ ready: (suite) => ({ server, browser, pageUrl } = suite) });

interface BasaltGlobal {
  Basalt: {
    createClient(url: string): {
      auth: {
        ready: Promise<void>;
        user: { id: string } | null;
        session: { access_token: string } | null;
        signUp(input: { email: string; password: string }): Promise<{ user: { id: string } }>;
        signInWithOAuth(input: { provider: string; redirectTo?: string }): Promise<{ url: string }>;
        onAuthStateChange(listener: (event: string) => void): () => void;
      };
    };
  };
}

describe.skipIf(!haveBrowser)('auth in a browser', () => {
  it('persists the session in localStorage across a reload', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    const email = `browser-${Date.now()}@example.com`;
    const id = await page.evaluate(
      async ({ url, email }) => {
        const basalt = (window as unknown as BasaltGlobal).Basalt.createClient(url);
        const { user } = await basalt.auth.signUp({ email, password: 'correct horse battery staple 42' });
        return user.id;
      },
      { url: server.url, email },
    );
    await page.reload();
    const restored = await page.evaluate(async (url) => {
      const basalt = (window as unknown as BasaltGlobal).Basalt.createClient(url);
      await basalt.auth.ready;
      return { id: basalt.auth.user?.id, keys: Object.keys(localStorage) };
    }, server.url);
    expect(restored.id).toBe(id);
    expect(restored.keys.some((key) => key.startsWith('basalt.auth.'))).toBe(true);
    await context.close();
  });

  it('signs in from a session in the URL fragment and removes it from the address bar', async () => {
    const email = `fragment-${Date.now()}@example.com`;
    const response = await fetch(`${server.url}/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'correct horse battery staple 42' }),
    });
    const { user, session } = (await response.json()) as {
      user: { id: string };
      session: { access_token: string; refresh_token: string; expires_in: number; expires_at: number };
    };
    const fragment = new URLSearchParams({
      access_token: session.access_token,
      refresh_token: session.refresh_token,
      expires_in: String(session.expires_in),
      expires_at: String(session.expires_at),
      token_type: 'bearer',
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${pageUrl}#${fragment.toString()}`);
    const seen = await page.evaluate(async (url) => {
      const basalt = (window as unknown as BasaltGlobal).Basalt.createClient(url);
      const events: string[] = [];
      basalt.auth.onAuthStateChange((event) => events.push(event));
      await basalt.auth.ready;
      return { id: basalt.auth.user?.id, hash: location.hash, events };
    }, server.url);
    expect(seen.id).toBe(user.id);
    expect(seen.hash).toBe('');
    expect(seen.events).toEqual(['SIGNED_IN']);
    await context.close();
  });

  it('navigates to the authorize endpoint for OAuth', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    const navigation = page.waitForURL((url) => url.pathname === '/v1/auth/authorize');
    await page.evaluate((url) => {
      const basalt = (window as unknown as BasaltGlobal).Basalt.createClient(url);
      void basalt.auth.signInWithOAuth({ provider: 'github' });
    }, server.url);
    await navigation;
    const landed = new URL(page.url());
    expect(landed.origin).toBe(new URL(server.url).origin);
    expect(landed.searchParams.get('provider')).toBe('github');
    expect(landed.searchParams.get('redirect_to')).toBe(pageUrl);
    await context.close();
  });
});
