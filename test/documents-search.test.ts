import { describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { createCollection, errorCode, request, useTestApp } from './helpers.js';
import type { Doc } from './documents-support.js';

const server = useTestApp();

interface QueryBody {
  docs: Array<Doc & { highlights?: Record<string, string> }>;
  next_cursor: string | null;
  prev_cursor: string | null;
}

function query(body: unknown, token = server.serviceKey, collection = 'posts') {
  return request(server.url, 'POST', `/v1/db/${collection}/query`, { token, body });
}

function ids(result: { body: unknown }): string[] {
  return (result.body as QueryBody).docs.map((doc) => doc.id);
}

describe('full-text search', () => {
  it('searches fields set by PATCH, including rows written with plain SQL, in relevance order', async () => {
    await createCollection(server, {
      name: 'posts',
      rules: { read: 'doc.id != "secret"', create: 'true' },
    });
    const patched = await request(server.url, 'PATCH', '/v1/admin/collections/posts', {
      token: server.serviceKey,
      body: { search: { fields: ['title', 'body'], language: 'english' } },
    });
    expect(patched.status, patched.text).toBe(200);
    expect((patched.body as { search: unknown }).search).toEqual({ fields: ['title', 'body'], language: 'english' });
    // The index exists and is a GIN index.
    const { rows: indexes } = await server.sql.query(
      `SELECT indexdef FROM pg_indexes WHERE schemaname = 'basalt_data' AND tablename = 'posts' AND indexdef LIKE '%gin%'`,
    );
    expect(indexes).toHaveLength(1);

    // Written with plain SQL, not through Basalt.
    await server.sql.query(`INSERT INTO basalt_data.posts (id, owner, data) VALUES
      ('camp', NULL, '{"title": "Camping in the hills", "body": "A tent and a stove", "n": 1}'),
      ('tent', NULL, '{"title": "Tents compared", "body": "Which tent for camping trips", "n": 2}'),
      ('city', NULL, '{"title": "City breaks", "body": "Hotels and museums", "n": 3}'),
      ('secret', NULL, '{"title": "Secret camping spot", "body": "camping camping", "hidden": true, "n": 4}'),
      ('xss', NULL, '{"title": "<script>alert(1)</script> camping & <b>tents</b>", "body": null, "n": 5}')`);

    // The change log records the documents without their search vector.
    await server.sql.query(`UPDATE basalt_data.posts SET data = data || '{"n": 6}' WHERE id = 'xss'`);
    const { rows: changes } = await server.sql.query<{ op: string; old_row: object | null; new_row: object | null }>(
      `SELECT op, old_row, new_row FROM basalt.changes WHERE table_name = 'posts' AND row_id = 'xss' ORDER BY id`,
    );
    expect(changes.map((change) => change.op)).toEqual(['insert', 'update']);
    for (const change of changes) {
      for (const row of [change.old_row, change.new_row]) if (row) expect(Object.keys(row)).not.toContain('$search');
    }
    expect(changes[1]!.new_row).toMatchObject({ id: 'xss', data: { n: 6 } });

    const camping = await query({ search: 'camping' });
    expect(camping.status, camping.text).toBe(200);
    // Title matches (weight A) rank above body-only matches (weight B); stemming finds "camping" in "Camping".
    expect(ids(camping).slice(0, 3).sort()).toEqual(['camp', 'secret', 'xss']);
    expect(ids(camping)).toContain('tent');
    expect(ids(camping)).not.toContain('city');

    // The read rule applies: a user does not find the hidden post.
    const user = await signUp(server.url);
    const asUser = await query({ search: 'camping' }, user.token);
    expect(ids(asUser)).not.toContain('secret');
    expect(ids(asUser)).toHaveLength(3);

    // Web-search syntax: phrases, or, exclusion.
    expect(ids(await query({ search: '"city breaks"' })).sort()).toEqual(['city']);
    expect(ids(await query({ search: 'museums or stove' })).sort()).toEqual(['camp', 'city']);
    expect(ids(await query({ search: 'camping -tent' }))).toEqual(['secret']);

    // Combined with where, and with order_by replacing relevance.
    expect(ids(await query({ search: 'camping', where: [['n', '>=', 2]] })).sort()).toEqual(['secret', 'tent', 'xss']);
    expect(ids(await query({ search: 'camping', order_by: [['n', 'desc']] }))).toEqual([
      'xss',
      'secret',
      'tent',
      'camp',
    ]);
  });

  it('pages through relevance order with cursors, each document once', async () => {
    const seen: string[] = [];
    let after: string | null = null;
    do {
      const page = await query({ search: 'camping or tent', limit: 2, ...(after ? { after } : {}) });
      expect(page.status, page.text).toBe(200);
      const body = page.body as QueryBody;
      seen.push(...body.docs.map((doc) => doc.id));
      after = body.next_cursor;
    } while (after);
    expect(seen.sort()).toEqual(['camp', 'secret', 'tent', 'xss']);
    const bad = await query({ search: 'camping', after: 'not-a-cursor' });
    expect(bad.status).toBe(400);
  });

  it('pages backwards through relevance order (before, limit_to_last) and projects with select', async () => {
    const forward = ids(await query({ search: 'camping or tent', limit: 100 }));
    expect(forward).toHaveLength(4);
    // The last two in relevance order, and a cursor to the page before them.
    const last = await query({ search: 'camping or tent', limit_to_last: 2 });
    expect(last.status, last.text).toBe(200);
    const lastBody = last.body as QueryBody;
    expect(ids(last)).toEqual(forward.slice(2));
    expect(lastBody.next_cursor).toBeNull();
    expect(lastBody.prev_cursor).not.toBeNull();
    const before = await query({ search: 'camping or tent', limit_to_last: 2, before: lastBody.prev_cursor });
    expect(before.status, before.text).toBe(200);
    expect(ids(before)).toEqual(forward.slice(0, 2));
    expect((before.body as QueryBody).prev_cursor).toBeNull();
    // A forward page gives a prev_cursor that leads back to the page before it.
    const second = await query({
      search: 'camping or tent',
      limit: 2,
      after: await query({ search: 'camping or tent', limit: 2 }).then((r) => (r.body as QueryBody).next_cursor),
    });
    expect(ids(second)).toEqual(forward.slice(2));
    const back = await query({ search: 'camping or tent', before: (second.body as QueryBody).prev_cursor });
    expect(ids(back)).toEqual(forward.slice(0, 2));
    // A cursor of another order is refused, for before as for after.
    const ordered = await query({ search: 'camping', order_by: [['n', 'desc']], limit: 1 });
    const foreign = (ordered.body as QueryBody).next_cursor;
    const refused = await query({ search: 'camping', before: foreign });
    expect(refused.status).toBe(400);
    expect((refused.body as { error: { details?: { field?: string } } }).error.details?.field).toBe('before');
    // select keeps only the chosen data paths; highlights still come.
    const selected = await query({ search: 'camping', select: ['title'], highlight: true });
    expect(selected.status, selected.text).toBe(200);
    for (const doc of (selected.body as QueryBody).docs) {
      expect(Object.keys(doc.data)).toEqual(['title']);
      expect(doc.highlights).toBeDefined();
    }
  });

  it('highlights with <mark>, the document text escaped so only the marks are HTML', async () => {
    const result = await query({ search: 'tents camping', highlight: true });
    const xss = (result.body as QueryBody).docs.find((doc) => doc.id === 'xss');
    const title = xss?.highlights?.title ?? '';
    expect(title).toContain('<mark>camping</mark>');
    expect(title).toContain('<mark>tents</mark>');
    expect(title).not.toMatch(/<(?!\/?mark>)/);
    expect(title).toContain('&amp;');
    // body is null in that document: no highlight for it.
    expect(xss?.highlights).not.toHaveProperty('body');
    const tent = (result.body as QueryBody).docs.find((doc) => doc.id === 'tent');
    expect(tent?.highlights?.body).toContain('<mark>');
    // Without highlight: no highlights.
    const plain = await query({ search: 'camping' });
    expect((plain.body as QueryBody).docs[0]).not.toHaveProperty('highlights');
  });

  it('refuses bad input with 400 and survives hostile search text', async () => {
    for (const text of ['!!! & | <-> :* (((', "'; DROP TABLE x; --", '"unclosed', 'a'.repeat(1000), '-', 'or']) {
      const result = await query({ search: text });
      expect(result.status, text).toBe(200);
    }
    expect((await query({ search: 'a'.repeat(1001) })).status).toBe(400);
    expect((await query({ search: 42 })).status).toBe(400);
    expect((await query({ highlight: true })).status).toBe(400);
    expect(errorCode((await query({ search: 'x\u0000y' })).body)).toBe('INVALID_REQUEST');
    await createCollection(server, { name: 'plain', rules: { read: 'true' } });
    const noSearch = await query({ search: 'x' }, server.serviceKey, 'plain');
    expect(noSearch.status).toBe(400);
    const badLanguage = await request(server.url, 'PATCH', '/v1/admin/collections/plain', {
      token: server.serviceKey,
      body: { search: { fields: ['title'], language: 'klingon' } },
    });
    expect(badLanguage.status).toBe(400);
    const badField = await request(server.url, 'PATCH', '/v1/admin/collections/plain', {
      token: server.serviceKey,
      body: { search: { fields: ["a'b"] } },
    });
    expect(badField.status).toBe(400);
  });

  it('changing or removing the search fields rebuilds or drops the index', async () => {
    const changed = await request(server.url, 'PATCH', '/v1/admin/collections/posts', {
      token: server.serviceKey,
      body: { search: { fields: ['body'] } },
    });
    expect(changed.status).toBe(200);
    expect(ids(await query({ search: 'hills' }))).toEqual([]);
    expect(ids(await query({ search: 'stove' }))).toEqual(['camp']);
    const removed = await request(server.url, 'PATCH', '/v1/admin/collections/posts', {
      token: server.serviceKey,
      body: { search: null },
    });
    expect(removed.status).toBe(200);
    const { rows } = await server.sql.query(
      `SELECT 1 FROM pg_indexes WHERE schemaname = 'basalt_data' AND tablename = 'posts' AND indexdef LIKE '%gin%'`,
    );
    expect(rows).toEqual([]);
    expect((await query({ search: 'stove' })).status).toBe(400);
  });
});
