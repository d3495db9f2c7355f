import type { Browser } from 'playwright-core';
import WebSocket from 'ws';
import { haveBrowser, useBrowserSuite, type PageLiveQueries } from './browser-support.js';
import { createCollection } from '../../test/documents-support.js';
import { describe, expect, it } from 'vitest';
import { request, type TestApp } from '../../test/helpers.js';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import { createClient } from '../src/index.js';

// Live queries and channels from a real browser (Debian's chromium) over its own WebSocket.
// Skipped where chromium is absent.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  setup: async (app) => {
    await createCollection(app, { name: 'notes', rules: { read: 'true' } });
    await createCollection(app, {
      name: 'posts',
      rules: { read: 'doc.data.public == true || (auth != null && doc.owner == auth.uid)', create: 'auth != null' },
    });
  },
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

interface PageState {
  snapshots: string[][];
  messages: unknown[];
}

describe.skipIf(!haveBrowser)('realtime in a browser', () => {
  it('follows a live query and exchanges channel broadcasts with a Node client', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    await page.evaluate(async (url) => {
      const state: PageState = { snapshots: [], messages: [] };
      (window as unknown as { state: PageState }).state = state;
      type Sdk = {
        createClient(url: string): PageLiveQueries & {
          channel(name: string): {
            on(type: 'broadcast', event: string, callback: (payload: unknown) => void): unknown;
            subscribe(): Promise<void>;
          };
        };
      };
      const basalt = (window as unknown as { Basalt: Sdk }).Basalt.createClient(url);
      basalt.db
        .collection('notes')
        .where('kind', '==', 'browser')
        .onSnapshot((snapshot) => state.snapshots.push(snapshot.docs.map((doc) => doc.id)));
      const room = basalt.channel('browser-room');
      room.on('broadcast', 'hello', (payload) => state.messages.push(payload));
      await room.subscribe();
    }, server.url);
    const state = () => page.evaluate(() => (window as unknown as { state: PageState }).state);
    await expect.poll(async () => (await state()).snapshots.length).toBe(1);

    await request(server.url, 'PUT', '/v1/db/notes/b1', {
      token: server.serviceKey,
      body: { data: { kind: 'browser' } },
    });
    await expect.poll(async () => (await state()).snapshots.at(-1)).toEqual(['b1']);

    const node = createClient(server.url, {
      persistSession: false,
      WebSocket,
    });
    const room = node.channel('browser-room');
    await room.subscribe();
    room.send('hello', { from: 'node' });
    await expect.poll(async () => (await state()).messages).toEqual([{ from: 'node' }]);
    node.realtime.disconnect();
    await context.close();
  }, 60_000);

  it('signing in is one snapshot and signing out ends the query, without a snapshot per document', async () => {
    const email = uniqueEmail('browser-live');
    const owner = createClient(server.url, { persistSession: false, WebSocket });
    await owner.auth.signUp({ email, password: STRONG_PASSWORD });
    for (const n of [1, 2, 3, 4, 5]) await owner.db.collection('posts').add({ n }, { id: `own${n}` });
    await request(server.url, 'PUT', '/v1/db/posts/shared', {
      token: server.serviceKey,
      body: { data: { public: true } },
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(pageUrl);
    await page.evaluate(async (url) => {
      const state: AuthPageState = { snapshots: [], errors: [] };
      (window as unknown as { state: AuthPageState }).state = state;
      type Sdk = {
        createClient(
          url: string,
          options: { persistSession: boolean },
        ): {
          db: {
            collection(name: string): {
              onSnapshot(
                callback: (snapshot: { docs: Array<{ id: string }> }) => void,
                onError: (error: unknown) => void,
              ): () => void;
            };
          };
          auth: {
            signIn(input: { email: string; password: string }): Promise<unknown>;
            signOut(): Promise<void>;
          };
        };
      };
      const basalt = (window as unknown as { Basalt: Sdk }).Basalt.createClient(url, { persistSession: false });
      (window as unknown as { basalt: unknown }).basalt = basalt;
      basalt.db.collection('posts').onSnapshot(
        (snapshot) => state.snapshots.push(snapshot.docs.map((doc) => doc.id)),
        (error) => state.errors.push((error as { code: string }).code),
      );
    }, server.url);
    const state = () => page.evaluate(() => (window as unknown as { state: AuthPageState }).state);
    await expect.poll(async () => (await state()).snapshots.length).toBe(1);
    expect((await state()).snapshots[0]).toEqual(['shared']);

    type Auth = { auth: { signIn(input: unknown): Promise<unknown>; signOut(): Promise<void> } };
    await page.evaluate((input) => (window as unknown as { basalt: Auth }).basalt.auth.signIn(input), {
      email,
      password: STRONG_PASSWORD,
    });
    await expect.poll(async () => (await state()).snapshots.length).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await state()).snapshots).toHaveLength(2);
    expect((await state()).snapshots[1]?.sort()).toEqual(['own1', 'own2', 'own3', 'own4', 'own5', 'shared']);

    await page.evaluate(() => (window as unknown as { basalt: Auth }).basalt.auth.signOut());
    await expect.poll(async () => (await state()).errors).toEqual(['FORBIDDEN']);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await state()).snapshots).toHaveLength(2);
    owner.realtime.disconnect();
    owner.auth.stopAutoRefresh();
    await context.close();
  }, 60_000);
});

interface AuthPageState {
  snapshots: string[][];
  errors: string[];
}
