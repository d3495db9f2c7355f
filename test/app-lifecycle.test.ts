import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import { createTestDatabase, silentLogger, type TestDatabase, waitFor } from './helpers.js';

let database: TestDatabase;
let observer: pg.Client;
let dataDir: string;

beforeAll(async () => {
  database = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-lifecycle-'));
  observer = new pg.Client({ connectionString: database.url });
  await observer.connect();
});

afterAll(async () => {
  await observer?.end();
  await database?.drop();
  await rm(dataDir, { recursive: true, force: true });
});

function build(roles: string): Promise<FastifyInstance> {
  const config = loadConfig({
    BASALT_DATA_DIR: dataDir,
    BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
    BASALT_FUNCTIONS_WATCH: 'false',
    BASALT_ROLES: roles,
    LOG_LEVEL: 'silent',
  });
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  return buildApp({ ...config, databaseUrl: database.url, serviceKey }, { logger: silentLogger });
}

/** The application names of the other sessions on the test database, LISTENers included. */
async function sessions(): Promise<string[]> {
  const { rows } = await observer.query<{ application_name: string }>(
    `SELECT application_name FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`,
  );
  return rows.map((row) => row.application_name).sort();
}

/** Timers, sockets, watchers and other handles that keep work going in this process, by kind. */
function activeResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

/** The kinds of resource of which there are more now than `before` (handles of earlier tests may end meanwhile). */
function newResources(before: Map<string, number>): string[] {
  return [...activeResources()].filter(([kind, count]) => count > (before.get(kind) ?? 0)).map(([kind]) => kind);
}

describe.each(['api,worker', 'api', 'worker'])('an app with BASALT_ROLES=%s', (roles) => {
  it('opens no connection and starts no timer while building; its modules start once it is ready', async () => {
    const before = activeResources();
    const app = await build(roles);
    try {
      expect(await sessions()).toEqual([]);
      expect(newResources(before)).toEqual([]);
      await app.ready();
      // The change feed and the collections listener run in every process.
      expect(await sessions()).toEqual(expect.arrayContaining(['basalt-change-feed', 'basalt-collections']));
    } finally {
      await app.close();
    }
    await waitFor('the connections of the app to close', async () => (await sessions()).length === 0, 10_000);
  });

  it('closes cleanly without having been ready, opening nothing on the way', async () => {
    const before = activeResources();
    const app = await build(roles);
    await app.close();
    expect(await sessions()).toEqual([]);
    expect(newResources(before)).toEqual([]);
  });
});
