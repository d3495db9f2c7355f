import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, cp, lstat, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../server/internal/embedded-postgres.js';
import { silentLogger } from './helpers.js';

/**
 * As root, Postgres runs as the `postgres` user, which cannot enter a folder only root may
 * enter (a `mktemp -d` folder, /root). A checkout there must still start (`npm start`'s
 * server entry) and test (`vitest` with its embedded test Postgres).
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const isRoot = process.getuid?.() === 0;

let privateDir: string;
let checkout: string;
let sharedParent: string;
let sharedDir: string;

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'BASALT_SERVICE_KEY', 'NODE_OPTIONS', 'VITEST']) {
    delete env[name];
  }
  for (const name of Object.keys(env)) if (name.startsWith('VITEST_')) delete env[name];
  return { ...env, ...extra };
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

beforeAll(async () => {
  if (!isRoot) return;
  // mkdtemp makes the folder 0700: only root may enter it.
  privateDir = await mkdtemp(path.join(tmpdir(), 'basalt-private-'));
  expect((await stat(privateDir)).mode & 0o777).toBe(0o700);
  checkout = path.join(privateDir, 'app');
  await mkdir(checkout);
  for (const entry of [
    'server',
    'client-sdk/src',
    'migrations',
    'test',
    'package.json',
    'tsconfig.json',
    'vitest.config.ts',
  ]) {
    await cp(path.join(root, entry), path.join(checkout, entry), { recursive: true });
  }
  await mkdir(path.join(checkout, 'functions'));
  // node_modules as hard links (a copy where they share a file system): the same files, at
  // paths the postgres user cannot reach.
  const linked = spawnSync('cp', ['-al', path.join(root, 'node_modules'), path.join(checkout, 'node_modules')]);
  if (linked.status !== 0) {
    await cp(path.join(root, 'node_modules'), path.join(checkout, 'node_modules'), {
      recursive: true,
      verbatimSymlinks: true,
    });
  }
  // Where the binaries and clusters go: a folder of this test's own instead of /var/lib/basalt.
  sharedParent = await mkdtemp(path.join(tmpdir(), 'basalt-shared-'));
  await chmod(sharedParent, 0o711);
  sharedDir = path.join(sharedParent, 'basalt');
}, 120_000);

afterAll(async () => {
  if (!isRoot) return;
  await rm(privateDir, { recursive: true, force: true });
  await rm(sharedParent, { recursive: true, force: true });
});

describe.skipIf(!isRoot)('as root (skipped unless the tests run as root), in a folder only root may enter', () => {
  it(
    'starts the embedded Postgres with its data dir there, and again on the same data',
    { timeout: 120_000 },
    async () => {
      const baseDir = path.join(privateDir, 'data');
      const first = await startEmbeddedPostgres(baseDir, silentLogger, { sharedDir });
      try {
        // The cluster lives where the postgres user can reach it, linked from the data dir.
        expect(first.dataDir.startsWith(path.join(sharedDir, 'clusters') + path.sep)).toBe(true);
        expect((await lstat(path.join(baseDir, 'postgres'))).isSymbolicLink()).toBe(true);
        const client = new pg.Client({ connectionString: first.url });
        await client.connect();
        await client.query('CREATE TABLE kept (id int)');
        await client.query('INSERT INTO kept VALUES (7)');
        await client.end();
      } finally {
        await first.stop();
      }
      const second = await startEmbeddedPostgres(baseDir, silentLogger, { sharedDir });
      try {
        expect(second.dataDir).toBe(first.dataDir);
        const client = new pg.Client({ connectionString: second.url });
        await client.connect();
        const { rows } = await client.query<{ id: number }>('SELECT id FROM kept');
        await client.end();
        expect(rows).toEqual([{ id: 7 }]);
      } finally {
        await second.stop();
      }
    },
  );

  it('runs the server entry of a checkout there', { timeout: 180_000 }, async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
      cwd: checkout,
      env: cleanEnv({ PORT: '0', BASALT_EMBEDDED_POSTGRES_DIR: sharedDir, BASALT_FUNCTIONS_WATCH: 'false' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      let url: string | undefined;
      const deadline = Date.now() + 90_000;
      while (!url && Date.now() < deadline && child.exitCode === null) {
        url = /Basalt is ready at (http:\/\/\S+)/.exec(output)?.[1];
        if (!url) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(url, output).toBeDefined();
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(200);
      // The binaries in the checkout are out of the postgres user's reach: it runs a copy.
      expect((await readdir(sharedDir)).some((name) => name.startsWith('postgres-'))).toBe(true);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited(child), output).toBe(0);
  });

  it(
    'runs vitest there with its embedded test Postgres, and prints why when that cannot start',
    { timeout: 330_000 },
    async () => {
      const vitest = path.join(checkout, 'node_modules', 'vitest', 'vitest.mjs');
      const run = (extra: Record<string, string>) =>
        spawnSync(process.execPath, [vitest, 'run', 'test/config.test.ts'], {
          cwd: checkout,
          env: cleanEnv(extra),
          encoding: 'utf8',
          timeout: 150_000,
        });
      const passing = run({ BASALT_EMBEDDED_POSTGRES_DIR: sharedDir });
      expect(passing.status, passing.stdout + passing.stderr).toBe(0);

      // A shared folder that cannot be made: the setup fails, and says so.
      const failing = run({ BASALT_EMBEDDED_POSTGRES_DIR: '/dev/null/basalt' });
      expect(failing.status).toBe(1);
      expect(failing.stderr).toContain('The test Postgres could not start');
      expect(failing.stderr).toContain('/dev/null/basalt');
    },
  );
});
