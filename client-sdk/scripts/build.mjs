/**
 * Builds the SDK: minified ESM for browsers and Node 20 — dist/index.js, dist/offline.js
 * (`@basalt/client/offline`) and the offline engine in a chunk of its own that index.js
 * loads only when a client enables `offline` — and the type declarations (dist/index.d.ts
 * and friends). Fails when the bundle pulls in Node-only
 * code (the browser platform refuses `node:` imports) or exceeds the size budget.
 *   node client-sdk/scripts/build.mjs
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

/** The whole SDK (every file), minified and gzipped, must stay under this (SDK_SIZE_BUDGET overrides it, for tests). */
// eslint-disable-next-line no-restricted-properties -- a build script, not a server module
const BUDGET_BYTES = Number(process.env.SDK_SIZE_BUDGET ?? 25 * 1024);

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const distDir = path.join(sdkDir, 'dist');

rmSync(distDir, { recursive: true, force: true });
const result = await build({
  entryPoints: { index: path.join(sdkDir, 'src/index.ts'), offline: path.join(sdkDir, 'src/offline/index.ts') },
  outdir: distDir,
  chunkNames: '[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  sourcemap: true,
  treeShaking: true,
  metafile: true,
  logLevel: 'warning',
});
const bundled = Object.keys(result.metafile.inputs);
// Each file is downloaded (and compressed) on its own: the SDK's size is the sum.
const files = readdirSync(distDir).filter((name) => name.endsWith('.js'));
let minified = 0;
let gzipped = 0;
for (const name of files) {
  const code = readFileSync(path.join(distDir, name));
  minified += code.length;
  gzipped += gzipSync(code, { level: 9 }).length;
}
writeFileSync(
  path.join(distDir, 'size.json'),
  JSON.stringify({ minified, gzipped, budget: BUDGET_BYTES, inputs: bundled.length, files }, null, 2) + '\n',
);

const tsc = spawnSync(
  process.execPath,
  [path.join(sdkDir, '..', 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(sdkDir, 'tsconfig.build.json')],
  { stdio: 'inherit' },
);
if (tsc.status !== 0) {
  process.stderr.write('client-sdk: type declarations failed\n');
  process.exit(1);
}

const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
process.stdout.write(
  `client-sdk: dist/*.js ${kib(minified)} minified, ${kib(gzipped)} gzipped (budget ${kib(BUDGET_BYTES)})\n`,
);
if (gzipped > BUDGET_BYTES) {
  process.stderr.write(`client-sdk: over the size budget by ${kib(gzipped - BUDGET_BYTES)}\n`);
  process.exit(1);
}
