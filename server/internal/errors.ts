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

/**
 * Maps a Postgres error to the catalogue. Repositories call this so that a unique
 * violation becomes ALREADY_EXISTS and a serialization failure UNAVAILABLE, and the
 * raw SQL error stays in the log.
 */
export function fromPostgresError(error: unknown, context?: string): AppError {
  if (isAppError(error)) return error;
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
    case '53300':
    case '57P01':
    case '57P03':
    case '08006':
    case '08001':
      return new AppError('UNAVAILABLE', undefined, { cause: error });
    default:
      return new AppError('INTERNAL', undefined, { cause: error });
  }
}
