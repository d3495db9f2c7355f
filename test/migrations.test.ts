import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { migrate, readMigrations } from '../server/internal/migrations.js';
import { createTestDatabase, silentLogger, type TestDatabase } from './helpers.js';

async function appliedNames(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string }>('SELECT name FROM basalt.migrations ORDER BY name');
    return rows.map((row) => row.name);
  } finally {
    await client.end();
  }
}

describe('migrations', () => {
  const databases: TestDatabase[] = [];
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'basalt-migrations-'));
  });

  afterEach(async () => {
    await Promise.all(databases.splice(0).map((database) => database.drop()));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('ships ordered, uniquely numbered SQL files', async () => {
    const migrations = await readMigrations();
    const numbers = migrations.map((migration) => migration.name.slice(0, 4));
    expect(migrations.length).toBeGreaterThan(0);
    expect(new Set(numbers).size).toBe(numbers.length);
    expect([...numbers].sort()).toEqual(numbers);
  });

  it('applies every migration once, and a second run does nothing', async () => {
    const database = await createTestDatabase({ migrate: false });
    databases.push(database);
    const first = await migrate(database.url, silentLogger);
    expect(first).toEqual((await readMigrations()).map((migration) => migration.name));
    expect(await migrate(database.url, silentLogger)).toEqual([]);
    expect(await appliedNames(database.url)).toEqual(first);
  });

  it('lets instances that start together take turns under the advisory lock', async () => {
    const database = await createTestDatabase({ migrate: false });
    databases.push(database);
    const runs = await Promise.all(Array.from({ length: 4 }, () => migrate(database.url, silentLogger)));
    const all = runs.flat();
    const expected = (await readMigrations()).map((migration) => migration.name);
    // Exactly one run applied each migration; the others found it done.
    expect([...all].sort()).toEqual(expected);
    expect(await appliedNames(database.url)).toEqual(expected);
  });

  it('`npm run migrate` applies them to DATABASE_URL without starting the server', { timeout: 60_000 }, async () => {
    const database = await createTestDatabase({ migrate: false });
    databases.push(database);
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: database.url, LOG_LEVEL: 'info' };
    delete env.NODE_OPTIONS;
    const root = fileURLToPath(new URL('..', import.meta.url));
    const run = () => spawnSync('npm', ['run', '--silent', 'migrate'], { cwd: root, env, encoding: 'utf8' });
    const first = run();
    expect(first.status, first.stderr).toBe(0);
    expect(await appliedNames(database.url)).toEqual((await readMigrations()).map((migration) => migration.name));
    const second = run();
    expect(second.status).toBe(0);
    expect(second.stdout).toContain('the database is up to date');
  });

  it('rolls back a failing migration and reports its name', async () => {
    const database = await createTestDatabase({ migrate: false });
    databases.push(database);
    await writeFile(path.join(dir, '0001_good.sql'), 'CREATE TABLE public.good (id int);');
    await writeFile(path.join(dir, '0002_bad.sql'), 'CREATE TABLE public.half (id int); SELECT no_such_function();');
    await expect(migrate(database.url, silentLogger, dir)).rejects.toThrow(/migration 0002_bad failed/);
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    const half = await client.query(`SELECT to_regclass('public.half') AS t`);
    const good = await client.query(`SELECT to_regclass('public.good') AS t`);
    await client.end();
    expect(half.rows[0].t).toBeNull();
    expect(good.rows[0].t).toBe('good');
    expect(await appliedNames(database.url)).toEqual(['0001_good']);
  });

  it('refuses to start when an applied migration was edited', async () => {
    const database = await createTestDatabase({ migrate: false });
    databases.push(database);
    const editedDir = await mkdtemp(path.join(tmpdir(), 'basalt-migrations-edit-'));
    await writeFile(path.join(editedDir, '0001_a.sql'), 'CREATE TABLE public.a (id int);');
    await migrate(database.url, silentLogger, editedDir);
    await writeFile(path.join(editedDir, '0001_a.sql'), 'CREATE TABLE public.a (id bigint);');
    await expect(migrate(database.url, silentLogger, editedDir)).rejects.toThrow(/0001_a was changed/);
    await rm(editedDir, { recursive: true, force: true });
  });
});
