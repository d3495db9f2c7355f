/**
 * Builds the admin dashboard (dashboard/ → dashboard/dist) with Vite.
 *
 *   node --import tsx scripts/dashboard-build.ts             always build
 *   node --import tsx scripts/dashboard-build.ts --if-stale  build only when dist is missing or older than the sources
 *
 * `npm start` runs the second form, so a fresh clone serves a working dashboard after
 * `npm install && npm start`, and an unchanged tree starts without rebuilding. The build
 * output is not committed: it is derived, and rebuilt whenever its sources change.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { brotliCompressSync, constants as zlib, gzipSync } from 'node:zlib';

const root = fileURLToPath(new URL('../dashboard/', import.meta.url));
export const DASHBOARD_DIST = path.join(root, 'dist');
/** Scratch builds and the lock; under a "dist" folder so git, ESLint and Prettier skip them. */
const WORK = path.join(root, '.cache', 'dist');
const LOCK = path.join(WORK, 'lock');
/** A lock older than this was left by a build that died; builds take seconds. */
const STALE_LOCK_MS = 120_000;
const SOURCES = ['index.html', 'vite.config.ts', 'src', 'public'];

/** The newest modification time of a file, or of anything in a folder (the folder's own included). */
export async function newestSource(entry: string): Promise<number> {
  const info = await stat(entry).catch(() => null);
  if (!info) return 0;
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const child of await readdir(entry)) newest = Math.max(newest, await newestSource(path.join(entry, child)));
  return newest;
}

/** True when dist/index.html is missing or older than any source file. */
export async function dashboardIsStale(): Promise<boolean> {
  const built = await stat(path.join(DASHBOARD_DIST, 'index.html')).catch(() => null);
  if (!built) return true;
  let newest = 0;
  for (const source of SOURCES) newest = Math.max(newest, await newestSource(path.join(root, source)));
  return newest > built.mtimeMs;
}

/** Text files worth compressing ahead of time: the server sends these .br/.gz copies as they are. */
const COMPRESSIBLE = /\.(?:html|js|css|svg|json|map|txt)$/;

/** Writes a .br and a .gz copy beside every compressible file of the build (served precompressed). */
async function precompress(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      await precompress(file);
      continue;
    }
    if (!COMPRESSIBLE.test(entry.name)) continue;
    const content = await readFile(file);
    await writeFile(
      `${file}.br`,
      brotliCompressSync(content, { params: { [zlib.BROTLI_PARAM_QUALITY]: zlib.BROTLI_MAX_QUALITY } }),
    );
    await writeFile(`${file}.gz`, gzipSync(content, { level: 9 }));
  }
}

/**
 * Builds into a scratch folder and swaps it in, so a server reading dist meanwhile sees
 * the old build or the new one, never half of one.
 */
export async function buildDashboard(): Promise<void> {
  const { build } = await import('vite');
  await mkdir(WORK, { recursive: true });
  const scratch = path.join(WORK, `build-${process.pid}-${Date.now()}`);
  try {
    await build({
      configFile: path.join(root, 'vite.config.ts'),
      build: { outDir: scratch, emptyOutDir: true },
      logLevel: 'warn',
    });
    await precompress(scratch);
    const old = path.join(WORK, `old-${process.pid}-${Date.now()}`);
    if (existsSync(DASHBOARD_DIST)) await rename(DASHBOARD_DIST, old);
    await rename(scratch, DASHBOARD_DIST);
    await rm(old, { recursive: true, force: true });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Runs `work` holding a lock folder, so test files and `npm start` starting together build once. */
export async function withLock<T>(work: () => Promise<T>, lock: string = LOCK): Promise<T> {
  await mkdir(path.dirname(lock), { recursive: true });
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const held = await stat(lock).catch(() => null);
      if (held && Date.now() - held.mtimeMs > STALE_LOCK_MS) await rm(lock, { recursive: true, force: true });
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    return await work();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

/** Builds when stale; without Vite (a production install) an existing build is used as it is. */
export async function ensureDashboard(): Promise<'fresh' | 'built' | 'unavailable'> {
  if (!(await dashboardIsStale())) return 'fresh';
  try {
    await import('vite');
  } catch {
    return existsSync(path.join(DASHBOARD_DIST, 'index.html')) ? 'fresh' : 'unavailable';
  }
  return withLock(async () => {
    // Another process may have built it while this one waited for the lock.
    if (!(await dashboardIsStale())) return 'fresh';
    await buildDashboard();
    return 'built';
  });
}

/** Builds (or, with ifStale, checks and builds when stale), reporting on stderr; never throws for a stale check. */
export async function dashboardCli(ifStale: boolean): Promise<void> {
  const started = Date.now();
  if (!ifStale) {
    await withLock(buildDashboard);
    process.stderr.write(`basalt: dashboard built in ${Date.now() - started} ms\n`);
    return;
  }
  let outcome: Awaited<ReturnType<typeof ensureDashboard>>;
  try {
    outcome = await ensureDashboard();
  } catch (error) {
    // `npm start` must still start the API when the dashboard cannot be built (e.g. a Node
    // older than Vite 7 needs): the server then answers 503 at /_/ and serves the rest.
    const reason = error instanceof Error ? error.message : String(error);
    process.stderr.write(`basalt: could not build the dashboard (${reason}); starting without it\n`);
    return;
  }
  if (outcome === 'built') process.stderr.write(`basalt: dashboard built in ${Date.now() - started} ms\n`);
  if (outcome === 'unavailable') {
    process.stderr.write('basalt: the dashboard is not built and Vite is not installed; /_/ will answer 503\n');
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await dashboardCli(process.argv.includes('--if-stale'));
}
