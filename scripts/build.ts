/**
 * Builds Basalt for production: the server (server/ → dist/, JavaScript, with esbuild) and the
 * admin dashboard (dashboard/ → dashboard/dist, with Vite).
 *
 *   node --import tsx scripts/build.ts                    build both
 *   node --import tsx scripts/build.ts --if-stale         only what is missing or older than its sources
 *   node --import tsx scripts/build.ts --server [--out D] the server only, into D (default dist/)
 *
 * `npm start` runs the second form and then `node dist/main.mjs`, so production runs plain
 * JavaScript: no TypeScript loader in the process (it cost some 60 MiB of memory and its own
 * esbuild process at rest, see docs/operations.md), and an unchanged tree starts without
 * rebuilding. Tests keep running the TypeScript sources through vitest.
 *
 * What the build writes (names in server/internal/paths.ts, BUILD_OUTPUTS):
 * - main.mjs: server/main.ts bundled with its own modules (and the SDK's error catalogue it
 *   imports); npm packages stay imports, resolved from node_modules at run time;
 * - functions-api.mjs: what `basalt/functions` resolves to when functions are bundled;
 * - worker-entry.cjs: the function worker thread's script, compiled here instead of at start;
 * - every file under server/ that is not TypeScript, at the same relative path (word lists).
 * The output folder must sit inside the project (npm packages resolve from its node_modules).
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { BUILD_OUTPUTS, ROOT_DIR } from '../server/internal/paths.js';
import { workerScriptBuildOptions } from '../server/modules/functions/loader.js';
import { dashboardCli, dashboardIsStale, newestSource, withLock } from './dashboard-build.js';

export const SERVER_DIST = path.join(ROOT_DIR, 'dist');
/** What the server's build is made from: a change to any of these makes it stale. */
const SERVER_SOURCES = ['server', 'client-sdk/src', 'scripts/build.ts', 'package.json'];
const LOCK = path.join(ROOT_DIR, 'node_modules', '.cache', 'basalt', 'server-build.lock');

/** True when the build in outDir is missing or older than any of its sources. */
export async function serverBuildIsStale(outDir: string = SERVER_DIST): Promise<boolean> {
  const built = await stat(path.join(outDir, BUILD_OUTPUTS.main)).catch(() => null);
  if (!built) return true;
  let newest = 0;
  for (const source of SERVER_SOURCES) newest = Math.max(newest, await newestSource(path.join(ROOT_DIR, source)));
  return newest > built.mtimeMs;
}

/** The non-TypeScript files under `dir`, relative to it. */
async function assetsUnder(dir: string, relative = ''): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(path.join(dir, relative), { withFileTypes: true })) {
    const name = path.join(relative, entry.name);
    if (entry.isDirectory()) found.push(...(await assetsUnder(dir, name)));
    else if (!/\.(ts|mts|cts)$/.test(entry.name)) found.push(name);
  }
  return found;
}

/**
 * Compiles the server into outDir. Everything is written to a scratch folder first and then
 * renamed into place file by file (main.mjs last), so a server already running from outDir
 * that starts a function worker meanwhile reads a whole file, old or new.
 */
export async function buildServer(outDir: string = SERVER_DIST): Promise<void> {
  const out = path.resolve(outDir);
  const scratch = path.join(out, `.build-${process.pid}-${Date.now()}`);
  await mkdir(scratch, { recursive: true });
  try {
    await build({
      entryPoints: {
        [BUILD_OUTPUTS.main.replace(/\.mjs$/, '')]: path.join(ROOT_DIR, 'server', 'main.ts'),
        [BUILD_OUTPUTS.functionsApi.replace(/\.mjs$/, '')]: path.join(ROOT_DIR, 'server', 'functions-api.ts'),
      },
      outdir: scratch,
      outExtension: { '.js': '.mjs' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      // Chunks, so that main.mjs loads the app's modules (and their packages) only when it
      // imports them: meanwhile the embedded Postgres starts (server/main.ts).
      splitting: true,
      // Beside main.mjs: server/internal/paths.ts finds the project from its chunk's folder.
      chunkNames: '[name]-[hash]',
      // For `node --enable-source-maps` when a stack trace has to point into the sources.
      sourcemap: 'linked',
      define: { BASALT_ROOT_FROM_BUILD: JSON.stringify(path.relative(out, ROOT_DIR) || '.') },
      logLevel: 'warning',
    });
    await build(workerScriptBuildOptions(path.join(scratch, BUILD_OUTPUTS.workerEntry)));
    const serverDir = path.join(ROOT_DIR, 'server');
    for (const asset of await assetsUnder(serverDir)) {
      await mkdir(path.dirname(path.join(scratch, asset)), { recursive: true });
      await copyFile(path.join(serverDir, asset), path.join(scratch, asset));
    }
    const files = (await assetsUnder(scratch)).sort(
      (a, b) => Number(a === BUILD_OUTPUTS.main) - Number(b === BUILD_OUTPUTS.main),
    );
    for (const file of files) {
      await mkdir(path.dirname(path.join(out, file)), { recursive: true });
      await rename(path.join(scratch, file), path.join(out, file));
    }
    // Chunks of earlier builds (their names carry a hash) go.
    for (const entry of await readdir(out)) {
      if (/\.mjs(\.map)?$/.test(entry) && !files.includes(entry)) await rm(path.join(out, entry), { force: true });
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Builds the server into outDir unless its build there is up to date; says which. */
export async function ensureServerBuild(outDir: string = SERVER_DIST): Promise<'fresh' | 'built'> {
  if (!(await serverBuildIsStale(outDir))) return 'fresh';
  return withLock(async () => {
    // Another process may have built it while this one waited for the lock.
    if (!(await serverBuildIsStale(outDir))) return 'fresh';
    await buildServer(outDir);
    return 'built';
  }, LOCK);
}

async function cli(args: string[]): Promise<void> {
  const ifStale = args.includes('--if-stale');
  const outIndex = args.indexOf('--out');
  const outDir = outIndex >= 0 && args[outIndex + 1] ? path.resolve(args[outIndex + 1] as string) : SERVER_DIST;
  const started = Date.now();
  const outcome = ifStale
    ? await ensureServerBuild(outDir)
    : await withLock(() => buildServer(outDir).then(() => 'built' as const), LOCK);
  if (outcome === 'built') process.stderr.write(`basalt: server built in ${Date.now() - started} ms\n`);
  if (args.includes('--server')) return;
  if (ifStale && (await dashboardIsStale())) {
    // The server does not need the dashboard to start (/_/ answers 503 until its files are
    // there): on a fresh clone the Vite build runs beside the embedded Postgres's initdb
    // instead of before it, which keeps the first start within 15 s (docs/operations.md).
    const script = fileURLToPath(new URL('./dashboard-build.ts', import.meta.url));
    spawn(process.execPath, [...process.execArgv, script, '--if-stale'], { stdio: 'inherit' }).unref();
    process.stderr.write('basalt: building the dashboard in the background; /_/ answers 503 until it is ready\n');
    return;
  }
  await dashboardCli(ifStale);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await cli(process.argv.slice(2));
}
