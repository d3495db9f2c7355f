/**
 * Basalt's benchmark harness: `npm run bench -- documents` (or `auth`, or `all`).
 * Starts each target (Basalt, Parse Server, the raw Fastify + pg limit) in its own process on a
 * fresh database, drives it with the same autocannon load, and prints one JSON line per
 * benchmark on stdout (progress goes to stderr). Settings come from BENCH_* variables; see
 * bench/README.md.
 */
import { runAuth } from './auth.js';
import { runDeploy } from './deploy.js';
import { runEvents } from './events.js';
import { runFunctions } from './functions.js';
import { runFunctionsWarm } from './functions-warm.js';
import { ensureBenchDependencies } from './deps.js';
import { log, runDocuments } from './documents.js';
import { runIdle } from './idle.js';
import { postgresVersion } from './database.js';
import { runRealtime } from './realtime.js';
import { runQueries } from './queries.js';
import { runStorage } from './storage.js';
import { runResumableUploads, runTransforms } from './storage-v11.js';
import { benchLine, machine } from './report.js';
import { readSettings } from './settings.js';
import { ensureServerBuild } from '../scripts/build.js';

async function main(): Promise<void> {
  const suite = process.argv[2] ?? 'documents';
  const suites = [
    'documents',
    'auth',
    'realtime',
    'functions',
    'functions-warm',
    'deploy',
    'events',
    'storage',
    'storage-tus',
    'storage-transform',
    'idle',
    'queries',
  ];
  if (![...suites, 'all'].includes(suite)) {
    process.stderr.write(`usage: npm run bench -- ${suites.join('|')}|all\n`);
    process.exit(2);
  }
  const settings = readSettings();
  // Basalt runs compiled, as `npm start` runs it: build it first if the sources changed.
  if ((await ensureServerBuild()) === 'built') log('compiled the server into dist/');
  // The idle, deploy, functions-warm and events suites measure Basalt alone: they need none of the peers' packages.
  if (!['idle', 'deploy', 'functions-warm', 'events'].includes(suite)) ensureBenchDependencies();
  machine.postgres = await postgresVersion(settings.adminDatabaseUrl);
  log(
    `suite ${suite}: targets ${settings.targets.join(', ')}, ${settings.connections} connections, ` +
      `${settings.durationSeconds} s per run (+${settings.warmupSeconds} s warm-up)`,
  );
  if (suite === 'documents' || suite === 'all') {
    const { throughput, queryLatency } = await runDocuments(settings);
    for (const [bench, byTarget] of Object.entries(throughput)) {
      if (Object.keys(byTarget).length === 0) continue;
      const extra =
        bench === 'documents.query'
          ? { documents: settings.documents, limit: 20, latency_1_connection: queryLatency }
          : { documents: settings.documents };
      const p50ForGoal = bench === 'documents.query' ? queryLatency.basalt?.p50_ms : undefined;
      process.stdout.write(benchLine(bench, byTarget, settings, extra, p50ForGoal) + '\n');
    }
  }
  if (suite === 'queries' || suite === 'all') {
    for (const line of await runQueries(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'auth' || suite === 'all') {
    for (const line of await runAuth(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'functions' || suite === 'all') {
    for (const line of await runFunctions(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'functions-warm' || suite === 'all') {
    for (const line of await runFunctionsWarm(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'deploy' || suite === 'all') {
    for (const line of await runDeploy(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'events' || suite === 'all') {
    for (const line of await runEvents(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'storage' || suite === 'all') {
    for (const line of await runStorage(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'storage-tus' || suite === 'all') {
    for (const line of await runResumableUploads(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'storage-transform' || suite === 'all') {
    for (const line of await runTransforms(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'realtime' || suite === 'all') {
    for (const line of await runRealtime(settings)) process.stdout.write(line + '\n');
  }
  if (suite === 'idle' || suite === 'all') {
    for (const line of await runIdle(settings)) process.stdout.write(line + '\n');
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
