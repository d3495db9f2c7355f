/**
 * `npm run bench -- deploy`: how fast a deploy is live, on a cluster of two instances.
 *
 * Two Basalt processes on one fresh database (as behind a load balancer). Each round deploys
 * a new version of an HTTP function through instance A and measures:
 *
 * - `deploy_ms`: the deploy call on A (build with esbuild, load in a throw-away worker,
 *   store, go live on A);
 * - `live_on_b_ms`: from sending the deploy to B answering with the new version (the
 *   change feed carries the deploy to B; the contract's bound is 5 s);
 * - `cold_start_ms`: the first run of the fresh version on B, as its invocation records it
 *   (a new worker thread plus loading the bundle), against `warm_ms`, a run right after.
 *
 * Beside it, in the same run, the cold start of the same function loaded the old way, from
 * B's functions folder, measured the same way: each round, once its worker has ended
 * (`idle_timeout_s: 1`), a call of it starts a new one, and its invocation records the run
 * (`reference_cold_start`). And the cold start as the `functions` suite measures it (a fresh
 * worker pool in this process, one run of the same function: `in_process_cold_start`), a
 * sample each round too, so that all three share whatever else the machine is doing.
 *
 * BENCH_DEPLOYS rounds (default 20); p50 and p99 of each.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createBenchDatabase } from './database.js';
import { inProcessColdStarts, type InProcessColdStarts } from './functions.js';
import { round } from './load.js';
import { freePort, type ServerProcess } from './process.js';
import { machine } from './report.js';
import type { Settings } from './settings.js';
import { childEnv, startBasaltServer } from './targets.js';

export function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round(sorted[index] ?? Number.NaN, 1);
}

function summary(values: number[]): { p50_ms: number; p99_ms: number; max_ms: number } {
  return { p50_ms: percentile(values, 50), p99_ms: percentile(values, 99), max_ms: percentile(values, 100) };
}

/** One admin or API call with a bearer token; throws on an error status, returns the JSON answer. */
export async function call(
  url: string,
  token: string,
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<unknown> {
  const response = await fetch(url + urlPath, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${urlPath}: ${response.status} ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as unknown) : null;
}

/**
 * The function deployed each round, and the reference in B's folder: the same handler. The
 * reference's workers end after a second idle, so each round's call of it is a cold start. The
 * deployed one keeps the default idle timeout: while B still serves the previous version, the
 * calls that wait for the new one find the previous one warm, as a function in use would be,
 * instead of each round cold-starting the previous version just before the fresh one.
 */
const source = (round: number, options = '{ idle_timeout_s: 1 }') =>
  `import { http } from 'basalt/functions';\n` +
  `export default http(${options}, async () => ({ round: ${round} }));\n`;

interface Invocation {
  version: number;
  cold_start: boolean;
  duration_ms: number;
}

async function invocations(url: string, token: string, name: string, limit: number): Promise<Invocation[]> {
  const answer = (await call(url, token, 'GET', `/v1/admin/functions/${name}/invocations?limit=${limit}`)) as {
    invocations: Invocation[];
  };
  return answer.invocations;
}

export async function runDeploy(settings: Settings): Promise<string[]> {
  const rounds = Number(process.env.BENCH_DEPLOYS ?? '20');
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('BENCH_DEPLOYS: expected a whole number ≥ 1');
  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'deploy');
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  const secretsKey = randomBytes(32).toString('hex');
  const dirs: string[] = [];
  const servers: ServerProcess[] = [];
  let inProcess: InProcessColdStarts | null = null;
  try {
    for (let i = 0; i < 2; i++) {
      const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-deploy-'));
      dirs.push(dataDir);
      // B (the second) loads the reference from its functions folder at start.
      if (i === 1) {
        await mkdir(path.join(dataDir, 'functions'));
        await writeFile(path.join(dataDir, 'functions', 'bench_reference.ts'), source(0));
      }
      const port = await freePort();
      servers.push(
        await startBasaltServer(
          `http://127.0.0.1:${port}`,
          childEnv({
            DATABASE_URL: db.url,
            PORT: String(port),
            BASALT_SERVICE_KEY: serviceKey,
            BASALT_SECRETS_KEY: secretsKey,
            BASALT_DATA_DIR: dataDir,
            BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
            LOG_LEVEL: 'warn',
          }),
        ),
      );
    }
    const [a, b] = servers as [ServerProcess, ServerProcess];
    const deployMs: number[] = [];
    const liveMs: number[] = [];
    const coldMs: number[] = [];
    const warmMs: number[] = [];
    const referenceMs: number[] = [];
    const inProcessMs: number[] = [];
    const inProcessFile = path.join(dirs[0] as string, 'bench_in_process.ts');
    await writeFile(inProcessFile, source(0));
    inProcess = await inProcessColdStarts(inProcessFile);
    for (let i = 1; i <= rounds; i++) {
      const started = performance.now();
      await call(a.url, serviceKey, 'PUT', '/v1/admin/functions/bench_live', {
        files: { 'index.ts': source(i, '{}') },
        entry: 'index.ts',
      });
      deployMs.push(performance.now() - started);
      for (;;) {
        // 404 until B has the function at all (the first round).
        const response = await fetch(`${b.url}/v1/functions/bench_live`, { method: 'POST' });
        const answer = response.ok ? ((await response.json()) as { round: number }) : null;
        if (answer?.round === i) break;
        if (performance.now() - started > 30_000) throw new Error(`version ${i} was not live on B within 30 s`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      liveMs.push(performance.now() - started);
      await call(b.url, serviceKey, 'POST', '/v1/functions/bench_live', {});
      const runs = await invocations(b.url, serviceKey, 'bench_live', 2);
      const cold = runs.find((run) => run.version === i && run.cold_start);
      const warm = runs.find((run) => run.version === i && !run.cold_start);
      if (cold) coldMs.push(cold.duration_ms);
      if (warm) warmMs.push(warm.duration_ms);

      // The reference's worker has ended (a second idle, swept every 250 ms): a cold start.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await call(b.url, serviceKey, 'POST', '/v1/functions/bench_reference', {});
      const [reference] = await invocations(b.url, serviceKey, 'bench_reference', 1);
      if (reference?.cold_start) referenceMs.push(reference.duration_ms);
      inProcessMs.push(await inProcess.once());
      log(
        `deploy ${i}/${rounds}: live on B after ${round(liveMs.at(-1) ?? 0, 1)} ms; cold start ` +
          `${cold?.duration_ms ?? '?'} ms fresh, ${reference?.cold_start ? reference.duration_ms : '?'} ms reference, ` +
          `${round(inProcessMs.at(-1) ?? 0, 1)} ms in process`,
      );
    }
    const ratio = round(percentile(coldMs, 50) / percentile(referenceMs, 50), 2);
    return [
      JSON.stringify({
        bench: 'functions.deploy',
        basalt: {
          deploys: rounds,
          deploy: summary(deployMs),
          live_on_b: summary(liveMs),
          cold_start: { ...summary(coldMs), samples: coldMs.length },
          reference_cold_start: { ...summary(referenceMs), samples: referenceMs.length },
          in_process_cold_start: { ...summary(inProcessMs), samples: inProcessMs.length },
          warm: summary(warmMs),
        },
        // The fresh version's cold start p50 over the reference's, measured alike on B.
        cold_start_vs_reference: ratio,
        goal: { live_on_b_p99_ms_at_most: 5_000, cold_start_p50_ms_at_most: 50 },
        met: percentile(liveMs, 99) <= 5_000 && percentile(coldMs, 50) <= 50,
        date: new Date().toISOString(),
        machine,
      }),
    ];
  } finally {
    await inProcess?.close();
    for (const server of servers) await server.stop();
    await db.drop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }
}
