/**
 * The queries suite (`npm run bench -- queries`): full-text search, a group_by aggregation
 * (count + avg), and a 20-document query with one expanded reference beside the same query
 * without it — each over one connection (latency, not throughput), over 100,000 documents,
 * through Basalt and as the raw SQL Basalt runs for it, sent straight to Postgres over one
 * connection (the floor no HTTP server can beat).
 *
 * The raw statements are the SQL one would write for these requests without Basalt — the
 * statements Basalt itself ran when the suite was written (the search column's name comes
 * from the same module). They are kept as they were, the reference "without Basalt": Basalt
 * has since chosen a search's page before reading its documents and tests an aggregate's
 * numbers once per row (docs/documents.md), so it can be faster than this raw side.
 */
import pg from 'pg';
import { round, runLoad, type LoadRequest, type LoadResult } from './load.js';
import { log, measureWith, type BenchFigures, type TargetFigures } from './documents.js';
import { benchLine } from './report.js';
import type { Settings } from './settings.js';
import { call, settle, startTarget, type RunningTarget } from './targets.js';
import { SEARCH_COLUMN } from '../server/modules/documents/search.js';

const QUERY_BENCHES = ['queries.search', 'queries.aggregate', 'queries.expand', 'queries.no_expand'] as const;
type QueryBench = (typeof QUERY_BENCHES)[number];

const WORDS = ['tent', 'stove', 'camp', 'river', 'trail', 'summit', 'lake', 'forest', 'bridge', 'valley'];
const SEARCH = { fields: ['title', 'body'], language: 'english' };
const AUTHORS = 1000;

function randomInt(below: number): number {
  return Math.floor(Math.random() * below);
}

/** The HTTP request of each benchmark (Basalt). */
function requestFor(bench: QueryBench, settings: Settings): LoadRequest {
  const json = { 'content-type': 'application/json' };
  const body = (make: () => unknown): LoadRequest => ({
    method: 'POST',
    path: bench === 'queries.aggregate' ? '/v1/db/items/aggregate' : '/v1/db/items/query',
    headers: json,
    setupRequest: (request) => ({ ...request, body: JSON.stringify(make()) }),
  });
  switch (bench) {
    case 'queries.search':
      return body(() => ({ search: `${WORDS[randomInt(WORDS.length)]} ${WORDS[randomInt(WORDS.length)]}`, limit: 20 }));
    case 'queries.aggregate':
      return body(() => ({ group_by: ['kind'], aggregates: { n: ['count'], mean: ['avg', 'n'] } }));
    case 'queries.expand':
    case 'queries.no_expand':
      return body(() => ({
        where: [['group', '==', `g${randomInt(settings.groups)}`]],
        order_by: [['id', 'asc']],
        limit: 20,
        ...(bench === 'queries.expand' ? { expand: ['author'] } : {}),
      }));
  }
}

const COLUMNS = `d.id, d.owner, d.version, to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
  to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at, d.data`;

/** The SQL Basalt runs for each benchmark (service key: no read rule), as statements with fresh values. */
function rawStatements(bench: QueryBench, settings: Settings): Array<{ text: string; values: unknown[] }> {
  const vector = `d."${SEARCH_COLUMN}"`;
  const page = (group: string) => ({
    text: `SELECT ${COLUMNS} FROM basalt_data.items d WHERE (d.data #> '{group}') = $1::jsonb ORDER BY d.id ASC LIMIT 21`,
    values: [JSON.stringify(group)],
  });
  switch (bench) {
    case 'queries.search': {
      const text = `${WORDS[randomInt(WORDS.length)]} ${WORDS[randomInt(WORDS.length)]}`;
      const query = `websearch_to_tsquery('english'::regconfig, $1::text)`;
      return [
        {
          text: `SELECT ${COLUMNS}, ts_rank(${vector}, ${query}) AS x0 FROM basalt_data.items d
                 WHERE (${vector} @@ ${query}) ORDER BY ts_rank(${vector}, ${query}) DESC, d.id ASC LIMIT 21`,
          values: [text],
        },
      ];
    }
    case 'queries.aggregate':
      return [
        {
          // Grouped by the stored key first (the indexed expression, whose statistics tell
          // Postgres there are 10 groups), then merged into the wire's groups (aggregate.ts).
          text: `SELECT coalesce(g.r0, 'null'::jsonb) AS k0, sum(g.a0) AS v0, sum(g.a1) / nullif(sum(g.b1), 0) AS v1
                 FROM (SELECT (d.data #> '{kind}') AS r0, count(*) AS a0,
                         sum((CASE WHEN jsonb_typeof((d.data #> '{n}')) = 'number' THEN ((d.data #> '{n}'))::numeric END)) AS a1,
                         count((CASE WHEN jsonb_typeof((d.data #> '{n}')) = 'number' THEN ((d.data #> '{n}'))::numeric END)) AS b1
                       FROM basalt_data.items d GROUP BY 1) g
                 GROUP BY 1 ORDER BY k0 ASC LIMIT 100`,
          values: [],
        },
      ];
    case 'queries.no_expand':
      return [page(`g${randomInt(settings.groups)}`)];
    case 'queries.expand':
      return [
        page(`g${randomInt(settings.groups)}`),
        // The second level: the page's authors in one statement (ids as the page names them).
        {
          text: `(SELECT $1::text AS collection, ${COLUMNS} FROM basalt_data.authors d WHERE d.id = ANY($2::text[]))`,
          values: ['authors', Array.from({ length: 20 }, () => `a${randomInt(AUTHORS)}`)],
        },
      ];
  }
}

/** The raw SQL in a closed loop over one connection, timed like the HTTP runs. */
export async function rawLoop(
  url: string,
  bench: QueryBench,
  settings: Settings,
  seconds: number,
): Promise<LoadResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const latencies: number[] = [];
  try {
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      const started = process.hrtime.bigint();
      for (const statement of rawStatements(bench, settings)) await client.query(statement.text, statement.values);
      latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
  } finally {
    await client.end();
  }
  latencies.sort((a, b) => a - b);
  const at = (p: number) =>
    round(latencies[Math.min(latencies.length - 1, Math.ceil(p * latencies.length) - 1)] ?? NaN);
  return {
    rps: round(latencies.length / seconds, 1),
    p50_ms: at(0.5),
    p90_ms: at(0.9),
    p99_ms: at(0.99),
    requests: latencies.length,
    failed: 0,
  };
}

export async function setUp(target: RunningTarget, settings: Settings): Promise<void> {
  await call(target, 'POST', '/v1/admin/collections', { name: 'authors', rules: { read: 'true' } });
  await call(target, 'POST', '/v1/admin/collections', {
    name: 'items',
    rules: { read: 'true' },
    indexes: ['group', 'kind'],
    refs: { author: 'authors' },
    search: SEARCH,
  });
  await target.db.sql(
    `INSERT INTO basalt_data.authors (id, owner, data)
     SELECT 'a' || i, NULL, jsonb_build_object('name', 'author ' || i) FROM generate_series(0, $1 - 1) AS i`,
    [AUTHORS],
  );
  // Titles and bodies of words drawn from a small vocabulary, so every search finds pages of hits.
  await target.db.sql(
    `INSERT INTO basalt_data.items (id, owner, data)
     SELECT 'd' || i, NULL, jsonb_build_object(
       'group', 'g' || (i % $2), 'kind', 'k' || (i % 10), 'n', i, 'author', 'a' || (i % $3),
       'title', (ARRAY[${WORDS.map((word) => `'${word}'`).join(',')}])[1 + (i % 10)] || ' ' || 'note ' || i,
       'body', (ARRAY[${WORDS.map((word) => `'${word}'`).join(',')}])[1 + ((i / 10) % 10)] || ' by the '
               || (ARRAY[${WORDS.map((word) => `'${word}'`).join(',')}])[1 + ((i / 100) % 10)])
     FROM generate_series(0, $1 - 1) AS i`,
    [settings.documents, settings.groups, AUTHORS],
  );
  await target.db.sql('VACUUM ANALYZE');
  // A broken setup fails loudly rather than measuring errors.
  const found = (await call(target, 'POST', '/v1/db/items/query', {
    search: 'tent',
    limit: 1,
    expand: ['author'],
  })) as {
    docs: Array<{ expand?: { author?: unknown } }>;
  };
  if (found.docs.length !== 1 || !found.docs[0]?.expand?.author)
    throw new Error('basalt: search or expand found nothing');
}

/** Runs the suite; one JSON line per benchmark with Basalt's figures and the raw SQL's side by side. */
export async function runQueries(settings: Settings): Promise<string[]> {
  const one = { ...settings, connections: 1 };
  const figures = Object.fromEntries(QUERY_BENCHES.map((bench) => [bench, {}])) as Record<QueryBench, BenchFigures>;
  log('basalt: starting (queries suite)');
  const target = await startTarget('basalt', settings);
  try {
    log(`basalt: seeding ${settings.documents} documents with search fields and references`);
    await setUp(target, settings);
    for (const bench of QUERY_BENCHES) {
      if (settings.only && !settings.only.includes(bench.split('.')[1] ?? '')) continue;
      await settle(target.server, 15);
      log(`basalt: ${bench} over 1 connection for ${settings.durationSeconds} s`);
      const request = requestFor(bench, settings);
      const basalt: TargetFigures = await measureWith(target, one, (durationSeconds) =>
        runLoad({ url: target.url, connections: 1, headers: target.headers, requests: [request], durationSeconds }),
      ).catch((error: unknown) => ({ error: (error as Error).message }));
      log(`raw SQL: ${bench} over 1 connection for ${settings.durationSeconds} s`);
      if (settings.warmupSeconds > 0) await rawLoop(target.db.url, bench, settings, settings.warmupSeconds);
      const raw: TargetFigures = await rawLoop(target.db.url, bench, settings, settings.durationSeconds).catch(
        (error: unknown) => ({ error: (error as Error).message }),
      );
      figures[bench] = { basalt, raw };
    }
  } finally {
    await target.close();
  }
  return QUERY_BENCHES.filter((bench) => Object.keys(figures[bench]).length > 0).map((bench) =>
    benchLine(bench, figures[bench], one, {
      documents: settings.documents,
      limit: 20,
      // Not `raw`: that key holds the raw side's figures, printed beside Basalt's.
      raw_is: 'SQL over one pg connection',
    }),
  );
}
