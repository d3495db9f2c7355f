/**
 * `npm run bench -- functions-warm`: warm capacity (docs/functions.md#warm-capacity), Basalt
 * alone, one server on a fresh database.
 *
 * - `functions.first_call`: the first call of an HTTP function just deployed, BENCH_WARM_SAMPLES
 *   (5) times each way, alternating: without warm capacity (the call starts a worker thread
 *   and loads the bundle: a cold start) and with `min_warm: 1` (the deploy provisions a worker
 *   with the bundle loaded). Each deploy is given BENCH_WARM_SETTLE_MS (1,000) ms of quiet
 *   before its first call, the same both ways. Reported: the latency the client sees (over a
 *   connection opened before) and the run's duration as its invocation records it, with
 *   `cold_start` checked against what each case expects.
 * - `functions.idle_rss`: the server's RSS with BENCH_IDLE_FUNCTIONS (20) HTTP functions
 *   deployed and none called (no worker), then with each called once (a worker each, idle),
 *   then once their `idle_timeout_s` (BENCH_IDLE_TIMEOUT_S, 2) has ended every worker (the
 *   harness waits for `basalt_function_warm_workers` to show none, then BENCH_WARM_SETTLE_MS).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createBenchDatabase } from './database.js';
import { round } from './load.js';
import type { ServerProcess } from './process.js';
import { machine } from './report.js';
import type { Settings } from './settings.js';
import { startFunctionsServer } from './targets.js';

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function whole(name: string, fallback: number, min: number): number {
  const raw = process.env[name]?.trim();
  const value = raw ? Number(raw) : fallback;
  if (!Number.isInteger(value) || value < min) throw new Error(`${name}: expected a whole number ≥ ${min}`);
  return value;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round(sorted[index] ?? Number.NaN, 1);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Server {
  process: ServerProcess;
  serviceKey: string;
}

async function call(server: Server, method: string, urlPath: string, body?: unknown): Promise<unknown> {
  const response = await fetch(server.process.url + urlPath, {
    method,
    headers: {
      authorization: `Bearer ${server.serviceKey}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${urlPath}: ${response.status} ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as unknown) : null;
}

async function deploy(server: Server, name: string, options: Record<string, number>): Promise<void> {
  const source =
    `import { http } from 'basalt/functions';\n` +
    `export default http(${JSON.stringify(options)}, async () => ({ name: ${JSON.stringify(name)} }));\n`;
  await call(server, 'PUT', `/v1/admin/functions/${name}`, { files: { 'index.ts': source }, entry: 'index.ts' });
}

/** basalt_function_warm_workers by function, from /metrics. */
async function warmWorkers(server: Server): Promise<Map<string, number>> {
  const response = await fetch(`${server.process.url}/metrics`, {
    headers: { authorization: `Bearer ${server.serviceKey}` },
  });
  const text = await response.text();
  const counts = new Map<string, number>();
  for (const match of text.matchAll(/^basalt_function_warm_workers\{function="([^"]+)"\} (\d+)/gm)) {
    counts.set(match[1] ?? '', Number(match[2]));
  }
  return counts;
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function rssMib(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN);
  return round(kib / 1024, 1);
}

interface FirstCall {
  client_ms: number;
  run_ms: number;
  cold_start: boolean;
}

/** The first call of `name`, over a connection opened just before, and what its invocation recorded. */
async function firstCall(server: Server, name: string): Promise<FirstCall> {
  await call(server, 'GET', '/healthz');
  const started = performance.now();
  await call(server, 'GET', `/v1/functions/${name}`);
  const clientMs = performance.now() - started;
  const { invocations } = (await call(server, 'GET', `/v1/admin/functions/${name}/invocations?limit=1`)) as {
    invocations: Array<{ duration_ms: number; cold_start: boolean }>;
  };
  const run = invocations[0];
  if (!run) throw new Error(`no invocation recorded for ${name}`);
  return { client_ms: clientMs, run_ms: run.duration_ms, cold_start: run.cold_start };
}

function summary(calls: FirstCall[]) {
  const client = calls.map((sample) => sample.client_ms);
  const run = calls.map((sample) => sample.run_ms);
  return {
    client_p50_ms: percentile(client, 50),
    client_max_ms: percentile(client, 100),
    run_p50_ms: percentile(run, 50),
    run_max_ms: percentile(run, 100),
    cold_starts: calls.filter((sample) => sample.cold_start).length,
    samples: calls.length,
    client_ms: client.map((ms) => round(ms, 1)),
  };
}

export async function runFunctionsWarm(settings: Settings): Promise<string[]> {
  const samples = whole('BENCH_WARM_SAMPLES', 5, 1);
  const settleMs = whole('BENCH_WARM_SETTLE_MS', 1_000, 0);
  const idleFunctions = whole('BENCH_IDLE_FUNCTIONS', 20, 1);
  const idleTimeoutS = whole('BENCH_IDLE_TIMEOUT_S', 2, 1);
  const wanted = (bench: 'first_call' | 'idle_rss') => !settings.only || settings.only.includes(bench);

  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'fnwarm');
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-fnwarm-'));
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  let server: Server | null = null;
  const lines: string[] = [];
  try {
    server = {
      serviceKey,
      process: await startFunctionsServer({
        databaseUrl: db.url,
        serviceKey,
        dataDir,
        functionsDir: path.join(dataDir, 'functions'),
      }),
    };
    const pid = server.process.child.pid;
    if (pid === undefined) throw new Error('the server has no pid');

    if (wanted('first_call')) {
      const cold: FirstCall[] = [];
      const warm: FirstCall[] = [];
      for (let i = 1; i <= samples; i++) {
        // Alternating, so that whatever else the machine does falls on both alike.
        await deploy(server, `cold_${i}`, {});
        await sleep(settleMs);
        cold.push(await firstCall(server, `cold_${i}`));

        const name = `warm_${i}`;
        await deploy(server, name, { min_warm: 1 });
        const current = server;
        await waitFor(`${name}'s provisioned worker`, async () => (await warmWorkers(current)).get(name) === 1, 10_000);
        await sleep(settleMs);
        warm.push(await firstCall(server, name));
        log(
          `first call ${i}/${samples}: cold ${round(cold.at(-1)?.client_ms ?? 0, 1)} ms, ` +
            `min_warm ${round(warm.at(-1)?.client_ms ?? 0, 1)} ms`,
        );
      }
      const coldP50 = percentile(
        cold.map((sample) => sample.client_ms),
        50,
      );
      const warmP50 = percentile(
        warm.map((sample) => sample.client_ms),
        50,
      );
      lines.push(
        JSON.stringify({
          bench: 'functions.first_call',
          basalt: { cold: summary(cold), min_warm: summary(warm) },
          // How many times faster the first call is with a provisioned worker.
          cold_vs_warm: round(coldP50 / warmP50, 2),
          goal: { min_warm_first_call_cold_starts: 0 },
          met: warm.every((sample) => !sample.cold_start) && cold.every((sample) => sample.cold_start),
          settle_ms: settleMs,
          date: new Date().toISOString(),
          machine,
        }),
      );
    }

    if (wanted('idle_rss')) {
      const names = Array.from({ length: idleFunctions }, (_, i) => `idle_${i + 1}`);
      for (const name of names) await deploy(server, name, { idle_timeout_s: idleTimeoutS });
      await sleep(settleMs);
      const deployed = rssMib(pid);
      for (const name of names) await call(server, 'GET', `/v1/functions/${name}`);
      const current = server;
      const live = async () => {
        const counts = await warmWorkers(current);
        return names.reduce((sum, name) => sum + (counts.get(name) ?? 0), 0);
      };
      const workersAfterCalls = await live();
      const withWorkers = rssMib(pid);
      const calledAt = performance.now();
      await waitFor('the idle workers to end', async () => (await live()) === 0, idleTimeoutS * 1000 + 30_000);
      const endedAfterMs = performance.now() - calledAt;
      await sleep(settleMs);
      const afterTimeout = rssMib(pid);
      const perWorker = (withWorkers - deployed) / idleFunctions;
      log(`idle RSS: ${deployed} → ${withWorkers} (${workersAfterCalls} workers) → ${afterTimeout} MiB`);
      lines.push(
        JSON.stringify({
          bench: 'functions.idle_rss',
          basalt: {
            functions: idleFunctions,
            idle_timeout_s: idleTimeoutS,
            rss_deployed_mib: deployed,
            rss_with_idle_workers_mib: withWorkers,
            rss_after_idle_timeout_mib: afterTimeout,
            workers_after_calls: workersAfterCalls,
            workers_ended_after_s: round(endedAfterMs / 1000, 1),
            rss_per_idle_worker_mib: round(perWorker, 1),
            // The share of the workers' memory the process gave back once they ended.
            released_share: round((withWorkers - afterTimeout) / Math.max(0.1, withWorkers - deployed), 2),
          },
          goal: { workers_after_idle_timeout: 0 },
          met: workersAfterCalls === idleFunctions && (await live()) === 0,
          date: new Date().toISOString(),
          machine,
        }),
      );
    }
    return lines;
  } finally {
    await server?.process.stop();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
