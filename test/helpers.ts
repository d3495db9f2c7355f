import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { inject } from 'vitest';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import { createLogger } from '../server/internal/log.js';
import { migrate } from '../server/internal/migrations.js';
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
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  if (options.migrate !== false) await migrate(url, silentLogger);
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
    serviceKey,
    config,
    async close() {
      await app.close();
      await rm(dataDir, { recursive: true, force: true });
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
