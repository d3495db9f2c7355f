import type { FastifyInstance } from 'fastify';
import { ConfigError, loadConfig, type Config } from './config.js';
import { redactDatabaseUrl, waitForDatabase } from './internal/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from './internal/embedded-postgres.js';
import { createLogger, type Logger } from './internal/log.js';
import { migrate } from './internal/migrations.js';
import { resolveSecretsKey, resolveServiceKey } from './internal/service-key.js';

/** Past this, shutdown stops waiting for slow requests: supervisors expect an exit within 10 s. */
const DRAIN_TIMEOUT_MS = 7_000;

function readConfig(): Config {
  try {
    return loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`basalt: invalid configuration: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
}

function reason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause =
    error.cause instanceof Error && !error.message.includes(error.cause.message) ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}

async function main(): Promise<void> {
  const config = readConfig();
  const log: Logger = createLogger(config.logLevel);
  let embedded: EmbeddedPostgresHandle | null = null;
  let app: FastifyInstance | null = null;
  let shuttingDown = false;

  const shutdown = async (signal: string): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info(`${signal} received: shutting down`);
    const drainTimer = setTimeout(() => {
      log.warn('requests still open after the drain timeout: closing their connections');
      app?.server.closeAllConnections();
    }, DRAIN_TIMEOUT_MS);
    drainTimer.unref();
    try {
      await app?.close();
    } catch (error) {
      log.error({ err: error }, 'error while closing the server');
    }
    try {
      await embedded?.stop();
    } catch (error) {
      log.error({ err: error }, 'error while stopping the embedded Postgres');
    }
    log.info('stopped');
    process.exit(0);
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void shutdown(signal));

  try {
    // The server's modules (Fastify, the AWS SDK …) take seconds to load on a busy machine:
    // loaded while the embedded Postgres starts (the first time, while initdb runs in its own
    // process), the two overlap. The build keeps this a separate chunk (scripts/build.ts).
    const appModule = import('./app.js');
    appModule.catch(() => undefined);
    if (config.databaseUrl === null) {
      embedded = await startEmbeddedPostgres(config.dataDir, log, { sharedDir: config.embeddedPostgresDir });
      log.info(`embedded Postgres started (data in ${embedded.dataDir})`);
    }
    const databaseUrl = embedded?.url ?? config.databaseUrl ?? '';
    await waitForDatabase(databaseUrl, config.databaseConnectTimeoutMs, log);
    if (shuttingDown) return;
    await migrate(databaseUrl, log);
    const serviceKey = await resolveServiceKey(config.serviceKey, config.dataDir);
    const secretsKey = await resolveSecretsKey(config.secretsKey, config.dataDir);
    const { buildApp } = await appModule;
    app = await buildApp({ ...config, databaseUrl, serviceKey: serviceKey.key, secretsKey }, { logger: log });
    if (shuttingDown) return;
    const address = await app.listen({ port: config.port, host: config.host });
    log.info(
      {
        url: address,
        dataDir: config.dataDir,
        database: embedded ? `${redactDatabaseUrl(databaseUrl)} (embedded)` : redactDatabaseUrl(databaseUrl),
        serviceKey: serviceKey.file ?? 'from BASALT_SERVICE_KEY',
      },
      `Basalt is ready at ${address} — data dir ${config.dataDir}, service key ${
        serviceKey.file ? `in ${serviceKey.file}` : 'from BASALT_SERVICE_KEY'
      }, ${config.roles.api ? `API docs at ${address}/docs` : 'worker only: serving /healthz, /readyz and /metrics'}`,
    );
  } catch (error) {
    process.stderr.write(`basalt: cannot start: ${reason(error)}\n`);
    log.debug({ err: error }, 'start failed');
    await app?.close().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    process.exit(1);
  }
}

void main();
