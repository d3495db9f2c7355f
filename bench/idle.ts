/**
 * What Basalt costs at rest: `npm run bench -- idle`.
 *
 * 1. `idle` — starts the server exactly as `npm start` does (the npm process included) on an
 *    external Postgres (a fresh bench database), sends it nothing, and after a settling time
 *    samples the resident memory of every process `npm start` leaves running and their CPU,
 *    and the transactions the server makes, over BENCH_IDLE_SECONDS.
 * 2. `idle.first_start` — the first `npm start` of a fresh clone: the tracked files copied into a
 *    temporary folder with the installed node_modules linked in (what `npm install` leaves),
 *    no build, no data dir, so the dashboard and server builds and the embedded Postgres's
 *    initdb all happen; timed from spawning `npm start` to the line with the URL. Then a second
 *    start of the same folder, which builds nothing.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createBenchDatabase } from './database.js';
import { round } from './load.js';
import { cpuSecondsOf, freePort, spawnKept } from './process.js';
import { machine } from './report.js';
import { BASALT_ROOT_DIR, ROOT_DIR, type Settings } from './settings.js';
import { childEnv } from './targets.js';

/** The goals of the issue: the server process, everything `npm start` leaves running, CPU at rest. */
const GOAL = { server_rss_mib_at_most: 100, total_rss_mib_at_most: 160, cpu_pct_at_most: 0.5 };
const FIRST_START_GOAL = { first_start_ms_at_most: 15_000 };
const READY_LINE = /Basalt is ready at (\S+)/;

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function whole(name: string, fallback: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw)) throw new Error(`${name}: expected a whole number of seconds, got "${raw}"`);
  return Number(raw);
}

interface ProcessSample {
  pid: number;
  command: string;
  rss_mib: number;
  pss_mib: number;
}

/** Every process below `root` (and `root`), from /proc's parent links. */
async function processTree(root: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => null);
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    parents.set(Number(entry), Number(fields[1]));
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, parent] of parents) if (parent === tree[i]) tree.push(pid);
  }
  return tree.filter((pid) => parents.has(pid));
}

async function kib(file: string, field: string): Promise<number> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match ? Number(match[1]) : Number.NaN;
}

async function sampleProcess(pid: number): Promise<ProcessSample> {
  const command = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''))
    .split('\0')
    .filter((part) => part !== '')
    .join(' ')
    .slice(0, 120);
  return {
    pid,
    command,
    rss_mib: round((await kib(`/proc/${pid}/status`, 'VmRSS')) / 1024, 1),
    // Proportional: pages shared between processes (the node binary) are split between them.
    pss_mib: round((await kib(`/proc/${pid}/smaps_rollup`, 'Pss')) / 1024, 1),
  };
}

async function committedTransactions(adminUrl: string, database: string): Promise<number> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    // Counters are flushed by each backend when it goes idle (at most about a second late).
    const { rows } = await client.query<{ commits: string }>(
      'SELECT xact_commit + xact_rollback AS commits FROM pg_stat_database WHERE datname = $1',
      [database],
    );
    return Number(rows[0]?.commits ?? Number.NaN);
  } finally {
    await client.end();
  }
}

interface Started {
  child: ChildProcess;
  readyMs: number;
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/** Spawns `npm start` in `cwd` and waits for the line with the URL. */
async function npmStart(cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Started> {
  const started = performance.now();
  // What Ctrl-C or a supervisor does: the npm process gets the signal and passes it on.
  const npm = spawnKept('npm', ['start'], { cwd, env, keepBytes: 16_000, graceMs: 15_000 });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL within ${timeoutMs} ms:\n${npm.output()}`)), timeoutMs);
    npm.onOutput((output) => {
      const match = READY_LINE.exec(output);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1].replace(/[,—]+$/, ''));
      }
    });
    npm.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`npm start exited (${code}) before its URL:\n${npm.output()}`));
    });
  }).catch(async (error: unknown) => {
    await npm.stop();
    throw error;
  });
  return {
    child: npm.child,
    readyMs: Math.round(performance.now() - started),
    url,
    output: npm.output,
    stop: npm.stop,
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `npm start` at rest on an external Postgres: memory of its processes, CPU, transactions. */
export async function measureIdle(settings: Settings): Promise<string> {
  const settleSeconds = whole('BENCH_IDLE_SETTLE', 20);
  const seconds = whole('BENCH_IDLE_SECONDS', 60);
  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'idle');
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'basalt-idle-'));
  let server: Started | null = null;
  try {
    const port = await freePort();
    const env = childEnv({
      DATABASE_URL: db.url,
      PORT: String(port),
      HOST: '127.0.0.1',
      BASALT_SERVICE_KEY: `bsk_${randomBytes(32).toString('base64url')}`,
      BASALT_DATA_DIR: dataDir,
      ...(process.env.BENCH_IDLE_FUNCTIONS_DIR ? { BASALT_FUNCTIONS_DIR: process.env.BENCH_IDLE_FUNCTIONS_DIR } : {}),
    });
    // As a user runs it: no NODE_ENV of the harness's choosing.
    delete env.NODE_ENV;
    log(`idle: npm start on ${db.name}; ${settleSeconds} s to settle, then ${seconds} s measured`);
    server = await npmStart(BASALT_ROOT_DIR, env, 120_000);
    const rootPid = server.child.pid ?? 0;
    await sleep(settleSeconds * 1000);

    const pids = await processTree(rootPid);
    const cpuBefore = new Map(pids.map((pid) => [pid, cpuSecondsOf(pid)]));
    const dbPids = await db.backendPids();
    const dbCpuBefore = dbPids.map((pid) => cpuSecondsOf(pid));
    const commitsBefore = await committedTransactions(settings.adminDatabaseUrl, db.name);
    const startedAt = performance.now();
    const peaks = new Map<number, number>();
    let last: ProcessSample[] = [];
    for (let elapsed = 0; elapsed < seconds; elapsed += 5) {
      await sleep(Math.min(5, seconds - elapsed) * 1000);
      last = await Promise.all((await processTree(rootPid)).map(sampleProcess));
      for (const sample of last) peaks.set(sample.pid, Math.max(peaks.get(sample.pid) ?? 0, sample.rss_mib));
    }
    const wall = (performance.now() - startedAt) / 1000;
    const commitsAfter = await committedTransactions(settings.adminDatabaseUrl, db.name);
    const cpuPct = (pid: number) => round(((cpuSecondsOf(pid) - (cpuBefore.get(pid) ?? Number.NaN)) / wall) * 100, 2);
    const processes = last.map((sample) => ({
      ...sample,
      rss_peak_mib: peaks.get(sample.pid) ?? sample.rss_mib,
      cpu_pct: cpuPct(sample.pid),
    }));
    // The server is the process that listens: the last of the tree that runs node.
    const serverProcess = [...processes].reverse().find((entry) => / (\S*\/)?main\.(m?js|ts)\b/.test(entry.command));
    const total = (field: 'rss_mib' | 'pss_mib' | 'cpu_pct') =>
      round(
        processes.reduce((sum, entry) => sum + (Number.isFinite(entry[field]) ? entry[field] : 0), 0),
        2,
      );
    const dbCpu = dbPids.reduce((sum, pid, i) => sum + (cpuSecondsOf(pid) - (dbCpuBefore[i] ?? 0) || 0), 0);
    const figures = {
      ready_ms: server.readyMs,
      settle_s: settleSeconds,
      measured_s: round(wall, 1),
      processes: processes.map((entry) => ({ ...entry, command: entry.command.replace(ROOT_DIR, '.') })),
      server_rss_mib: serverProcess?.rss_mib ?? null,
      server_pss_mib: serverProcess?.pss_mib ?? null,
      total_rss_mib: total('rss_mib'),
      total_pss_mib: total('pss_mib'),
      cpu_pct: total('cpu_pct'),
      server_cpu_pct: serverProcess?.cpu_pct ?? null,
      db_cpu_pct: round((dbCpu / wall) * 100, 2),
      // Our own two reads of pg_stat_database are not in this database.
      transactions_per_min: round(((commitsAfter - commitsBefore) / wall) * 60, 1),
    };
    const met =
      figures.server_rss_mib !== null &&
      figures.server_rss_mib <= GOAL.server_rss_mib_at_most &&
      figures.total_rss_mib <= GOAL.total_rss_mib_at_most &&
      figures.cpu_pct <= GOAL.cpu_pct_at_most;
    return JSON.stringify({
      bench: 'idle',
      basalt: figures,
      goal: GOAL,
      met,
      date: new Date().toISOString(),
      load_1m: round(os.loadavg()[0] ?? 0, 2),
      machine,
    });
  } finally {
    await server?.stop();
    await db.drop().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** A fresh clone as `npm install` leaves it: the tracked (and new, unignored) files, node_modules linked. */
async function freshCopy(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'basalt-clone-'));
  // Reachable by the postgres user when the embedded Postgres runs as root's "postgres".
  await chmod(dir, 0o755);
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT_DIR,
    encoding: 'utf8',
  });
  if (listed.status !== 0) throw new Error(`git ls-files failed: ${listed.stderr}`);
  for (const file of listed.stdout.split('\0').filter((name) => name !== '')) {
    const target = path.join(dir, file);
    await mkdir(path.dirname(target), { recursive: true });
    await cp(path.join(ROOT_DIR, file), target, { preserveTimestamps: false }).catch((error: unknown) => {
      // A file deleted in the working tree but still tracked.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    });
  }
  await symlink(path.join(ROOT_DIR, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/** The first `npm start` of a fresh clone (builds and initdb included), then a second one. */
export async function measureFirstStart(): Promise<string> {
  const dir = await freshCopy();
  try {
    const env = childEnv({ PORT: String(await freePort()), HOST: '127.0.0.1' });
    delete env.NODE_ENV;
    log(`idle.first_start: npm start in a fresh copy (${dir})`);
    const first = await npmStart(dir, env, 180_000);
    const firstOutput = first.output();
    await first.stop();
    env.PORT = String(await freePort());
    const second = await npmStart(dir, env, 120_000);
    await second.stop();
    const builtLines = firstOutput
      .split('\n')
      .filter((line) => /built in \d+ ms/.test(line))
      .map((line) => line.replace(/^basalt: /, '').trim());
    return JSON.stringify({
      bench: 'idle.first_start',
      basalt: { first_start_ms: first.readyMs, builds: builtLines, second_start_ms: second.readyMs },
      goal: FIRST_START_GOAL,
      met: first.readyMs <= FIRST_START_GOAL.first_start_ms_at_most,
      date: new Date().toISOString(),
      load_1m: round(os.loadavg()[0] ?? 0, 2),
      machine,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function runIdle(settings: Settings): Promise<string[]> {
  const lines = [await measureIdle(settings)];
  if (process.env.BENCH_IDLE_FIRST_START !== '0') lines.push(await measureFirstStart());
  return lines;
}
