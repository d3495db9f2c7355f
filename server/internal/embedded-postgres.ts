import { exec, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  chmod,
  chown,
  cp,
  lstat,
  mkdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type { Logger } from './log.js';
import { freePort } from './net.js';

export interface EmbeddedPostgresHandle {
  url: string;
  /** The cluster's data directory, symlinks resolved (see "Running as root" in docs/operations.md). */
  dataDir: string;
  port: number;
  /** The folder of `postgres`, `initdb` and `pg_ctl` this cluster runs from. */
  binDir: string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /**
   * As root only: where the binaries and the data go when the `postgres` user cannot reach
   * them where they are (a checkout under a folder only root may enter). Default
   * `/var/lib/basalt` (BASALT_EMBEDDED_POSTGRES_DIR).
   */
  sharedDir?: string;
}

export const DEFAULT_SHARED_DIR = '/var/lib/basalt';

const DATABASE_NAME = 'basalt';
const USER = 'postgres';
const START_TIMEOUT_MS = 60_000;

export interface RunAs {
  uid: number;
  gid: number;
}

const execAsync = promisify(exec);

/** The superuser password is generated once per data dir and kept beside it, readable by its owner only. */
async function passwordFor(baseDir: string): Promise<string> {
  const file = path.join(baseDir, 'postgres-password');
  if (existsSync(file)) return (await readFile(file, 'utf8')).trim();
  const password = randomBytes(24).toString('base64url');
  await writeFile(file, `${password}\n`, { mode: 0o600, flag: 'wx' });
  return password;
}

/** Whether a process with this pid exists (signal 0 checks without signalling). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The folder holding bin/, lib/ and share/ of the platform's package, and that package's version. */
async function packagedBinaries(): Promise<{ nativeDir: string; version: string }> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  let postgresBinary: string;
  try {
    ({ postgres: postgresBinary } = (await import(name)) as { postgres: string });
  } catch (error) {
    throw new Error(`no embedded Postgres for ${platform}-${process.arch} (${name} is not installed)`, {
      cause: error,
    });
  }
  const nativeDir = path.dirname(path.dirname(postgresBinary));
  const manifest = JSON.parse(await readFile(path.join(nativeDir, '..', 'package.json'), 'utf8')) as {
    version?: string;
  };
  return { nativeDir, version: `${platform}-${process.arch}-${manifest.version ?? 'unknown'}` };
}

/**
 * Whether `runAs` can execute every file and enter every folder given. Asked of the system
 * itself, by a shell running as that user, so that every rule (modes, groups, ACLs, mount
 * options) counts.
 */
function reachable(runAs: RunAs, paths: string[]): boolean {
  const result = spawnSync('/bin/sh', ['-c', 'for p; do test -x "$p" || exit 1; done', 'sh', ...paths], {
    uid: runAs.uid,
    gid: runAs.gid,
    cwd: '/',
    stdio: 'ignore',
  });
  return result.status === 0;
}

/** The `postgres` account Postgres runs as when Basalt is root (Postgres refuses to run as root). */
async function postgresAccount(log: Logger): Promise<RunAs> {
  const lookUp = async () => {
    const [uid, gid] = await Promise.all([execAsync(`id -u ${USER}`), execAsync(`id -g ${USER}`)]);
    return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
  };
  try {
    return await lookUp();
  } catch {
    log.info(`creating the system user "${USER}" to run the embedded Postgres (Postgres refuses to run as root)`);
    try {
      await execAsync(`groupadd --system ${USER}`).catch(() => undefined);
      await execAsync(`useradd --system -g ${USER} --no-create-home --shell /usr/sbin/nologin ${USER}`);
      return await lookUp();
    } catch (error) {
      throw new Error(`Basalt runs as root and there is no "${USER}" user to run Postgres as, nor could one be made`, {
        cause: error,
      });
    }
  }
}

/**
 * A root-owned folder everybody may enter but not list: what lies below is reachable by
 * exact path only. Missing parents are made the same way; the mode is set explicitly, as a
 * umask such as 077 would otherwise take the others' execute bit away.
 */
async function traversableDir(dir: string): Promise<void> {
  const parent = path.dirname(dir);
  if (parent !== dir && !existsSync(parent)) await traversableDir(parent);
  await mkdir(dir, { mode: 0o711 }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
  await chmod(dir, 0o711);
}

/**
 * The binaries of the package, copied once per version under `sharedDir` for the `postgres`
 * user when it cannot reach them in node_modules. Copied to a temporary name and renamed,
 * so two processes starting at once, or a copy cut short, never leave a half copy in use.
 */
async function reachableBinaries(
  nativeDir: string,
  version: string,
  runAs: RunAs | null,
  sharedDir: string,
  log: Logger,
): Promise<string> {
  const needed = (dir: string) => [
    path.join(dir, 'bin', 'postgres'),
    path.join(dir, 'bin', 'initdb'),
    path.join(dir, 'lib'),
    path.join(dir, 'share'),
  ];
  if (!runAs || reachable(runAs, needed(nativeDir))) return nativeDir;
  await traversableDir(sharedDir);
  const target = path.join(sharedDir, `postgres-${version}`);
  if (!existsSync(path.join(target, 'bin', 'postgres'))) {
    log.info(`copying the embedded Postgres binaries to ${target}, where the "${USER}" user can run them`);
    const staging = `${target}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await cp(nativeDir, staging, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      await chmod(staging, 0o755);
      await rename(staging, target).catch((error: NodeJS.ErrnoException) => {
        // Another process renamed its own copy first: use that one.
        if (!existsSync(path.join(target, 'bin', 'postgres'))) throw error;
      });
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }
  if (!reachable(runAs, needed(target))) {
    throw new Error(`the "${USER}" user cannot run the Postgres binaries in ${target}; check the modes of its folders`);
  }
  return target;
}

/**
 * The packaged Postgres binaries (their bin folder) where the account Postgres runs as can
 * execute them, and that account: the `postgres` user when this process is root (copying
 * the binaries under `sharedDir` when it cannot reach node_modules), else this process.
 */
export async function runnablePostgres(
  log: Logger,
  sharedDir = DEFAULT_SHARED_DIR,
): Promise<{ binDir: string; runAs: RunAs | null }> {
  const runAs = process.getuid?.() === 0 ? await postgresAccount(log) : null;
  const { nativeDir, version } = await packagedBinaries();
  return { binDir: path.join(await reachableBinaries(nativeDir, version, runAs, sharedDir, log), 'bin'), runAs };
}

/**
 * Where the cluster's data lives. Normally `<baseDir>/postgres`. As root, when the
 * `postgres` user cannot enter `baseDir` (a checkout under a folder only root may enter),
 * the cluster is made under `<sharedDir>/clusters/` instead and `<baseDir>/postgres` becomes
 * a symlink to it: the link keeps the pairing across restarts and shows where the data is.
 */
async function dataDirFor(baseDir: string, runAs: RunAs | null, sharedDir: string, log: Logger): Promise<string> {
  const link = path.join(baseDir, 'postgres');
  const existing = await lstat(link).catch(() => null);
  if (existing?.isSymbolicLink()) {
    const target = path.resolve(baseDir, await readlink(link));
    // A link whose cluster was removed gets a new cluster at the same place.
    if (!existsSync(target)) {
      if (!existsSync(path.dirname(target))) await traversableDir(path.dirname(target));
      await mkdir(target, { mode: 0o700 });
    }
    return target;
  }
  if (!runAs || reachable(runAs, [baseDir])) return link;
  if (existing) {
    throw new Error(
      `the "${USER}" user cannot reach the embedded Postgres data in ${link}: move that folder under ${sharedDir}/clusters/ and leave a symlink in its place, or let "${USER}" enter ${baseDir}`,
    );
  }
  await traversableDir(sharedDir);
  await traversableDir(path.join(sharedDir, 'clusters'));
  const target = path.join(sharedDir, 'clusters', randomBytes(8).toString('hex'));
  await mkdir(target, { mode: 0o700 });
  await symlink(target, link);
  log.info(
    `the "${USER}" user cannot enter ${baseDir}: the embedded Postgres keeps its data in ${target} (linked from ${link})`,
  );
  return target;
}

/** Runs one of the binaries to its end; rejects with the last lines it printed. */
function runToEnd(binary: string, args: string[], runAs: RunAs | null, log: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, {
      ...(runAs ?? {}),
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const collect = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-4000);
      log.debug({ postgres: text.trim() }, 'embedded postgres');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(binary)} failed (${signal ?? `exit ${code}`}): ${lastLines(output)}`));
    });
  });
}

function lastLines(output: string): string {
  return output.trim().split('\n').slice(-5).join(' / ') || 'no output';
}

async function initialise(binDir: string, dataDir: string, password: string, runAs: RunAs | null, log: Logger) {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // initdb takes the password from a file: one beside the data dir, readable by its owner only.
  const passwordFile = path.join(path.dirname(dataDir), `.initdb-password-${randomBytes(6).toString('hex')}`);
  await writeFile(passwordFile, `${password}\n`, { mode: 0o600, flag: 'wx' });
  try {
    if (runAs) {
      await chown(dataDir, runAs.uid, runAs.gid);
      await chown(passwordFile, runAs.uid, runAs.gid);
    }
    await runToEnd(
      path.join(binDir, 'initdb'),
      [
        `--pgdata=${dataDir}`,
        '--auth=scram-sha-256',
        `--username=${USER}`,
        `--pwfile=${passwordFile}`,
        '--encoding=UTF8',
        '--locale=C',
      ],
      runAs,
      log,
    );
  } finally {
    await unlink(passwordFile).catch(() => undefined);
  }
}

interface RunningServer {
  pid: number;
  exited: Promise<void>;
  /** While stopping, the process must wait for Postgres to exit. */
  keepProcessAlive(): void;
}

/** Starts `postgres` and resolves once it accepts connections; rejects with its last lines if it exits first. */
function startServer(
  binDir: string,
  dataDir: string,
  port: number,
  runAs: RunAs | null,
  log: Logger,
): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    // Its own process group: a Ctrl-C in the terminal reaches Basalt only, which drains its
    // requests and then stops Postgres itself.
    const child = spawn(
      path.join(binDir, 'postgres'),
      [
        '-D',
        dataDir,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        '-c',
        'max_connections=200',
      ],
      {
        ...(runAs ?? {}),
        cwd: '/',
        detached: true,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let output = '';
    let ready = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`postgres did not accept connections within ${START_TIMEOUT_MS / 1000} s: ${lastLines(output)}`),
      );
    }, START_TIMEOUT_MS);
    const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
    child.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      log.debug({ postgres: text.trim() }, 'embedded postgres');
      if (ready) return;
      output = (output + text).slice(-4000);
      if (output.includes('database system is ready to accept connections')) {
        ready = true;
        clearTimeout(timer);
        resolve({ pid: child.pid ?? 0, exited, keepProcessAlive: () => child.ref() });
      }
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`postgres exited (${signal ?? `exit ${code}`}): ${lastLines(output)}`));
    });
    // Neither the server nor its log pipe keeps Basalt's process alive; stop() ends it.
    child.unref();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
  });
}

/**
 * Starts a real PostgreSQL from the embedded-postgres package's binaries with its data under
 * `<baseDir>/postgres`, creating the cluster on first use and reusing it afterwards.
 * It listens on loopback only, on a free port chosen at each start.
 *
 * Postgres refuses to run as root, so as root it runs as the `postgres` user. That user
 * must reach both the binaries and the data: what it cannot reach where it is (a checkout
 * under a folder only root may enter, such as /root) is kept under `options.sharedDir`.
 */
export async function startEmbeddedPostgres(
  baseDir: string,
  log: Logger,
  options: EmbeddedPostgresOptions = {},
): Promise<EmbeddedPostgresHandle> {
  const sharedDir = options.sharedDir ?? DEFAULT_SHARED_DIR;
  await mkdir(baseDir, { recursive: true, mode: 0o700 });
  const { binDir, runAs } = await runnablePostgres(log, sharedDir);
  // Enter, not list: the password and service key beside the data stay root's.
  if (runAs) await chmod(baseDir, 0o711);
  const dataDir = await dataDirFor(baseDir, runAs, sharedDir, log);

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

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    log.info(`creating the embedded Postgres cluster in ${dataDir}`);
    await initialise(binDir, dataDir, password, runAs, log);
  }
  let server: RunningServer;
  try {
    server = await startServer(binDir, dataDir, port, runAs, log);
  } catch (error) {
    throw new Error(`the embedded Postgres in ${dataDir} did not start`, { cause: error });
  }
  const postmasterPid = server.pid;

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    process.removeListener('exit', stopOnExit);
    // SIGINT is Postgres's fast shutdown: open sessions end, the data is checkpointed.
    stopping ??= (async () => {
      server.keepProcessAlive();
      if (isAlive(postmasterPid)) process.kill(postmasterPid, 'SIGINT');
      await server.exited;
    })();
    return stopping;
  };
  // If the process ends without stopping the cluster (a crash), ask Postgres for a fast
  // shutdown on the way out rather than leave it running without its owner.
  const stopOnExit = () => {
    if (!stopping && isAlive(postmasterPid)) process.kill(postmasterPid, 'SIGINT');
  };
  process.once('exit', stopOnExit);

  try {
    const admin = new pg.Client({ host: '127.0.0.1', port, user: USER, password, database: 'postgres' });
    await admin.connect();
    try {
      const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE_NAME]);
      if (!rowCount) await admin.query(`CREATE DATABASE ${DATABASE_NAME}`);
    } finally {
      await admin.end();
    }
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    url: `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE_NAME}`,
    dataDir,
    port,
    binDir,
    stop,
  };
}
