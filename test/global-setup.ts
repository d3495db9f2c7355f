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
    dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-test-pg-'));
    embedded = await startEmbeddedPostgres(dataDir, createLogger('warn', { pretty: false }));
    url = embedded.url.replace(/\/basalt$/, '/postgres');
  }
  project.provide('adminDatabaseUrl', url);
}

export async function teardown(): Promise<void> {
  await embedded?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}
