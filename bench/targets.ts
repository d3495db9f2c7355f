import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createBenchDatabase, type BenchDatabase } from './database.js';
import { freePort, startServer, type ServerProcess } from './process.js';
import {
  BASALT_ROOT_DIR,
  BASALT_SERVER_ARGS,
  BENCH_DIR,
  NODE_HEAP_FLOOR,
  ROOT_DIR,
  type Settings,
  type TargetName,
} from './settings.js';

/** A started server under test with its own fresh database; `close` stops it and drops the database. */
export interface RunningTarget {
  name: TargetName;
  url: string;
  server: ServerProcess;
  db: BenchDatabase;
  /** Headers every request to this target carries (the service key, Parse's app id and master key). */
  headers: Record<string, string>;
  /** Basalt only: the service key, for admin calls. */
  serviceKey?: string;
  /** Basalt only: the environment the server was started with (to build the same config in-process). */
  env?: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

/** The environment of a child: ours minus anything that would reconfigure the server under test. */
export function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('BASALT_') || key.startsWith('PARSE_') || key === 'DATABASE_URL' || key === 'PORT') continue;
    if (key === 'NODE_OPTIONS' || key === 'LOG_LEVEL') continue;
    env[key] = value;
  }
  return { ...env, NODE_ENV: 'production', ...extra };
}

/** The real Basalt server, started as `npm start` starts it; ready once /readyz answers. */
export function startBasaltServer(url: string, env: NodeJS.ProcessEnv): Promise<ServerProcess> {
  return startServer({
    name: 'basalt',
    command: process.execPath,
    args: BASALT_SERVER_ARGS,
    cwd: BASALT_ROOT_DIR,
    env,
    url,
    readyPath: '/readyz',
  });
}

/** A Basalt server for the functions suites: a fresh port, its own data directory and functions folder, warnings only. */
export async function startFunctionsServer(options: {
  databaseUrl: string;
  serviceKey: string;
  dataDir: string;
  functionsDir: string;
}): Promise<ServerProcess> {
  const port = await freePort();
  return startBasaltServer(
    `http://127.0.0.1:${port}`,
    childEnv({
      DATABASE_URL: options.databaseUrl,
      PORT: String(port),
      BASALT_SERVICE_KEY: options.serviceKey,
      BASALT_DATA_DIR: options.dataDir,
      BASALT_FUNCTIONS_DIR: options.functionsDir,
      LOG_LEVEL: 'warn',
    }),
  );
}

/** `extraEnv` adds to (or overrides) the server's environment, e.g. a suite's own budgets. */
export async function startTarget(
  name: TargetName,
  settings: Settings,
  extraEnv: Record<string, string> = {},
): Promise<RunningTarget> {
  const db = await createBenchDatabase(settings.adminDatabaseUrl, name);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const cleanups: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };
  cleanups.push(async () => {
    if (!settings.keepDatabases) await db.drop();
  });
  try {
    if (name === 'basalt') {
      const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-'));
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      const functionsDir = path.join(dataDir, 'functions');
      await mkdir(functionsDir);
      const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
      const env = childEnv({
        DATABASE_URL: db.url,
        PORT: String(port),
        HOST: '127.0.0.1',
        BASALT_SERVICE_KEY: serviceKey,
        BASALT_DATA_DIR: dataDir,
        BASALT_FUNCTIONS_DIR: functionsDir,
        LOG_LEVEL: 'warn',
        // Every benchmark request comes from one address; real traffic comes from many. The
        // per-IP budgets stay on (each call still updates its counter), just out of reach.
        BASALT_AUTH_RATE_SIGNIN_IP: '1000000000',
        BASALT_AUTH_RATE_SIGNUP_IP: '1000000000',
        BASALT_AUTH_RATE_REFRESH_IP: '1000000000',
        ...extraEnv,
      });
      const server = await startBasaltServer(url, env);
      cleanups.push(() => server.stop());
      return { name, url, server, db, headers: { authorization: `Bearer ${serviceKey}` }, serviceKey, env, close };
    }
    if (name === 'parse') {
      const masterKey = randomBytes(24).toString('hex');
      // Parse logs its start-up warnings to ./logs before it reads logsFolder: keep them out of the tree.
      const workDir = await mkdtemp(path.join(tmpdir(), 'parse-bench-'));
      cleanups.push(() => rm(workDir, { recursive: true, force: true }));
      const server = await startServer({
        name,
        command: process.execPath,
        args: [...NODE_HEAP_FLOOR, path.join(BENCH_DIR, 'parse-server.mjs')],
        cwd: workDir,
        env: childEnv({ PARSE_DATABASE_URL: db.url, PARSE_MASTER_KEY: masterKey, PORT: String(port), ...extraEnv }),
        url,
        readyPath: '/parse/health',
      });
      cleanups.push(() => server.stop());
      return {
        name,
        url,
        server,
        db,
        headers: { 'x-parse-application-id': 'bench', 'x-parse-master-key': masterKey },
        close,
      };
    }
    const server = await startServer({
      name,
      command: process.execPath,
      args: [...NODE_HEAP_FLOOR, '--import', 'tsx', path.join(BENCH_DIR, 'raw-server.ts')],
      cwd: ROOT_DIR,
      env: childEnv({ RAW_DATABASE_URL: db.url, PORT: String(port) }),
      url,
      readyPath: '/healthz',
    });
    cleanups.push(() => server.stop());
    return { name, url, server, db, headers: {}, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * Waits until the server is idle (under 5% of a core for a second), so background work set off
 * by the setup (e.g. change-log fan-out after seeding) does not count against the measured run.
 */
export async function settle(server: ServerProcess, maxSeconds = 30): Promise<void> {
  const deadline = Date.now() + maxSeconds * 1000;
  while (Date.now() < deadline) {
    const before = server.cpuSeconds();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (server.cpuSeconds() - before < 0.05) return;
  }
}

/** JSON over HTTP with the target's headers; throws with the body on a non-2xx answer. */
export async function call(
  target: RunningTarget,
  method: string,
  urlPath: string,
  body?: unknown,
  headers: Record<string, string> = target.headers,
): Promise<unknown> {
  const response = await fetch(target.url + urlPath, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${target.name}: ${method} ${urlPath} answered ${response.status}: ${text}`);
  return text === '' ? null : (JSON.parse(text) as unknown);
}
