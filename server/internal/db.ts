import pg from 'pg';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type { Logger } from './log.js';
import * as schema from '../db/schema.js';

export type Drizzle = NodePgDatabase<typeof schema>;
/** A connection inside a transaction; every multi-step write takes one explicitly. */
export type Tx = pg.PoolClient;
/** Anything that can run a query: the pool or a transaction's client. */
export type Queryable = pg.Pool | pg.PoolClient;

export interface DatabaseOptions {
  url: string;
  max?: number;
  applicationName?: string;
}

/** The pool, its drizzle view, and transactions. SQL text lives in repositories and here. */
export class Database {
  readonly pool: pg.Pool;
  readonly drizzle: Drizzle;

  constructor(options: DatabaseOptions, log?: Logger) {
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.max ?? 20,
      application_name: options.applicationName ?? 'basalt',
      connectionTimeoutMillis: 10_000,
    });
    // An idle client losing its connection (Postgres restart) must not crash the process.
    this.pool.on('error', (error) => log?.warn({ err: error }, 'idle database connection failed'));
    this.drizzle = drizzle(this.pool, { schema });
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(text, values);
  }

  /** Runs `work` in one transaction: commit on success, rollback on any throw. */
  async transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async ping(): Promise<boolean> {
    try {
      await this.pool.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Hides the password of a connection string for logs. */
export function redactDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '[unparseable url]';
  }
}

/**
 * Waits until Postgres answers, retrying with exponential backoff (capped at 5 s) for
 * at most `timeoutMs`, logging each failed try. Throws the last error when time is up.
 */
export async function waitForDatabase(url: string, timeoutMs: number, log: Logger): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 250;
  for (let attempt = 1; ; attempt++) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (error) {
      await client.end().catch(() => undefined);
      const remaining = deadline - Date.now();
      const reason = error instanceof Error ? error.message : String(error);
      if (remaining <= 0) {
        throw new Error(`database ${redactDatabaseUrl(url)} unreachable after ${attempt} tries: ${reason}`, {
          cause: error,
        });
      }
      log.warn(`database not reachable (try ${attempt}: ${reason}); retrying in ${Math.min(delay, remaining)} ms`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, remaining)));
      delay = Math.min(delay * 2, 5_000);
    }
  }
}
