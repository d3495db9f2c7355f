import { beforeAll, describe, expect, it } from 'vitest';
import { errorCode, request, startTestApp, useTestApp } from './helpers.js';
import { signUp, type SignedUp } from './auth-helpers.js';

const server = useTestApp();
let user: SignedUp;

function admin(method: string, path: string, body?: unknown) {
  return request(server.url, method, path, { body, token: server.serviceKey });
}

async function indexDefs(table: string): Promise<string[]> {
  const { rows } = await server.sql.query<{ indexdef: string }>(
    `SELECT indexdef FROM pg_indexes WHERE schemaname = 'basalt_data' AND tablename = $1 ORDER BY indexname`,
    [table],
  );
  return rows.map((row) => row.indexdef);
}

beforeAll(async () => {
  user = await signUp(server.url);
});

describe('POST /v1/admin/collections', () => {
  it('creates a table in basalt_data with the document columns, triggers and declared indexes', async () => {
    const response = await admin('POST', '/v1/admin/collections', {
      name: 'orders',
      rules: { read: 'auth != null', create: 'auth != null' },
      schema: { type: 'object' },
      indexes: ['status', ['customer.id', 'created_at'], 'a.b.c'],
    });
    expect(response.status).toBe(201);
    expect(response.body).toMatchObject({
      name: 'orders',
      rules: { read: 'auth != null', create: 'auth != null' },
      schema: { type: 'object' },
      indexes: ['status', ['customer.id', 'created_at'], 'a.b.c'],
    });
    const { rows: columns } = await server.sql.query(
      `SELECT column_name, data_type, is_nullable FROM information_schema.columns
       WHERE table_schema = 'basalt_data' AND table_name = 'orders' ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      { column_name: 'id', data_type: 'text', is_nullable: 'NO' },
      { column_name: 'owner', data_type: 'text', is_nullable: 'YES' },
      { column_name: 'version', data_type: 'bigint', is_nullable: 'NO' },
      { column_name: 'created_at', data_type: 'timestamp with time zone', is_nullable: 'NO' },
      { column_name: 'updated_at', data_type: 'timestamp with time zone', is_nullable: 'NO' },
      { column_name: 'data', data_type: 'jsonb', is_nullable: 'NO' },
    ]);
    const { rows: triggers } = await server.sql.query(
      `SELECT tgname FROM pg_trigger WHERE tgrelid = 'basalt_data.orders'::regclass AND NOT tgisinternal ORDER BY tgname`,
    );
    expect(triggers.map((row) => row.tgname)).toEqual([
      'basalt_document_stamp_insert',
      'basalt_document_stamp_update',
      'basalt_record_change',
    ]);
    const defs = (await indexDefs('orders')).join('\n');
    expect(defs).toContain(`((data #> '{status}'::text[]))`);
    expect(defs).toContain(`((data #> '{customer,id}'::text[])), created_at)`);
    expect(defs).toContain(`((data #> '{a,b,c}'::text[]))`);
  });

  it('lets the planner use a declared index for equality queries', async () => {
    await server.sql.query(
      `INSERT INTO basalt_data.orders (id, data) SELECT 'o' || i, jsonb_build_object('status', 's' || (i % 100)) FROM generate_series(1, 3000) i`,
    );
    await server.sql.query('ANALYZE basalt_data.orders');
    const { rows } = await server.sql.query(
      `EXPLAIN SELECT id FROM basalt_data.orders d WHERE (d.data #> '{status}') = '"s7"'::jsonb`,
    );
    expect(rows.map((row) => row['QUERY PLAN']).join('\n')).toMatch(/Index|Bitmap/);
  });

  it('answers 409 for a taken name and 400 for bad names', async () => {
    expect((await admin('POST', '/v1/admin/collections', { name: 'orders' })).status).toBe(409);
    for (const name of ['batch', 'Orders', '1abc', 'a-b', '', 'x'.repeat(64), 'a b']) {
      const response = await admin('POST', '/v1/admin/collections', { name });
      expect(response.status, name).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
  });

  it('answers 400 INVALID_RULE with the parser position for a bad rule', async () => {
    const response = await admin('POST', '/v1/admin/collections', {
      name: 'bad_rules',
      rules: { read: 'auth.uid == ' },
    });
    expect(response.status).toBe(400);
    expect(errorCode(response.body)).toBe('INVALID_RULE');
    const details = (response.body as { error: { details: Record<string, unknown> } }).error.details;
    expect(details).toMatchObject({ rule: 'read' });
    expect(typeof details.position).toBe('number');
    expect(details.expected).toBeDefined();
    const incomingInRead = await admin('POST', '/v1/admin/collections', {
      name: 'bad_rules',
      rules: { read: 'incoming.owner == auth.uid' },
    });
    expect(incomingInRead.status).toBe(400);
    expect(errorCode(incomingInRead.body)).toBe('INVALID_RULE');
    const unknownKind = await admin('POST', '/v1/admin/collections', { name: 'bad_rules', rules: { write: 'true' } });
    expect(unknownKind.status).toBe(400);
    expect((await admin('GET', '/v1/admin/collections/bad_rules')).status).toBe(404);
  });

  it('answers 400 for a schema Ajv cannot compile and for bad index lists', async () => {
    const schema = await admin('POST', '/v1/admin/collections', { name: 'bad_schema', schema: { type: 'nonsense' } });
    expect(schema.status).toBe(400);
    expect(errorCode(schema.body)).toBe('INVALID_REQUEST');
    for (const indexes of [["a') ; DROP TABLE x; --"], [['a', 5]], 'a', [[]], ['a', 'a'], ['$a']]) {
      const response = await admin('POST', '/v1/admin/collections', { name: 'bad_indexes', indexes });
      expect(response.status, JSON.stringify(indexes)).toBe(400);
    }
    expect((await admin('GET', '/v1/admin/collections/bad_indexes')).status).toBe(404);
  });
});

describe('GET, PATCH, DELETE /v1/admin/collections', () => {
  it('lists and reads collections', async () => {
    await admin('POST', '/v1/admin/collections', { name: 'listed' });
    const list = await admin('GET', '/v1/admin/collections');
    expect(list.status).toBe(200);
    const names = (list.body as { collections: Array<{ name: string }> }).collections.map((c) => c.name);
    expect(names).toEqual(expect.arrayContaining(['listed', 'orders']));
    const one = await admin('GET', '/v1/admin/collections/listed');
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ name: 'listed', rules: {}, schema: null, indexes: [] });
    expect((await admin('GET', '/v1/admin/collections/missing')).status).toBe(404);
  });

  it('PATCH merges rules per kind, replaces the schema and rebuilds changed indexes', async () => {
    await admin('POST', '/v1/admin/collections', {
      name: 'patched',
      rules: { read: 'true', create: 'true' },
      indexes: ['a', 'b'],
    });
    const response = await admin('PATCH', '/v1/admin/collections/patched', {
      rules: { create: null, update: 'auth != null' },
      schema: { type: 'object', required: ['x'] },
      indexes: ['b', ['c', 'd.e']],
    });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({
      rules: { read: 'true', update: 'auth != null' },
      schema: { type: 'object', required: ['x'] },
      indexes: ['b', ['c', 'd.e']],
    });
    expect((response.body as { rules: Record<string, string> }).rules.create).toBeUndefined();
    const defs = (await indexDefs('patched')).join('\n');
    expect(defs).not.toContain(`'{a}'`);
    expect(defs).toContain(`'{b}'`);
    expect(defs).toContain(`((data #> '{c}'::text[])), ((data #> '{d,e}'::text[])))`);
    // The new schema applies to the next write at once.
    const write = await admin('POST', '/v1/db/patched', { data: { y: 1 } });
    expect(write.status).toBe(400);
    const removed = await admin('PATCH', '/v1/admin/collections/patched', { schema: null });
    expect((removed.body as { schema: unknown }).schema).toBeNull();
    expect((await admin('POST', '/v1/db/patched', { data: { y: 1 } })).status).toBe(201);
    const badRule = await admin('PATCH', '/v1/admin/collections/patched', { rules: { read: '((' } });
    expect(badRule.status).toBe(400);
    expect(errorCode(badRule.body)).toBe('INVALID_RULE');
    expect((await admin('PATCH', '/v1/admin/collections/nope', { rules: {} })).status).toBe(404);
  });

  it('DELETE drops the table and its documents', async () => {
    await admin('POST', '/v1/admin/collections', { name: 'doomed' });
    await admin('POST', '/v1/db/doomed', { id: 'x', data: {} });
    expect((await admin('DELETE', '/v1/admin/collections/doomed')).status).toBe(204);
    const { rows } = await server.sql.query(`SELECT to_regclass('basalt_data.doomed') AS t`);
    expect(rows[0].t).toBeNull();
    expect((await admin('GET', '/v1/db/doomed/x')).status).toBe(404);
    expect((await admin('DELETE', '/v1/admin/collections/doomed')).status).toBe(404);
    // The name is free again.
    expect((await admin('POST', '/v1/admin/collections', { name: 'doomed' })).status).toBe(201);
    expect((await admin('GET', '/v1/db/doomed/x')).status).toBe(404);
  });

  it('concurrent creates of one name: one wins, the others get 409', async () => {
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => admin('POST', '/v1/admin/collections', { name: 'raced' })),
    );
    expect(responses.map((r) => r.status).sort()).toEqual([201, 409, 409, 409, 409]);
  });
});

describe('several instances', () => {
  it('a rule change made on one instance applies on another without a restart', async () => {
    const other = await startTestApp(server.database);
    try {
      await admin('POST', '/v1/admin/collections', { name: 'shared', rules: { read: 'false' } });
      await admin('POST', '/v1/db/shared', { id: 's1', data: {} });
      // The other instance caches the rule that hides the document.
      const before = await request(other.url, 'GET', '/v1/db/shared/s1', { token: user.token });
      expect(before.status).toBe(404);
      await admin('PATCH', '/v1/admin/collections/shared', { rules: { read: 'auth != null' } });
      let status = 0;
      for (let i = 0; i < 200 && status !== 200; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        status = (await request(other.url, 'GET', '/v1/db/shared/s1', { token: user.token })).status;
      }
      expect(status).toBe(200);
      // A drop on one instance is a 404 on the other.
      await admin('DELETE', '/v1/admin/collections/shared');
      const after = await request(other.url, 'GET', '/v1/db/shared/s1', { token: other.serviceKey });
      expect(after.status).toBe(404);
    } finally {
      await other.close();
    }
  });
});
