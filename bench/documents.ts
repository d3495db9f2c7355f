import os from 'node:os';
import { round, runLoad, type LoadRequest, type LoadResult } from './load.js';
import { type Settings, type TargetName } from './settings.js';
import { cpuSecondsOf } from './process.js';
import { call, settle, startTarget, type RunningTarget } from './targets.js';

export interface TargetFigures extends Partial<LoadResult> {
  /** CPU used by the server's process during the measured run, in % of one core. */
  cpu_pct?: number;
  /** Server CPU (its process) per successful request, in ms: steadier than rps on a busy machine. */
  cpu_ms_per_req?: number;
  /** CPU of the Postgres backends serving the target's database, per successful request, in ms. */
  db_cpu_ms_per_req?: number;
  /** The machine's 1-minute load average as the run started; the harness itself adds about 2 to 3. */
  load_1m?: number;
  /** With BENCH_ROUNDS > 1: each round's rps (the figures shown are the median round's). */
  rps_rounds?: Array<number | null>;
  error?: string;
}

export type BenchFigures = Partial<Record<TargetName, TargetFigures>>;

const BENCHES = ['documents.get', 'documents.query', 'documents.create'] as const;
type DocumentBench = (typeof BENCHES)[number];

function randomInt(below: number): number {
  return Math.floor(Math.random() * below);
}

/** The same three calls, spelled in each target's API. */
function requestFor(bench: DocumentBench, target: TargetName, settings: Settings): LoadRequest {
  const json = { 'content-type': 'application/json' };
  if (target === 'parse') {
    switch (bench) {
      case 'documents.create':
        return {
          method: 'POST',
          path: '/parse/classes/Bench',
          headers: json,
          setupRequest: (request) => ({
            ...request,
            body: JSON.stringify({ group: `g${randomInt(settings.groups)}`, title: 'created', n: randomInt(1e6) }),
          }),
        };
      case 'documents.get':
        return {
          method: 'GET',
          path: '/parse/classes/Bench/d0',
          setupRequest: (request) => ({ ...request, path: `/parse/classes/Bench/d${randomInt(settings.documents)}` }),
        };
      case 'documents.query':
        return {
          method: 'GET',
          path: '/parse/classes/Bench',
          setupRequest: (request) => ({
            ...request,
            path: `/parse/classes/Bench?${new URLSearchParams({
              where: JSON.stringify({ group: `g${randomInt(settings.groups)}` }),
              order: 'objectId',
              limit: '20',
            }).toString()}`,
          }),
        };
    }
  }
  // Basalt and the raw server take identical requests.
  switch (bench) {
    case 'documents.create':
      return {
        method: 'POST',
        path: '/v1/db/bench',
        headers: json,
        setupRequest: (request) => ({
          ...request,
          body: JSON.stringify({
            data: { group: `g${randomInt(settings.groups)}`, title: 'created', n: randomInt(1e6) },
          }),
        }),
      };
    case 'documents.get':
      return {
        method: 'GET',
        path: '/v1/db/bench/d0',
        setupRequest: (request) => ({ ...request, path: `/v1/db/bench/d${randomInt(settings.documents)}` }),
      };
    case 'documents.query':
      return {
        method: 'POST',
        path: '/v1/db/bench/query',
        headers: json,
        setupRequest: (request) => ({
          ...request,
          body: JSON.stringify({
            where: [['group', '==', `g${randomInt(settings.groups)}`]],
            order_by: [['id', 'asc']],
            limit: 20,
          }),
        }),
      };
  }
}

/** Creates the `bench` collection (or class, or table) with an index on `group`. */
async function createCollection(target: RunningTarget): Promise<string> {
  if (target.name === 'basalt') {
    await call(target, 'POST', '/v1/admin/collections', {
      name: 'bench',
      rules: { read: 'true', create: 'true', update: 'true', delete: 'true' },
      indexes: ['group'],
    });
    const { rows } = await target.db.sql(
      `SELECT table_schema FROM information_schema.tables WHERE table_name = 'bench' AND table_schema <> 'basalt'`,
    );
    const schema = (rows[0] as { table_schema?: string } | undefined)?.table_schema;
    if (!schema) throw new Error('basalt: created the collection "bench" but found no table of that name');
    return `"${schema}".bench`;
  }
  if (target.name === 'parse') {
    await call(target, 'POST', '/parse/schemas/Bench', {
      className: 'Bench',
      fields: { group: { type: 'String' }, title: { type: 'String' }, n: { type: 'Number' } },
      indexes: { group_1: { group: 1 } },
    });
    return '"Bench"';
  }
  return 'bench';
}

/**
 * Seeds with one SQL statement per target rather than through the API: 100,000 API calls would
 * take minutes on this machine and measure nothing we report. Ids are d0 … d(N-1) everywhere, and
 * `group` cycles through g0 … g(G-1). For Basalt this is the documented "plain SQL insert", which
 * also fires the change-log trigger like any write.
 */
async function seed(target: RunningTarget, table: string, settings: Settings): Promise<void> {
  const values = [settings.documents, settings.groups];
  if (target.name === 'parse') {
    await target.db.sql(
      `INSERT INTO ${table} ("objectId", "createdAt", "updatedAt", "group", title, n, _rperm, _wperm)
       SELECT 'd' || i, now(), now(), 'g' || (i % $2), 'document ' || i, i, '{*}', '{*}'
       FROM generate_series(0, $1 - 1) AS i`,
      values,
    );
  } else {
    await target.db.sql(
      `INSERT INTO ${table} (id, owner, data)
       SELECT 'd' || i, NULL, jsonb_build_object('group', 'g' || (i % $2), 'title', 'document ' || i, 'n', i)
       FROM generate_series(0, $1 - 1) AS i`,
      values,
    );
  }
  // The whole database, for every target: a bulk load leaves work for autovacuum (Basalt's
  // also wrote 100,000 change-log rows), and a worker starting on it in the middle of a
  // measured run would be counted as that target's Postgres CPU.
  await target.db.sql(`VACUUM ANALYZE`);
}

/** One call of each kind before the load, so a broken target fails loudly instead of counting 404s. */
async function probe(target: RunningTarget, settings: Settings): Promise<void> {
  const group = `g${1 % settings.groups}`;
  if (target.name === 'parse') {
    const got = (await call(target, 'GET', '/parse/classes/Bench/d1')) as { group?: string };
    if (got.group !== group) throw new Error(`parse: d1 has group ${String(got.group)}`);
    const found = (await call(
      target,
      'GET',
      `/parse/classes/Bench?${new URLSearchParams({ where: JSON.stringify({ group }), order: 'objectId', limit: '20' })}`,
    )) as { results: unknown[] };
    if (found.results.length !== Math.min(20, Math.ceil(settings.documents / settings.groups))) {
      throw new Error(`parse: the query found ${found.results.length} objects`);
    }
    return;
  }
  const got = (await call(target, 'GET', '/v1/db/bench/d1')) as { data?: { group?: string } };
  if (got.data?.group !== group) throw new Error(`${target.name}: d1 has group ${String(got.data?.group)}`);
  const found = (await call(target, 'POST', '/v1/db/bench/query', {
    where: [['group', '==', group]],
    order_by: [['id', 'asc']],
    limit: 20,
  })) as { docs: unknown[] };
  if (found.docs.length !== Math.min(20, Math.ceil(settings.documents / settings.groups))) {
    throw new Error(`${target.name}: the query found ${found.docs.length} documents`);
  }
}

/**
 * CPU seconds used so far by each Postgres backend serving the target's database. Read from
 * /proc, so only when Postgres runs on this machine (empty otherwise).
 */
async function backendCpu(target: RunningTarget): Promise<Map<number, number>> {
  const cpu = new Map<number, number>();
  try {
    for (const pid of await target.db.backendPids()) {
      const seconds = cpuSecondsOf(pid);
      if (Number.isFinite(seconds)) cpu.set(pid, seconds);
    }
  } catch {
    // not fatal: the figure is left out
  }
  return cpu;
}

/** A warm-up run (discarded), then the measured run, with the server's CPU use over it. */
export async function measureWith(
  target: RunningTarget,
  settings: Settings,
  run: (durationSeconds: number) => Promise<LoadResult>,
): Promise<TargetFigures> {
  if (settings.warmupSeconds > 0) await run(settings.warmupSeconds);
  const load = os.loadavg()[0] ?? 0;
  const dbBefore = await backendCpu(target);
  const cpuBefore = target.server.cpuSeconds();
  const started = process.hrtime.bigint();
  const result = await run(settings.durationSeconds);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = target.server.cpuSeconds() - cpuBefore;
  const dbAfter = await backendCpu(target);
  let db = 0;
  for (const [pid, seconds] of dbAfter) db += seconds - (dbBefore.get(pid) ?? 0);
  // Per request, counting every answer (also those past the measured window's end) is not
  // possible; the 2xx count over the window is close enough for a closed loop.
  const perRequest = (seconds: number): number | undefined =>
    result.requests > 0 && Number.isFinite(seconds) ? round((seconds * 1000) / result.requests, 3) : undefined;
  return {
    ...result,
    cpu_pct: round((cpu / elapsed) * 100, 0),
    cpu_ms_per_req: perRequest(cpu),
    db_cpu_ms_per_req: dbAfter.size > 0 ? perRequest(db) : undefined,
    load_1m: round(load, 1),
  };
}

/** measureWith autocannon sending `request` over settings.connections connections. */
export function measure(
  target: RunningTarget,
  request: LoadRequest,
  settings: Settings,
  headers: Record<string, string> = target.headers,
): Promise<TargetFigures> {
  return measureWith(target, settings, (durationSeconds) =>
    runLoad({ url: target.url, connections: settings.connections, headers, requests: [request], durationSeconds }),
  );
}

export function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

export interface DocumentFigures {
  throughput: Record<DocumentBench, BenchFigures>;
  /**
   * The query again over a single connection: its latency without queueing. Under 32 busy
   * connections on 2 cores, p50 is mostly time spent waiting in line (connections / rps), so
   * the "p50 < 5 ms" goal is judged on this run.
   */
  queryLatency: BenchFigures;
}

/** The round whose throughput is the median, with every round's throughput beside it. */
function median(rounds: TargetFigures[]): TargetFigures {
  const ok = rounds.filter((figures) => figures.rps !== undefined);
  if (ok.length === 0) return rounds[0] ?? { error: 'no run' };
  const sorted = [...ok].sort((a, b) => (a.rps ?? 0) - (b.rps ?? 0));
  const middle = sorted[Math.floor((sorted.length - 1) / 2)] as TargetFigures;
  return rounds.length > 1 ? { ...middle, rps_rounds: rounds.map((figures) => figures.rps ?? null) } : middle;
}

async function settleAll(targets: RunningTarget[]): Promise<void> {
  for (const target of targets) await settle(target.server, 15);
}

/**
 * Starts every target (each in its own process, on its own database), seeds them, then runs
 * each benchmark against the targets back to back, rotating their order every round. On a
 * shared machine whose load drifts, figures taken seconds apart compare more fairly than
 * figures taken minutes apart. Before each run every target is left to go idle, so only the
 * measured one works. Creates come last, so get and query run at exactly the seeded size.
 */
export async function runDocuments(settings: Settings): Promise<DocumentFigures> {
  const figures = Object.fromEntries(BENCHES.map((bench) => [bench, {}])) as Record<DocumentBench, BenchFigures>;
  const queryLatency: BenchFigures = {};
  const fail = (name: TargetName, error: unknown): void => {
    const message = (error as Error).message.split('\n')[0] ?? 'failed';
    log(`${name}: ${(error as Error).message}`);
    for (const bench of BENCHES) figures[bench][name] ??= { error: message };
    queryLatency[name] ??= { error: message };
  };
  const targets: RunningTarget[] = [];
  try {
    for (const name of settings.targets) {
      let target: RunningTarget | null = null;
      try {
        log(`${name}: starting`);
        target = await startTarget(name, settings);
        const table = await createCollection(target);
        log(`${name}: seeding ${settings.documents} documents`);
        await seed(target, table, settings);
        await probe(target, settings);
        targets.push(target);
      } catch (error) {
        await target?.close();
        fail(name, error);
      }
    }
    const runs: Array<{ bench: DocumentBench; connections: number; into: (name: TargetName) => TargetFigures[] }> = [];
    const collected = new Map<string, TargetFigures[]>();
    const slot = (key: string): TargetFigures[] => {
      if (!collected.has(key)) collected.set(key, []);
      return collected.get(key) as TargetFigures[];
    };
    for (const bench of BENCHES) {
      if (settings.only && !settings.only.includes(bench.split('.')[1] ?? '')) continue;
      runs.push({ bench, connections: settings.connections, into: (name) => slot(`${bench}|${name}`) });
      if (bench === 'documents.query') runs.push({ bench, connections: 1, into: (name) => slot(`latency|${name}`) });
    }
    for (const run of runs) {
      for (let round = 0; round < settings.rounds; round++) {
        const order = targets.map((_, i) => targets[(i + round) % targets.length] as RunningTarget);
        for (const target of order) {
          await settleAll(targets);
          log(
            `${target.name}: ${run.bench}${run.connections === 1 ? ' over 1 connection' : ''} for ` +
              `${settings.durationSeconds} s (round ${round + 1}/${settings.rounds})`,
          );
          try {
            const request = requestFor(run.bench, target.name, settings);
            run.into(target.name).push(await measure(target, request, { ...settings, connections: run.connections }));
          } catch (error) {
            run.into(target.name).push({ error: (error as Error).message.split('\n')[0] ?? 'failed' });
          }
        }
      }
    }
    for (const target of targets) {
      for (const bench of BENCHES) {
        const rounds = slot(`${bench}|${target.name}`);
        if (rounds.length > 0) figures[bench][target.name] = median(rounds);
      }
      const latency = slot(`latency|${target.name}`);
      if (latency.length > 0) queryLatency[target.name] = median(latency);
    }
  } finally {
    for (const target of targets) await target.close();
  }
  return { throughput: figures, queryLatency };
}
