import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** bench/ — this package's own folder, with its own node_modules. */
export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
/** The repository root: the harness's own checkout. */
export const ROOT_DIR = path.resolve(BENCH_DIR, '..');
/**
 * The checkout the Basalt under test is started from, as `npm start` would: this one, or
 * BENCH_BASALT_ROOT (another checkout, built with `npm run build`), so that two versions of
 * Basalt are measured by the same harness (bench/compare.ts).
 */
export const BASALT_ROOT_DIR = process.env.BENCH_BASALT_ROOT?.trim()
  ? path.resolve(process.env.BENCH_BASALT_ROOT.trim())
  : ROOT_DIR;

/**
 * The Node flags Basalt starts with (package.json `start`, the Dockerfile's CMD; see
 * docs/operations.md, "Memory and CPU at rest"): a small young generation, which keeps some 30
 * MiB off the server's memory at rest, and the heap floor that keeps V8 out of a loop of full
 * collections during large transfers. Given to every Node process of a benchmark — its peers
 * (Parse, the raw servers, s3rver), the load generators and the harness itself (package.json
 * `bench`) — so that none is measured in, or held back by, a collector setting the others are
 * spared. test/server-build.test.ts checks that these, `npm start` and the image agree.
 */
export const NODE_HEAP_FLOOR = ['--max-semi-space-size=2', '--initial-old-space-size=128'];

/**
 * The Node flags of `npm start` in the checkout under test (its package.json), for
 * BENCH_SERVER_FLAGS=checkout: compare.ts then measures two checkouts that differ only in
 * their flags as each would run.
 */
function checkoutStartFlags(root: string): string[] {
  const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    scripts?: { start?: string };
  };
  return (
    manifest.scripts?.start?.match(/--(?:max-semi-space-size|initial-old-space-size|max-old-space-size)=\d+/g) ?? []
  );
}

const START_FLAGS =
  process.env.BENCH_SERVER_FLAGS === 'checkout' ? checkoutStartFlags(BASALT_ROOT_DIR) : NODE_HEAP_FLOOR;

/** BENCH_CPU_PROFILE_DIR: each Basalt server of the run writes a V8 CPU profile there as it stops. */
const PROFILE_DIR = process.env.BENCH_CPU_PROFILE_DIR?.trim();
const SERVER_FLAGS = PROFILE_DIR ? [...START_FLAGS, '--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : START_FLAGS;

/**
 * How the harness starts Basalt: as `npm start` does (package.json), with the same Node flags
 * (by default this checkout's, given to every process of the run), from BASALT_ROOT_DIR, on
 * the compiled server (run.ts builds it first when it is stale).
 */
export const BASALT_SERVER_ARGS = existsSync(path.join(BASALT_ROOT_DIR, 'scripts', 'build.ts'))
  ? [...SERVER_FLAGS, 'dist/main.mjs']
  : // A checkout from before the compiled build (compare.ts's `before`) runs its sources through tsx.
    [...SERVER_FLAGS, '--import', 'tsx', 'server/main.ts'];

export type TargetName = 'basalt' | 'parse' | 'raw';
export const ALL_TARGETS: TargetName[] = ['basalt', 'parse', 'raw'];

export interface Settings {
  /** An admin connection to the Postgres that holds one fresh database per target and run. */
  adminDatabaseUrl: string;
  connections: number;
  durationSeconds: number;
  warmupSeconds: number;
  /** Documents seeded before get and query run. */
  documents: number;
  /** Distinct values of `group`: each query matches documents / groups rows and returns 20. */
  groups: number;
  targets: TargetName[];
  /** Runs of each benchmark per target; the median-throughput run is reported. */
  rounds: number;
  /** Keep the bench databases after the run (to look at them); dropped by default. */
  keepDatabases: boolean;
  /** BENCH_ONLY=get,query runs only those benchmarks of the documents suite; null runs all. */
  only: string[] | null;
  /** Iterations of the in-process token-verification micro-benchmark. */
  verifyIterations: number;
}

function whole(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min)
    throw new Error(`${name}: expected a whole number >= ${min}, got "${raw}"`);
  return Number(raw);
}

export function readSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const targets = (env.BENCH_TARGETS ?? ALL_TARGETS.join(','))
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  for (const name of targets) {
    if (!ALL_TARGETS.includes(name as TargetName)) {
      throw new Error(`BENCH_TARGETS: unknown target "${name}" (expected ${ALL_TARGETS.join(', ')})`);
    }
  }
  return {
    adminDatabaseUrl: env.BENCH_DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/postgres',
    connections: whole(env, 'BENCH_CONNECTIONS', 32, 1),
    durationSeconds: whole(env, 'BENCH_DURATION', 10, 1),
    warmupSeconds: whole(env, 'BENCH_WARMUP', 2, 0),
    documents: whole(env, 'BENCH_DOCUMENTS', 100_000, 100),
    groups: whole(env, 'BENCH_GROUPS', 1_000, 1),
    targets: targets as TargetName[],
    rounds: whole(env, 'BENCH_ROUNDS', 1, 1),
    keepDatabases: env.BENCH_KEEP_DATABASES === '1',
    only: env.BENCH_ONLY?.trim() ? env.BENCH_ONLY.split(',').map((name) => name.trim()) : null,
    verifyIterations: whole(env, 'BENCH_VERIFY_ITERATIONS', 20_000, 100),
  };
}
