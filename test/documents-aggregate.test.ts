import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { signUp, type SignedUp } from './auth-helpers.js';
import { createCollection, errorCode, request, useTestApp } from './helpers.js';
import type { Doc } from './documents-support.js';

const server = useTestApp();

/** A small seeded generator (mulberry32), so a failure names a seed that reproduces it. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
  };
}

const MISSING = Symbol('missing');
type Generated = unknown | typeof MISSING;

interface Group {
  key: Record<string, unknown>;
  values: Record<string, number | null>;
}

function randomData(rand: ReturnType<typeof generator>): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  const set = (name: string, value: Generated) => {
    if (value !== MISSING) data[name] = value;
  };
  set('cat', rand.pick(['a', 'b', 'c', null, MISSING, 1, true]));
  set('sub', rand.pick(['x', 'y', MISSING]));
  set(
    'price',
    rand.pick([
      () => Math.round(rand.next() * 10000) / 100,
      () => -rand.int(50),
      () => String(rand.int(9)),
      () => null,
      () => MISSING,
      () => rand.int(1000),
    ])(),
  );
  set('qty', rand.pick([() => rand.int(20), () => MISSING, () => 'many', () => [1, 2]])());
  set('public', rand.pick([true, false, MISSING]));
  return data;
}

const AGGREGATES = {
  n: ['count'],
  priced: ['count', 'price'],
  total: ['sum', 'price'],
  mean: ['avg', 'price'],
  least: ['min', 'qty'],
  most: ['max', 'price'],
};

/** The same aggregation computed in JavaScript over documents. */
function computeGroups(docs: Doc[], groupBy: string[]): Group[] {
  const groups = new Map<string, { key: Record<string, unknown>; docs: Doc[] }>();
  for (const doc of docs) {
    const key: Record<string, unknown> = {};
    for (const path of groupBy) key[path] = (doc.data as Record<string, unknown>)[path] ?? null;
    const id = JSON.stringify(groupBy.map((path) => key[path]));
    const group = groups.get(id) ?? { key, docs: [] };
    group.docs.push(doc);
    groups.set(id, group);
  }
  return [...groups.values()].map(({ key, docs: members }) => {
    const numbers = (path: string) =>
      members
        .map((doc) => (doc.data as Record<string, unknown>)[path])
        .filter((value): value is number => typeof value === 'number');
    const prices = numbers('price');
    const qtys = numbers('qty');
    const sum = prices.reduce((a, b) => a + b, 0);
    return {
      key,
      values: {
        n: members.length,
        priced: members.filter((doc) => ((doc.data as Record<string, unknown>).price ?? null) !== null).length,
        total: prices.length > 0 ? sum : null,
        mean: prices.length > 0 ? sum / prices.length : null,
        least: qtys.length > 0 ? Math.min(...qtys) : null,
        most: prices.length > 0 ? Math.max(...prices) : null,
      },
    };
  });
}

async function allDocs(token: string | undefined, where: unknown[]): Promise<Doc[]> {
  const docs: Doc[] = [];
  let after: string | null = null;
  do {
    const page = await request(server.url, 'POST', '/v1/db/items/query', {
      token,
      body: { where, limit: 1000, ...(after ? { after } : {}) },
    });
    expect(page.status, page.text).toBe(200);
    const body = page.body as { docs: Doc[]; next_cursor: string | null };
    docs.push(...body.docs);
    after = body.next_cursor;
  } while (after);
  return docs;
}

const WHERES: unknown[][] = [
  [],
  [['sub', '==', 'x']],
  [['price', '>', 10]],
  [
    {
      or: [
        ['cat', '==', 'a'],
        ['qty', '<', 5],
      ],
    },
  ],
  [['public', '==', true]],
  [['cat', 'in', ['a', 'b', null]]],
];

/** The plan nodes of an EXPLAIN (FORMAT JSON), depth first. */
function planNodes(plan: Record<string, unknown>): Array<Record<string, unknown>> {
  const children = (plan.Plans as Array<Record<string, unknown>> | undefined) ?? [];
  return [plan, ...children.flatMap(planNodes)];
}

/** Runs `work` in a transaction of its own with these settings (SET LOCAL …), rolled back after. */
async function withSettings<T>(sql: pg.Client, settings: string, work: () => Promise<T>): Promise<T> {
  await sql.query(`BEGIN; ${settings}`);
  try {
    return await work();
  } finally {
    await sql.query('ROLLBACK');
  }
}

type Statement = { text: string; values: unknown[] };

async function rowsOf(sql: pg.Client, settings: string, statement: Statement): Promise<unknown[]> {
  return withSettings(sql, settings, async () => (await sql.query(statement.text, statement.values)).rows);
}

async function planOf(sql: pg.Client, statement: Statement): Promise<Array<Record<string, unknown>>> {
  const result = await sql.query<{ 'QUERY PLAN': Array<{ Plan: Record<string, unknown> }> }>(
    `EXPLAIN (FORMAT JSON) ${statement.text}`,
    statement.values,
  );
  return planNodes(result.rows[0]!['QUERY PLAN'][0]!.Plan);
}

describe('aggregate', () => {
  let alice: SignedUp;
  let bob: SignedUp;

  it('equals a JavaScript computation over what query returns, for random documents, queries and callers', async () => {
    await createCollection(server, {
      name: 'items',
      rules: { read: 'doc.data.public == true || doc.owner == auth.uid', create: 'auth != null' },
    });
    alice = await signUp(server.url);
    bob = await signUp(server.url);
    const rand = generator(20261207);
    const ops = Array.from({ length: 300 }, () => ({
      op: 'create' as const,
      collection: 'items',
      data: randomData(rand),
      owner: rand.pick([alice.user.id, bob.user.id, null]),
    }));
    const batch = await request(server.url, 'POST', '/v1/db/batch', { token: server.serviceKey, body: { ops } });
    expect(batch.status, batch.text).toBe(200);

    const callers: Array<[string, string | undefined]> = [
      ['alice', alice.token],
      ['bob', bob.token],
      ['public', undefined],
      ['service', server.serviceKey],
    ];
    for (let round = 0; round < 24; round++) {
      const where = rand.pick(WHERES);
      const groupBy = rand.pick([[], ['cat'], ['sub'], ['cat', 'sub']]);
      const [who, token] = rand.pick(callers);
      const label = `round ${round}: ${who} where=${JSON.stringify(where)} group_by=${JSON.stringify(groupBy)}`;
      const result = await request(server.url, 'POST', '/v1/db/items/aggregate', {
        token,
        body: { where, group_by: groupBy, aggregates: AGGREGATES, limit: 1000 },
      });
      expect(result.status, `${label}: ${result.text}`).toBe(200);
      const actual = (result.body as { groups: Group[] }).groups;
      const expected = computeGroups(await allDocs(token, where), groupBy);
      if (groupBy.length === 0 && expected.length === 0) {
        // No readable document: one group of zeros and nulls, as SQL answers.
        expect(actual, label).toEqual([
          { key: {}, values: { n: 0, priced: 0, total: null, mean: null, least: null, most: null } },
        ]);
        continue;
      }
      expect(actual.length, label).toBe(expected.length);
      const byKey = new Map(actual.map((group) => [JSON.stringify(group.key), group]));
      for (const group of expected) {
        const found = byKey.get(JSON.stringify(group.key));
        expect(found, `${label}: group ${JSON.stringify(group.key)}`).toBeDefined();
        for (const [alias, value] of Object.entries(group.values)) {
          const got = found?.values[alias];
          if (value === null || got === null) expect(got, `${label} ${alias}`).toBe(value);
          else expect(got, `${label} ${alias}`).toBeCloseTo(value, 6);
        }
      }
    }
  });

  it('orders by an alias or a key, limits, and groups on system fields', async () => {
    const top = await request(server.url, 'POST', '/v1/db/items/aggregate', {
      token: server.serviceKey,
      body: { group_by: ['cat'], aggregates: { n: ['count'] }, order_by: [['n', 'desc']], limit: 2 },
    });
    expect(top.status, top.text).toBe(200);
    const groups = (top.body as { groups: Group[] }).groups;
    expect(groups).toHaveLength(2);
    expect(groups[0]?.values.n).toBeGreaterThanOrEqual(groups[1]?.values.n ?? 0);
    const owners = await request(server.url, 'POST', '/v1/db/items/aggregate', {
      token: server.serviceKey,
      body: { group_by: ['owner'], aggregates: { n: ['count'] } },
    });
    const keys = (owners.body as { groups: Group[] }).groups.map((group) => group.key.owner);
    expect(keys.sort()).toEqual([alice.user.id, bob.user.id, null].sort());
  });

  it('runs as a parallel plan on a large collection, with the same groups as without one', async () => {
    // Large enough (80,000 documents, some 1,300 pages) for Postgres' default thresholds to
    // plan parallel workers; keys and values of every kind, missing and null included.
    await createCollection(server, {
      name: 'large',
      // A membership test too: `in` over a list read from the document.
      rules: { read: 'doc.data.public == true || doc.owner == auth.uid || auth.uid in doc.data.members' },
      indexes: ['cat'],
    });
    const user = await signUp(server.url);
    // Without the change-log and stamping triggers: 80,000 change rows would be most of the test's time.
    await server.sql.query('SET session_replication_role = replica');
    await server.sql.query(
      `INSERT INTO basalt_data.large (id, owner, data)
       SELECT 'd' || i, CASE WHEN i % 5 = 0 THEN $1 END,
         jsonb_strip_nulls(jsonb_build_object('public', i % 3 = 0, 'sub', CASE WHEN i % 4 < 3 THEN 'x' || (i % 4) END,
           'members', CASE WHEN i % 11 = 0 THEN jsonb_build_array('someone', $1) END, 'tags', jsonb_build_array('t' || (i % 3))))
         || CASE i % 7 WHEN 0 THEN '{"cat": "a"}' WHEN 1 THEN '{"cat": "b"}' WHEN 2 THEN '{"cat": null}' WHEN 3 THEN '{}'
                       WHEN 4 THEN '{"cat": 1}' WHEN 5 THEN '{"cat": 1.0}' ELSE '{"cat": true}' END::jsonb
         || CASE i % 6 WHEN 0 THEN jsonb_build_object('price', i / 100.0) WHEN 1 THEN jsonb_build_object('price', -i)
                       WHEN 2 THEN '{"price": "12"}' WHEN 3 THEN '{"price": null}' WHEN 4 THEN '{}'
                       ELSE jsonb_build_object('price', i % 1000) END
       FROM generate_series(1, 80000) AS i`,
      [user.user.id],
    );
    await server.sql.query('RESET session_replication_role');
    await server.sql.query('ANALYZE basalt_data.large');

    // The statements Basalt sends, as it sends them.
    const pool = server.app.platform.db.pool;
    const sent: Statement[] = [];
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    pool.query = ((...args: unknown[]) => {
      if (typeof args[0] === 'string' && args[0].includes('basalt_data."large"') && args[0].includes('GROUP BY')) {
        sent.push({ text: args[0], values: (args[1] as unknown[] | undefined) ?? [] });
      }
      return query(...args);
    }) as typeof pool.query;
    const answers: Group[][] = [];
    try {
      for (const [token, groupBy, where] of [
        [server.serviceKey, ['cat'], []],
        [user.token, ['cat'], []],
        [server.serviceKey, ['cat', 'sub'], [['tags', 'array-contains', 't1']]],
      ] as const) {
        const result = await request(server.url, 'POST', '/v1/db/large/aggregate', {
          token,
          body: { where, group_by: groupBy, aggregates: AGGREGATES, limit: 1000 },
        });
        expect(result.status, result.text).toBe(200);
        answers.push((result.body as { groups: Group[] }).groups);
      }
    } finally {
      pool.query = query as typeof pool.query;
    }
    expect(sent).toHaveLength(3);

    for (const [i, statement] of sent.entries()) {
      // Postgres' own settings, as Basalt's connections have them: partial aggregates in workers.
      const plan = await planOf(server.sql, statement);
      const gather = plan.find((node) => node['Node Type'] === 'Gather' || node['Node Type'] === 'Gather Merge');
      expect(gather?.['Workers Planned'], statement.text).toBeGreaterThanOrEqual(1);
      expect(plan.some((node) => node['Node Type'] === 'Aggregate' && node['Partial Mode'] === 'Partial')).toBe(true);
      const parallel = await rowsOf(server.sql, 'SET LOCAL parallel_leader_participation = off', statement);
      const serial = await rowsOf(server.sql, 'SET LOCAL max_parallel_workers_per_gather = 0', statement);
      expect(parallel).toEqual(serial);
      expect(answers[i]!.length).toBe(serial.length);
    }
    // A missing cat and a null one are one group, 1 and 1.0 one key; the means as JavaScript computes them.
    const mean = (cats: number[]) => {
      const prices: number[] = [];
      let priced = 0;
      for (let i = 1; i <= 80000; i++) {
        if (!cats.includes(i % 7)) continue;
        if (i % 6 !== 3 && i % 6 !== 4) priced++;
        if (i % 6 === 0) prices.push(i / 100);
        else if (i % 6 === 1) prices.push(-i);
        else if (i % 6 === 5) prices.push(i % 1000);
      }
      return { priced, mean: prices.reduce((sum, price) => sum + price, 0) / prices.length };
    };
    const byCat = new Map(answers[0]!.map((group) => [JSON.stringify(group.key.cat), group.values]));
    expect([...byCat.keys()].sort()).toEqual(['"a"', '"b"', '1', 'null', 'true']);
    for (const [key, cats] of [
      ['null', [2, 3]],
      ['"a"', [0]],
      ['1', [4, 5]],
    ] as const) {
      const expected = mean([...cats]);
      expect(byCat.get(key)?.priced, key).toBe(expected.priced);
      expect(byCat.get(key)?.mean, key).toBeCloseTo(expected.mean, 9);
    }
  }, 90_000);

  it('refuses malformed aggregations with 400', async () => {
    const bad: unknown[] = [
      {},
      { aggregates: {} },
      { aggregates: { n: ['median', 'price'] } },
      { aggregates: { n: ['sum'] } },
      { aggregates: { 'bad alias': ['count'] } },
      { aggregates: { n: ['count'] }, limit: 1001 },
      { aggregates: { n: ['count'] }, group_by: ["a'b"] },
      { aggregates: { n: ['count'] }, order_by: [['nope', 'asc']] },
      { aggregates: { n: ['count'] }, group_by: ['cat', 'cat'] },
    ];
    for (const body of bad) {
      const result = await request(server.url, 'POST', '/v1/db/items/aggregate', { token: server.serviceKey, body });
      expect(result.status, JSON.stringify(body)).toBe(400);
      expect(errorCode(result.body)).toBe('INVALID_REQUEST');
    }
    await createCollection(server, { name: 'closed', rules: {} });
    const forbidden = await request(server.url, 'POST', '/v1/db/closed/aggregate', {
      token: alice.token,
      body: { aggregates: { n: ['count'] } },
    });
    expect(forbidden.status).toBe(403);
  });
});
