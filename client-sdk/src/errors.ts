/**
 * The one error catalogue of Basalt. The server answers every failure with one of
 * these codes and its HTTP status; the SDK rejects with a BasaltError carrying the
 * same code, so application code can switch on it.
 */
export const ERROR_CATALOGUE = {
  INVALID_REQUEST: { status: 400, message: 'The request is malformed or has invalid fields.' },
  INVALID_CREDENTIALS: { status: 400, message: 'Invalid email or password.' },
  WEAK_PASSWORD: { status: 400, message: 'The password does not meet the requirements.' },
  INVALID_TOKEN: { status: 400, message: 'The token is invalid, expired or already used.' },
  INVALID_RULE: { status: 400, message: 'The rule expression cannot be parsed.' },
  INVALID_PATH: { status: 400, message: 'The object path is not valid.' },
  UNAUTHENTICATED: { status: 401, message: 'Authentication is required or the token is invalid.' },
  FORBIDDEN: { status: 403, message: 'The caller is not allowed to do this.' },
  NOT_FOUND: { status: 404, message: 'Not found.' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'The method is not allowed here.' },
  ALREADY_EXISTS: { status: 409, message: 'It already exists.' },
  VERSION_CONFLICT: { status: 409, message: 'The version does not match the stored version.' },
  CURSOR_EXPIRED: { status: 410, message: 'The cursor is older than the change log keeps; start over.' },
  PRECONDITION_FAILED: { status: 412, message: 'A precondition of the request failed.' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The content type is not supported here.' },
  RANGE_NOT_SATISFIABLE: { status: 416, message: 'The requested range cannot be satisfied.' },
  QUOTA_EXCEEDED: { status: 413, message: 'The storage quota would be exceeded.' },
  FUNCTION_BUILD_FAILED: { status: 422, message: 'The function does not build or load.' },
  IDEMPOTENCY_MISMATCH: { status: 422, message: 'The Idempotency-Key was used with another request.' },
  IDEMPOTENCY_PENDING: { status: 409, message: 'A request with this Idempotency-Key is still running.' },
  MFA_REQUIRED: { status: 403, message: 'This needs a session verified with a second factor.' },
  RATE_LIMITED: { status: 429, message: 'Too many requests; retry later.' },
  INTERNAL: { status: 500, message: 'An internal error occurred.' },
  FUNCTION_ERROR: { status: 500, message: 'The function failed.' },
  UNAVAILABLE: { status: 503, message: 'The service is temporarily unavailable.' },
  FUNCTION_TIMEOUT: { status: 504, message: 'The function ran past its timeout.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export type ErrorDetails = Record<string, unknown>;

/** One problem of a request the server's schema refused (INVALID_REQUEST `details.issues`). */
export interface ValidationIssue {
  /** Where: `body/limit`, `querystring/prefix`, ... */
  path: string;
  message: string;
  params?: Record<string, unknown>;
}

/**
 * The `details` the server sends with each code, where it sends known ones. Every field is
 * what some endpoint sets; fields an endpoint does not know are absent, so most are optional.
 * A failed batch op adds `index` (the op's position) to its error's details.
 */
export interface ErrorDetailsMap {
  INVALID_REQUEST: {
    /** The offending field of the body (`where[0][1]`, `limit`, `data.title`, ...). */
    field?: string;
    /** Schema violations, one per problem. */
    issues?: ValidationIssue[];
    /** The limit that was passed (conditions, list values, subscriptions, ...). */
    max?: number;
    max_depth?: number;
    limit?: number;
    index?: number;
  };
  INVALID_PATH: { path?: string; index?: number };
  WEAK_PASSWORD: { reason: 'common' | 'length'; min?: number; max?: number };
  VERSION_CONFLICT: {
    /** The version the write expected (If-Match / ifVersion). */
    expected: number;
    /** The stored version, or null when the document does not exist. */
    actual: number | null;
    index?: number;
  };
  PAYLOAD_TOO_LARGE: {
    /** A storage upload: the bucket's (or the server's) file size limit in bytes. */
    max_file_size?: number;
    /** A document: its data's size and the limit, in bytes. */
    size?: number;
    max_bytes?: number;
    /** A realtime broadcast: the largest payload in bytes. */
    limit?: number;
    index?: number;
  };
  UNSUPPORTED_MEDIA_TYPE: { allowed_mime_types?: string[] | null };
  RANGE_NOT_SATISFIABLE: { size: number };
  RATE_LIMITED: {
    /** Seconds to wait (also in the `Retry-After` header). */
    retry_after?: number;
  };
  QUOTA_EXCEEDED: { quota: string; used: number; limit: number };
  FUNCTION_BUILD_FAILED: { file?: string; reason: string };
  FUNCTION_ERROR: { invocation_id: string };
  FUNCTION_TIMEOUT: { invocation_id: string };
}

/** The details of an error with code `C`: typed for the codes of ErrorDetailsMap, else a plain record. */
export type ErrorDetailsOf<C extends ErrorCode> = C extends keyof ErrorDetailsMap
  ? ErrorDetailsMap[C] & ErrorDetails
  : ErrorDetails;

/** The JSON envelope of every error response: `{"error": {...}}`. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: ErrorDetails };
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CATALOGUE, value);
}

/**
 * What the SDK rejects with. `code` is always one of the catalogue's codes; `details` is
 * typed per code (ErrorDetailsMap). Narrow a caught value with `isBasaltError(error)` and
 * then `switch (error.code)`, or with `isBasaltError(error, 'VERSION_CONFLICT')`.
 */
export class BasaltError<C extends ErrorCode = ErrorCode> extends Error {
  readonly code: C;
  readonly status: number;
  readonly details: ErrorDetailsOf<C> | undefined;

  constructor(code: C, message?: string, options?: { status?: number; details?: ErrorDetails; cause?: unknown }) {
    super(message ?? ERROR_CATALOGUE[code].message, { cause: options?.cause });
    this.name = 'BasaltError';
    this.code = code;
    this.status = options?.status ?? ERROR_CATALOGUE[code].status;
    // The server is the source of the details: they are what it sends for this code.
    this.details = options?.details as ErrorDetailsOf<C> | undefined;
  }

  /** Whether this error has code `code` (narrows `details` to that code's). */
  is<K extends ErrorCode>(code: K): this is BasaltError<K> {
    return (this.code as ErrorCode) === code;
  }

  /** Builds the error from a server response body, tolerating bodies that are not Basalt's envelope. */
  static fromResponse(status: number, body: unknown): AnyBasaltError {
    const envelope = (body as Partial<ErrorBody> | null | undefined)?.error;
    if (envelope && isErrorCode(envelope.code)) {
      return new BasaltError(envelope.code, envelope.message, { status, details: envelope.details }) as AnyBasaltError;
    }
    const fallback: ErrorCode = status === 404 ? 'NOT_FOUND' : status >= 500 ? 'INTERNAL' : 'INVALID_REQUEST';
    return new BasaltError(fallback, `Unexpected response with status ${status}`, { status }) as AnyBasaltError;
  }
}

/**
 * A BasaltError of any one code: a union over the codes, so `switch (error.code)` narrows
 * `error.details` in each case.
 */
export type AnyBasaltError = { [C in ErrorCode]: BasaltError<C> }[ErrorCode];

/**
 * Whether `error` is a BasaltError (of `code`, when given). Narrows to a union that a switch
 * on `code` discriminates, or to that code's error:
 * `if (isBasaltError(error, 'VERSION_CONFLICT')) error.details?.actual`.
 */
export function isBasaltError(error: unknown): error is AnyBasaltError;
export function isBasaltError<C extends ErrorCode>(error: unknown, code: C): error is BasaltError<C>;
export function isBasaltError(error: unknown, code?: ErrorCode): boolean {
  return error instanceof BasaltError && (code === undefined || error.code === code);
}
