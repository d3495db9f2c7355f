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

/** The JSON envelope of every error response: `{"error": {...}}`. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: ErrorDetails };
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CATALOGUE, value);
}

/** What the SDK rejects with. `code` is always one of the catalogue's codes. */
export class BasaltError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: ErrorDetails | undefined;

  constructor(
    code: ErrorCode,
    message?: string,
    options?: { status?: number; details?: ErrorDetails; cause?: unknown },
  ) {
    super(message ?? ERROR_CATALOGUE[code].message, { cause: options?.cause });
    this.name = 'BasaltError';
    this.code = code;
    this.status = options?.status ?? ERROR_CATALOGUE[code].status;
    this.details = options?.details;
  }

  /** Builds the error from a server response body, tolerating bodies that are not Basalt's envelope. */
  static fromResponse(status: number, body: unknown): BasaltError {
    const envelope = (body as Partial<ErrorBody> | null | undefined)?.error;
    if (envelope && isErrorCode(envelope.code)) {
      return new BasaltError(envelope.code, envelope.message, { status, details: envelope.details });
    }
    const fallback: ErrorCode = status === 404 ? 'NOT_FOUND' : status >= 500 ? 'INTERNAL' : 'INVALID_REQUEST';
    return new BasaltError(fallback, `Unexpected response with status ${status}`, { status });
  }
}
