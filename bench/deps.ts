import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BENCH_DIR } from './settings.js';

/**
 * Peers (parse-server) and the load generator live in bench/'s own package, so they never
 * weigh on Basalt's install. A clean checkout installs them here on first use, from the
 * committed lock file.
 */
export function ensureBenchDependencies(): void {
  const wanted = ['autocannon', 'parse-server'];
  const missing = wanted.filter((name) => !existsSync(path.join(BENCH_DIR, 'node_modules', name, 'package.json')));
  if (missing.length === 0) return;
  process.stderr.write(`bench: installing bench dependencies (missing: ${missing.join(', ')}) with npm ci\n`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const result = spawnSync(npm, ['ci', '--no-audit', '--no-fund'], { cwd: BENCH_DIR, stdio: ['ignore', 2, 2] });
  if (result.status !== 0) throw new Error(`npm ci in ${BENCH_DIR} failed (exit ${result.status ?? 'signal'})`);
}

/** Resolves a package from bench/node_modules (not the root install). */
export const benchRequire = createRequire(path.join(BENCH_DIR, 'package.json'));
