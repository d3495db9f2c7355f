import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASALT_SERVER_ARGS, NODE_HEAP_FLOOR } from '../bench/settings.js';
import { buildServer, serverBuildIsStale } from '../scripts/build.js';
import { BUILD_OUTPUTS, ROOT_DIR } from '../server/internal/paths.js';
import { freePort } from '../server/internal/net.js';
import { createTestDatabase, request, type TestDatabase } from './helpers.js';

/**
 * Production runs the compiled server (scripts/build.ts → dist/main.mjs), not the TypeScript
 * sources: built here into a folder of its own and started as a real process, it must serve,
 * find what it reads at run time (migrations, the word list, the dashboard), and run functions
 * in workers started from the build's own worker script.
 */

let database: TestDatabase;
let outDir: string;
let dataDir: string;
let functionsDir: string;
let child: ChildProcess | null = null;
let output = '';
const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;

beforeAll(async () => {
  // Inside the project: the build's npm imports resolve from the project's node_modules.
  const cache = path.join(ROOT_DIR, 'node_modules', '.cache');
  await mkdir(cache, { recursive: true });
  outDir = await mkdtemp(path.join(cache, 'basalt-build-test-'));
  dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-build-data-'));
  functionsDir = path.join(dataDir, 'functions');
  await mkdir(functionsDir);
  await writeFile(
    path.join(functionsDir, 'greet.ts'),
    `import { http } from 'basalt/functions';
     export default http(async (request) => ({ hello: (request.body as { name?: string } | null)?.name ?? 'world' }));`,
  );
  database = await createTestDatabase({ migrate: false });
}, 120_000);

afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child?.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  await database?.drop();
  await rm(outDir, { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
});

describe('the production build', () => {
  it('compiles the server, the worker script, the functions API and the server files that are not code', async () => {
    expect(await serverBuildIsStale(outDir)).toBe(true);
    await buildServer(outDir);
    const files = await readdir(outDir, { recursive: true });
    expect(files).toEqual(
      expect.arrayContaining([
        BUILD_OUTPUTS.main,
        BUILD_OUTPUTS.functionsApi,
        BUILD_OUTPUTS.workerEntry,
        path.join('modules', 'auth', 'common-passwords.txt'),
      ]),
    );
    expect(await serverBuildIsStale(outDir)).toBe(false);
    // No scratch folder is left behind.
    expect(files.some((file) => file.startsWith('.build-'))).toBe(false);
  }, 120_000);

  it('starts from the build on an external Postgres: migrates, serves, checks passwords, runs functions', async () => {
    const port = await freePort();
    child = spawn(process.execPath, [...NODE_HEAP_FLOOR, path.join(outDir, BUILD_OUTPUTS.main)], {
      cwd: ROOT_DIR,
      env: {
        ...process.env,
        DATABASE_URL: database.url,
        PORT: String(port),
        HOST: '127.0.0.1',
        BASALT_SERVICE_KEY: serviceKey,
        BASALT_FUNCTIONS_DIR: functionsDir,
        BASALT_FUNCTIONS_WATCH: 'false',
        BASALT_DATA_DIR: dataDir,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const ready = await fetch(`${url}/healthz`).then(
        (response) => response.ok,
        () => false,
      );
      if (ready) break;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the build did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect((await request(url, 'GET', '/readyz')).status).toBe(200);

    // The word list is read by path at run time.
    const weak = await request(url, 'POST', '/v1/auth/signup', {
      body: { email: 'someone@example.com', password: 'password123' },
    });
    expect(weak.status).toBe(400);
    expect((weak.body as { error: { code: string } }).error.code).toBe('WEAK_PASSWORD');

    // A function bundled against the build's functions API, run in a worker started from the
    // build's worker script (nothing compiled into the data dir at start).
    const run = await request(url, 'POST', '/v1/functions/greet', { token: serviceKey, body: { name: 'build' } });
    expect(run.status).toBe(200);
    expect(run.body).toEqual({ hello: 'build' });
    expect(existsSync(path.join(dataDir, 'functions-build', BUILD_OUTPUTS.workerEntry))).toBe(false);

    // A deploy through the admin API builds against the build's functions API too.
    const deployed = await request(url, 'PUT', '/v1/admin/functions/deployed', {
      token: serviceKey,
      body: {
        files: {
          'index.ts': `import { http } from 'basalt/functions';\nexport default http(async () => 'deployed');\n`,
        },
        entry: 'index.ts',
      },
    });
    expect(deployed.status, deployed.text).toBe(201);
    expect((await request(url, 'POST', '/v1/functions/deployed', { body: {} })).body).toBe('deployed');
  }, 120_000);
});

describe('the start command', () => {
  it('npm start, the Docker image and the benchmark harness start the build with the same Node flags', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT_DIR, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    const start = pkg.scripts.start ?? '';
    expect(start).toContain('scripts/build.ts --if-stale');
    expect(start).toContain(`exec node ${BASALT_SERVER_ARGS.join(' ')}`);
    expect(pkg.scripts.bench).toContain(`node ${NODE_HEAP_FLOOR.join(' ')} `);
    const dockerfile = readFileSync(path.join(ROOT_DIR, 'Dockerfile'), 'utf8');
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)?.[1];
    expect(cmd && (JSON.parse(cmd) as string[])).toEqual(['node', ...BASALT_SERVER_ARGS]);
    expect(dockerfile).toContain('RUN node --import tsx scripts/build.ts');
  });
});
