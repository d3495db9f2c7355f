/**
 * Builds the SDK: one minified ESM file for browsers and Node 20 (dist/index.js) and its
 * type declarations (dist/index.d.ts and friends). Fails when the bundle pulls in Node-only
 * code (the browser platform refuses `node:` imports) or exceeds the size budget.
 *   node client-sdk/scripts/build.mjs
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

/** The whole SDK, minified and gzipped, must stay under this (SDK_SIZE_BUDGET overrides it, for tests). */
// eslint-disable-next-line no-restricted-properties -- a build script, not a server module
const BUDGET_BYTES = Number(process.env.SDK_SIZE_BUDGET ?? 20 * 1024);

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const distDir = path.join(sdkDir, 'dist');

rmSync(distDir, { recursive: true, force: true });
const result = await build({
  entryPoints: [path.join(sdkDir, 'src/index.ts')],
  outfile: path.join(distDir, 'index.js'),
  bundle: true,
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
const code = readFileSync(path.join(distDir, 'index.js'));
const gzipped = gzipSync(code, { level: 9 }).length;
writeFileSync(
  path.join(distDir, 'size.json'),
  JSON.stringify({ minified: code.length, gzipped, budget: BUDGET_BYTES, inputs: bundled.length }, null, 2) + '\n',
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
  `client-sdk: dist/index.js ${kib(code.length)} minified, ${kib(gzipped)} gzipped (budget ${kib(BUDGET_BYTES)})\n`,
);
if (gzipped > BUDGET_BYTES) {
  process.stderr.write(`client-sdk: over the size budget by ${kib(gzipped - BUDGET_BYTES)}\n`);
  process.exit(1);
}
