/**
 * `npm run bench -- functions`: Basalt functions side by side with Parse Server Cloud Code.
 *
 * - trigger latency: commit (the document's creation time) to the start of a no-op trigger
 *   (Basalt `onDocument` via the change log and the job queue; Parse `afterSave`), p50/p99,
 *   writes one at a time;
 * - trigger throughput: a burst of documents, until every trigger ran (Basalt: one plain SQL
 *   insert, which fires functions like any write; Parse: 16 concurrent REST creates, since
 *   its triggers run only for writes made through Parse), in triggers per second, the median
 *   of three bursts; with the CPU the server process and its Postgres backends used per
 *   trigger (from /proc, median of the bursts), the figure a noisy machine moves least;
 * - warm HTTP function overhead: the same load on a hello function and on a plain route;
 * - cold start: a new worker thread plus loading the bundle (Basalt only: Parse loads Cloud
 *   Code once, in the server's own process, so it has no per-invocation cold start).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createBenchDatabase, type BenchDatabase } from './database.js';
import { round, runLoad, type LoadResult } from './load.js';
import { cpuSnapshot, cpuSpent, freePort, startServer, type ServerProcess } from './process.js';
import { machine } from './report.js';
import { BENCH_DIR, NODE_HEAP_FLOOR, type Settings } from './settings.js';
import { childEnv, startFunctionsServer } from './targets.js';

const FIXTURE = path.join(BENCH_DIR, 'functions-fixture');
const LATENCY_SAMPLES = 200;
const BURST = 2000;
const BURST_ROUNDS = 3;

interface Target {
  url: string;
  server: ServerProcess;
  db: BenchDatabase;
  headers: Record<string, string>;
  close(): Promise<void>;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round(sorted[index] ?? Number.NaN, 1);
}

async function json(target: Target, method: string, urlPath: string, body?: unknown): Promise<unknown> {
  const response = await fetch(target.url + urlPath, {
    method,
    headers: { ...target.headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${urlPath}: ${response.status} ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as unknown) : null;
}

async function startBasalt(settings: Settings): Promise<Target> {
  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'basalt');
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-fn-'));
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  const server = await startFunctionsServer({
    databaseUrl: db.url,
    serviceKey,
    dataDir,
    functionsDir: path.join(FIXTURE, 'basalt'),
  });
  const target: Target = {
    url: server.url,
    server,
    db,
    headers: { authorization: `Bearer ${serviceKey}` },
    async close() {
      await server.stop();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  await json(target, 'POST', '/v1/admin/collections', { name: 'bench_fn' });
  // Let the dispatcher take its cursor before the first measured write.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  return target;
}

async function startParse(settings: Settings): Promise<Target> {
  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'parse');
  const port = await freePort();
  const masterKey = randomBytes(24).toString('hex');
  const server = await startServer({
    name: 'parse',
    command: process.execPath,
    args: [...NODE_HEAP_FLOOR, path.join(BENCH_DIR, 'parse-server.mjs')],
    cwd: BENCH_DIR,
    env: childEnv({
      PARSE_DATABASE_URL: db.url,
      PARSE_MASTER_KEY: masterKey,
      PARSE_CLOUD: path.join(FIXTURE, 'parse', 'main.js'),
      PORT: String(port),
    }),
    url: `http://127.0.0.1:${port}`,
    readyPath: '/parse/health',
  });
  return {
    url: server.url,
    server,
    db,
    headers: { 'x-parse-application-id': 'bench', 'x-parse-master-key': masterKey },
    async close() {
      await server.stop();
      await db.drop();
    },
  };
}

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Basalt: handler start times come from the invocations' captured log lines. */
async function basaltStarts(target: Target): Promise<Map<string, number>> {
  const { rows } = await target.db.sql(
    `SELECT logs->0->>'message' AS line FROM basalt.function_invocations WHERE function_name = 'noop' AND status = 'succeeded'`,
  );
  const starts = new Map<string, number>();
  for (const row of rows as Array<{ line: string | null }>) {
    const [id, at] = (row.line ?? '').split(' ');
    if (id && at) starts.set(id, Number(at));
  }
  return starts;
}

async function basaltLatency(target: Target): Promise<number[]> {
  const created: Array<{ id: string; at: number }> = [];
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    const doc = (await json(target, 'POST', '/v1/db/bench_fn', { id: `lat-${i}`, data: { i } })) as {
      id: string;
      created_at: string;
    };
    created.push({ id: doc.id, at: Date.parse(doc.created_at) });
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  let starts = new Map<string, number>();
  await waitUntil('every latency trigger', async () => {
    starts = await basaltStarts(target);
    return created.every((doc) => starts.has(doc.id));
  });
  return created.map((doc) => (starts.get(doc.id) as number) - doc.at);
}

interface Burst {
  /** Triggers per second of each burst. */
  rates: number[];
  /** CPU milliseconds per trigger of each burst: the server process, and its Postgres backends. */
  serverCpuMs: number[];
  postgresCpuMs: number[];
}

/**
 * Runs `burst` BURST_ROUNDS times, measuring each one's rate and CPU. The first burst also
 * pays for whatever the server sets up on its first load (Basalt: a warm worker per
 * concurrent run), so the median burst is the one reported.
 */
async function bursts(target: Target, burst: (round: number) => Promise<number>): Promise<Burst> {
  const result: Burst = { rates: [], serverCpuMs: [], postgresCpuMs: [] };
  for (let round = 0; round < BURST_ROUNDS; round++) {
    const before = await cpuSnapshot(target.server, target.db);
    result.rates.push(await burst(round));
    const spent = cpuSpent(before, await cpuSnapshot(target.server, target.db));
    result.serverCpuMs.push((spent.server * 1000) / BURST);
    result.postgresCpuMs.push((spent.postgres * 1000) / BURST);
  }
  return result;
}

async function basaltBurst(target: Target, round: number): Promise<number> {
  const before = (await basaltStarts(target)).size;
  const begin = Date.now();
  await target.db.sql(
    `INSERT INTO basalt_data.bench_fn (id, owner, data)
     SELECT 'burst-' || $2::int || '-' || g, NULL, jsonb_build_object('g', g) FROM generate_series(1, $1) g`,
    [BURST, round],
  );
  await waitUntil('every burst trigger', async () => {
    const { rows } = await target.db.sql(
      `SELECT count(*)::int AS n FROM basalt.function_invocations WHERE function_name = 'noop' AND status = 'succeeded'`,
    );
    return (rows[0] as { n: number }).n >= before + BURST;
  });
  return BURST / ((Date.now() - begin) / 1000);
}

async function parseStarts(target: Target): Promise<Array<[string, number, number]>> {
  const result = (await json(target, 'POST', '/parse/functions/benchStarted', {})) as {
    result: Array<[string, number, number]>;
  };
  return result.result;
}

async function parseLatency(target: Target): Promise<number[]> {
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    await json(target, 'POST', '/parse/classes/BenchFn', { i });
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  let starts: Array<[string, number, number]> = [];
  await waitUntil('every afterSave', async () => {
    starts = await parseStarts(target);
    return starts.length >= LATENCY_SAMPLES;
  });
  return starts.map(([, ran, createdAt]) => ran - createdAt);
}

async function parseBurst(target: Target): Promise<number> {
  await json(target, 'POST', '/parse/functions/benchReset', {});
  const begin = Date.now();
  // 16 writers creating one object at a time (Parse's batch endpoint runs creates one by one too).
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < BURST) {
        const g = next++;
        await json(target, 'POST', '/parse/classes/BenchFn', { g });
      }
    }),
  );
  await waitUntil('every burst afterSave', async () => (await parseStarts(target)).length >= BURST);
  return BURST / ((Date.now() - begin) / 1000);
}

/** A load's result, with the CPU its server (worker threads included) and its Postgres backends spent per request. */
interface MeasuredLoad extends LoadResult {
  serverCpuUs: number;
  postgresCpuUs: number;
}

async function load(
  target: Target,
  settings: Settings,
  method: 'GET' | 'POST',
  urlPath: string,
): Promise<MeasuredLoad> {
  const options = {
    url: target.url,
    connections: settings.connections,
    headers: { ...target.headers, 'content-type': 'application/json' },
    requests: [{ method, path: urlPath, ...(method === 'POST' ? { body: '{}' } : {}) }],
  };
  await runLoad({ ...options, durationSeconds: Math.max(1, settings.warmupSeconds) });
  const before = await cpuSnapshot(target.server, target.db);
  const result = await runLoad({ ...options, durationSeconds: settings.durationSeconds });
  const spent = cpuSpent(before, await cpuSnapshot(target.server, target.db));
  const requests = Math.max(1, result.rps * settings.durationSeconds);
  return {
    ...result,
    serverCpuUs: (spent.server * 1e6) / requests,
    postgresCpuUs: (spent.postgres * 1e6) / requests,
  };
}

/** A round's ratios of Basalt's figures to Parse's: throughput, and the CPU a call costs (Parse's over Basalt's). */
interface RoundRatio {
  rps: number;
  cpu: number;
}

/** The load whose function throughput is the median of the rounds', with its plain route of the same round. */
function medianRound(loads: Array<{ fn: MeasuredLoad; plain: MeasuredLoad }>): Figures {
  const sorted = [...loads].sort((a, b) => a.fn.rps - b.fn.rps);
  const middle = sorted[Math.floor(sorted.length / 2)];
  return middle ? { fn: middle.fn, plain: middle.plain } : {};
}

/**
 * Warm HTTP functions: both servers up at once, measured in rounds (BENCH_ROUNDS, 3 unless
 * set), each round loading one then the other back to back — the order alternating, so that
 * neither always runs first or right after the other — each load after a warm-up of its own.
 * The machine's state drifts between runs (other processes, CPU frequency, a Postgres busy
 * elsewhere); servers measured a minute apart saw different machines, so a single pair of
 * runs swung the ratio from 2.8× to 1.5×. Each round's ratio compares two loads seconds apart,
 * and the median round is reported.
 */
async function httpWarmRounds(
  settings: Settings,
  withParse: boolean,
): Promise<{
  basalt: Figures;
  parse: Figures | null;
  rounds: number;
  byRound: { basalt: MeasuredLoad[]; parse: MeasuredLoad[] };
  ratios: RoundRatio[];
  peerIdleCpu: Record<'basalt' | 'parse', number[]>;
}> {
  const rounds = process.env.BENCH_ROUNDS?.trim() ? settings.rounds : 3;
  const basalt = await startBasalt(settings);
  let parse: Target | null = null;
  const measured: Record<'basalt' | 'parse', Array<{ fn: MeasuredLoad; plain: MeasuredLoad }>> = {
    basalt: [],
    parse: [],
  };
  const ratios: RoundRatio[] = [];
  /** CPU % of the idle server during each function load of the other, by the server loaded. */
  const peerIdleCpu: Record<'basalt' | 'parse', number[]> = { basalt: [], parse: [] };
  try {
    if (withParse) parse = await startParse(settings);
    const targets = [
      { name: 'basalt' as const, target: basalt, method: 'GET' as const, fn: '/v1/functions/hello', plain: '/healthz' },
      ...(parse
        ? [
            {
              name: 'parse' as const,
              target: parse,
              method: 'POST' as const,
              fn: '/parse/functions/hello',
              plain: '/parse/health',
            },
          ]
        : []),
    ];
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const { name, target, method, fn, plain } of order) {
        process.stderr.write(`bench: functions.http_warm round ${round + 1}/${rounds}: ${name}\n`);
        // The other server idles meanwhile: what it spends is reported, so that it is seen to be small.
        const peer = targets.find((candidate) => candidate.name !== name)?.target;
        const peerBefore = peer?.server.cpuSeconds() ?? 0;
        const began = performance.now();
        const fnLoad = await load(target, settings, method, fn);
        if (peer) {
          const seconds = (performance.now() - began) / 1000;
          peerIdleCpu[name].push(((peer.server.cpuSeconds() - peerBefore) / seconds) * 100);
        }
        const plainLoad = await load(target, settings, 'GET', plain);
        measured[name].push({ fn: fnLoad, plain: plainLoad });
      }
      const ours = measured.basalt[round]?.fn;
      const theirs = measured.parse[round]?.fn;
      if (ours && theirs) {
        ratios.push({
          rps: ours.rps / theirs.rps,
          cpu: (theirs.serverCpuUs + theirs.postgresCpuUs) / (ours.serverCpuUs + ours.postgresCpuUs),
        });
      }
    }
  } finally {
    await basalt.close();
    await parse?.close();
  }
  return {
    basalt: medianRound(measured.basalt),
    parse: parse ? medianRound(measured.parse) : null,
    rounds,
    byRound: { basalt: measured.basalt.map((load) => load.fn), parse: measured.parse.map((load) => load.fn) },
    ratios,
    peerIdleCpu,
  };
}

/** Cold starts of one function measured in this process: `once()` is one sample. */
export interface InProcessColdStarts {
  once(): Promise<number>;
  close(): Promise<void>;
}

/**
 * Cold start: a fresh worker thread and the bundle's first load, measured in-process (a pool
 * of its own for each run of `file`, so nothing warm is reused). The deploy suite measures
 * the same way, beside its deployed versions.
 */
export async function inProcessColdStarts(file: string): Promise<InProcessColdStarts> {
  const { WorkerPool } = await import('../server/modules/functions/pool.js');
  const { buildWorkerScript, bundleFunction, releaseBuilder } = await import('../server/modules/functions/loader.js');
  const { createLogger } = await import('../server/internal/log.js');
  const dir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-cold-'));
  const script = await buildWorkerScript(dir);
  const bundle = await bundleFunction(file, dir, 1);
  await releaseBuilder();
  let runs = 0;
  return {
    async once() {
      const pool = new WorkerPool(script, createLogger('silent', { pretty: false }));
      const begin = performance.now();
      const outcome = await pool.run({
        invocationId: `cold-${++runs}`,
        bundle,
        exportName: 'default',
        input: {},
        env: {},
        timeoutMs: 10_000,
        memoryMb: 128,
        rpc: async () => null,
      });
      const duration = performance.now() - begin;
      await pool.close();
      if (outcome.status !== 'succeeded') throw new Error(`cold start run failed: ${outcome.error}`);
      return duration;
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

async function basaltColdStart(): Promise<number[]> {
  const cold = await inProcessColdStarts(path.join(FIXTURE, 'basalt', 'hello.ts'));
  try {
    const samples: number[] = [];
    for (let i = 0; i < 30; i++) samples.push(await cold.once());
    return samples;
  } finally {
    await cold.close();
  }
}

interface Figures {
  latency?: number[];
  throughput?: Burst;
  fn?: MeasuredLoad;
  plain?: MeasuredLoad;
}

function line(bench: string, figures: Record<string, unknown>, settings: Settings): string {
  return JSON.stringify({
    bench,
    ...figures,
    connections: settings.connections,
    duration_s: settings.durationSeconds,
    machine,
  });
}

export async function runFunctions(settings: Settings): Promise<string[]> {
  const lines: string[] = [];
  const wantParse = settings.targets.includes('parse');
  // BENCH_ONLY=http_warm (or trigger_latency, trigger_throughput, cold_start) runs only those.
  const wanted = (bench: 'trigger_latency' | 'trigger_throughput' | 'http_warm' | 'cold_start'): boolean =>
    !settings.only || settings.only.includes(bench);

  const basaltFigures: Figures = {};
  if (wanted('trigger_latency') || wanted('trigger_throughput')) {
    const basalt = await startBasalt(settings);
    try {
      if (wanted('trigger_latency')) basaltFigures.latency = await basaltLatency(basalt);
      if (wanted('trigger_throughput'))
        basaltFigures.throughput = await bursts(basalt, (round) => basaltBurst(basalt, round));
    } finally {
      await basalt.close();
    }
  }

  let parseFigures: Figures | undefined;
  if (wantParse) {
    parseFigures = {};
    if (wanted('trigger_latency') || wanted('trigger_throughput')) {
      const parse = await startParse(settings);
      try {
        if (wanted('trigger_latency')) parseFigures.latency = await parseLatency(parse);
        if (wanted('trigger_throughput')) parseFigures.throughput = await bursts(parse, () => parseBurst(parse));
      } finally {
        await parse.close();
      }
    }
  }

  const warm = wanted('http_warm') ? await httpWarmRounds(settings, wantParse) : null;
  if (warm) {
    Object.assign(basaltFigures, warm.basalt);
    if (parseFigures && warm.parse) Object.assign(parseFigures, warm.parse);
  }

  const latencyOf = (samples: number[] | undefined) =>
    samples ? { p50_ms: percentile(samples, 50), p99_ms: percentile(samples, 99), samples: samples.length } : null;
  if (wanted('trigger_latency')) {
    const basaltLatencyFigures = latencyOf(basaltFigures.latency);
    lines.push(
      line(
        'functions.trigger_latency',
        {
          basalt: basaltLatencyFigures,
          parse: latencyOf(parseFigures?.latency),
          goal: { p50_ms_at_most: 50 },
          met: (basaltLatencyFigures?.p50_ms ?? Infinity) <= 50,
        },
        settings,
      ),
    );
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
  const throughputOf = (burst: Burst | undefined) =>
    burst
      ? {
          triggers_per_s: round(median(burst.rates), 0),
          server_cpu_ms_per_trigger: round(median(burst.serverCpuMs), 3),
          postgres_cpu_ms_per_trigger: round(median(burst.postgresCpuMs), 3),
          burst: BURST,
          by_burst: {
            triggers_per_s: burst.rates.map((rate) => round(rate, 0)),
            server_cpu_ms_per_trigger: burst.serverCpuMs.map((ms) => round(ms, 3)),
            postgres_cpu_ms_per_trigger: burst.postgresCpuMs.map((ms) => round(ms, 3)),
          },
        }
      : null;
  if (wanted('trigger_throughput')) {
    const basaltRate = median(basaltFigures.throughput?.rates ?? []);
    const parseRate = parseFigures?.throughput ? median(parseFigures.throughput.rates) : null;
    lines.push(
      line(
        'functions.trigger_throughput',
        {
          basalt: throughputOf(basaltFigures.throughput),
          parse: throughputOf(parseFigures?.throughput),
          vs_parse: parseRate ? round(basaltRate / parseRate, 2) : null,
          goal: { triggers_per_s_at_least: 1000 },
          met: basaltRate >= 1000,
        },
        settings,
      ),
    );
  }
  const overhead = (figures: Figures | undefined) =>
    figures?.fn && figures.plain
      ? {
          function: {
            rps: round(figures.fn.rps, 0),
            p50_ms: figures.fn.p50_ms,
            p99_ms: figures.fn.p99_ms,
            failed: figures.fn.failed,
            server_cpu_us_per_call: round(figures.fn.serverCpuUs, 0),
            postgres_cpu_us_per_call: round(figures.fn.postgresCpuUs, 0),
          },
          plain_route: {
            rps: round(figures.plain.rps, 0),
            p50_ms: figures.plain.p50_ms,
            failed: figures.plain.failed,
            server_cpu_us_per_call: round(figures.plain.serverCpuUs, 0),
          },
          overhead_p50_ms: round(figures.fn.p50_ms - figures.plain.p50_ms, 2),
        }
      : null;
  // Of an even number of rounds, the mean of the middle two: never the better one of them.
  const ratioMedian = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const half = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? (sorted[half] ?? Number.NaN) : ((sorted[half - 1] ?? 0) + (sorted[half] ?? 0)) / 2;
  };
  if (warm) {
    const vsParse = warm.ratios.length > 0 ? ratioMedian(warm.ratios.map((ratio) => ratio.rps)) : null;
    lines.push(
      line(
        'functions.http_warm',
        {
          basalt: overhead(basaltFigures),
          parse: overhead(parseFigures),
          // The median of the rounds' ratios: each round measures both servers back to back.
          vs_parse: vsParse === null ? null : round(vsParse, 2),
          // The CPU a call costs, which a busy machine moves less than the rate: Parse's over Basalt's.
          cpu_vs_parse: warm.ratios.length > 0 ? round(ratioMedian(warm.ratios.map((ratio) => ratio.cpu)), 2) : null,
          rounds: warm.rounds,
          by_round: {
            basalt_rps: warm.byRound.basalt.map((load) => round(load.rps, 0)),
            basalt_server_cpu_us_per_call: warm.byRound.basalt.map((load) => round(load.serverCpuUs, 0)),
            parse_rps: warm.byRound.parse.map((load) => round(load.rps, 0)),
            parse_server_cpu_us_per_call: warm.byRound.parse.map((load) => round(load.serverCpuUs, 0)),
            vs_parse: warm.ratios.map((ratio) => round(ratio.rps, 2)),
            // The idle server's CPU (% of one core) while the other served the function load.
            parse_idle_cpu_pct_during_basalt: warm.peerIdleCpu.basalt.map((pct) => round(pct, 1)),
            basalt_idle_cpu_pct_during_parse: warm.peerIdleCpu.parse.map((pct) => round(pct, 1)),
          },
          goal: { vs_parse_at_least: 3 },
          met: vsParse !== null && vsParse >= 3,
        },
        settings,
      ),
    );
  }
  if (wanted('cold_start')) {
    const cold = await basaltColdStart();
    lines.push(
      line(
        'functions.cold_start',
        {
          basalt: { p50_ms: percentile(cold, 50), p99_ms: percentile(cold, 99), samples: cold.length },
          parse: null,
          note: 'Parse loads Cloud Code once in its own process: it has no per-invocation cold start',
          goal: { p50_ms_at_most: 50 },
          met: percentile(cold, 50) <= 50,
        },
        settings,
      ),
    );
  }
  return lines;
}
