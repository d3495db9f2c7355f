import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { request, useTestApp } from './helpers.js';
import { sleep, TestSocket, type Frame } from './realtime-client.js';
import { LIVE_QUERY_MAX_DOCUMENTS } from '../server/modules/realtime/live-subscription.js';

// What a live query holds: every match without `limit` (refused past the cap, never cut
// short), a window with `has_more` with it, a window after a cursor; and what an identity
// change does to it (one frame, never a removal per document); presence shown once.

interface Doc {
  id: string;
  data: Record<string, unknown>;
}

const app = useTestApp();
const sockets: TestSocket[] = [];

async function open(token?: string): Promise<TestSocket> {
  const socket = await TestSocket.open(app.url, token ? { token } : {});
  sockets.push(socket);
  return socket;
}

async function admin(method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await request(app.url, method, path, { token: app.serviceKey, body });
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${response.text}`);
  return response.body;
}

/** Inserts `count` documents `{team, n}` with ids `${prefix}${n}` in one statement. */
async function insertTeam(prefix: string, team: string, count: number, from = 1): Promise<void> {
  await app.sql.query(
    `INSERT INTO basalt_data.players (id, data)
       SELECT $1 || g, jsonb_build_object('team', $2::text, 'n', g) FROM generate_series($3::int, $4::int) g`,
    [prefix, team, from, from + count - 1],
  );
}

function ids(frame: Frame): string[] {
  return (frame.docs as Doc[]).map((doc) => doc.id);
}

/** The frames of subscription `id` received so far. */
function framesOf(socket: TestSocket, id: string): Frame[] {
  return socket.all((frame) => frame.id === id);
}

beforeAll(async () => {
  await admin('POST', '/v1/admin/collections', { name: 'players', rules: { read: 'true' } });
  await admin('POST', '/v1/admin/collections', {
    name: 'posts',
    rules: {
      read: 'doc.data.public == true || (auth != null && doc.owner == auth.uid)',
      create: 'auth != null',
    },
  });
});

afterAll(() => {
  for (const socket of sockets) socket.close();
});

describe('a live query without limit', () => {
  it('holds every match past the query page default (130 documents), with has_more false', async () => {
    await insertTeam('red', 'red', 130);
    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'red', collection: 'players', query: { where: [['team', '==', 'red']] } });
    const subscribed = await socket.nextOfType('subscribed', { id: 'red' });
    expect(ids(subscribed)).toHaveLength(130);
    expect(new Set(ids(subscribed)).size).toBe(130);
    expect(subscribed.has_more).toBe(false);
    // The 131st arrives as a change: nothing is held back.
    await insertTeam('red', 'red', 1, 131);
    expect(await socket.nextOfType('change', { id: 'red' })).toMatchObject({ change: 'added', doc: { id: 'red131' } });
  });

  it('is refused past the cap, with details naming it', async () => {
    expect(LIVE_QUERY_MAX_DOCUMENTS).toBeGreaterThanOrEqual(1000);
    await insertTeam('blue', 'blue', LIVE_QUERY_MAX_DOCUMENTS + 1);
    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'blue', collection: 'players', query: { where: [['team', '==', 'blue']] } });
    const error = await socket.nextOfType('error', { id: 'blue' }, 15_000);
    expect(error).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { limit: LIVE_QUERY_MAX_DOCUMENTS, field: 'limit' },
    });
    expect(String(error.message)).toContain(String(LIVE_QUERY_MAX_DOCUMENTS));
    expect(framesOf(socket, 'blue').filter((frame) => frame.type === 'subscribed')).toEqual([]);
    // With a limit the same query is a window that says more match.
    socket.send({
      type: 'subscribe',
      id: 'blue-window',
      collection: 'players',
      query: { where: [['team', '==', 'blue']], limit: 10 },
    });
    const window = await socket.nextOfType('subscribed', { id: 'blue-window' });
    expect(ids(window)).toHaveLength(10);
    expect(window.has_more).toBe(true);
  }, 30_000);

  it('at the cap, ends with the error when one more matches (and sends nothing after)', async () => {
    await insertTeam('green', 'green', LIVE_QUERY_MAX_DOCUMENTS);
    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'green', collection: 'players', query: { where: [['team', '==', 'green']] } });
    const subscribed = await socket.nextOfType('subscribed', { id: 'green' }, 15_000);
    expect(ids(subscribed)).toHaveLength(LIVE_QUERY_MAX_DOCUMENTS);
    // Leaving and modifying at the cap is fine.
    await app.sql.query(`DELETE FROM basalt_data.players WHERE id = 'green1'`);
    expect(await socket.nextOfType('change', { id: 'green' })).toMatchObject({ change: 'removed' });
    await insertTeam('green', 'green', 1, 1);
    expect(await socket.nextOfType('change', { id: 'green' })).toMatchObject({ change: 'added' });
    await insertTeam('green', 'green', 1, LIVE_QUERY_MAX_DOCUMENTS + 1);
    expect(await socket.nextOfType('error', { id: 'green' })).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { limit: LIVE_QUERY_MAX_DOCUMENTS },
    });
    const count = framesOf(socket, 'green').length;
    await insertTeam('green', 'green', 1, LIVE_QUERY_MAX_DOCUMENTS + 2);
    await sleep(500);
    expect(framesOf(socket, 'green')).toHaveLength(count);
  }, 30_000);
});

describe('a live query with limit', () => {
  it('says has_more in its snapshot and as a `more` frame when that changes', async () => {
    await insertTeam('win', 'win', 7);
    const query = { where: [['team', '==', 'win']], order_by: [['n', 'asc']], limit: 5 };
    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'w', collection: 'players', query });
    const subscribed = await socket.nextOfType('subscribed', { id: 'w' });
    expect(ids(subscribed)).toEqual(['win1', 'win2', 'win3', 'win4', 'win5']);
    expect(subscribed.has_more).toBe(true);

    await app.sql.query(`DELETE FROM basalt_data.players WHERE id IN ('win6', 'win7')`);
    expect(await socket.nextOfType('more', { id: 'w' })).toEqual({ type: 'more', id: 'w', has_more: false });
    await insertTeam('win', 'win', 1, 9);
    expect(await socket.nextOfType('more', { id: 'w' })).toEqual({ type: 'more', id: 'w', has_more: true });
    // A document that enters the window pushes the last one out: still more.
    await insertTeam('win', 'win', 1, 0);
    expect(await socket.nextOfType('change', { id: 'w' })).toMatchObject({ change: 'removed', doc: { id: 'win5' } });
    expect(await socket.nextOfType('change', { id: 'w' })).toMatchObject({ change: 'added', doc: { id: 'win0' } });
    await sleep(300);
    expect(framesOf(socket, 'w').filter((frame) => frame.type === 'more')).toHaveLength(2);
  });

  it('keeps has_more right when more documents lie beyond the window than it tracks', async () => {
    await insertTeam('deep', 'deep', 40);
    const query = { where: [['team', '==', 'deep']], order_by: [['n', 'asc']], limit: 2 };
    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'd', collection: 'players', query });
    expect(await socket.nextOfType('subscribed', { id: 'd' })).toMatchObject({ has_more: true });
    // One by one, the documents beyond the window go: has_more stays true until the last.
    for (let n = 40; n >= 4; n--) await app.sql.query(`DELETE FROM basalt_data.players WHERE id = $1`, [`deep${n}`]);
    await sleep(500);
    expect(framesOf(socket, 'd').filter((frame) => frame.type === 'more')).toEqual([]);
    await app.sql.query(`DELETE FROM basalt_data.players WHERE id = 'deep3'`);
    expect(await socket.nextOfType('more', { id: 'd' })).toMatchObject({ has_more: false });
    expect(framesOf(socket, 'd').filter((frame) => frame.type === 'change')).toEqual([]);
  });

  it('tells has_more right for a window as large as a page (no spare documents read beyond it)', async () => {
    await insertTeam('full', 'full', LIVE_QUERY_MAX_DOCUMENTS + 1);
    const query = { where: [['team', '==', 'full']], order_by: [['n', 'asc']], limit: LIVE_QUERY_MAX_DOCUMENTS };
    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'f', collection: 'players', query });
    const subscribed = await socket.nextOfType('subscribed', { id: 'f' }, 15_000);
    expect(ids(subscribed)).toHaveLength(LIVE_QUERY_MAX_DOCUMENTS);
    expect(subscribed.has_more).toBe(true);
    await app.sql.query(`DELETE FROM basalt_data.players WHERE id = $1`, [`full${LIVE_QUERY_MAX_DOCUMENTS + 1}`]);
    expect(await socket.nextOfType('more', { id: 'f' })).toMatchObject({ has_more: false });
    expect(framesOf(socket, 'f').filter((frame) => frame.type === 'change')).toEqual([]);
  }, 30_000);

  it('starts after a cursor ("after", the SDK\'s startAfter) and keeps that window live', async () => {
    await insertTeam('page', 'page', 12);
    const base = { where: [['team', '==', 'page']], order_by: [['n', 'asc']], limit: 5 };
    const first = await request(app.url, 'POST', '/v1/db/players/query', { token: app.serviceKey, body: base });
    const cursor = (first.body as { next_cursor: string }).next_cursor;
    const second = await request(app.url, 'POST', '/v1/db/players/query', {
      token: app.serviceKey,
      body: { ...base, after: cursor },
    });
    const secondIds = (second.body as { docs: Doc[] }).docs.map((doc) => doc.id);
    expect(secondIds).toEqual(['page6', 'page7', 'page8', 'page9', 'page10']);

    const socket = await open(app.serviceKey);
    socket.send({ type: 'subscribe', id: 'p2', collection: 'players', query: { ...base, after: cursor } });
    const subscribed = await socket.nextOfType('subscribed', { id: 'p2' });
    expect(ids(subscribed)).toEqual(secondIds);
    expect(subscribed.has_more).toBe(true);
    // Documents that sort before the cursor are not part of this window: page12 moves there
    // (page11 alone is beyond the window now, so has_more stays), and a new one lands there.
    await app.sql.query(`UPDATE basalt_data.players SET data = data || '{"n": 0}' WHERE id = 'page12'`);
    await insertTeam('page', 'page', 1, -5);
    await sleep(300);
    expect(framesOf(socket, 'p2')).toHaveLength(1);
    await app.sql.query(`DELETE FROM basalt_data.players WHERE id = 'page7'`);
    expect(await socket.nextOfType('change', { id: 'p2' })).toMatchObject({ change: 'removed', doc: { id: 'page7' } });
    expect(await socket.nextOfType('change', { id: 'p2' })).toMatchObject({ change: 'added', doc: { id: 'page11' } });
    expect(await socket.nextOfType('more', { id: 'p2' })).toMatchObject({ has_more: false });
    const added = framesOf(socket, 'p2').filter((frame) => frame.type === 'change' && frame.change === 'added');
    expect(added.map((frame) => (frame.doc as Doc).id)).toEqual(['page11']);

    socket.send({ type: 'subscribe', id: 'bad', collection: 'players', query: { ...base, after: 'not a cursor' } });
    expect(await socket.nextOfType('error', { id: 'bad' })).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { field: 'after' },
    });
  });
});

describe('an identity change on the socket', () => {
  let token = '';
  beforeAll(async () => {
    const user = await signUp(app.url);
    token = user.session?.access_token as string;
    for (const n of [1, 2, 3]) {
      const created = await request(app.url, 'POST', '/v1/db/posts', {
        token,
        body: { id: `mine${n}`, data: { n } },
      });
      expect(created.status).toBe(201);
    }
    for (const n of [1, 2]) await admin('PUT', `/v1/db/posts/open${n}`, { data: { public: true, n } });
  });

  it('sign-in: the new caller’s result in one reset frame, no change per document', async () => {
    const socket = await open();
    socket.send({ type: 'subscribe', id: 'feed', collection: 'posts' });
    expect(ids(await socket.nextOfType('subscribed', { id: 'feed' })).sort()).toEqual(['open1', 'open2']);
    socket.send({ type: 'auth', access_token: token });
    await socket.nextOfType('authenticated', { role: 'authenticated' });
    const reset = await socket.nextOfType('reset', { id: 'feed' });
    expect(ids(reset).sort()).toEqual(['mine1', 'mine2', 'mine3', 'open1', 'open2']);
    expect(reset.has_more).toBe(false);
    await sleep(300);
    expect(framesOf(socket, 'feed').map((frame) => frame.type)).toEqual(['subscribed', 'reset']);
  });

  it('sign-out: a query holding what the new caller may not read ends with FORBIDDEN, nothing removed', async () => {
    const socket = await open(token);
    await socket.nextOfType('authenticated');
    socket.send({ type: 'subscribe', id: 'feed', collection: 'posts' });
    socket.send({ type: 'subscribe', id: 'open', collection: 'posts', query: { where: [['public', '==', true]] } });
    expect(ids(await socket.nextOfType('subscribed', { id: 'feed' }))).toHaveLength(5);
    expect(ids(await socket.nextOfType('subscribed', { id: 'open' })).sort()).toEqual(['open1', 'open2']);
    socket.send({ type: 'auth', access_token: null });
    await socket.nextOfType('authenticated', { role: 'public' });
    expect(await socket.nextOfType('error', { id: 'feed' })).toMatchObject({
      code: 'FORBIDDEN',
      details: { reason: 'caller_changed' },
    });
    // A query whose documents the public may read goes on, re-read in one frame.
    expect(ids(await socket.nextOfType('reset', { id: 'open' })).sort()).toEqual(['open1', 'open2']);
    await admin('PUT', '/v1/db/posts/open3', { data: { public: true, n: 3 } });
    expect(await socket.nextOfType('change', { id: 'open' })).toMatchObject({ change: 'added', doc: { id: 'open3' } });
    await request(app.url, 'POST', '/v1/db/posts', { token, body: { id: 'mine4', data: {} } });
    await sleep(500);
    expect(framesOf(socket, 'feed').map((frame) => frame.type)).toEqual(['subscribed', 'error']);
    expect(socket.all((frame) => frame.type === 'change' && frame.change === 'removed')).toEqual([]);
    await admin('DELETE', '/v1/db/posts/open3');
  });
});

describe('presence', () => {
  it('shows a joiner its own presence once, and the others once too', async () => {
    const watcher = await open();
    watcher.send({ type: 'join', channel: 'lobby' });
    await watcher.nextOfType('joined', { channel: 'lobby' });
    const socket = await open();
    socket.send({ type: 'join', channel: 'lobby', presence: { name: 'ada' } });
    const joined = await socket.nextOfType('joined', { channel: 'lobby' });
    const ref = joined.presence_ref as string;
    expect(ref).toBeTruthy();
    await watcher.next((frame) => frame.type === 'presence' && JSON.stringify(frame.joins).includes(ref));
    await sleep(500);
    const showing = (frame: Frame) =>
      frame.type === 'presence' && (frame.joins as Array<{ ref: string }>).some((entry) => entry.ref === ref);
    expect(socket.all(showing)).toHaveLength(1);
    expect(watcher.all(showing)).toHaveLength(1);
    // A new payload is news: both see it once.
    socket.send({ type: 'join', channel: 'lobby', presence: { name: 'ada', busy: true } });
    await socket.nextOfType('joined', { channel: 'lobby' });
    await sleep(500);
    expect(socket.all(showing)).toHaveLength(2);
    expect(watcher.all(showing)).toHaveLength(2);
    expect(socket.all(showing).at(-1)?.joins).toEqual([
      { ref, key: expect.any(String), payload: { name: 'ada', busy: true } },
    ]);
  });
});
