import type { Browser } from 'playwright-core';
import WebSocket from 'ws';
import { haveBrowser, useBrowserSuite, type PageLiveQueries } from './browser-support.js';
import { createCollection } from '../../test/documents-support.js';
import { describe, expect, it } from 'vitest';
import { request, type TestApp } from '../../test/helpers.js';
import { createClient } from '../src/index.js';

// Live queries and channels from a real browser (Debian's chromium) over its own WebSocket.
// Skipped where chromium is absent.

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  setup: (app) => createCollection(app, { name: 'notes', rules: { read: 'true' } }),
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
});
