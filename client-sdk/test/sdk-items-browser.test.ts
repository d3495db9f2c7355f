// What the SDK promises an app, checked in a real browser (Debian's chromium) over its own fetch
// and WebSocket, as the Node tests check it on Node: live queries cut nothing and honour
// startAfter; errors are logged or acknowledged, never lost; functions.invoke; update() without
// read access; dotted keys and traversal paths refused; retries as Retry-After asks, read across
// origins; backward pages, projection, bulk remove, move, copy and signed URLs with their expiry.
// Skipped where chromium is absent.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import { createBucket, createCollection, request, type TestApp } from '../../test/helpers.js';
import { haveBrowser, useBrowserSuite } from './browser-support.js';
import type * as Sdk from '../src/index.js';

const functionsDir = mkdtempSync(path.join(tmpdir(), 'basalt-sdk-browser-functions-'));
writeFileSync(
  path.join(functionsDir, 'greet.ts'),
  `import { http } from 'basalt/functions';
   export default http(async (request) => ({
     hello: (request.body as { name?: string } | null)?.name ?? 'world',
     uid: request.auth?.uid ?? null,
   }));`,
);

let server: TestApp;
let pageUrl: string;
let browser: Browser;

useBrowserSuite({
  env: { BASALT_FUNCTIONS_DIR: functionsDir },
  setup: async (app) => {
    await createCollection(app, { name: 'players', rules: { read: 'true' } });
    await createCollection(app, {
      name: 'items',
      rules: {
        read: 'auth != null && doc.owner == auth.uid',
        create: 'auth != null',
        update: 'auth != null && doc.owner == auth.uid',
      },
    });
    await createCollection(app, {
      name: 'dropbox',
      rules: { read: 'false', create: 'auth != null', update: 'auth != null' },
    });
    const own = 'auth != null && object.owner == auth.uid';
    await createBucket(app, { name: 'files', rules: { read: own, write: own, delete: own } });
    await createBucket(app, { name: 'shared', public: true, rules: { write: 'auth != null' } });
    // 130 players of team a (more than a query page), 1001 of team big (past the live cap).
    const sql = new pg.Client({ connectionString: app.config.databaseUrl ?? '' });
    await sql.connect();
    try {
      for (const [team, count] of [
        ['a', 130],
        ['big', 1001],
      ] as const) {
        await sql.query(
          `INSERT INTO basalt_data.players (id, data)
             SELECT $1 || g, jsonb_build_object('team', $1::text, 'n', g) FROM generate_series(1, $2::int) g`,
          [team, count],
        );
      }
    } finally {
      await sql.end();
    }
  },
  ready: (suite) => ({ server, browser, pageUrl } = suite),
});

afterAll(() => rmSync(functionsDir, { recursive: true, force: true }));

/** The page's globals: the SDK bundle, and the signed-in client a test made. */
type PageWindow = Window & { Basalt: typeof Sdk; basalt: Sdk.BasaltClient };

const contexts: BrowserContext[] = [];
afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
});

/** A fresh page whose `window.basalt` is signed in as a new user. */
async function signedInPage(): Promise<Page> {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(pageUrl);
  await page.evaluate(
    async ({ url, email, password }) => {
      const page = window as unknown as PageWindow;
      page.basalt = page.Basalt.createClient(url, { persistSession: false });
      await page.basalt.auth.signUp({ email, password });
    },
    { url: server.url, email: uniqueEmail('browser-sdk'), password: STRONG_PASSWORD },
  );
  return page;
}

describe.skipIf(!haveBrowser)('the SDK in a browser', () => {
  it('live queries: every match without limit, hasMore on a window, startAfter honoured, an error past the cap', async () => {
    const page = await signedInPage();
    const result = await page.evaluate(async () => {
      const { basalt } = window as unknown as PageWindow;
      type Player = { team: string; n: number };
      type First = { ids: string[]; hasMore: boolean } | { code: string; details: unknown };
      const first = (query: Sdk.Query<Player, Player>) =>
        new Promise<First>((resolve) => {
          // The first snapshot arrives after onSnapshot has returned its stop function.
          const stop = query.onSnapshot(
            (snapshot) => {
              stop();
              resolve({ ids: snapshot.docs.map((doc) => doc.id), hasMore: snapshot.hasMore });
            },
            (error) => resolve({ code: error.code, details: error.details }),
          );
        });
      const players = basalt.db.collection<Player>('players');
      const team = players.where('team', '==', 'a');
      const window5 = team.orderBy('n').limit(5);
      const page1 = await window5.get();
      return {
        all: await first(team),
        window: await first(window5),
        after: await first(window5.startAfter(page1.nextCursor)),
        pastCap: await first(players.where('team', '==', 'big')),
      };
    });
    expect(result.all).toMatchObject({ hasMore: false });
    expect('ids' in result.all && result.all.ids).toHaveLength(130);
    expect(result.window).toEqual({ ids: ['a1', 'a2', 'a3', 'a4', 'a5'], hasMore: true });
    expect(result.after).toEqual({ ids: ['a6', 'a7', 'a8', 'a9', 'a10'], hasMore: true });
    expect(result.pastCap).toMatchObject({ code: 'INVALID_REQUEST', details: { limit: 1000 } });
  }, 60_000);

  it('errors do not vanish: a listener without an error callback logs; send() resolves with the acknowledgement', async () => {
    const page = await signedInPage();
    const sent = await page.evaluate(async () => {
      const { basalt } = window as unknown as PageWindow;
      const room = basalt.channel('acks');
      await room.subscribe();
      return {
        // Over what the server relays (refused there), over a websocket frame (refused here), and fine.
        big: await room.send('big', { blob: 'x'.repeat(10_000) }),
        huge: await room.send('huge', { blob: 'x'.repeat(70_000) }),
        small: await room.send('small', { n: 1 }),
      };
    });
    expect(sent).toEqual({ big: 'error', huge: 'error', small: 'ok' });

    const logged = await page.evaluate(async () => {
      const { basalt } = window as unknown as PageWindow;
      const codes: string[] = [];
      const original = console.error;
      console.error = (...args: unknown[]) => {
        const error = args.find((arg): arg is Sdk.BasaltError => arg instanceof Error);
        codes.push(`${String(args[0])} ${error && 'code' in error ? error.code : ''}`);
        original(...args);
      };
      try {
        basalt.db.collection('misspelt_players').onSnapshot(() => undefined);
        for (let i = 0; i < 200 && codes.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
        return codes;
      } finally {
        console.error = original;
      }
    });
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/^Basalt live query failed .* NOT_FOUND$/);
  }, 60_000);

  it('invokes functions, types update() without read access, refuses dotted keys and traversal paths', async () => {
    const page = await signedInPage();
    const result = await page.evaluate(async () => {
      const { basalt } = window as unknown as PageWindow;
      const code = (promise: Promise<unknown>) =>
        promise.then(
          () => 'resolved',
          (error: Sdk.BasaltError) => `${error.code} ${JSON.stringify(error.details ?? null)}`,
        );
      const greeting = await basalt.functions.invoke<{ hello: string; uid: string | null }>('greet', { name: 'ada' });
      const dropbox = basalt.db.collection<{ note: string }>('dropbox');
      await dropbox.add({ note: 'first' }, { id: 'slot' });
      const updated = await dropbox.doc('slot').update({ note: 'second' });
      const items = basalt.db.collection('items');
      const item = await items.add({ title: 'dots' });
      const files = basalt.storage.from('files');
      return {
        greeting,
        me: basalt.auth.user?.id,
        missingFunction: await code(basalt.functions.invoke('absent')),
        updated: { data: updated.data, version: updated.version },
        dotted: await code(items.doc(item.id).update({ 'meta.color': 'red' })),
        nestedDotted: await code(items.doc(item.id).update({ meta: { 'x.y': 1 } })),
        itemVersion: (await items.doc(item.id).get())?.version,
        traversal: await code(files.upload('x/../a.txt', new Uint8Array([1]))),
        dotSegment: await code(files.download('./a.txt')),
        stored: (await files.list()).objects.map((object) => object.path),
      };
    });
    expect(result.greeting).toEqual({ hello: 'ada', uid: result.me });
    expect(result.missingFunction).toMatch(/^NOT_FOUND /);
    expect(result.updated).toEqual({ data: null, version: 2 });
    expect(result.dotted).toBe('INVALID_REQUEST {"field":"meta.color"}');
    expect(result.nestedDotted).toBe('INVALID_REQUEST {"field":"meta.x.y"}');
    expect(result.itemVersion).toBe(1);
    expect(result.traversal).toMatch(/^INVALID_PATH /);
    expect(result.dotSegment).toMatch(/^INVALID_PATH /);
    expect(result.stored).toEqual([]);
    expect((await request(server.url, 'GET', '/v1/storage/files/a.txt', { token: server.serviceKey })).status).toBe(
      404,
    );
  }, 60_000);

  it('retries a GET answered 503 as Retry-After asks, reading the header across origins', async () => {
    const page = await signedInPage();
    const id = await page.evaluate(async () => {
      const { basalt } = window as unknown as PageWindow;
      return (await basalt.db.collection('items').add({ title: 'retried' })).id;
    });
    const hits: number[] = [];
    // The first GET of the document gets the server's own CORS headers, with a 503 and Retry-After: 1.
    await page.route(`${server.url}/v1/db/items/${id}`, async (route) => {
      if (route.request().method() !== 'GET') return route.continue();
      hits.push(Date.now());
      if (hits.length > 1) return route.continue();
      const real = await route.fetch();
      await route.fulfill({
        status: 503,
        headers: { ...real.headers(), 'content-type': 'application/json', 'retry-after': '1' },
        body: JSON.stringify({ error: { code: 'UNAVAILABLE', message: 'busy' } }),
      });
    });
    const title = await page.evaluate(async (id) => {
      const { basalt } = window as unknown as PageWindow;
      return (await basalt.db.collection<{ title: string }>('items').doc(id).get())?.data.title;
    }, id);
    expect(title).toBe('retried');
    expect(hits).toHaveLength(2);
    expect((hits[1] ?? 0) - (hits[0] ?? 0)).toBeGreaterThanOrEqual(950);
    // A POST is never tried twice.
    await page.route(`${server.url}/v1/functions/greet`, (route) =>
      route.fulfill({
        status: 503,
        headers: { 'access-control-allow-origin': '*', 'content-type': 'application/json', 'retry-after': '0' },
        body: JSON.stringify({ error: { code: 'UNAVAILABLE', message: 'busy' } }),
      }),
    );
    let posts = 0;
    page.on('request', (sent) => {
      if (sent.url().endsWith('/v1/functions/greet') && sent.method() === 'POST') posts++;
    });
    const invoked = await page.evaluate(() =>
      (window as unknown as PageWindow).basalt.functions.invoke('greet').then(
        () => 'resolved',
        (error: Sdk.BasaltError) => error.code,
      ),
    );
    expect(invoked).toBe('UNAVAILABLE');
    expect(posts).toBe(1);
  }, 60_000);

  it('pages backwards, projects fields, removes several objects, moves, copies and signs with expires_at', async () => {
    const page = await signedInPage();
    const result = await page.evaluate(async () => {
      const { basalt } = window as unknown as PageWindow;
      type Item = { n: number; secret: string; meta: { color: string; size: number } };
      const items = basalt.db.collection<Item>('items');
      for (let n = 1; n <= 7; n++) await items.add({ n, secret: `s${n}`, meta: { color: 'red', size: n } });
      const byN = items.where('n', '>=', 1).orderBy('n');
      const second = await byN
        .limit(3)
        .startAfter((await byN.limit(3).get()).nextCursor)
        .get();
      const back = await byN.limitToLast(3).endBefore(second.prevCursor).get();
      const tail = await byN.limitToLast(2).get();
      const picked = await byN.select('n', 'meta.color').limit(1).get();

      const files = basalt.storage.from('files');
      for (const name of ['a', 'b', 'c']) await files.upload(`bulk/${name}.txt`, new Blob([name]));
      const removed = await files.remove(['bulk/a.txt', 'bulk/b.txt', 'bulk/none.txt']);
      const moved = await files.move('bulk/c.txt', 'moved/c.txt');
      const copied = await files.copy('moved/c.txt', 'copy.txt', { toBucket: 'shared' });
      const before = Date.now();
      const signed = await files.createSignedUrl('moved/c.txt', 120, { withExpiry: true });
      return {
        back: back.docs.map((doc) => doc.data.n),
        tail: tail.docs.map((doc) => doc.data.n),
        picked: picked.docs.map((doc) => doc.data),
        removed: removed.map((outcome) =>
          outcome.deleted ? `${outcome.path} deleted` : `${outcome.path} ${outcome.error.code}`,
        ),
        left: (await files.list()).objects.map((object) => object.path),
        moved: `${moved.bucket}/${moved.path}`,
        copied: `${copied.bucket}/${copied.path}`,
        signedKeys: Object.keys(signed).sort(),
        expiresIn: Date.parse(signed.expires_at) - before,
        signedPath: new URL(signed.url).pathname + new URL(signed.url).search,
      };
    });
    expect(result.back).toEqual([1, 2, 3]);
    expect(result.tail).toEqual([6, 7]);
    expect(result.picked).toEqual([{ n: 1, meta: { color: 'red' } }]);
    expect(result.removed).toEqual(['bulk/a.txt deleted', 'bulk/b.txt deleted', 'bulk/none.txt NOT_FOUND']);
    expect(result.left).toEqual(['moved/c.txt']);
    expect(result.moved).toBe('files/moved/c.txt');
    expect(result.copied).toBe('shared/copy.txt');
    expect(result.signedKeys).toEqual(['expires_at', 'url']);
    expect(result.expiresIn).toBeGreaterThan(110_000);
    expect(result.expiresIn).toBeLessThan(125_000);
    // The signed URL works without a token (it names the server's public URL; the test server listens elsewhere).
    expect((await request(server.url, 'GET', result.signedPath)).status).toBe(200);
  }, 60_000);
});
