import { randomBytes } from 'node:crypto';
import pg from 'pg';

export interface BenchDatabase {
  name: string;
  url: string;
  /** Runs SQL on this database with a short-lived connection (seeding, indexes, ANALYZE). */
  sql(text: string, values?: unknown[]): Promise<pg.QueryResult>;
  /** Process ids of the Postgres backends serving this database (other than the asking one). */
  backendPids(): Promise<number[]>;
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** A fresh, empty database of the target's own, so targets never see each other's rows or locks. */
export async function createBenchDatabase(adminUrl: string, target: string): Promise<BenchDatabase> {
  const name = `bench_${target}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  try {
    await admin.connect();
  } catch (error) {
    throw new Error(
      `cannot reach Postgres at ${adminUrl} (set BENCH_DATABASE_URL to an admin connection): ${(error as Error).message}`,
    );
  }
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const sql = async (text: string, values?: unknown[]): Promise<pg.QueryResult> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await client.query(text, values);
    } finally {
      await client.end();
    }
  };
  return {
    name,
    url,
    sql,
    async backendPids() {
      const { rows } = await sql(
        'SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
      );
      return rows.map((row: { pid: number }) => row.pid);
    },
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** The server's version, e.g. "15.20", for the record of where figures were taken. */
export async function postgresVersion(adminUrl: string): Promise<string> {
  const client = new pg.Client({ connectionString: adminUrl });
  try {
    await client.connect();
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version');
    return rows[0]?.server_version.split(' ')[0] ?? 'unknown';
  } catch (error) {
    throw new Error(
      `cannot reach Postgres at ${adminUrl} (set BENCH_DATABASE_URL to an admin connection): ${(error as Error).message}`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
}
