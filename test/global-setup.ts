import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../server/internal/embedded-postgres.js';
import { createLogger } from '../server/internal/log.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A Postgres where each test file may create databases of its own. */
    adminDatabaseUrl: string;
  }
}

let embedded: EmbeddedPostgresHandle | null = null;
let dataDir: string | null = null;

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
  await embedded?.stop();
  // As root the cluster may live outside the temporary folder (see startEmbeddedPostgres).
  if (embedded) await rm(embedded.dataDir, { recursive: true, force: true });
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  embedded = null;
  dataDir = null;
}
