import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const script = path.join(sdkDir, 'scripts', 'build.mjs');

function runBuild(env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [script], { cwd: sdkDir, env: { ...process.env, ...env }, encoding: 'utf8' });
}

/**
 * What an app that never enables offline downloads, gzipped: its bundle (made as an app's
 * bundler would, splitting at dynamic imports) and the chunks it imports statically — not
 * the offline engine, which it never loads.
 */
async function appWithoutOffline(): Promise<{ gzipped: number; engineLoadedLazily: boolean }> {
  const result = await build({
    stdin: {
      contents: `import { createClient } from ${JSON.stringify(path.join(sdkDir, 'src', 'index.ts'))};
        const basalt = createClient('http://127.0.0.1:8080');
        const todos = basalt.db.collection('todos');
        todos.onSnapshot((snapshot) => console.log(snapshot.docs));
        void todos.add({ title: 'x' });
        basalt.auth.onAuthStateChange(() => undefined);`,
      resolveDir: sdkDir,
      loader: 'js',
    },
    bundle: true,
    format: 'esm',
    splitting: true,
    outdir: path.join(sdkDir, 'dist-app'),
    write: false,
    minify: true,
    metafile: true,
    platform: 'browser',
    target: ['es2020'],
  });
  const outputs = result.metafile.outputs;
  const entry = Object.keys(outputs).find((name) => outputs[name]?.entryPoint !== undefined) as string;
  const loaded = new Set<string>();
  const visit = (name: string) => {
    if (loaded.has(name)) return;
    loaded.add(name);
    for (const imported of outputs[name]?.imports ?? []) if (imported.kind === 'import-statement') visit(imported.path);
  };
  visit(entry);
  let gzipped = 0;
  for (const file of result.outputFiles) {
    if ([...loaded].some((name) => path.resolve(name) === file.path))
      gzipped += gzipSync(file.contents, { level: 9 }).length;
  }
  const engine = Object.keys(outputs).find((name) =>
    Object.keys(outputs[name]?.inputs ?? {}).some((input) => input.endsWith('offline/engine.ts')),
  );
  return { gzipped, engineLoadedLazily: engine !== undefined && !loaded.has(engine) };
}

/**
 * The same app before the SDK had offline support (gzipped bytes, measured with the function
 * above on the SDK of commit 66160f4: topics and live aggregates in, offline not yet).
 */
const APP_BEFORE_OFFLINE = 14_746;
/**
 * What offline may cost an app that does not use it: nothing. What it still carries — the db
 * methods and snapshot flags every client has (pendingWrites, waitForPendingWrites,
 * onWriteError, fromCache, hasPendingWrites) and the lazy loader — is outweighed since the
 * seed of a cached live query moved into the engine, and the events client's batch publish
 * added since: 14,745 B when measured (−1 B; ±1 B as the engine chunk's hashed name changes). Nothing
 * more: the SDK compiles class fields as assignments and has no #private fields
 * (src/tsconfig.json), so no esbuild helpers end up in a chunk shared with the engine; the
 * tabs' shared socket lives in the engine too. docs/offline.md.
 */
const OFFLINE_OVERHEAD_BUDGET = 0;

describe('the SDK build', () => {
  it('emits ESM bundles with declarations, within the size budget', { timeout: 120_000 }, async () => {
    const result = runBuild();
    expect(result.status, result.stderr).toBe(0);
    const size = JSON.parse(readFileSync(path.join(sdkDir, 'dist', 'size.json'), 'utf8')) as {
      gzipped: number;
      budget: number;
      files: string[];
    };
    expect(size.budget).toBe(25 * 1024);
    expect(size.gzipped).toBeLessThanOrEqual(size.budget);
    expect(size.files).toEqual(expect.arrayContaining(['index.js', 'offline.js']));
    for (const file of size.files) {
      expect(readFileSync(path.join(sdkDir, 'dist', file), 'utf8')).not.toMatch(/from\s*["']node:/);
    }
    expect(readFileSync(path.join(sdkDir, 'dist', 'index.d.ts'), 'utf8')).toContain('createClient');
    // The browser bundle also runs on Node 20.
    const sdk = (await import(pathToFileURL(path.join(sdkDir, 'dist', 'index.js')).href)) as Record<string, unknown>;
    expect(typeof sdk.createClient).toBe('function');
    expect(typeof sdk.BasaltError).toBe('function');
    const offline = (await import(pathToFileURL(path.join(sdkDir, 'dist', 'offline.js')).href)) as Record<
      string,
      unknown
    >;
    expect(typeof offline.memoryPersistence).toBe('function');
  });

  it(
    'costs an app that never enables offline next to nothing: the engine is never loaded',
    { timeout: 60_000 },
    async () => {
      const app = await appWithoutOffline();
      expect(app.engineLoadedLazily).toBe(true);
      expect(app.gzipped).toBeLessThanOrEqual(APP_BEFORE_OFFLINE + OFFLINE_OVERHEAD_BUDGET);
    },
  );

  it('fails when the bundle is over budget', { timeout: 120_000 }, () => {
    const result = runBuild({ SDK_SIZE_BUDGET: '1024' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('over the size budget');
    // Leave a good build behind for whoever runs next.
    expect(runBuild().status).toBe(0);
  });
});
