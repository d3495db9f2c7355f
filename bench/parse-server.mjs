/**
 * Parse Server 9 with its Postgres adapter, started the way its docs show (ParseServer.startApp,
 * Express inside). Run in a process of its own by the harness, with plain node (no TypeScript
 * loader in Parse's process):
 *   PARSE_DATABASE_URL=postgres://... PARSE_MASTER_KEY=... PORT=8091 node bench/parse-server.mjs
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { ParseServer } = require('parse-server');

const databaseUrl = process.env.PARSE_DATABASE_URL;
const masterKey = process.env.PARSE_MASTER_KEY;
if (!databaseUrl || !masterKey) throw new Error('PARSE_DATABASE_URL and PARSE_MASTER_KEY are required');
const port = Number(process.env.PORT ?? 8091);

// Same pool size as Basalt's default and the raw server's (Parse reads it from the URI).
const databaseURI = new URL(databaseUrl);
databaseURI.searchParams.set('max', '20');

const server = await ParseServer.startApp({
  appId: 'bench',
  masterKey,
  databaseURI: databaseURI.toString(),
  serverURL: `http://127.0.0.1:${port}/parse`,
  mountPath: '/parse',
  port,
  host: '127.0.0.1',
  // Quiet like Basalt at LOG_LEVEL=warn: request logging would cost Parse throughput.
  logLevel: 'error',
  silent: true,
  verbose: false,
  // No log files in the working tree.
  logsFolder: null,
  allowClientClassCreation: false,
  // Cloud Code for the functions benchmark (triggers and cloud functions).
  ...(process.env.PARSE_CLOUD ? { cloud: process.env.PARSE_CLOUD } : {}),
  // LiveQuery for the realtime benchmark: the in-process server on the same HTTP port, fed by
  // Parse's default in-process pub/sub (one instance, as Basalt runs in the bench).
  ...(process.env.PARSE_LIVE_QUERY
    ? { liveQuery: { classNames: process.env.PARSE_LIVE_QUERY.split(',') }, startLiveQueryServer: true }
    : {}),
  verifyServerUrl: false,
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    Promise.resolve(server.handleShutdown?.())
      .catch(() => undefined)
      .finally(() => process.exit(0));
  });
}
