import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import { createLogger } from '../server/internal/log.js';
import type { RuntimeConfig } from '../server/internal/platform.js';

export const silentLogger = createLogger('silent', { pretty: false });

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** A fresh database of this test file's own on the test Postgres, migrated unless told otherwise. */
export async function createTestDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const adminUrl = inject('adminDatabaseUrl');
  const name = `basalt_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  const migrated = options.migrate !== false;
  try {
    // A copy of the run's migrated template is what migrating would give, in a fraction of the time.
    await admin.query(`CREATE DATABASE ${name}${migrated ? ` TEMPLATE ${inject('migratedTemplate')}` : ''}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  return {
    url,
    name,
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

export interface TestApp {
  app: FastifyInstance;
  /** Base URL, e.g. http://127.0.0.1:34567 */
  url: string;
  serviceKey: string;
  config: RuntimeConfig;
  close(): Promise<void>;
}

/**
 * Builds a Basalt app on the given database and listens on a free port. `env` is read
 * as the process environment would be, so tests exercise the real config parsing.
 */
export async function startTestApp(
  database: TestDatabase,
  env: Record<string, string> = {},
  overrides: Partial<RuntimeConfig> = {},
  beforeListen?: (app: FastifyInstance) => void | Promise<void>,
): Promise<TestApp> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-test-data-'));
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  // An empty functions folder unless a test brings its own, so apps start fast.
  const base = loadConfig({
    BASALT_DATA_DIR: dataDir,
    BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
    BASALT_FUNCTIONS_WATCH: 'false',
    // Many apps share the test Postgres at once: small pools keep them under its connection limit.
    BASALT_DB_POOL_MAX: '6',
    PORT: '0',
    LOG_LEVEL: 'silent',
    ...env,
  });
  const config: RuntimeConfig = { ...base, databaseUrl: database.url, serviceKey, ...overrides };
  const app = await buildApp(config, { logger: silentLogger });
  await beforeListen?.(app);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    app,
    url: address,
    serviceKey: config.serviceKey,
    config,
    async close() {
      await app.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TestAppOptions {
  /**
   * Read as the process environment would be (see startTestApp); a function is called as the
   * app starts, for values known only then (the URL of a server an earlier hook started).
   */
  env?: Record<string, string> | (() => Record<string, string>);
  overrides?: Partial<RuntimeConfig>;
  beforeListen?: (app: FastifyInstance) => void | Promise<void>;
  /**
   * The functions the app loads: file name → source, or a folder to copy. Either way they
   * land in a fresh folder of this app's own (`functionsDir`), which tests may change.
   */
  functions?: Record<string, string> | string;
  /**
   * Another app of this file whose database this one shares, as a second instance behind a
   * load balancer: same service key and, unless given its own, the same functions.
   */
  sharing?: SharedTestApp;
}

/** A test app with its database, as `useTestApp` keeps them for a test file. */
export interface SharedTestApp extends TestApp {
  database: TestDatabase;
  /** A connected client on the app's database, for looking behind the API. */
  sql: pg.Client;
  /** The folder the app loads functions from. */
  functionsDir: string;
}

/**
 * The app a test file (or describe block) runs against: before its tests, a fresh migrated
 * database (or the one of `sharing`) and a Basalt listening on it; after them, both closed.
 * The returned object reads the running app, so it is used inside tests and later hooks.
 * `close()` stops the app early (a test of an instance going away); it is closed once.
 */
export function useTestApp(options: TestAppOptions = {}): SharedTestApp {
  let running: { app: TestApp; database: TestDatabase; sql: pg.Client } | undefined;
  const owned: { database?: TestDatabase; sql?: pg.Client; functionsDir?: string } = {};
  let closing: Promise<void> | undefined;
  const current = () => {
    if (!running) throw new Error('the test app runs only inside tests and the hooks after useTestApp');
    return running;
  };
  const close = () => (closing ??= running ? running.app.close() : Promise.resolve());

  beforeAll(async () => {
    const shared = options.sharing;
    let functionsDir = shared?.functionsDir;
    if (options.functions !== undefined) {
      functionsDir = owned.functionsDir = await mkdtemp(path.join(tmpdir(), 'basalt-test-functions-'));
      if (typeof options.functions === 'string') await cp(options.functions, functionsDir, { recursive: true });
      else {
        for (const [name, source] of Object.entries(options.functions)) {
          await writeFile(path.join(functionsDir, name), source);
        }
      }
    }
    let database = shared?.database;
    let sql = shared?.sql;
    if (!database || !sql) {
      database = owned.database = await createTestDatabase();
      sql = owned.sql = new pg.Client({ connectionString: database.url });
      await sql.connect();
    }
    const env = {
      ...(functionsDir ? { BASALT_FUNCTIONS_DIR: functionsDir } : {}),
      ...(typeof options.env === 'function' ? options.env() : options.env),
    };
    const overrides = { ...(shared ? { serviceKey: shared.serviceKey } : {}), ...options.overrides };
    const app = await startTestApp(database, env, overrides, options.beforeListen);
    running = { app, database, sql };
  });

  afterAll(async () => {
    await close();
    await owned.sql?.end();
    await owned.database?.drop();
    if (owned.functionsDir) await rm(owned.functionsDir, { recursive: true, force: true });
  });

  return {
    get app() {
      return current().app.app;
    },
    get url() {
      return current().app.url;
    },
    get serviceKey() {
      return current().app.serviceKey;
    },
    get config() {
      return current().app.config;
    },
    get database() {
      return current().database;
    },
    get sql() {
      return current().sql;
    },
    get functionsDir() {
      return current().app.config.functionsDir;
    },
    close,
  };
}

/** A fresh temporary folder for the file's tests (`path`), removed after them. */
export function useTempDir(prefix: string): { readonly path: string } {
  let made: string | undefined;
  beforeAll(async () => {
    made = await mkdtemp(path.join(tmpdir(), prefix));
  });
  afterAll(async () => {
    if (made) await rm(made, { recursive: true, force: true });
  });
  return {
    get path() {
      if (!made) throw new Error('the folder exists only inside tests and the hooks after useTempDir');
      return made;
    },
  };
}

/** fetch + JSON for tests: returns status, headers and the parsed body. */
export async function request(
  baseUrl: string,
  method: string,
  urlPath: string,
  options: {
    body?: unknown;
    token?: string;
    headers?: Record<string, string>;
    rawBody?: string | Uint8Array<ArrayBuffer>;
  } = {},
): Promise<{ status: number; headers: Headers; body: unknown; text: string }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | Uint8Array<ArrayBuffer> | undefined = options.rawBody;
  if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const response = await fetch(`${baseUrl}${urlPath}`, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: response.status, headers: response.headers, body: parsed, text };
}

/** The catalogue code of an error response body, or undefined. */
export function errorCode(body: unknown): string | undefined {
  return (body as { error?: { code?: string } } | undefined)?.error?.code;
}

/**
 * The one polling helper of the tests: calls `probe` every `intervalMs` until it returns
 * something truthy, and returns that; fails naming `what` after `timeoutMs`.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Creates a collection or a bucket with the service key; fails the test unless it is created. */
async function createAsService(
  server: Pick<TestApp, 'url' | 'serviceKey'>,
  kind: 'collections' | 'buckets',
  body: Record<string, unknown>,
): Promise<void> {
  const response = await request(server.url, 'POST', `/v1/admin/${kind}`, { body, token: server.serviceKey });
  expect(response.status, response.text).toBe(201);
}

export function createCollection(server: Pick<TestApp, 'url' | 'serviceKey'>, body: Record<string, unknown>) {
  return createAsService(server, 'collections', body);
}

/** The data of up to 1,000 documents of `collection`, read with the service key. */
export async function allDocs<T>(server: Pick<TestApp, 'url' | 'serviceKey'>, collection: string): Promise<T[]> {
  const response = await request(server.url, 'POST', `/v1/db/${collection}/query`, {
    token: server.serviceKey,
    body: { limit: 1000 },
  });
  expect(response.status, response.text).toBe(200);
  return (response.body as { docs: Array<{ data: T }> }).docs.map((doc) => doc.data);
}

export function createBucket(server: Pick<TestApp, 'url' | 'serviceKey'>, body: Record<string, unknown>) {
  return createAsService(server, 'buckets', body);
}

/** Stores `text` as a text/plain object at `objectPath` (bucket/path) with the service key. */
export function putText(
  server: Pick<TestApp, 'url' | 'serviceKey'>,
  objectPath: string,
  text: string,
): Promise<Response> {
  return fetch(`${server.url}/v1/storage/${objectPath}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${server.serviceKey}`, 'content-type': 'text/plain' },
    body: text,
  });
}
