import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../server/internal/embedded-postgres.js';
import { createLogger } from '../server/internal/log.js';
import { migrate } from '../server/internal/migrations.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A Postgres where each test file may create databases of its own. */
    adminDatabaseUrl: string;
    /** A database with every migration applied, that test files copy instead of migrating their own. */
    migratedTemplate: string;
  }
}

let embedded: EmbeddedPostgresHandle | null = null;
let dataDir: string | null = null;
let template: { adminUrl: string; name: string } | null = null;

/**
 * Uses the Postgres at TEST_DATABASE_URL (CI, or a developer's own), or else starts one
 * embedded Postgres for the whole run, so `npm test` needs nothing installed.
 */
export async function setup(project: TestProject): Promise<void> {
  let url = process.env.TEST_DATABASE_URL;
  if (!url) {
    try {
      dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-test-pg-'));
      // As `npm start` does, BASALT_EMBEDDED_POSTGRES_DIR says where a root process keeps what
      // the postgres user cannot reach in the checkout.
      embedded = await startEmbeddedPostgres(dataDir, createLogger('warn', { pretty: false }), {
        sharedDir: process.env.BASALT_EMBEDDED_POSTGRES_DIR,
      });
    } catch (error) {
      // The runner reports a failed global setup by its exit code alone: say why here.
      process.stderr.write(`\nThe test Postgres could not start: ${describe(error)}\n\n`);
      await teardown();
      throw error;
    }
    url = embedded.url.replace(/\/basalt$/, '/postgres');
  }
  project.provide('adminDatabaseUrl', url);
  project.provide('migratedTemplate', await createMigratedTemplate(url));
}

/**
 * Migrates one database for the whole run. A copy of it (CREATE DATABASE … TEMPLATE) takes a
 * fraction of the time of running every migration again, once per test file.
 */
async function createMigratedTemplate(adminUrl: string): Promise<string> {
  const name = `basalt_test_template_${randomBytes(6).toString('hex')}`;
  await withAdmin(adminUrl, (admin) => admin.query(`CREATE DATABASE ${name}`));
  template = { adminUrl, name };
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  // migrate() closes its connection: a template must have no session when it is copied.
  await migrate(url.toString(), createLogger('silent', { pretty: false }));
  return name;
}

async function withAdmin<T>(adminUrl: string, use: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    return await use(admin);
  } finally {
    await admin.end();
  }
}

function describe(error: unknown): string {
  const lines: string[] = [];
  for (let current: unknown = error; current !== undefined; current = (current as { cause?: unknown }).cause) {
    lines.push(current instanceof Error ? current.message : String(current));
    if (!(current instanceof Error)) break;
  }
  return lines.join('\n  caused by: ');
}

export async function teardown(): Promise<void> {
  if (template) {
    const { adminUrl, name } = template;
    await withAdmin(adminUrl, (admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch(() => {});
    template = null;
  }
  await embedded?.stop();
  // As root the cluster may live outside the temporary folder (see startEmbeddedPostgres).
  if (embedded) await rm(embedded.dataDir, { recursive: true, force: true });
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  embedded = null;
  dataDir = null;
}
