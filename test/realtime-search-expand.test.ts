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

  it('a live search starts after a cursor of its order and tells has_more; a relevance cursor is refused', async () => {
    // posts now: p2 "camping again", p3 "Camping trips" match "camp" (p1 left the search).
    await server.sql.query(
      `INSERT INTO basalt_data.posts (id, data) VALUES ('p5', '{"title": "camp stove"}'), ('p6', '{"title": "camp chair"}')`,
    );
    const page = await request(server.url, 'POST', '/v1/db/posts/query', {
      token: server.serviceKey,
      body: { search: 'camp', order_by: [['id', 'asc']], limit: 1 },
    });
    expect(page.status, page.text).toBe(200);
    const first = page.body as { docs: Doc[]; next_cursor: string };
    expect(first.docs.map((doc) => doc.id)).toEqual(['hidden']);
    const user = await signUp(server.url);
    const socket = await TestSocket.open(server.url, { token: user.token });
    sockets.push(socket);
    socket.send({
      type: 'subscribe',
      id: 's3',
      collection: 'posts',
      query: { search: 'camp', order_by: [['id', 'asc']], after: first.next_cursor, limit: 2 },
    });
    const subscribed = await socket.nextOfType('subscribed', { id: 's3' }, 15_000);
    expect((subscribed.docs as Doc[]).map((doc) => doc.id)).toEqual(['p2', 'p3']);
    expect(subscribed.has_more).toBe(true);

    // A relevance cursor (a search without order_by) is not a cursor of the live order.
    const relevance = await request(server.url, 'POST', '/v1/db/posts/query', {
      token: server.serviceKey,
      body: { search: 'camp', limit: 1 },
    });
    const cursor = (relevance.body as { next_cursor: string }).next_cursor;
    socket.send({ type: 'subscribe', id: 's4', collection: 'posts', query: { search: 'camp', after: cursor } });
    const error = await socket.nextOfType('error', { id: 's4' });
    expect(error.code).toBe('INVALID_REQUEST');
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

describe('live queries with expand', () => {
  it('results carry expanded references; a change to an expanded document is a modified change of each result expanding it', async () => {
    await createCollection(server, { name: 'people', rules: { read: 'auth != null && doc.id != "secret"' } });
    await createCollection(server, {
      name: 'tasks',
      rules: { read: 'auth != null' },
      refs: { assignee: 'people' },
    });
    await server.sql
      .query(`INSERT INTO basalt_data.people (id, data) VALUES ('ann', '{"name": "Ann"}'), ('bo', '{"name": "Bo"}'),
      ('secret', '{"name": "Hidden"}')`);
    await server.sql.query(`INSERT INTO basalt_data.tasks (id, data) VALUES
      ('t1', '{"assignee": "ann"}'), ('t2', '{"assignee": "ann"}'), ('t3', '{"assignee": "bo"}')`);
    const user = await signUp(server.url);
    const socket = await TestSocket.open(server.url, { token: user.token });
    sockets.push(socket);
    socket.send({ type: 'subscribe', id: 'e1', collection: 'tasks', query: { expand: ['assignee'] } });
    const subscribed = await socket.nextOfType('subscribed', { id: 'e1' }, 15_000);
    const docs = subscribed.docs as Array<Doc & { expand: Record<string, Doc | null> }>;
    expect(docs.map((doc) => [doc.id, doc.expand.assignee?.data.name])).toEqual([
      ['t1', 'Ann'],
      ['t2', 'Ann'],
      ['t3', 'Bo'],
    ]);

    // Ann renamed: both tasks expanding her are modified, t3 is not.
    await server.sql.query(`UPDATE basalt_data.people SET data = '{"name": "Anne"}' WHERE id = 'ann'`);
    const first = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 'e1');
    const second = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 'e1');
    const modified = [first, second].map((frame) => {
      const doc = frame.doc as Doc & { expand: Record<string, Doc | null> };
      return [frame.change, doc.id, doc.expand.assignee?.data.name];
    });
    expect(modified.sort()).toEqual([
      ['modified', 't1', 'Anne'],
      ['modified', 't2', 'Anne'],
    ]);

    // A new task arrives expanded; one pointing at a document the caller may not read expands to null.
    await server.sql.query(`INSERT INTO basalt_data.tasks (id, data) VALUES ('t4', '{"assignee": "secret"}')`);
    const added = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 'e1');
    expect(added).toMatchObject({ change: 'added', doc: { id: 't4', expand: { assignee: null } } });
    await server.sql.query(`UPDATE basalt_data.people SET data = '{"name": "Still hidden"}' WHERE id = 'secret'`);
    await server.sql.query(`UPDATE basalt_data.tasks SET data = '{"assignee": "bo", "x": 1}' WHERE id = 't1'`);
    const next = await socket.next((frame: Frame) => frame.type === 'change' && frame.id === 'e1');
    expect(next).toMatchObject({ change: 'modified', doc: { id: 't1', expand: { assignee: { id: 'bo' } } } });
    expect(JSON.stringify(socket.frames)).not.toContain('Still hidden');
  });
});
