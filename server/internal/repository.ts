import type pg from 'pg';
import type { Queryable } from './db.js';
import { fromPostgresError, type AppError } from './errors.js';

/**
 * What a failed statement was about: a name for the catalogue's messages ("A user with this
 * email"), or a mapping of its own for codes that mean something particular there (a
 * missing per-collection table is a missing collection), falling back to fromPostgresError.
 */
export type ErrorContext = string | ((error: unknown) => AppError);

function mapError(error: unknown, context: ErrorContext | undefined): AppError {
  return typeof context === 'function' ? context(error) : fromPostgresError(error, context);
}

/** SQL text, or a named (prepared) statement that Postgres plans once per connection. */
export type Statement = string | { name: string; text: string };

/**
 * Runs one statement and returns its rows, with any Postgres error mapped to the catalogue
 * (a unique violation becomes ALREADY_EXISTS, a lost connection UNAVAILABLE; the raw error
 * stays as the cause, for the log). Every repository runs its hand-written SQL through this.
 *
 * `context` names the thing a constraint protects ("A user with this email"), so the
 * mapped error says what already exists or what is missing (see ErrorContext).
 */
export async function runQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  q: Queryable,
  statement: Statement,
  values: unknown[] = [],
  context?: ErrorContext,
): Promise<R[]> {
  try {
    const result =
      typeof statement === 'string' ? await q.query<R>(statement, values) : await q.query<R>({ ...statement, values });
    return result.rows;
  } catch (error) {
    throw mapError(error, context);
  }
}

/**
 * Runs any database work — a drizzle query-builder call, several statements — with Postgres
 * errors mapped to the catalogue, as runQuery does for one statement.
 */
export async function mapDatabaseErrors<T>(work: () => Promise<T>, context?: ErrorContext): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw mapError(error, context);
  }
}
