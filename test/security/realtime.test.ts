/**
 * Attacks on the realtime websocket (`/v1/realtime`): what a subscriber may learn from
 * `change` frames and resumes, what one socket may make the server hold, and hostile frames.
 * Every row talks to a real server over a real websocket.
 */
import { afterAll, expect } from 'vitest';
import { signUp } from '../auth-helpers.js';
import { request, type TestApp } from '../helpers.js';
import { sleep, TestSocket } from '../realtime-client.js';
import { securitySuite } from './harness.js';

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

securitySuite<Fixture>({
  surface: 'realtime',
  env: {
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
        const removed = await socket.nextOfType('change', { id: 'mine' });
        expect(removed).toMatchObject({ change: 'removed', doc: { id: 'p-private' } });
        expect(JSON.stringify(socket.frames.slice(before))).not.toContain(SECRET);
        socket.close();
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
