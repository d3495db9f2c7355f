import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { runnablePostgres } from '../server/internal/embedded-postgres.js';
import { freePort } from '../server/internal/net.js';
import { silentLogger } from './helpers.js';

const run = promisify(execFile);

interface Binaries {
  initdb: string;
  pg_ctl: string;
}

/**
 * The embedded-postgres package's binaries, and who runs them: Postgres refuses to run as
 * root, so there it runs as the `postgres` user, from wherever that user can reach them (a
 * checkout under a folder only root may enter gets them copied, as `npm start` does).
 */
async function binaries(): Promise<{ bin: Binaries; owner: { uid: number; gid: number } | null }> {
  const { binDir, runAs } = await runnablePostgres(silentLogger);
  return {
    bin: { initdb: path.join(binDir, 'initdb'), pg_ctl: path.join(binDir, 'pg_ctl') },
    owner: runAs ? { uid: runAs.uid, gid: runAs.gid } : null,
  };
}

/**
 * A Postgres cluster of one test's own, in a temporary directory on a free port, that the
 * test can stop (any shutdown mode) and start again on the same port: what an operator
 * does to the database under a running Basalt.
 */
export class PrivateCluster {
  private constructor(
    private readonly bin: Binaries,
    private readonly owner: { uid: number; gid: number } | null,
    readonly dir: string,
    readonly port: number,
  ) {}

  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication on loopback). */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  static async create(): Promise<PrivateCluster> {
    const { bin, owner } = await binaries();
    const dir = await mkdtemp(path.join(tmpdir(), 'basalt-private-pg-'));
    if (owner) await chown(dir, owner.uid, owner.gid);
    const cluster = new PrivateCluster(bin, owner, dir, await freePort());
    await cluster.exec(bin.initdb, [
      '-D',
      cluster.dataDir,
      '-U',
      'postgres',
      '--auth=trust',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ]);
    await writeFile(
      path.join(cluster.dataDir, 'postgresql.auto.conf'),
      [
        `port = ${cluster.port}`,
        "listen_addresses = '127.0.0.1'",
        "unix_socket_directories = ''",
        'max_connections = 100',
        // A test cluster: durability against power loss is not what is tested here, a
        // crash of Postgres itself (stop -m immediate) still replays the WAL.
        'fsync = off',
        'full_page_writes = off',
        '',
      ].join('\n'),
    );
    return cluster;
  }

  private get dataDir(): string {
    return path.join(this.dir, 'data');
  }

  private async exec(file: string, args: string[]): Promise<void> {
    await run(file, args, { ...(this.owner ?? {}), cwd: this.dir, env: { ...process.env, LC_ALL: 'C' } });
  }

  /** Creates a database on the running cluster and returns its URL. */
  async createDatabase(name: string): Promise<string> {
    const admin = new pg.Client({ connectionString: this.url });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    return this.url.replace(/\/postgres$/, `/${name}`);
  }

  async start(): Promise<void> {
    await this.exec(this.bin.pg_ctl, ['start', '-w', '-t', '30', '-D', this.dataDir, '-l', path.join(this.dir, 'log')]);
  }

  /** `pg_ctl stop -m <mode>`: `immediate` is a crash for Basalt's connections (no goodbye, WAL replay at start). */
  async stop(mode: 'smart' | 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.exec(this.bin.pg_ctl, ['stop', '-w', '-t', '30', '-m', mode, '-D', this.dataDir]);
  }

  async destroy(): Promise<void> {
    await this.stop('immediate').catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
