import { afterAll, describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { createCollection, request, useTestApp } from './helpers.js';
import { TestSocket, type Frame } from './realtime-client.js';

const server = useTestApp();
const sockets: TestSocket[] = [];

afterAll(() => {
  for (const socket of sockets) socket.close();
});

interface Doc {
  id: string;
  data: Record<string, unknown>;
}

describe('live queries with search', () => {
  it('the live matcher asks Postgres: stemmed matches arrive, non-matches and hidden documents do not', async () => {
    await createCollection(server, {
      name: 'posts',
      rules: { read: 'auth != null && doc.id != "hidden"', create: 'auth != null', update: 'auth != null' },
      search: { fields: ['title'], language: 'english' },
    });
    await server.sql.query(
      `INSERT INTO basalt_data.posts (id, data) VALUES ('p1', '{"title": "Camping gear"}'), ('p2', '{"title": "City guide"}')`,
    );
    const user = await signUp(server.url);
    const socket = await TestSocket.open(server.url, { token: user.token });
    sockets.push(socket);
    socket.send({ type: 'subscribe', id: 's1', collection: 'posts', query: { search: 'camp', where: [] } });
    const subscribed = await socket.nextOfType('subscribed', { id: 's1' }, 15_000);
    expect((subscribed.docs as Doc[]).map((doc) => doc.id)).toEqual(['p1']);

    // Written with plain SQL: found by stemming ("camping" ~ "camp"), which only Postgres knows.
    await server.sql.query(`INSERT INTO basalt_data.posts (id, data) VALUES ('p3', '{"title": "Camping trips"}')`);
    const added = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 's1');
    expect(added).toMatchObject({ change: 'added', doc: { id: 'p3' } });

    // A non-matching write is not delivered; a matching one after it is, so nothing came between.
    await server.sql.query(`INSERT INTO basalt_data.posts (id, data) VALUES ('p4', '{"title": "Museums"}')`);
    await server.sql.query(`INSERT INTO basalt_data.posts (id, data) VALUES ('hidden', '{"title": "camp secret"}')`);
    await server.sql.query(`UPDATE basalt_data.posts SET data = '{"title": "camping again"}' WHERE id = 'p2'`);
    const next = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 's1');
    expect(next).toMatchObject({ change: 'added', doc: { id: 'p2' } });

    // Leaving the search removes it.
    const patched = await request(server.url, 'PATCH', '/v1/db/posts/p1', {
      token: user.token,
      body: { data: { title: 'Hotels' } },
    });
    expect(patched.status, patched.text).toBe(200);
    const removed = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 's1');
    expect(removed).toMatchObject({ change: 'removed', doc: { id: 'p1' } });
    expect(socket.all((frame) => frame.type === 'change' && (frame.doc as Doc).id === 'hidden')).toEqual([]);
    expect(socket.all((frame) => frame.type === 'change' && (frame.doc as Doc).id === 'p4')).toEqual([]);
  });

  it('a live search on a collection without search fields gets an error frame', async () => {
    await createCollection(server, { name: 'plain', rules: { read: 'true' } });
    const socket = await TestSocket.open(server.url, { token: server.serviceKey });
    sockets.push(socket);
    socket.send({ type: 'subscribe', id: 's2', collection: 'plain', query: { search: 'x' } });
    const error = await socket.nextOfType('error', { id: 's2' });
    expect(error.code).toBe('INVALID_REQUEST');
  });
});
