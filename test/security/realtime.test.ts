/**
 * Attacks on the realtime websocket (`/v1/realtime`): what a subscriber may learn from
 * `change` frames and resumes, what one socket may make the server hold, and hostile frames.
 * Every row talks to a real server over a real websocket.
 */
import pg from 'pg';
import { afterAll, expect } from 'vitest';
import { signUp } from '../auth-helpers.js';
import { request, type TestApp } from '../helpers.js';
import { sleep, TestSocket, type Frame } from '../realtime-client.js';
import { securitySuite } from './harness.js';

/** The limit the surface's server runs with, set through the environment as operators would. */
const MAX_CHANNELS = 20;
const SECRET = 'S3CRET-do-not-leak';

interface Fixture {
  alice: { token: string; uid: string };
  bob: { token: string; uid: string };
  carol: { token: string; uid: string };
  /** A cursor from before any row of the table ran: resuming from it replays the whole log kept. */
  earlyCursor: string;
}

interface Doc {
  id: string;
  data?: Record<string, unknown>;
}

async function call(server: TestApp, method: string, path: string, token: string, body?: unknown): Promise<unknown> {
  const response = await request(server.url, method, path, { token, body });
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${response.text}`);
  return response.body;
}

const opened: TestSocket[] = [];
afterAll(() => {
  for (const socket of opened) socket.close();
});

async function open(server: TestApp, token?: string): Promise<TestSocket> {
  const socket = await TestSocket.open(server.url, token ? { token } : {});
  opened.push(socket);
  if (token) await socket.nextOfType('authenticated');
  return socket;
}

/** The socket still answers, and a fresh socket is served too. */
async function stillServing(server: TestApp, socket: TestSocket): Promise<void> {
  socket.send({ type: 'ping' });
  await socket.nextOfType('pong');
  expect(socket.closeCode).toBeNull();
  const fresh = await open(server);
  fresh.send({ type: 'ping' });
  await fresh.nextOfType('pong');
  fresh.close();
  expect((await request(server.url, 'GET', '/healthz')).status).toBe(200);
}

/** A public post of Alice's that Bob may read, and the write that hides it from him with a secret inside. */
async function publicPost(server: TestApp, fixture: Fixture, id: string): Promise<() => Promise<void>> {
  await call(server, 'PUT', `/v1/db/posts/${id}`, fixture.alice.token, {
    data: { public: true, title: 'hello' },
  });
  return async () => {
    await call(server, 'PATCH', `/v1/db/posts/${id}`, fixture.alice.token, {
      data: { public: false, secret: SECRET },
    });
  };
}

/** Every frame a socket received is free of the secret; a `removed` doc holds at most a copy Bob could read. */
function assertNoLeak(socket: TestSocket): void {
  for (const frame of socket.frames) {
    expect(JSON.stringify(frame), `frame leaked the hidden row: ${JSON.stringify(frame)}`).not.toContain(SECRET);
    const doc = frame.doc as Doc | undefined;
    if (frame.type === 'change' && doc?.data !== undefined) expect(doc.data.public).toBe(true);
    for (const listed of (frame.docs as Doc[] | undefined) ?? []) expect(listed.data?.public).toBe(true);
  }
}

async function presenceRows(server: TestApp): Promise<number> {
  const client = new pg.Client({ connectionString: server.config.databaseUrl });
  await client.connect();
  try {
    const result = await client.query<{ n: string }>('SELECT count(*) AS n FROM basalt.realtime_presence');
    return Number(result.rows[0]?.n ?? 0);
  } finally {
    await client.end();
  }
}

/** JSON nested `depth` levels deep, written out as text (building the value would be just as deep). */
function deepObjectText(depth: number): string {
  return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

function deepArrayText(depth: number): string {
  return `${'['.repeat(depth)}${']'.repeat(depth)}`;
}

/** A client frame sent as text, with `raw` spliced in as the value of `field`. */
function frameWith(base: Record<string, unknown>, field: string, raw: string): string {
  return `${JSON.stringify(base).slice(0, -1)},${JSON.stringify(field)}:${raw}}`;
}

const hostileValues: Array<{ what: string; raw: string }> = [
  { what: 'an object nested 5,000 deep', raw: deepObjectText(5_000) },
  { what: 'an array nested 20,000 deep', raw: deepArrayText(20_000) },
  { what: 'a NUL character', raw: JSON.stringify({ name: 'nul\u0000here' }) },
  { what: 'a NUL character in a key', raw: JSON.stringify({ 'k\u0000': 1 }) },
  { what: 'an unpaired surrogate', raw: '{"name":"\\ud800"}' },
];

const hostileFrames: Array<{ name: string; frame: (raw: string) => string; carries: Record<string, unknown> }> = [
  {
    name: 'presence',
    frame: (raw) => frameWith({ type: 'join', channel: 'hostile-presence' }, 'presence', raw),
    carries: { channel: 'hostile-presence' },
  },
  {
    name: 'broadcast payload',
    frame: (raw) => frameWith({ type: 'broadcast', channel: 'hostile-broadcast', event: 'e' }, 'payload', raw),
    carries: { channel: 'hostile-broadcast' },
  },
  {
    name: 'subscribe query',
    frame: (raw) => frameWith({ type: 'subscribe', id: 'hostile', collection: 'posts' }, 'query', `{"where":${raw}}`),
    carries: { id: 'hostile' },
  },
  {
    name: 'subscribe aggregate',
    frame: (raw) =>
      frameWith({ type: 'subscribe', id: 'hostile-agg', collection: 'posts' }, 'aggregate', `{"where":${raw}}`),
    carries: { id: 'hostile-agg' },
  },
];

securitySuite<Fixture>({
  surface: 'realtime',
  env: {
    BASALT_REALTIME_MAX_CHANNELS_PER_SOCKET: String(MAX_CHANNELS),
    // Rows send a few hundred frames in a burst; the rate limit has rows of its own elsewhere.
    BASALT_REALTIME_MESSAGES_PER_SECOND: '10000',
  },
  async setup(server) {
    const users = await Promise.all([signUp(server.url), signUp(server.url), signUp(server.url)]);
    const [alice, bob, carol] = users.map((body) => ({
      token: body.session?.access_token ?? '',
      uid: body.user.id,
    })) as [Fixture['alice'], Fixture['bob'], Fixture['carol']];
    const owned = 'doc.owner == auth.uid';
    await call(server, 'POST', '/v1/admin/collections', server.serviceKey, {
      name: 'posts',
      rules: {
        read: `${owned} || doc.data.public == true`,
        create: 'auth != null',
        update: `auth != null && ${owned}`,
        delete: `auth != null && ${owned}`,
      },
    });
    await call(server, 'POST', '/v1/admin/collections', server.serviceKey, {
      name: 'vault',
      rules: { read: 'false', create: 'auth != null' },
    });
    await call(server, 'POST', '/v1/admin/collections', server.serviceKey, {
      name: 'norule',
      rules: { create: 'auth != null' },
    });
    // Carol's position before anything happened in `posts`, as a client that once subscribed keeps it.
    const early = await open(server, carol.token);
    early.send({ type: 'subscribe', id: 'early', collection: 'posts' });
    const subscribed = await early.nextOfType('subscribed', { id: 'early' });
    early.close();
    return { alice, bob, carol, earlyCursor: String(subscribed.cursor) };
  },
  attacks: [
    {
      name: 'a post hidden from a document subscriber is removed without its new content',
      source: 'issue 15 #1',
      async run(fixture, server) {
        const hide = await publicPost(server, fixture, 'p-doc');
        const bob = await open(server, fixture.bob.token);
        bob.send({ type: 'subscribe', id: 'd', collection: 'posts', doc_id: 'p-doc' });
        expect(((await bob.nextOfType('subscribed', { id: 'd' })).docs as Doc[]).map((doc) => doc.id)).toEqual([
          'p-doc',
        ]);
        await hide();
        const removed = await bob.nextOfType('change', { id: 'd' });
        expect(removed).toMatchObject({ change: 'removed', doc: { id: 'p-doc' } });
        assertNoLeak(bob);
        const get = await request(server.url, 'GET', '/v1/db/posts/p-doc', { token: fixture.bob.token });
        expect(get.status).toBe(404);
        bob.close();
      },
    },
    {
      name: 'a post hidden from a query subscriber is removed without its new content',
      source: 'issue 15 #1',
      async run(fixture, server) {
        const hide = await publicPost(server, fixture, 'p-query');
        const bob = await open(server, fixture.bob.token);
        bob.send({ type: 'subscribe', id: 'q', collection: 'posts', query: { where: [['title', '==', 'hello']] } });
        const subscribed = await bob.nextOfType('subscribed', { id: 'q' });
        expect((subscribed.docs as Doc[]).map((doc) => doc.id)).toContain('p-query');
        await hide();
        expect(await bob.next((frame) => frame.type === 'change' && (frame.doc as Doc).id === 'p-query')).toMatchObject(
          { change: 'removed' },
        );
        assertNoLeak(bob);
        bob.close();
      },
    },
    {
      name: 'resuming from an old cursor replays no content that was later hidden',
      source: 'issue 15 #1',
      async run(fixture, server) {
        const hide = await publicPost(server, fixture, 'p-resume');
        await hide();
        // Carol was never subscribed while it happened; she only holds a cursor from before.
        for (const resume_from of [fixture.earlyCursor, 'v1.0', 'v1.1']) {
          const carol = await open(server, fixture.carol.token);
          for (const [id, extra] of [
            ['all', {}],
            ['one', { doc_id: 'p-resume' }],
          ] as const) {
            carol.send({ type: 'subscribe', id, collection: 'posts', resume_from, ...extra });
            await carol.next((frame) => frame.id === id && (frame.type === 'subscribed' || frame.type === 'reset'));
          }
          await sleep(300);
          assertNoLeak(carol);
          // What she may learn is what she could have read then: a public copy, and that it went away.
          const seen = carol.all((frame) => frame.type === 'change' && (frame.doc as Doc).id === 'p-resume');
          if (seen.length > 0) expect(seen.at(-1)).toMatchObject({ change: 'removed' });
          carol.close();
        }
      },
    },
    {
      name: 'after the socket signs in as another user, the first user’s documents leave without content',
      async run(fixture, server) {
        await call(server, 'PUT', '/v1/db/posts/p-private', fixture.alice.token, {
          data: { public: false, note: SECRET },
        });
        const socket = await open(server, fixture.alice.token);
        socket.send({ type: 'subscribe', id: 'mine', collection: 'posts', doc_id: 'p-private' });
        expect((await socket.nextOfType('subscribed', { id: 'mine' })).docs).toHaveLength(1);
        const before = socket.frames.length;
        socket.send({ type: 'auth', access_token: fixture.bob.token });
        // The query held a document Bob may not read: it ends, rather than turn into Bob's.
        expect(await socket.nextOfType('error', { id: 'mine' })).toMatchObject({ code: 'FORBIDDEN' });
        await call(server, 'PATCH', '/v1/db/posts/p-private', fixture.alice.token, { data: { more: SECRET } });
        await sleep(300);
        expect(socket.all((frame) => frame.id === 'mine' && frame.type === 'change')).toEqual([]);
        expect(JSON.stringify(socket.frames.slice(before))).not.toContain(SECRET);
        socket.close();
      },
    },
    {
      name: 'after sign-out, a live query of the user’s documents ends with FORBIDDEN and carries nothing more',
      async run(fixture, server) {
        await call(server, 'PUT', '/v1/db/posts/p-signout', fixture.alice.token, { data: { public: false, n: 1 } });
        const socket = await open(server, fixture.alice.token);
        socket.send({ type: 'subscribe', id: 'own', collection: 'posts', query: { where: [['n', '==', 1]] } });
        expect(((await socket.nextOfType('subscribed', { id: 'own' })).docs as Doc[]).map((doc) => doc.id)).toContain(
          'p-signout',
        );
        socket.send({ type: 'auth', access_token: null });
        expect(await socket.nextOfType('error', { id: 'own' })).toMatchObject({ code: 'FORBIDDEN' });
        await call(server, 'PATCH', '/v1/db/posts/p-signout', fixture.alice.token, { data: { note: SECRET } });
        await sleep(300);
        expect(
          socket.all((frame) => frame.id === 'own' && frame.type !== 'subscribed' && frame.type !== 'error'),
        ).toEqual([]);
        expect(JSON.stringify(socket.frames)).not.toContain(SECRET);
        await stillServing(server, socket);
        socket.close();
      },
    },
    {
      name: 'a live query without limit over more than 1000 documents is refused (details.limit), not held or sent',
      async run(fixture, server) {
        const client = new pg.Client({ connectionString: server.config.databaseUrl });
        await client.connect();
        try {
          await client.query(
            `INSERT INTO basalt_data.posts (id, owner, data)
               SELECT 'bulk' || g, $1, jsonb_build_object('public', true, 'bulk', true) FROM generate_series(1, 1001) g`,
            [fixture.alice.uid],
          );
        } finally {
          await client.end();
        }
        const bob = await open(server, fixture.bob.token);
        bob.send({ type: 'subscribe', id: 'all', collection: 'posts', query: { where: [['bulk', '==', true]] } });
        expect(await bob.nextOfType('error', { id: 'all' }, 15_000)).toMatchObject({
          code: 'INVALID_REQUEST',
          details: { limit: 1000 },
        });
        expect(bob.all((frame) => frame.id === 'all' && frame.type === 'subscribed')).toEqual([]);
        await stillServing(server, bob);
        bob.close();
      },
    },
    {
      name: 'a forged "after" cursor in a live query gets INVALID_REQUEST; a cursor past a hidden post reveals nothing',
      async run(fixture, server) {
        await call(server, 'PUT', '/v1/db/posts/p-after', fixture.alice.token, {
          data: { public: false, note: SECRET },
        });
        const bob = await open(server, fixture.bob.token);
        const forged = [
          '',
          `${'x'.repeat(1_000)}!`,
          'bm90IGpzb24',
          Buffer.from('{"v":[],"id":1}').toString('base64url'),
        ];
        for (const [index, after] of forged.entries()) {
          bob.send({ type: 'subscribe', id: `a${index}`, collection: 'posts', query: { limit: 5, after } });
          expect(await bob.nextOfType('error', { id: `a${index}` })).toMatchObject({ code: 'INVALID_REQUEST' });
        }
        // Starting just before Alice's hidden post: the window holds only what Bob may read.
        const justBefore = Buffer.from(JSON.stringify({ v: [], id: 'p-aftea' })).toString('base64url');
        bob.send({ type: 'subscribe', id: 'near', collection: 'posts', query: { limit: 5, after: justBefore } });
        const subscribed = await bob.nextOfType('subscribed', { id: 'near' });
        expect((subscribed.docs as Doc[]).map((doc) => doc.id)).not.toContain('p-after');
        assertNoLeak(bob);
        await stillServing(server, bob);
        bob.close();
      },
    },
    {
      name: 'a subscription id of another socket cannot be unsubscribed, taken over or listened to',
      async run(fixture, server) {
        await call(server, 'PUT', '/v1/db/posts/p-ids', fixture.alice.token, { data: { public: false, n: 1 } });
        const alice = await open(server, fixture.alice.token);
        alice.send({ type: 'subscribe', id: 'feed', collection: 'posts', doc_id: 'p-ids' });
        await alice.nextOfType('subscribed', { id: 'feed' });
        const bob = await open(server, fixture.bob.token);
        bob.send({ type: 'unsubscribe', id: 'feed' });
        bob.send({ type: 'subscribe', id: 'feed', collection: 'posts', doc_id: 'p-ids' });
        expect((await bob.nextOfType('subscribed', { id: 'feed' })).docs).toEqual([]);
        await call(server, 'PATCH', '/v1/db/posts/p-ids', fixture.alice.token, { data: { n: 2, note: SECRET } });
        expect(await alice.nextOfType('change', { id: 'feed' })).toMatchObject({
          change: 'modified',
          doc: { data: { n: 2 } },
        });
        await sleep(300);
        expect(bob.all((frame) => frame.type === 'change')).toEqual([]);
        expect(JSON.stringify(bob.frames)).not.toContain(SECRET);
        alice.close();
        bob.close();
      },
    },
    {
      name: 'a collection whose read rule denies gives an empty result and no events',
      async run(fixture, server) {
        const bob = await open(server, fixture.bob.token);
        bob.send({ type: 'subscribe', id: 'v', collection: 'vault' });
        expect((await bob.nextOfType('subscribed', { id: 'v' })).docs).toEqual([]);
        await call(server, 'PUT', '/v1/db/vault/v1', fixture.alice.token, { data: { note: SECRET } });
        await sleep(400);
        expect(bob.all((frame) => frame.type === 'change')).toEqual([]);
        bob.close();
      },
    },
    {
      name: 'a live aggregate counts only what its subscriber may read: a hidden post’s numbers never reach it',
      async run(fixture, server) {
        const bob = await open(server, fixture.bob.token);
        const aggregate = { group_by: ['title'], aggregates: { n: ['count'], sum: ['sum', 'amount'] } };
        bob.send({ type: 'subscribe', id: 'agg', collection: 'posts', aggregate });
        const first = await bob.nextOfType('aggregate', { id: 'agg' });
        await call(server, 'PUT', '/v1/db/posts/p-agg-hidden', fixture.alice.token, {
          data: { public: false, title: SECRET, amount: 424242 },
        });
        await call(server, 'PUT', '/v1/db/posts/p-agg-public', fixture.alice.token, {
          data: { public: true, title: 'agg-visible', amount: 1 },
        });
        const next = await bob.next(
          (frame) => frame.type === 'aggregate' && frame.id === 'agg' && JSON.stringify(frame).includes('agg-visible'),
        );
        expect(next.groups).not.toEqual(first.groups);
        // Signed out, the socket holds the public caller's groups: none of Alice's private posts.
        bob.send({ type: 'auth', access_token: null });
        await sleep(600);
        for (const frame of bob.all((f) => f.type === 'aggregate')) {
          expect(JSON.stringify(frame)).not.toContain(SECRET);
          expect(JSON.stringify(frame)).not.toContain('424242');
        }
        bob.close();
      },
    },
    {
      name: 'a live aggregate of a collection without a read rule, or a malformed one, is refused by id and holds nothing',
      async run(fixture, server) {
        const bob = await open(server, fixture.bob.token);
        const refusals: Array<[Record<string, unknown>, string]> = [
          [{ collection: 'norule', aggregate: { aggregates: { n: ['count'] } } }, 'FORBIDDEN'],
          [{ collection: 'posts', aggregate: { aggregates: { n: ['eval', 'x'] } } }, 'INVALID_REQUEST'],
          [{ collection: 'posts', aggregate: { aggregates: { 'n; DROP': ['count'] } } }, 'INVALID_REQUEST'],
          [{ collection: 'posts', aggregate: { aggregates: { n: ['count'] }, group_by: ['$x'] } }, 'INVALID_REQUEST'],
          [{ collection: 'posts', aggregate: { aggregates: { n: ['count'] }, limit: 1001 } }, 'INVALID_REQUEST'],
          [
            { collection: 'posts', aggregate: { aggregates: { n: ['count'] } }, resume_from: 'v1.1' },
            'INVALID_REQUEST',
          ],
          [{ collection: 'posts', aggregate: 'count' }, 'INVALID_REQUEST'],
        ];
        for (const [index, [message, code]] of refusals.entries()) {
          bob.send({ type: 'subscribe', id: `r${index}`, ...message });
          expect(await bob.nextOfType('error', { id: `r${index}` })).toMatchObject({ code });
        }
        // None was kept: every id is free again.
        bob.send({ type: 'subscribe', id: 'r0', collection: 'posts', aggregate: { aggregates: { n: ['count'] } } });
        await bob.nextOfType('aggregate', { id: 'r0' });
        await stillServing(server, bob);
        bob.close();
      },
    },
    {
      name: 'a collection without a read rule is refused with FORBIDDEN',
      async run(fixture, server) {
        const bob = await open(server, fixture.bob.token);
        bob.send({ type: 'subscribe', id: 'n', collection: 'norule' });
        expect(await bob.nextOfType('error', { id: 'n' })).toMatchObject({ code: 'FORBIDDEN' });
        await stillServing(server, bob);
        bob.close();
      },
    },
    {
      name: 'forged resume cursors get INVALID_REQUEST or a fresh read, never another position’s content',
      async run(fixture, server) {
        const hide = await publicPost(server, fixture, 'p-forged');
        await hide();
        const carol = await open(server, fixture.carol.token);
        const forged = ['v1.zzzzzzzzzzz', 'v1.1.0', 'v1.1.zzzzzzz', 'v2.1', 'v1.-1', '../v1.1', 'v1.999999999'];
        for (const [index, resume_from] of forged.entries()) {
          const id = `f${index}`;
          carol.send({ type: 'subscribe', id, collection: 'posts', resume_from });
          const answer = await carol.next(
            (frame) => frame.id === id && ['error', 'reset', 'subscribed'].includes(frame.type),
          );
          if (answer.type === 'error') expect(answer.code).toBe('INVALID_REQUEST');
          else expect(answer.type).toBe('reset');
        }
        await sleep(200);
        assertNoLeak(carol);
        await stillServing(server, carol);
        carol.close();
      },
    },
    {
      name: `one socket may hold at most ${MAX_CHANNELS} channels (no unbounded presence rows)`,
      source: 'issue 15 #11',
      async run(fixture, server) {
        const before = await presenceRows(server);
        const socket = await open(server);
        for (let i = 0; i < MAX_CHANNELS + 30; i++) {
          socket.send({ type: 'join', channel: `flood-${i}`, presence: { i } });
        }
        const refused = await socket.nextOfType('error', { channel: `flood-${MAX_CHANNELS}` });
        expect(refused).toMatchObject({ code: 'INVALID_REQUEST', details: { limit: MAX_CHANNELS } });
        await socket.nextOfType('error', { channel: `flood-${MAX_CHANNELS + 29}` });
        expect(socket.all((frame) => frame.type === 'joined')).toHaveLength(MAX_CHANNELS);
        expect(await presenceRows(server)).toBe(before + MAX_CHANNELS);
        // A channel already joined may be joined again (to replace the presence) at the limit.
        socket.send({ type: 'join', channel: 'flood-0', presence: { i: 'again' } });
        await socket.nextOfType('joined', { channel: 'flood-0' });
        // Leaving frees a place.
        socket.send({ type: 'leave', channel: 'flood-1' });
        await socket.nextOfType('left', { channel: 'flood-1' });
        socket.send({ type: 'join', channel: 'flood-extra' });
        await socket.nextOfType('joined', { channel: 'flood-extra' });
        await stillServing(server, socket);
        socket.close();
      },
    },
    ...hostileFrames.flatMap(({ name, frame, carries }) =>
      hostileValues.map(({ what, raw }) => ({
        name: `${what} in a ${name} frame gets an INVALID_REQUEST error frame and the socket keeps serving`,
        source: 'issue 15 #9',
        async run(fixture: Fixture, server: TestApp) {
          const socket = await open(server, fixture.bob.token);
          // Broadcasting needs a joined channel; the hostile frame must be refused for its content.
          socket.send({ type: 'join', channel: 'hostile-broadcast' });
          await socket.nextOfType('joined', { channel: 'hostile-broadcast' });
          const text = frame(raw);
          expect(Buffer.byteLength(text)).toBeLessThan(64 * 1024);
          socket.send(text);
          const error = await socket.nextOfType('error');
          expect(error).toMatchObject({ code: 'INVALID_REQUEST', ...carries });
          await stillServing(server, socket);
          expect(socket.all((f: Frame) => f.type === 'joined' && f.channel === 'hostile-presence')).toEqual([]);
          socket.close();
        },
      })),
    ),
    ...[
      { what: 'too long', id: 'x'.repeat(129) },
      { what: 'an object', id: { $ne: null } },
      { what: 'a control character', id: 'ack\n1' },
    ].map(({ what, id }) => ({
      name: `a broadcast acknowledgement id that is ${what} gets INVALID_REQUEST, nothing is broadcast, and the socket keeps serving`,
      async run(fixture: Fixture, server: TestApp) {
        const sender = await open(server, fixture.alice.token);
        const member = await open(server, fixture.bob.token);
        for (const socket of [sender, member]) {
          socket.send({ type: 'join', channel: 'acks' });
          await socket.nextOfType('joined', { channel: 'acks' });
        }
        sender.send({ type: 'broadcast', channel: 'acks', event: 'bad-id', payload: { n: 1 }, id });
        expect(await sender.nextOfType('error')).toMatchObject({ code: 'INVALID_REQUEST' });
        // A later, valid broadcast arrives first and alone: the refused one never went out.
        sender.send({ type: 'broadcast', channel: 'acks', event: 'good', payload: { n: 2 }, id: 'ack-1' });
        expect(await sender.nextOfType('sent', { id: 'ack-1' })).toMatchObject({ channel: 'acks' });
        expect(await member.nextOfType('broadcast', { event: 'good' })).toMatchObject({ payload: { n: 2 } });
        expect(member.all((f: Frame) => f.type === 'broadcast' && f.event === 'bad-id')).toEqual([]);
        await stillServing(server, sender);
        sender.close();
        member.close();
      },
    })),
    {
      name: 'a broadcast acknowledgement goes to its sender only, and the members never see the sender’s id',
      async run(fixture: Fixture, server: TestApp) {
        const sender = await open(server, fixture.alice.token);
        const member = await open(server, fixture.bob.token);
        for (const socket of [sender, member]) {
          socket.send({ type: 'join', channel: 'acks-private' });
          await socket.nextOfType('joined', { channel: 'acks-private' });
        }
        sender.send({ type: 'broadcast', channel: 'acks-private', event: 'e', payload: {}, id: 'secret-ack' });
        await sender.nextOfType('sent', { id: 'secret-ack' });
        const received = await member.nextOfType('broadcast', { channel: 'acks-private' });
        expect(received).not.toHaveProperty('id');
        expect(member.all((f: Frame) => f.type === 'sent')).toEqual([]);
        sender.close();
        member.close();
      },
    },
    {
      name: 'a frame over 64 KiB closes that socket with 1009 and the server keeps serving',
      async run(_fixture, server) {
        const socket = await open(server);
        socket.send({ type: 'join', channel: 'big', presence: { blob: 'x'.repeat(70 * 1024) } });
        expect(await socket.waitClosed()).toBe(1009);
        const other = await open(server);
        await stillServing(server, other);
        other.close();
      },
    },
  ],
});
