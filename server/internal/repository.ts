import { DrizzleQueryError } from 'drizzle-orm';
import type pg from 'pg';
import type { Queryable } from './db.js';
import { fromPostgresError } from './errors.js';

/** SQL text, or a named (prepared) statement that Postgres plans once per connection. */
export type Statement = string | { name: string; text: string };

/**
 * Runs one statement and returns its rows, with any Postgres error mapped to the catalogue
 * (a unique violation becomes ALREADY_EXISTS, a lost connection UNAVAILABLE; the raw error
 * stays as the cause, for the log). Every repository runs its hand-written SQL through this.
 *
 * `context` names the thing a constraint protects ("A user with this email"), so the
 * mapped error says what already exists or what is missing.
 */
export async function runQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  q: Queryable,
  statement: Statement,
  values: unknown[] = [],
  context?: string,
): Promise<R[]> {
  try {
    const result =
      typeof statement === 'string' ? await q.query<R>(statement, values) : await q.query<R>({ ...statement, values });
    return result.rows;
  } catch (error) {
    throw fromPostgresError(error, context);
  }
}

/**
 * Runs any database work — a drizzle query-builder call, several statements — with Postgres
 * errors mapped to the catalogue, as runQuery does for one statement.
 */
export async function mapDatabaseErrors<T>(work: () => Promise<T>, context?: string): Promise<T> {
  try {
    return await work();
  } catch (error) {
    // Drizzle wraps the driver's error with the statement and its parameters (which may be
    // hashes of secrets); the Postgres error inside is what maps, and what the log keeps.
    throw fromPostgresError(error instanceof DrizzleQueryError ? error.cause : error, context);
  }
}
