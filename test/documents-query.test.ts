import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseQuery, runQueryInMemory, type Document, type JsonValue } from '../server/modules/documents/query.js';
import { errorCode, request, useTestApp } from './helpers.js';
import { createCollection, type Doc } from './documents-support.js';

const server = useTestApp();

function svc(method: string, path: string, body?: unknown) {
  return request(server.url, method, path, { body, token: server.serviceKey });
}

async function query(
  collection: string,
  body: Record<string, unknown>,
): Promise<{ docs: Doc[]; next_cursor: string | null }> {
  const response = await svc('POST', `/v1/db/${collection}/query`, body);
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body as { docs: Doc[]; next_cursor: string | null };
}

async function ids(collection: string, body: Record<string, unknown>): Promise<string[]> {
  return (await query(collection, body)).docs.map((doc) => doc.id);
}

async function seed(collection: string, docs: Array<{ id: string; data: Record<string, unknown> }>): Promise<void> {
  const response = await svc('POST', '/v1/db/batch', {
    ops: docs.map((doc) => ({ op: 'set', collection, id: doc.id, data: doc.data })),
  });
  expect(response.status, JSON.stringify(response.body)).toBe(200);
}

beforeAll(async () => {
  await createCollection(server, { name: 'people', indexes: ['age', ['address.city', 'age']] });
  await seed('people', [
    { id: 'ann', data: { name: 'Ann', age: 31, tags: ['a', 'b'], address: { city: 'Oslo' }, active: true } },
    { id: 'bob', data: { name: 'Bob', age: 25, tags: ['b'], address: { city: 'Rome' }, active: false } },
    { id: 'cid', data: { name: 'Cid', age: '40', tags: [], address: { city: 'Oslo' } } },
    { id: 'dee', data: { name: 'Dee', age: null, tags: ['c', { k: 1 }], address: { city: 'Lima', zip: 1 } } },
    { id: 'eve', data: { name: 'eve', age: 25.5, active: true, address: null } },
    { id: 'fay', data: { name: 'Fay', age: 31, tags: 'a' } },
  ]);
});

describe('operators', () => {
  it('== and != compare deeply and by type', async () => {
    expect(await ids('people', { where: [['age', '==', 31]] })).toEqual(['ann', 'fay']);
    expect(await ids('people', { where: [['age', '==', '40']] })).toEqual(['cid']);
    expect(await ids('people', { where: [['age', '==', 40]] })).toEqual([]);
    expect(await ids('people', { where: [['age', '==', null]] })).toEqual(['dee']);
    expect(await ids('people', { where: [['address', '==', { zip: 1, city: 'Lima' }]] })).toEqual(['dee']);
    expect(await ids('people', { where: [['tags', '==', ['a', 'b']]] })).toEqual(['ann']);
    // != matches present fields that differ, null included; missing fields never match.
    expect(await ids('people', { where: [['active', '!=', true]] })).toEqual(['bob']);
    expect(await ids('people', { where: [['age', '!=', 31]] })).toEqual(['bob', 'cid', 'dee', 'eve']);
  });

  it('range operators compare only values of the same type', async () => {
    expect(await ids('people', { where: [['age', '>', 25]] })).toEqual(['ann', 'eve', 'fay']);
    expect(await ids('people', { where: [['age', '>=', 25]] })).toEqual(['ann', 'bob', 'eve', 'fay']);
    expect(await ids('people', { where: [['age', '<', 31]] })).toEqual(['bob', 'eve']);
    expect(await ids('people', { where: [['age', '<=', '5']] })).toEqual(['cid']);
    expect(await ids('people', { where: [['name', '>', 'C']] })).toEqual(['cid', 'dee', 'eve', 'fay']);
    // Code point order: lower case after upper case.
    expect(await ids('people', { where: [['name', '>', 'Z']] })).toEqual(['eve']);
    expect(await ids('people', { where: [['active', '<', true]] })).toEqual(['bob']);
  });

  it('in and not-in', async () => {
    expect(await ids('people', { where: [['age', 'in', [25, '40', null]]] })).toEqual(['bob', 'cid', 'dee']);
    // not-in skips missing and null fields.
    expect(await ids('people', { where: [['age', 'not-in', [31, 25]]] })).toEqual(['cid', 'eve']);
    expect(await ids('people', { where: [['id', 'in', ['ann', 'eve', 'zzz']]] })).toEqual(['ann', 'eve']);
    expect(await ids('people', { where: [['id', 'not-in', ['ann', 'eve']]] })).toEqual(['bob', 'cid', 'dee', 'fay']);
  });

  it('array-contains and array-contains-any match elements exactly', async () => {
    expect(await ids('people', { where: [['tags', 'array-contains', 'b']] })).toEqual(['ann', 'bob']);
    expect(await ids('people', { where: [['tags', 'array-contains', { k: 1 }]] })).toEqual(['dee']);
    expect(await ids('people', { where: [['tags', 'array-contains', 'a']] })).toEqual(['ann']);
    expect(await ids('people', { where: [['tags', 'array-contains-any', ['c', 'a']]] })).toEqual(['ann', 'dee']);
  });

  it('exists', async () => {
    expect(await ids('people', { where: [['active', 'exists', true]] })).toEqual(['ann', 'bob', 'eve']);
    expect(await ids('people', { where: [['tags', 'exists', false]] })).toEqual(['eve']);
    expect(await ids('people', { where: [['address.zip', 'exists', true]] })).toEqual(['dee']);
  });

  it('dotted paths, AND, or-groups and nested and-groups', async () => {
    expect(await ids('people', { where: [['address.city', '==', 'Oslo']] })).toEqual(['ann', 'cid']);
    expect(
      await ids('people', {
        where: [
          ['address.city', '==', 'Oslo'],
          ['age', '==', 31],
        ],
      }),
    ).toEqual(['ann']);
    expect(
      await ids('people', {
        where: [
          {
            or: [
              ['address.city', '==', 'Rome'],
              ['name', '==', 'eve'],
            ],
          },
        ],
      }),
    ).toEqual(['bob', 'eve']);
    expect(
      await ids('people', {
        where: [
          ['age', 'exists', true],
          {
            or: [
              {
                and: [
                  ['age', '>', 30],
                  ['tags', 'exists', true],
                ],
              },
              ['id', '==', 'bob'],
            ],
          },
        ],
      }),
    ).toEqual(['ann', 'bob', 'fay']);
  });

  it('system fields id, owner, created_at and updated_at', async () => {
    expect(await ids('people', { where: [['id', '>=', 'dee']] })).toEqual(['dee', 'eve', 'fay']);
    expect(await ids('people', { where: [['owner', '==', null]] })).toHaveLength(6);
    expect(await ids('people', { where: [['owner', '!=', null]] })).toEqual([]);
    const all = (await query('people', {})).docs;
    const created = (all[0] as Doc).created_at;
    expect(await ids('people', { where: [['created_at', '==', created]] })).toHaveLength(6);
    expect(await ids('people', { where: [['created_at', '>', created]] })).toEqual([]);
    expect(await ids('people', { where: [['updated_at', '<=', '2999-01-01T00:00:00+02:00']] })).toHaveLength(6);
    const bad = await svc('POST', '/v1/db/people/query', { where: [['created_at', '>', 'yesterday']] });
    expect(bad.status).toBe(400);
  });
});

describe('ordering', () => {
  it('orders across JSON types: missing < null < booleans < numbers < strings < arrays < objects', async () => {
    await createCollection(server, { name: 'mixed' });
    await seed('mixed', [
      { id: 'm-obj', data: { v: { a: 1 } } },
      { id: 'm-arr', data: { v: [1] } },
      { id: 'm-str-b', data: { v: 'b' } },
      { id: 'm-str-B', data: { v: 'B' } },
      { id: 'm-num-10', data: { v: 10 } },
      { id: 'm-num-2', data: { v: 2 } },
      { id: 'm-num-neg', data: { v: -2.5 } },
      { id: 'm-true', data: { v: true } },
      { id: 'm-false', data: { v: false } },
      { id: 'm-null', data: { v: null } },
      { id: 'm-missing', data: {} },
    ]);
    const asc = [
      'm-missing',
      'm-null',
      'm-false',
      'm-true',
      'm-num-neg',
      'm-num-2',
      'm-num-10',
      'm-str-B',
      'm-str-b',
      'm-arr',
      'm-obj',
    ];
    expect(await ids('mixed', { order_by: [['v', 'asc']] })).toEqual(asc);
    expect(await ids('mixed', { order_by: [['v', 'desc']] })).toEqual([...asc].reverse());
  });

  it('orders by several fields and breaks ties by id in the last direction', async () => {
    expect(
      await ids('people', {
        order_by: [
          ['age', 'desc'],
          ['name', 'asc'],
        ],
      }),
    ).toEqual(['cid', 'ann', 'fay', 'eve', 'bob', 'dee']);
    // eve's address is null, so address.city is missing for her as for fay: a tie, broken by id.
    expect(await ids('people', { order_by: [['address.city', 'asc']] })).toEqual([
      'eve',
      'fay',
      'dee',
      'ann',
      'cid',
      'bob',
    ]);
    expect(await ids('people', { order_by: [['age', 'asc']], limit: 2 })).toEqual(['dee', 'bob']);
    expect(await ids('people', { order_by: [['id', 'desc']], limit: 2 })).toEqual(['fay', 'eve']);
    expect(await ids('people', { order_by: ['owner', 'created_at'] })).toEqual([
      'ann',
      'bob',
      'cid',
      'dee',
      'eve',
      'fay',
    ]);
  });
});

describe('limits and validation', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['limit above 1000', { limit: 1001 }],
    ['limit 0', { limit: 0 }],
    ['limit not integer', { limit: 1.5 }],
    ['limit as string', { limit: '10' }],
    ['path deeper than 20', { where: [[Array.from({ length: 21 }, () => 'a').join('.'), '==', 1]] }],
    ['in with 101 values', { where: [['a', 'in', Array.from({ length: 101 }, (_, i) => i)]] }],
    ['not-in with 101 values', { where: [['a', 'not-in', Array.from({ length: 101 }, (_, i) => i)]] }],
    ['array-contains-any with 101', { where: [['a', 'array-contains-any', Array.from({ length: 101 }, (_, i) => i)]] }],
    ['21 where entries', { where: Array.from({ length: 21 }, () => ['a', '==', 1]) }],
    ['21 conditions in or-groups', { where: [{ or: Array.from({ length: 21 }, () => ['a', '==', 1]) }] }],
    ['unknown operator', { where: [['a', 'like', 'x']] }],
    ['empty in list', { where: [['a', 'in', []]] }],
    ['in without a list', { where: [['a', 'in', 'x']] }],
    ['range on an object', { where: [['a', '<', { x: 1 }]] }],
    ['exists with a string', { where: [['a', 'exists', 'yes']] }],
    ['$ field name', { where: [['$a', '==', 1]] }],
    ['array op on id', { where: [['id', 'array-contains', 'x']] }],
    ['id compared with a number', { where: [['id', '==', 1]] }],
    ['short condition', { where: [['a', '==']] }],
    ['where not a list', { where: { a: 1 } }],
    ['bad group', { where: [{ nor: [] }] }],
    ['empty group', { where: [{ or: [] }] }],
    ['bad direction', { order_by: [['a', 'up']] }],
    [
      'order_by twice',
      {
        order_by: [
          ['a', 'asc'],
          ['a', 'desc'],
        ],
      },
    ],
    ['unknown key', { where: [], sort: [] }],
    ['garbage cursor', { after: 'not*base64' }],
    ['cursor of another order', { after: Buffer.from('{"v":[[1]],"id":"x"}').toString('base64url') }],
  ];
  for (const [name, body] of cases) {
    it(`refuses ${name} with 400 INVALID_REQUEST`, async () => {
      const response = await svc('POST', '/v1/db/people/query', body);
      expect(response.status, JSON.stringify(response.body)).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    });
  }

  it('accepts limit 1000, a 20-segment path, 100 values and 20 conditions', async () => {
    expect((await svc('POST', '/v1/db/people/query', { limit: 1000 })).status).toBe(200);
    const deep = Array.from({ length: 20 }, () => 'a').join('.');
    expect((await svc('POST', '/v1/db/people/query', { where: [[deep, '==', 1]] })).status).toBe(200);
    const hundred = Array.from({ length: 100 }, (_, i) => i);
    expect((await svc('POST', '/v1/db/people/query', { where: [['age', 'in', hundred]] })).status).toBe(200);
    const twenty = Array.from({ length: 20 }, () => ['age', 'exists', true]);
    expect((await svc('POST', '/v1/db/people/query', { where: twenty })).status).toBe(200);
  });

  it('takes a query or count without a body as the empty query', async () => {
    const page = await request(server.url, 'POST', '/v1/db/people/query', { token: server.serviceKey });
    expect(page.status).toBe(200);
    expect((page.body as { docs: Doc[] }).docs).toHaveLength(6);
    const count = await request(server.url, 'POST', '/v1/db/people/count', { token: server.serviceKey });
    expect(count.body).toEqual({ count: 6 });
  });

  it('count takes where and answers {count}', async () => {
    expect((await svc('POST', '/v1/db/people/count', { where: [['age', '>', 25]] })).body).toEqual({ count: 3 });
    expect((await svc('POST', '/v1/db/people/count', {})).body).toEqual({ count: 6 });
    expect((await svc('POST', '/v1/db/people/count', { where: [['a', 'like', 1]] })).status).toBe(400);
    expect((await svc('POST', '/v1/db/nope/count', {})).status).toBe(404);
  });
});

describe('keyset pagination', () => {
  it('pages with next_cursor until null', async () => {
    const first = await query('people', { order_by: [['age', 'asc']], limit: 4 });
    expect(first.docs.map((doc) => doc.id)).toEqual(['dee', 'bob', 'eve', 'ann']);
    expect(first.next_cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    const second = await query('people', { order_by: [['age', 'asc']], limit: 4, after: first.next_cursor });
    expect(second.docs.map((doc) => doc.id)).toEqual(['fay', 'cid']);
    expect(second.next_cursor).toBeNull();
  });

  it('refuses a cursor made under another order_by of the same length, saying why', async () => {
    const first = await query('people', { order_by: [['age', 'asc']], limit: 2 });
    const cursor = first.next_cursor;
    expect(cursor).not.toBeNull();
    const others = [[['age', 'desc']], [['name', 'asc']], [['created_at', 'asc']]];
    for (const order_by of others) {
      const response = await svc('POST', '/v1/db/people/query', { order_by, after: cursor });
      expect(response.status, JSON.stringify(order_by)).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
      const error = (response.body as { error: { message: string; details: unknown } }).error;
      expect(error.message).toMatch(/another order_by/);
      expect(error.details).toEqual({ field: 'after', reason: 'order_by_mismatch' });
    }
    // The same order still resumes, and so does the same order spelled with its default direction.
    const same = await svc('POST', '/v1/db/people/query', { order_by: [['age']], after: cursor, limit: 2 });
    expect(same.status, JSON.stringify(same.body)).toBe(200);
  });

  it('still takes a cursor made before cursors carried their order', async () => {
    const first = await query('people', { order_by: [['age', 'asc']], limit: 2 });
    const decoded = JSON.parse(Buffer.from(first.next_cursor ?? '', 'base64url').toString('utf8')) as {
      v: unknown;
      id: string;
      o?: string;
    };
    expect(decoded.o).toMatch(/^[A-Za-z0-9_-]{12}$/);
    const legacy = Buffer.from(JSON.stringify({ v: decoded.v, id: decoded.id }), 'utf8').toString('base64url');
    const fresh = await query('people', { order_by: [['age', 'asc']], limit: 4, after: first.next_cursor });
    const old = await query('people', { order_by: [['age', 'asc']], limit: 4, after: legacy });
    expect(old.docs.map((doc) => doc.id)).toEqual(fresh.docs.map((doc) => doc.id));
    expect(old.docs.length).toBeGreaterThan(0);
  });

  it('stays correct while documents are inserted and deleted between pages', async () => {
    await createCollection(server, { name: 'feed' });
    const initial = Array.from({ length: 40 }, (_, i) => ({
      id: `f${String(i).padStart(3, '0')}`,
      data: { n: i * 10 },
    }));
    await seed('feed', initial);
    const seen: Doc[] = [];
    const deleted = new Set<string>();
    const insertedAhead = new Set<string>();
    let cursor: string | null = null;
    let round = 0;
    do {
      const page: { docs: Doc[]; next_cursor: string | null } = await query('feed', {
        order_by: [['n', 'desc']],
        limit: 7,
        after: cursor,
      });
      seen.push(...page.docs);
      cursor = page.next_cursor;
      const last = page.docs.at(-1);
      if (!last || !cursor) break;
      const lastN = last.data.n as number;
      round++;
      // Behind the cursor (already passed): must not show up. Ahead: must show up.
      const behind = { id: `behind-${round}`, data: { n: lastN + 5 } };
      const ahead = { id: `ahead-${round}`, data: { n: lastN - 5 } };
      // Ties on n are ordered by id in the last term's direction (desc here).
      const tie = { id: `a-tie-${round}`, data: { n: lastN } };
      const tieBehind = { id: `z-tie-${round}`, data: { n: lastN } };
      await seed('feed', [behind, ahead, tie, tieBehind]);
      insertedAhead.add(ahead.id).add(tie.id);
      const upcoming = initial.filter((doc) => doc.data.n < lastN - 20 && !deleted.has(doc.id));
      const victim = upcoming[0];
      if (victim) {
        expect((await svc('DELETE', `/v1/db/feed/${victim.id}`)).status).toBe(204);
        deleted.add(victim.id);
      }
      // Concurrent writes while the next page is read.
      await Promise.all([
        svc('PUT', `/v1/db/feed/concurrent-${round}`, { data: { n: lastN + 1000 } }),
        svc('PATCH', `/v1/db/feed/${last.id}`, { data: { touched: true } }),
      ]);
    } while (cursor);
    const seenIds = seen.map((doc) => doc.id);
    expect(new Set(seenIds).size).toBe(seenIds.length);
    expect(
      seenIds.some((id) => id.startsWith('behind-') || id.startsWith('z-tie-') || id.startsWith('concurrent-')),
    ).toBe(false);
    for (const id of insertedAhead) expect(seenIds).toContain(id);
    for (const doc of initial) expect(seenIds.includes(doc.id)).toBe(!deleted.has(doc.id));
    const values = seen.map((doc) => doc.data.n as number);
    expect(values).toEqual([...values].sort((a, b) => b - a));
  });
});

describe('SQL and in-process evaluation agree (realtime relies on it)', () => {
  const pool: JsonValue[] = [
    null,
    true,
    false,
    0,
    1,
    -1.5,
    2,
    10,
    '',
    'a',
    'B',
    'b',
    'ab',
    'é',
    '\u{1F600}',
    '\uFFFD',
    [],
    [1],
    ['a', 1],
    [1, 'a'],
    [[1]],
    {},
    { x: 1 },
    { x: 'a', y: [1] },
  ];
  const value = fc.constantFrom(...pool);
  const fields = ['a', 'b', 'c.d', 'arr'];
  const dataArb = fc.record(
    {
      a: value,
      b: value,
      c: fc.oneof(value, fc.record({ d: value }, { requiredKeys: [] })),
      arr: fc.array(value, { maxLength: 3 }),
    },
    { requiredKeys: [] },
  );
  const scalar = fc.constantFrom<JsonValue>(0, 1, -1.5, 2, 10, '', 'a', 'B', 'b', 'ab', 'é', '\u{1F600}', true, false);
  const path = fc.constantFrom(...fields, 'id', 'owner', 'created_at');
  const condition: fc.Arbitrary<unknown[]> = fc.oneof(
    fc.tuple(fc.constantFrom(...fields), fc.constantFrom('==', '!='), value),
    fc.tuple(fc.constantFrom(...fields), fc.constantFrom('<', '<=', '>', '>='), scalar),
    fc.tuple(
      fc.constantFrom(...fields),
      fc.constantFrom('in', 'not-in', 'array-contains-any'),
      fc.array(value, { minLength: 1, maxLength: 3 }),
    ),
    fc.tuple(fc.constantFrom(...fields), fc.constant('array-contains'), value),
    fc.tuple(fc.constantFrom(...fields), fc.constant('exists'), fc.boolean()),
    fc.tuple(fc.constant('id'), fc.constantFrom('==', '!=', '<', '>=', '>'), fc.constantFrom('d03', 'd10', 'd2', 'x')),
    fc.tuple(fc.constant('owner'), fc.constantFrom('==', '!=', '>'), fc.constantFrom('u1', 'u2')),
    fc.tuple(fc.constant('owner'), fc.constantFrom('==', '!='), fc.constant(null)),
    fc.tuple(fc.constant('owner'), fc.constantFrom('in', 'not-in'), fc.constantFrom(['u1', null], ['u2'])),
  );
  const entry = fc.oneof(
    { weight: 3, arbitrary: condition },
    { weight: 1, arbitrary: fc.array(condition, { minLength: 1, maxLength: 3 }).map((or) => ({ or })) },
  );
  const queryArb = fc.record({
    where: fc.array(entry, { maxLength: 3 }),
    order_by: fc.uniqueArray(fc.tuple(path, fc.constantFrom('asc', 'desc')), {
      maxLength: 2,
      selector: (term) => term[0],
    }),
    limit: fc.integer({ min: 1, max: 7 }),
  });

  let docs: Document[] = [];

  beforeAll(async () => {
    await createCollection(server, { name: 'prop' });
    const data = fc.sample(dataArb, { numRuns: 60, seed: 4242 });
    await seed(
      'prop',
      data.map((d, i) => ({ id: `d${String(i).padStart(2, '0')}`, data: d as Record<string, unknown> })),
    );
    // Some owners (as plain SQL would set them) and a later created_at, to filter and order on.
    await server.sql.query(
      `UPDATE basalt_data.prop SET owner = CASE WHEN id < 'd20' THEN 'u1' WHEN id < 'd40' THEN 'u2' END`,
    );
    await svc('PUT', '/v1/db/prop/late', { data: { a: 1 } });
    docs = (await query('prop', { limit: 1000 })).docs as Document[];
    expect(docs.length).toBe(61);
  });

  it('where, order_by and limit give the same documents in the same order', async () => {
    await fc.assert(
      fc.asyncProperty(queryArb, async (body) => {
        const response = await svc('POST', '/v1/db/prop/query', body);
        expect(response.status, JSON.stringify(response.body)).toBe(200);
        const fromSql = (response.body as { docs: Doc[] }).docs.map((doc) => doc.id);
        const inMemory = runQueryInMemory(parseQuery(body), docs).map((doc) => doc.id);
        expect(fromSql).toEqual(inMemory);
        const count = await svc('POST', '/v1/db/prop/count', { where: body.where });
        const all = runQueryInMemory({ ...parseQuery(body), limit: 1000 }, docs);
        expect((count.body as { count: number }).count).toBe(all.length);
      }),
      { numRuns: 150, seed: 7 },
    );
  }, 180_000);

  it('following cursors visits every match once, in order', async () => {
    await fc.assert(
      fc.asyncProperty(queryArb, async (body) => {
        const expected = runQueryInMemory({ ...parseQuery(body), limit: 1000 }, docs).map((doc) => doc.id);
        const visited: string[] = [];
        let after: string | null = null;
        for (let pages = 0; pages < 100; pages++) {
          const page: { docs: Doc[]; next_cursor: string | null } = await query('prop', { ...body, after });
          visited.push(...page.docs.map((doc) => doc.id));
          after = page.next_cursor;
          if (!after) break;
        }
        expect(visited).toEqual(expected);
      }),
      { numRuns: 40, seed: 11 },
    );
  }, 180_000);
});
