import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { useTempDir } from './helpers.js';
import { isAlive } from '../server/internal/embedded-postgres.js';
import { freePort } from '../server/internal/net.js';

/**
 * Runs the real `npm start` path, as a newcomer would: embedded Postgres, migrations,
 * a restart that keeps the data, and a clean stop on SIGTERM sent to npm alone.
 */

const root = fileURLToPath(new URL('..', import.meta.url));

interface Started {
  child: ChildProcess;
  url: string;
  databaseUrl: string;
  output: () => string;
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DATABASE_URL;
  delete env.BASALT_SERVICE_KEY;
  delete env.NODE_OPTIONS;
  return { ...env, ...extra };
}

function runNpm(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string } {
  const child = spawn('npm', args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output };
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

async function startBasalt(dataDir: string, port: number): Promise<Started> {
  const { child, output } = runNpm(['start'], cleanEnv({ BASALT_DATA_DIR: dataDir, PORT: String(port) }));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const ready = output()
      .split('\n')
      .map((line) => {
        try {
          return JSON.parse(line) as { url?: string; database?: string };
        } catch {
          return null;
        }
      })
      .find((line) => line?.url && line.database);
    if (ready?.url && ready.database) {
      // The log hides the password; it is kept in the data dir for its owner.
      const password = (await readFile(path.join(dataDir, 'postgres-password'), 'utf8')).trim();
      const databaseUrl = ready.database.replace(' (embedded)', '').replace('***', encodeURIComponent(password));
      return { child, url: ready.url, databaseUrl, output };
    }
    if (child.exitCode !== null) throw new Error(`npm start exited early:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  child.kill('SIGKILL');
  throw new Error(`npm start did not become ready in 60 s:\n${output()}`);
}

/** Every process below `pid` (npm → node → postgres and its workers, esbuild). */
function descendants(pid: number): number[] {
  const result = spawnSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' });
  const children = new Map<number, number[]>();
  for (const line of result.stdout.trim().split('\n')) {
    const [child, parent] = line.trim().split(/\s+/).map(Number);
    if (child === undefined || parent === undefined) continue;
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length) {
    for (const child of children.get(queue.shift() as number) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

async function postmasterPid(dataDir: string): Promise<number> {
  return Number((await readFile(path.join(dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
}

async function stopWithSigterm(started: Started): Promise<{ code: number | null; ms: number }> {
  const begin = Date.now();
  started.child.kill('SIGTERM'); // to npm alone, as a supervisor does
  const result = await exited(started.child);
  return { code: result.code, ms: Date.now() - begin };
}

const dataDir = useTempDir('basalt-start-');

describe('npm start with the embedded default', () => {
  it('starts, keeps data across a restart, and stops cleanly on SIGTERM', { timeout: 180_000 }, async () => {
    const port = await freePort();
    const first = await startBasalt(dataDir.path, port);
    try {
      const ready = await fetch(`${first.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(first.output()).toContain(`service key in ${path.join(dataDir.path, 'service-key')}`);
      const keyFile = await stat(path.join(dataDir.path, 'service-key'));
      expect(keyFile.mode & 0o777).toBe(0o600);

      const client = new pg.Client({ connectionString: first.databaseUrl });
      await client.connect();
      await client.query('CREATE TABLE public.kept (note text)');
      await client.query(`INSERT INTO public.kept VALUES ('written before the restart')`);
      const installation = await client.query<{ value: string }>(
        `SELECT value FROM basalt.instance WHERE key = 'installation_id'`,
      );
      await client.end();

      const pgPid = await postmasterPid(dataDir.path);
      expect(isAlive(pgPid)).toBe(true);
      const tree = descendants(first.child.pid as number);
      expect(tree).toContain(pgPid);
      const stopped = await stopWithSigterm(first);
      expect(stopped.code).toBe(0);
      expect(stopped.ms).toBeLessThan(10_000);
      expect(isAlive(pgPid)).toBe(false);
      // Children end with their parent; give the last of them a moment to be reaped.
      const deadline = Date.now() + 3_000;
      while (tree.some(isAlive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(tree.filter(isAlive)).toEqual([]);
      expect(first.output()).toContain('SIGTERM received');

      const second = await startBasalt(dataDir.path, port);
      try {
        const again = await fetch(`${second.url}/readyz`);
        expect(again.status).toBe(200);
        const reader = new pg.Client({ connectionString: second.databaseUrl });
        await reader.connect();
        const kept = await reader.query<{ note: string }>('SELECT note FROM public.kept');
        const sameInstallation = await reader.query<{ value: string }>(
          `SELECT value FROM basalt.instance WHERE key = 'installation_id'`,
        );
        await reader.end();
        expect(kept.rows).toEqual([{ note: 'written before the restart' }]);
        expect(sameInstallation.rows[0]?.value).toBe(installation.rows[0]?.value);
        expect(second.output()).not.toContain('creating the embedded Postgres cluster');
      } finally {
        const secondPgPid = await postmasterPid(dataDir.path).catch(() => 0);
        const result = await stopWithSigterm(second);
        expect(result.code).toBe(0);
        expect(result.ms).toBeLessThan(10_000);
        if (secondPgPid) expect(isAlive(secondPgPid)).toBe(false);
      }
    } finally {
      if (first.child.exitCode === null) first.child.kill('SIGKILL');
    }
  });

  it('stops cleanly on SIGINT too', { timeout: 120_000 }, async () => {
    const started = await startBasalt(dataDir.path, await freePort());
    const pgPid = await postmasterPid(dataDir.path);
    const begin = Date.now();
    started.child.kill('SIGINT');
    const result = await exited(started.child);
    expect(result.code).toBe(0);
    expect(Date.now() - begin).toBeLessThan(10_000);
    expect(isAlive(pgPid)).toBe(false);
  });
});

describe('start-up errors', () => {
  it('exits non-zero with one line naming a bad variable', { timeout: 60_000 }, async () => {
    const { child, output } = runNpm(['start', '--silent'], cleanEnv({ PORT: 'abc', BASALT_DATA_DIR: dataDir.path }));
    const result = await exited(child);
    expect(result.code).not.toBe(0);
    const lines = output()
      .trim()
      .split('\n')
      .filter((line) => line.trim() !== '');
    expect(lines).toEqual(['basalt: invalid configuration: PORT: expected a whole number, got "abc"']);
  });

  it('rejects a malformed DATABASE_URL without a stack trace', { timeout: 60_000 }, async () => {
    const { child, output } = runNpm(
      ['start', '--silent'],
      cleanEnv({ DATABASE_URL: 'postgres//nope', BASALT_DATA_DIR: dataDir.path }),
    );
    const result = await exited(child);
    expect(result.code).not.toBe(0);
    expect(output()).toContain('basalt: invalid configuration: DATABASE_URL:');
    expect(output()).not.toMatch(/\n\s+at /);
  });

  it('retries an unreachable database with backoff, then exits with a clear line', { timeout: 60_000 }, async () => {
    const port = await freePort(); // nothing listens there
    const { child, output } = runNpm(
      ['start', '--silent'],
      cleanEnv({
        DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/basalt`,
        BASALT_DB_CONNECT_TIMEOUT_MS: '1500',
        BASALT_DATA_DIR: dataDir.path,
      }),
    );
    const result = await exited(child);
    expect(result.code).toBe(1);
    const tries = output().match(/database not reachable \(try \d+/g) ?? [];
    expect(tries.length).toBeGreaterThanOrEqual(2);
    expect(output()).toMatch(
      /basalt: cannot start: database postgres:\/\/postgres@127\.0\.0\.1:\d+\/basalt unreachable/,
    );
    expect(output()).not.toMatch(/\n\s+at /);
  });
});
