import { DrizzleQueryError, sql, type AnyColumn, type SQL } from 'drizzle-orm';
import type pg from 'pg';
import type { Queryable } from './db.js';
import { fromPostgresError, type AppError } from './errors.js';

/**
 * What a failed statement was about: a name for the catalogue's messages ("A user with this
 * email"), or a mapping of its own for codes that mean something particular there (a
 * missing per-collection table is a missing collection), falling back to fromPostgresError.
 */
export type ErrorContext = string | ((error: unknown) => AppError);

function mapError(thrown: unknown, context: ErrorContext | undefined): AppError {
  // The builder wraps the driver's error (whose code the catalogue reads) in one that also
  // carries the statement's parameters, which must not reach the log: keep the driver's.
  const error = thrown instanceof DrizzleQueryError && thrown.cause !== undefined ? thrown.cause : thrown;
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

/**
 * The wire's timestamp format, `2026-01-02T03:04:05.123456Z`, for `to_char` in SQL:
 * Postgres keeps microseconds, which a JavaScript Date would round away.
 */
export const ISO_TIMESTAMP = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/** A timestamptz column read as the wire's ISO text (see ISO_TIMESTAMP), for drizzle selects. */
export function isoTimestamp(column: AnyColumn): SQL<string> {
  return sql<string>`to_char(${column} AT TIME ZONE 'UTC', ${sql.raw(ISO_TIMESTAMP)})`;
}
