import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type { Logger } from './log.js';
import * as schema from '../db/schema.js';
import type { TraceOrigin } from './trace.js';

/** Drizzle's query builder over the tables of server/db/schema.ts. */
export type Drizzle = NodePgDatabase<typeof schema>;
/** A connection inside a transaction; every multi-step write takes one explicitly. */
export type Tx = pg.PoolClient;
/** Anything that can run a query: the pool, a transaction's client, or a dedicated session. */
export type Queryable = pg.Pool | pg.PoolClient | pg.Client;

export interface DatabaseOptions {
  url: string;
  max?: number;
  applicationName?: string;
}

/**
 * Sets the origin the change-log trigger copies into each change row (migrations/0025):
 * transaction-local, so a pooled connection never carries it into someone else's write.
 */
const SET_ORIGIN = "SELECT set_config('basalt.origin', $1, true)";

/** A statement that only reads: it writes no change row, so it needs no origin. */
const READ_ONLY = /^\s*select\b/i;

function statementText(args: unknown[]): string {
  const first = args[0];
  if (typeof first === 'string') return first;
  const text = (first as { text?: unknown } | undefined)?.text;
  return typeof text === 'string' ? text : '';
}

/** The pool, its drizzle view, and transactions. SQL text lives in repositories and here. */
export class Database {
  readonly pool: pg.Pool;
  readonly drizzle: Drizzle;
  private readonly writeListeners = new Set<() => void>();
  /** One builder per connection that ran a transaction's query-builder calls; see builder(). */
  private readonly clientBuilders = new WeakMap<Queryable, Drizzle>();
  /** The origin of the writes made in the current async context (a function's ctx.db / ctx.storage call). */
  private readonly origins = new AsyncLocalStorage<string>();

  constructor(options: DatabaseOptions, log?: Logger) {
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.max ?? 20,
      application_name: options.applicationName ?? 'basalt',
      connectionTimeoutMillis: 10_000,
    });
    // An idle client losing its connection (Postgres restart) must not crash the process.
    this.pool.on('error', (error) => log?.warn({ err: error }, 'idle database connection failed'));
    // Nor may a checked-out one: the pool only listens to idle clients, and a client held
    // between two statements (a transaction awaiting other work) that loses its socket
    // emits 'error' with nobody listening, which ends the process. Its next query fails
    // instead, and release() drops it from the pool.
    this.pool.on('connect', (client) => {
      client.on('error', (error) => log?.debug({ err: error }, 'database connection in use failed'));
    });
    this.watchPoolWrites();
    this.drizzle = drizzle(this.pool, { schema });
  }

  /**
   * Called after each committed write through this pool: a transaction, or a single
   * INSERT/UPDATE/DELETE. The change feed uses it to wake its ticker at once.
   */
  onWrite(listener: () => void): () => void {
    this.writeListeners.add(listener);
    return () => this.writeListeners.delete(listener);
  }

  private wrote(): void {
    // Outside the writer's origin: what a listener starts (a timer, a tick) is nobody's write.
    this.origins.exit(() => {
      for (const listener of this.writeListeners) listener();
    });
  }

  /**
   * The query builder on `q`: the pool's own, or one over a transaction's client, built
   * once per connection (pooled connections are reused, and building one reads the whole
   * schema). The builder costs some JS per call, so it serves admin and background work;
   * per-request paths keep their hand-written statements.
   */
  builder(q: Queryable = this.pool): Drizzle {
    if (q === this.pool) return this.drizzle;
    let builder = this.clientBuilders.get(q);
    if (builder === undefined) {
      builder = drizzle(q, { schema });
      this.clientBuilders.set(q, builder);
    }
    return builder;
  }

  /**
   * Runs `work` with every write it makes through this database (pool statements and
   * transactions) tagged with `origin`, so the changes it causes carry the trace.
   */
  withOrigin<T>(origin: TraceOrigin, work: () => Promise<T>): Promise<T> {
    return this.origins.run(JSON.stringify(origin), work);
  }

  /**
   * Runs `work` outside any origin: for writes to tables without a change log (the job
   * queue), whose trace travels in their own rows, so a statement keeps its one round trip
   * rather than take a transaction to be tagged.
   */
  withoutOrigin<T>(work: () => Promise<T>): Promise<T> {
    return this.origins.exit(work);
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(text, values);
  }

  /**
   * Repositories run single statements on the pool itself; watching the pool's own
   * `query` catches their writes whatever form of call they use (callbacks excepted).
   */
  private watchPoolWrites(): void {
    const original = this.pool.query.bind(this.pool) as (...args: unknown[]) => unknown;
    const watched = (...args: unknown[]): unknown => {
      const origin = this.origins.getStore();
      // A write with an origin runs in a short transaction that sets it first; reads, and
      // every write made outside a function, keep their single round trip.
      const pending =
        origin !== undefined && typeof args[args.length - 1] !== 'function' && !READ_ONLY.test(statementText(args))
          ? this.queryWithOrigin(args)
          : original(...args);
      if (pending instanceof Promise) {
        pending.then(
          (result: { command?: string }) => {
            if (result?.command === 'INSERT' || result?.command === 'UPDATE' || result?.command === 'DELETE') {
              this.wrote();
            }
          },
          () => undefined,
        );
      }
      return pending;
    };
    this.pool.query = watched as typeof this.pool.query;
  }

  /** One statement in a transaction of its own, which `transaction` tags with the current origin. */
  private queryWithOrigin(args: unknown[]): Promise<unknown> {
    return this.transaction((client) => (client.query as (...queryArgs: unknown[]) => Promise<unknown>)(...args));
  }

  /** Runs `work` in one transaction: commit on success, rollback on any throw. */
  async transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const origin = this.origins.getStore();
      if (origin !== undefined) await client.query(SET_ORIGIN, [origin]);
      const result = await work(client);
      await client.query('COMMIT');
      this.wrote();
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  /**
   * Whether Postgres answers within `timeoutMs`. Bounded so that /readyz answers promptly
   * even when the network swallows packets (a connect would otherwise wait its 10 s).
   */
  async ping(timeoutMs = 2_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([
        this.pool.query('SELECT 1').then(
          () => true,
          () => false,
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
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
      const wait = Math.min(delay, remaining);
      log.warn(
        `database not reachable (try ${attempt}: ${reason}); retrying in ${wait} ms, giving up in ${Math.ceil(remaining / 1000)} s`,
      );
      await new Promise((resolve) => setTimeout(resolve, wait));
      delay = Math.min(delay * 2, 5_000);
    }
  }
}
