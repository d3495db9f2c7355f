/**
 * Prints the OpenAPI document the API serves at /docs/json, pretty-printed and with sorted
 * keys, so two versions of the API can be compared with a plain diff:
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/basalt node --import tsx scripts/openapi-dump.ts > openapi.json
 *
 * The app needs its database to start: the script migrates it first, as `npm start` does.
 * It serves the API role only, with an empty functions folder and its files in a temporary
 * folder, so nothing runs in the background and nothing is written beside the checkout.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import { createLogger } from '../server/internal/log.js';
import { migrate } from '../server/internal/migrations.js';

/** Object keys in order, arrays as they are: the document's own order is registration order. */
function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
  );
}

async function dump(): Promise<void> {
  const config = loadConfig();
  if (config.databaseUrl === null) {
    process.stderr.write('openapi-dump: set DATABASE_URL to a Postgres the app may migrate\n');
    process.exit(2);
  }
  // Warnings go to stderr: stdout is the document alone.
  const log = createLogger('warn', { destination: pino.destination(2) });
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-openapi-'));
  try {
    await migrate(config.databaseUrl, log);
    const app = await buildApp(
      {
        ...config,
        databaseUrl: config.databaseUrl,
        dataDir,
        functionsDir: path.join(dataDir, 'functions'),
        functionsWatch: false,
        roles: { api: true, worker: false },
        serviceKey: `bsk_${randomBytes(32).toString('base64url')}`,
      },
      { logger: log },
    );
    try {
      const response = await app.inject({ method: 'GET', url: '/docs/json' });
      if (response.statusCode !== 200) throw new Error(`/docs/json answered ${response.statusCode}`);
      process.stdout.write(`${JSON.stringify(sortKeys(response.json()), null, 2)}\n`);
    } finally {
      await app.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

await dump();
