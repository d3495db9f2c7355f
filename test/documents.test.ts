import { beforeAll, describe, expect, it } from 'vitest';
import { errorCode, request, useTestApp } from './helpers.js';
import { createCollection, type Doc } from './documents-support.js';

const server = useTestApp({ env: { BASALT_MAX_DOCUMENT_BYTES: '4096' } });

const ISO_MICROS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

function svc(method: string, path: string, body?: unknown, headers?: Record<string, string>) {
  return request(server.url, method, path, { body, token: server.serviceKey, headers });
}

beforeAll(async () => {
  await createCollection(server, { name: 'items', schema: null });
  await createCollection(server, {
    name: 'typed',
    schema: {
      type: 'object',
      required: ['title'],
      properties: { title: { type: 'string', maxLength: 20 }, email: { type: 'string', format: 'email' } },
    },
  });
});

describe('create', () => {
  it('creates with a generated URL-safe id and returns the document', async () => {
    const response = await svc('POST', '/v1/db/items', { data: { title: 'a', n: 1 } });
    expect(response.status).toBe(201);
    const doc = response.body as Doc;
    expect(doc.id).toMatch(/^[A-Za-z0-9_-]{20}$/);
    expect(doc).toMatchObject({ collection: 'items', owner: null, version: 1, data: { title: 'a', n: 1 } });
    expect(doc.created_at).toMatch(ISO_MICROS);
    expect(doc.updated_at).toBe(doc.created_at);
    expect(response.headers.get('etag')).toBe('"1"');
  });

  it('creates with a chosen id and answers 409 ALREADY_EXISTS when taken', async () => {
    const first = await svc('POST', '/v1/db/items', { id: 'chosen-1', data: {} });
    expect(first.status).toBe(201);
    const again = await svc('POST', '/v1/db/items', { id: 'chosen-1', data: { x: 1 } });
    expect(again.status).toBe(409);
    expect(errorCode(again.body)).toBe('ALREADY_EXISTS');
  });

  it('refuses bad ids, bad bodies and $ field names with 400', async () => {
    for (const body of [
      { id: 'has space', data: {} },
      { id: 'x'.repeat(129), data: {} },
      { id: '', data: {} },
      { data: [] },
      { data: 'text' },
      {},
      { data: {}, extra: 1 },
      { data: { $bad: 1 } },
      { data: { nested: { $bad: 1 } } },
      { data: { list: [{ $bad: 1 }] } },
      { data: { a: { $increment: 1, other: 2 } } },
      { data: { a: { $increment: 'one' } } },
      { data: { a: { $unknown: 1 } } },
    ]) {
      const response = await svc('POST', '/v1/db/items', body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
  });

  it('answers 413 PAYLOAD_TOO_LARGE for data over the configured limit', async () => {
    const response = await svc('POST', '/v1/db/items', { data: { blob: 'x'.repeat(5000) } });
    expect(response.status).toBe(413);
    expect(errorCode(response.body)).toBe('PAYLOAD_TOO_LARGE');
  });

  it('answers 404 for an unknown collection and 400 for an invalid collection name', async () => {
    expect((await svc('POST', '/v1/db/nope', { data: {} })).status).toBe(404);
    expect((await svc('POST', '/v1/db/Bad-Name', { data: {} })).status).toBe(400);
    expect((await svc('GET', '/v1/db/batch/x')).status).toBe(400);
  });

  it('applies transforms on create against nothing', async () => {
    const response = await svc('POST', '/v1/db/items', {
      data: {
        n: { $increment: 5 },
        at: { $server_timestamp: true },
        tags: { $array_union: ['a', 'a', 'b'] },
        gone: { $delete: true },
        rm: { $array_remove: [1] },
      },
    });
    expect(response.status).toBe(201);
    const doc = response.body as Doc;
    expect(doc.data).toEqual({ n: 5, at: doc.created_at, tags: ['a', 'b'], rm: [] });
  });
});

describe('schema validation', () => {
  it('validates data with the collection JSON Schema (formats included) on every write', async () => {
    const ok = await svc('POST', '/v1/db/typed', { id: 't1', data: { title: 'fine', email: 'a@b.co' } });
    expect(ok.status).toBe(201);
    const missing = await svc('POST', '/v1/db/typed', { data: { email: 'a@b.co' } });
    expect(missing.status).toBe(400);
    expect(errorCode(missing.body)).toBe('INVALID_REQUEST');
    const details = (missing.body as { error: { details: { issues: unknown[] } } }).error.details;
    expect(details.issues.length).toBeGreaterThan(0);
    const badEmail = await svc('PUT', '/v1/db/typed/t2', { data: { title: 'x', email: 'not-an-email' } });
    expect(badEmail.status).toBe(400);
    const tooLong = await svc('PATCH', '/v1/db/typed/t1', { data: { title: 'y'.repeat(21) } });
    expect(tooLong.status).toBe(400);
    const removeRequired = await svc('PATCH', '/v1/db/typed/t1', { data: { title: { $delete: true } } });
    expect(removeRequired.status).toBe(400);
    const still = await svc('GET', '/v1/db/typed/t1');
    expect((still.body as Doc).data).toEqual({ title: 'fine', email: 'a@b.co' });
    expect((still.body as Doc).version).toBe(1);
  });
});

describe('get, put, patch, delete', () => {
  it('reads a document and answers 404 when absent', async () => {
    await svc('POST', '/v1/db/items', { id: 'g1', data: { a: 1 } });
    const found = await svc('GET', '/v1/db/items/g1');
    expect(found.status).toBe(200);
    expect((found.body as Doc).data).toEqual({ a: 1 });
    const missing = await svc('GET', '/v1/db/items/none');
    expect(missing.status).toBe(404);
    expect(errorCode(missing.body)).toBe('NOT_FOUND');
  });

  it('PUT creates (201) then replaces (200), bumping the version and keeping created_at', async () => {
    const created = await svc('PUT', '/v1/db/items/p1', { data: { a: 1, b: 2 } });
    expect(created.status).toBe(201);
    const replaced = await svc('PUT', '/v1/db/items/p1', { data: { c: 3 } });
    expect(replaced.status).toBe(200);
    const doc = replaced.body as Doc;
    expect(doc.data).toEqual({ c: 3 });
    expect(doc.version).toBe(2);
    expect(doc.created_at).toBe((created.body as Doc).created_at);
    expect(doc.updated_at > doc.created_at).toBe(true);
  });

  it('PATCH deep-merges objects and replaces arrays and scalars', async () => {
    await svc('PUT', '/v1/db/items/m1', { data: { a: { b: 1, c: { d: 2 } }, list: [1, 2], s: 'x' } });
    const patched = await svc('PATCH', '/v1/db/items/m1', {
      data: { a: { c: { e: 3 } }, list: [9], s: { nested: true } },
    });
    expect(patched.status).toBe(200);
    expect((patched.body as Doc).data).toEqual({ a: { b: 1, c: { d: 2, e: 3 } }, list: [9], s: { nested: true } });
    expect((patched.body as Doc).version).toBe(2);
  });

  it('PATCH applies every field transform', async () => {
    await svc('PUT', '/v1/db/items/t1', {
      data: { n: 1, s: 'text', tags: ['a', { k: 1 }], rm: [1, 2, 1, 3], gone: true, deep: { x: 1 } },
    });
    const patched = await svc('PATCH', '/v1/db/items/t1', {
      data: {
        n: { $increment: 2.5 },
        s: { $increment: 1 },
        fresh: { $increment: -1 },
        tags: { $array_union: [{ k: 1 }, 'b', 'b'] },
        rm: { $array_remove: [1, 3] },
        gone: { $delete: true },
        deep: { x: { $delete: true }, y: { $server_timestamp: true } },
        missing: { $delete: true },
      },
    });
    expect(patched.status).toBe(200);
    const doc = patched.body as Doc;
    expect(doc.data).toEqual({
      n: 3.5,
      s: 1,
      fresh: -1,
      tags: ['a', { k: 1 }, 'b'],
      rm: [2],
      deep: { y: doc.updated_at },
    });
  });

  it('PATCH of a missing document is 404 and creates nothing', async () => {
    const response = await svc('PATCH', '/v1/db/items/never', { data: { a: 1 } });
    expect(response.status).toBe(404);
    expect((await svc('GET', '/v1/db/items/never')).status).toBe(404);
  });

  it('DELETE answers 204, then 404', async () => {
    await svc('PUT', '/v1/db/items/d1', { data: {} });
    const deleted = await svc('DELETE', '/v1/db/items/d1');
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe('');
    expect((await svc('GET', '/v1/db/items/d1')).status).toBe(404);
    expect((await svc('DELETE', '/v1/db/items/d1')).status).toBe(404);
  });
});

describe('If-Match', () => {
  it('writes when the version matches and answers 409 VERSION_CONFLICT, changing nothing, when not', async () => {
    await svc('PUT', '/v1/db/items/v1', { data: { a: 1 } });
    const ok = await svc('PATCH', '/v1/db/items/v1', { data: { a: 2 } }, { 'if-match': '1' });
    expect(ok.status).toBe(200);
    const stale = await svc('PATCH', '/v1/db/items/v1', { data: { a: 3 } }, { 'if-match': '1' });
    expect(stale.status).toBe(409);
    expect(errorCode(stale.body)).toBe('VERSION_CONFLICT');
    const staleSet = await svc('PUT', '/v1/db/items/v1', { data: { a: 4 } }, { 'if-match': '"1"' });
    expect(staleSet.status).toBe(409);
    const staleDelete = await svc('DELETE', '/v1/db/items/v1', undefined, { 'if-match': '7' });
    expect(staleDelete.status).toBe(409);
    const now = await svc('GET', '/v1/db/items/v1');
    expect((now.body as Doc).data).toEqual({ a: 2 });
    expect((now.body as Doc).version).toBe(2);
    const etag = now.headers.get('etag') as string;
    expect((await svc('PUT', '/v1/db/items/v1', { data: { a: 5 } }, { 'if-match': etag })).status).toBe(200);
    expect((await svc('DELETE', '/v1/db/items/v1', undefined, { 'if-match': '3' })).status).toBe(204);
  });

  it('treats If-Match on an absent document as a conflict and refuses a malformed one', async () => {
    const absent = await svc('PUT', '/v1/db/items/v-absent', { data: {} }, { 'if-match': '1' });
    expect(absent.status).toBe(409);
    expect((await svc('GET', '/v1/db/items/v-absent')).status).toBe(404);
    const malformed = await svc('PATCH', '/v1/db/items/v-absent', { data: {} }, { 'if-match': 'abc' });
    expect(malformed.status).toBe(400);
  });
});

describe('plain SQL writes', () => {
  it('a row inserted with only (id, owner, data) is a valid document at version 1', async () => {
    await server.sql.query(
      `INSERT INTO basalt_data.items (id, owner, data) VALUES ('raw-1', 'someone', '{"via":"psql"}')`,
    );
    const response = await svc('GET', '/v1/db/items/raw-1');
    expect(response.status).toBe(200);
    const doc = response.body as Doc;
    expect(doc).toMatchObject({ id: 'raw-1', owner: 'someone', version: 1, data: { via: 'psql' } });
    expect(doc.created_at).toMatch(ISO_MICROS);
    expect(doc.updated_at).toBe(doc.created_at);
    await server.sql.query(
      `UPDATE basalt_data.items SET data = '{"via":"psql","n":2}', version = 99 WHERE id = 'raw-1'`,
    );
    const updated = (await svc('GET', '/v1/db/items/raw-1')).body as Doc;
    expect(updated.version).toBe(2);
    expect(updated.created_at).toBe(doc.created_at);
  });

  it('stamps version and times that a plain SQL write sets wrongly, and leaves right ones alone', async () => {
    await server.sql.query(
      `INSERT INTO basalt_data.items (id, data, version, created_at, updated_at)
       VALUES ('raw-3', '{}', 7, '2001-01-01T00:00:00Z', '2002-02-02T00:00:00Z')`,
    );
    let doc = (await svc('GET', '/v1/db/items/raw-3')).body as Doc;
    expect(doc).toMatchObject({ version: 1, created_at: '2001-01-01T00:00:00.000000Z' });
    expect(doc.updated_at).toBe(doc.created_at);
    // An update that leaves version and updated_at alone is stamped: version + 1, now().
    await server.sql.query(`UPDATE basalt_data.items SET data = '{"n":1}' WHERE id = 'raw-3'`);
    doc = (await svc('GET', '/v1/db/items/raw-3')).body as Doc;
    expect(doc.version).toBe(2);
    expect(doc.created_at).toBe('2001-01-01T00:00:00.000000Z');
    expect(Date.parse(doc.updated_at)).toBeGreaterThan(Date.now() - 60_000);
    // One that moves created_at or skips versions is put right.
    await server.sql.query(
      `UPDATE basalt_data.items SET created_at = now(), version = version + 5, updated_at = '2003-03-03T00:00:00Z'
       WHERE id = 'raw-3'`,
    );
    doc = (await svc('GET', '/v1/db/items/raw-3')).body as Doc;
    expect(doc.version).toBe(3);
    expect(doc.created_at).toBe('2001-01-01T00:00:00.000000Z');
    expect(Date.parse(doc.updated_at)).toBeGreaterThan(Date.now() - 60_000);
    // The API's own updates go up by one each, as ever.
    const patched = (await svc('PATCH', '/v1/db/items/raw-3', { data: { n: 2 } })).body as Doc;
    expect(patched.version).toBe(4);
    const replaced = (await svc('PUT', '/v1/db/items/raw-3', { data: { n: 3 } })).body as Doc;
    expect(replaced.version).toBe(5);
    expect(replaced.created_at).toBe('2001-01-01T00:00:00.000000Z');
  });

  it('records plain SQL writes in the change log', async () => {
    await server.sql.query(`INSERT INTO basalt_data.items (id, data) VALUES ('raw-2', '{}')`);
    const { rows } = await server.sql.query(
      `SELECT op, new_row->>'version' AS version FROM basalt.changes WHERE table_schema = 'basalt_data' AND table_name = 'items' AND row_id = 'raw-2'`,
    );
    expect(rows).toEqual([{ op: 'insert', version: '1' }]);
  });
});

describe('concurrency', () => {
  it('50 concurrent $increment give +50', async () => {
    await svc('PUT', '/v1/db/items/counter', { data: { n: 0 } });
    const responses = await Promise.all(
      Array.from({ length: 50 }, () => svc('PATCH', '/v1/db/items/counter', { data: { n: { $increment: 1 } } })),
    );
    expect(responses.every((response) => response.status === 200)).toBe(true);
    const doc = (await svc('GET', '/v1/db/items/counter')).body as Doc;
    expect(doc.data.n).toBe(50);
    expect(doc.version).toBe(51);
  }, 120_000);

  it('concurrent PUTs of a new id all succeed: one creates, the rest replace', async () => {
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) => svc('PUT', '/v1/db/items/race', { data: { i } })),
    );
    expect(responses.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
    expect(((await svc('GET', '/v1/db/items/race')).body as Doc).version).toBe(10);
  });

  it('of concurrent If-Match writes with one version, exactly one wins', async () => {
    await svc('PUT', '/v1/db/items/cas', { data: { n: 0 } });
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) => svc('PATCH', '/v1/db/items/cas', { data: { n: i } }, { 'if-match': '1' })),
    );
    expect(responses.filter((r) => r.status === 200)).toHaveLength(1);
    expect(responses.filter((r) => r.status === 409)).toHaveLength(9);
  });
});

describe('batch', () => {
  it('runs create, set, update and delete in one transaction and returns each result', async () => {
    await svc('PUT', '/v1/db/items/b-upd', { data: { n: 1 } });
    await svc('PUT', '/v1/db/items/b-del', { data: {} });
    const response = await svc('POST', '/v1/db/batch', {
      ops: [
        { op: 'create', collection: 'items', id: 'b-new', data: { a: 1 } },
        { op: 'create', collection: 'items', data: { generated: true } },
        { op: 'set', collection: 'items', id: 'b-set', data: { s: 1 } },
        { op: 'update', collection: 'items', id: 'b-upd', data: { n: { $increment: 1 } }, if_version: 1 },
        { op: 'delete', collection: 'items', id: 'b-del' },
        { op: 'update', collection: 'items', id: 'b-new', data: { b: 2 } },
      ],
    });
    expect(response.status).toBe(200);
    const results = (response.body as { results: Array<Doc | null> }).results;
    expect(results).toHaveLength(6);
    expect(results[0]).toMatchObject({ id: 'b-new', version: 1 });
    expect(results[1]?.id).toMatch(/^[A-Za-z0-9]{20}$/);
    expect(results[3]).toMatchObject({ id: 'b-upd', version: 2, data: { n: 2 } });
    expect(results[4]).toBeNull();
    expect(results[5]).toMatchObject({ id: 'b-new', version: 2, data: { a: 1, b: 2 } });
    expect((await svc('GET', '/v1/db/items/b-del')).status).toBe(404);
  });

  it('is all or nothing and names the failing op', async () => {
    const response = await svc('POST', '/v1/db/batch', {
      ops: [
        { op: 'create', collection: 'items', id: 'b-none-1', data: {} },
        { op: 'update', collection: 'items', id: 'b-upd', data: { n: 100 }, if_version: 1 },
      ],
    });
    expect(response.status).toBe(409);
    const error = (response.body as { error: { code: string; details: { index: number; code: string } } }).error;
    expect(error.code).toBe('VERSION_CONFLICT');
    expect(error.details).toMatchObject({ index: 1, code: 'VERSION_CONFLICT' });
    expect((await svc('GET', '/v1/db/items/b-none-1')).status).toBe(404);
    expect(((await svc('GET', '/v1/db/items/b-upd')).body as Doc).data).toEqual({ n: 2 });
  });

  it('reports bad ops before running anything', async () => {
    const unknownCollection = await svc('POST', '/v1/db/batch', {
      ops: [
        { op: 'create', collection: 'items', id: 'b-none-2', data: {} },
        { op: 'create', collection: 'nope', data: {} },
      ],
    });
    expect(unknownCollection.status).toBe(404);
    expect((unknownCollection.body as { error: { details: { index: number } } }).error.details.index).toBe(1);
    const badData = await svc('POST', '/v1/db/batch', {
      ops: [{ op: 'update', collection: 'items', id: 'b-upd', data: { $x: 1 } }],
    });
    expect(badData.status).toBe(400);
    expect((badData.body as { error: { details: { index: number } } }).error.details.index).toBe(0);
    const missingId = await svc('POST', '/v1/db/batch', { ops: [{ op: 'delete', collection: 'items' }] });
    expect(missingId.status).toBe(400);
    expect((await svc('POST', '/v1/db/batch', { ops: [] })).status).toBe(400);
    expect((await svc('POST', '/v1/db/batch', { ops: [{ op: 'drop', collection: 'items' }] })).status).toBe(400);
    expect((await svc('GET', '/v1/db/items/b-none-2')).status).toBe(404);
  });

  it('accepts 500 ops and refuses 501', async () => {
    const ops = Array.from({ length: 500 }, (_, i) => ({
      op: 'set',
      collection: 'items',
      id: `bulk-${i}`,
      data: { i },
    }));
    const ok = await svc('POST', '/v1/db/batch', { ops });
    expect(ok.status).toBe(200);
    const tooMany = await svc('POST', '/v1/db/batch', { ops: [...ops, ops[0]] });
    expect(tooMany.status).toBe(400);
    expect(errorCode(tooMany.body)).toBe('INVALID_REQUEST');
  }, 120_000);
});

describe('injection', () => {
  it('collection names with SQL are refused before reaching the database', async () => {
    for (const name of ['items;drop table x', 'items"', "items'", 'basalt.collections', 'ITEMS', 'items--']) {
      const response = await svc('GET', `/v1/db/${encodeURIComponent(name)}/x`);
      expect(response.status, name).toBe(400);
      const created = await svc('POST', '/v1/admin/collections', { name });
      expect(created.status, name).toBe(400);
    }
  });

  it('field paths with SQL are refused; values are only ever parameters', async () => {
    for (const path of ["a') OR true --", 'a,b}', "a'}", 'a b', '-1', 'a..b', '']) {
      const response = await svc('POST', '/v1/db/items/query', { where: [[path, '==', 1]] });
      expect(response.status, path).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
    await svc('PUT', '/v1/db/items/inj', { data: { name: "Robert'); DROP TABLE basalt_data.items; --" } });
    const response = await svc('POST', '/v1/db/items/query', {
      where: [['name', '==', "Robert'); DROP TABLE basalt_data.items; --"]],
    });
    expect(response.status).toBe(200);
    expect((response.body as { docs: Doc[] }).docs.map((doc) => doc.id)).toEqual(['inj']);
    const weird = await svc('POST', '/v1/db/items/query', {
      where: [['name', 'in', ["' OR 1=1 --", '{"a":1}', '\\']]],
      order_by: [['name', 'asc']],
      after: Buffer.from(JSON.stringify({ v: [["'; DROP TABLE x; --"]], id: "x' OR '1'='1" })).toString('base64url'),
    });
    expect(weird.status).toBe(200);
    expect((await svc('GET', '/v1/db/items/inj')).status).toBe(200);
  });

  it('refuses text Postgres cannot store (NUL, unpaired surrogates) with 400, never 500', async () => {
    const bodies = [
      '{"data": {"a": "x\\u0000y"}}',
      '{"data": {"a\\u0000": 1}}',
      '{"data": {"a": "\\ud800"}}',
      '{"data": {"a": ["\\udc00"]}}',
    ];
    for (const rawBody of bodies) {
      const response = await request(server.url, 'POST', '/v1/db/items', {
        rawBody,
        token: server.serviceKey,
        headers: { 'content-type': 'application/json' },
      });
      expect(response.status, rawBody).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
    const query = await request(server.url, 'POST', '/v1/db/items/query', {
      rawBody: '{"where": [["a", ">", "\\u0000"]]}',
      token: server.serviceKey,
      headers: { 'content-type': 'application/json' },
    });
    expect(query.status).toBe(400);
    const emoji = await svc('PUT', '/v1/db/items/emoji', { data: { a: '\u{1F600} ok' } });
    expect(emoji.status).toBe(201);
  });

  it('field names in data are stored as given, never as SQL', async () => {
    const response = await svc('PUT', '/v1/db/items/keys', { data: { "a'b": 1, 'c"d': 2, 'e;f': 3 } });
    expect(response.status).toBe(201);
    expect((response.body as Doc).data).toEqual({ "a'b": 1, 'c"d': 2, 'e;f': 3 });
  });
});
