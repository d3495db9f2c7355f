import { ConfigError, loadConfig } from './config.js';
import { waitForDatabase } from './internal/db.js';
import { startEmbeddedPostgres } from './internal/embedded-postgres.js';
import { createLogger } from './internal/log.js';
import { migrate } from './internal/migrations.js';

/** `npm run migrate`: applies pending migrations to DATABASE_URL, or to the embedded Postgres. */
async function run(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`basalt: invalid configuration: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const log = createLogger(config.logLevel);
  const embedded = config.databaseUrl === null ? await startEmbeddedPostgres(config.dataDir, log) : null;
  try {
    const url = embedded?.url ?? config.databaseUrl ?? '';
    await waitForDatabase(url, config.databaseConnectTimeoutMs, log);
    const applied = await migrate(url, log);
    log.info(applied.length ? `applied ${applied.length} migration(s)` : 'the database is up to date');
  } finally {
    await embedded?.stop();
  }
}

run().catch((error: unknown) => {
  process.stderr.write(`basalt: migrate failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
