import { ERROR_CATALOGUE, type ErrorBody, type ErrorCode, type ErrorDetails } from '../../client-sdk/src/errors.js';

export { ERROR_CATALOGUE };
export type { ErrorCode, ErrorDetails, ErrorBody };

/**
 * The one error type of the server. Services throw it with a catalogue code; the
 * error handler turns it into the API envelope. `cause` keeps the raw error for the
 * log only: it never reaches a response.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: ErrorDetails | undefined;
  /** Extra response headers, e.g. Retry-After for RATE_LIMITED. */
  readonly headers: Record<string, string>;

  constructor(
    code: ErrorCode,
    message?: string,
    options: { details?: ErrorDetails; cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message ?? ERROR_CATALOGUE[code].message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.details = options.details;
    this.headers = options.headers ?? {};
  }

  toBody(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details !== undefined ? { details: this.details } : {}),
      },
    };
  }
}

export function isAppError(error: unknown): error is AppError {
  return error instanceof AppError;
}

interface PgErrorLike {
  code?: unknown;
  constraint?: unknown;
}

/** Seconds a client is told to wait (Retry-After) when the database cannot be reached. */
export const DATABASE_RETRY_AFTER_SECONDS = 1;

/** Socket errors of a connection that could not be made or was cut (Node's errno codes). */
const SOCKET_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
]);

/**
 * SQLSTATEs that mean "the server cannot serve you right now", not "your statement is
 * wrong": class 08 (connection exception), 57P01 admin shutdown, 57P02 crash shutdown,
 * 57P03 cannot connect now ("the database system is starting up"), 53300 too many connections.
 */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

/** Messages of node-postgres and pg-pool for a connection lost or never made (they carry no code). */
const CONNECTION_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Query read timeout',
  'Cannot use a pool after calling end on the pool',
];

/**
 * Whether an error (or any error in its `cause` chain, or among an AggregateError's errors)
 * means the database is unreachable: Postgres stopped, restarting, or the network cut.
 * These are the errors a retry a moment later can cure, so they map to UNAVAILABLE.
 */
export function isConnectionError(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 5) return false;
  const { code, message, cause, errors } = error as {
    code?: unknown;
    message?: unknown;
    cause?: unknown;
    errors?: unknown;
  };
  if (typeof code === 'string') {
    if (SOCKET_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code)) return true;
  }
  if (typeof message === 'string' && CONNECTION_MESSAGES.some((known) => message.includes(known))) return true;
  if (Array.isArray(errors) && errors.some((inner) => isConnectionError(inner, depth + 1))) return true;
  return isConnectionError(cause, depth + 1);
}

/** Whether an error means "try again shortly" (UNAVAILABLE, or an unmapped lost connection), not a refusal. */
export function isUnavailableError(error: unknown): boolean {
  return (isAppError(error) && error.code === 'UNAVAILABLE') || isConnectionError(error);
}

/** UNAVAILABLE for an unreachable database, with the Retry-After every such answer carries. */
export function databaseUnavailable(cause: unknown): AppError {
  return new AppError('UNAVAILABLE', 'The database is unreachable right now; retry shortly.', {
    cause,
    headers: { 'retry-after': String(DATABASE_RETRY_AFTER_SECONDS) },
  });
}

/**
 * Maps a Postgres error to the catalogue. Repositories call this so that a unique
 * violation becomes ALREADY_EXISTS and a serialization failure UNAVAILABLE, and the
 * raw SQL error stays in the log. A lost or refused connection is UNAVAILABLE whatever
 * its form (socket errno, SQLSTATE, or node-postgres message).
 */
export function fromPostgresError(error: unknown, context?: string): AppError {
  if (isAppError(error)) return error;
  if (isConnectionError(error)) return databaseUnavailable(error);
  const code = (error as PgErrorLike | null)?.code;
  switch (code) {
    case '23505':
      return new AppError('ALREADY_EXISTS', context ? `${context} already exists.` : undefined, { cause: error });
    case '23503':
      return new AppError('NOT_FOUND', context ? `${context} refers to something that does not exist.` : undefined, {
        cause: error,
      });
    case '23502':
    case '23514':
    case '22P02':
    case '22023':
    case '22003':
      return new AppError('INVALID_REQUEST', undefined, { cause: error });
    // Values from a request that Postgres cannot store or read. The edges refuse them first
    // (user-json.ts, the timestamp parsers); these keep any path that misses a check at 400.
    case '22P05': // untranslatable character: \u0000 in jsonb (an unpaired surrogate is 22P02)
    case '22021': // character not in repertoire: NUL in text
      return new AppError('INVALID_REQUEST', 'A string holds NUL or an unpaired surrogate, which cannot be stored.', {
        cause: error,
      });
    case '22007': // invalid datetime format
    case '22008': // datetime field overflow, e.g. year 0
    case '22009': // invalid time zone displacement
      return new AppError('INVALID_REQUEST', 'A time is malformed or out of range.', { cause: error });
    case '54001': // stack depth limit exceeded: a value nested too deep
      return new AppError('INVALID_REQUEST', 'A value nests too deeply.', { cause: error });
    case '40001':
    case '40P01':
    case '55P03':
      return new AppError('UNAVAILABLE', 'The operation conflicted with another; retry it.', { cause: error });
    case '57014':
      return new AppError('UNAVAILABLE', 'The operation took too long and was cancelled.', { cause: error });
    default:
      return new AppError('INTERNAL', undefined, { cause: error });
  }
}
