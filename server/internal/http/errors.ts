import type { FastifyError, FastifyInstance } from 'fastify';
import {
  AppError,
  DATABASE_RETRY_AFTER_SECONDS,
  databaseUnavailable,
  isAppError,
  isConnectionError,
  type ErrorCode,
} from '../errors.js';
import type { RouteTable } from './method-not-allowed.js';

/** Fastify's own client-error codes, mapped onto the catalogue. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_REQUEST',
  FST_ERR_CTP_INVALID_TYPE: 'INVALID_REQUEST',
  FST_ERR_VALIDATION: 'INVALID_REQUEST',
};

const STATUS_CODES: Record<number, ErrorCode> = {
  401: 'UNAUTHENTICATED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  409: 'ALREADY_EXISTS',
  412: 'PRECONDITION_FAILED',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  416: 'RANGE_NOT_SATISFIABLE',
  429: 'RATE_LIMITED',
  503: 'UNAVAILABLE',
};

/**
 * Turns anything thrown into an AppError. Client mistakes keep a 4xx catalogue code; an
 * unreachable database is UNAVAILABLE wherever it surfaced (a repository that did not map
 * it, a pool timeout, an INTERNAL wrapping it); only a fault of the server becomes
 * INTERNAL, and its raw error stays in the log.
 */
export function toAppError(error: unknown): AppError {
  if (isAppError(error)) {
    return error.code === 'INTERNAL' && isConnectionError(error.cause) ? databaseUnavailable(error.cause) : error;
  }
  if (isConnectionError(error)) return databaseUnavailable(error);
  const fastifyError = error as Partial<FastifyError> & { validation?: unknown[]; validationContext?: string };
  if (Array.isArray(fastifyError.validation)) {
    const issues = fastifyError.validation.map((issue) => {
      const { instancePath, message, params } = issue as { instancePath?: string; message?: string; params?: unknown };
      return { path: `${fastifyError.validationContext ?? 'body'}${instancePath ?? ''}`, message, params };
    });
    return new AppError('INVALID_REQUEST', fastifyError.message ?? 'The request is invalid.', {
      details: { issues },
      cause: error,
    });
  }
  if (error instanceof SyntaxError) {
    return new AppError('INVALID_REQUEST', 'The body is not valid JSON.', { cause: error });
  }
  const mapped = fastifyError.code ? FASTIFY_CODES[fastifyError.code] : undefined;
  if (mapped) return new AppError(mapped, clientMessage(mapped, fastifyError), { cause: error });
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code = STATUS_CODES[status] ?? 'INVALID_REQUEST';
    return new AppError(code, clientMessage(code, fastifyError), { cause: error });
  }
  return new AppError('INTERNAL', undefined, { cause: error });
}

function clientMessage(code: ErrorCode, error: Partial<FastifyError>): string | undefined {
  switch (code) {
    case 'PAYLOAD_TOO_LARGE':
      return 'The request body is larger than the server accepts.';
    case 'UNSUPPORTED_MEDIA_TYPE':
      return 'The Content-Type of the body is not supported here.';
    default:
      // Fastify's client-error messages are written for clients and contain no internals.
      return error.message;
  }
}

/** The error envelope's schema, registered once; routes refer to it with `errorResponse`. */
const ERROR_ENVELOPE_SCHEMA = {
  $id: 'ErrorEnvelope',
  type: 'object',
  description: 'Every error: a catalogue code, a message, and details that depend on the code (docs/errors.md).',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        details: { type: 'object', additionalProperties: true },
      },
    },
  },
} as const;

/** A route's response schema for any error status. */
export const errorResponse = { $ref: 'ErrorEnvelope#' } as const;

function causeMessage(error: AppError): string {
  const cause = error.cause;
  return cause instanceof Error && cause.message ? cause.message : error.message;
}

/**
 * The one error handler and the not-found handler. With a route table, a path that exists
 * under other methods answers 405 METHOD_NOT_ALLOWED with `Allow`, not 404.
 */
export function registerErrorHandling(app: FastifyInstance, routes?: RouteTable): void {
  app.addSchema(ERROR_ENVELOPE_SCHEMA);
  app.setErrorHandler((error, request, reply) => {
    const appError = toAppError(error);
    if (appError.status === 503) {
      // Expected while Postgres restarts: one line each, without the stack.
      request.log.warn({ code: appError.code, reason: causeMessage(appError) }, 'request failed: unavailable');
    } else if (appError.status >= 500) {
      request.log.error({ err: appError.cause ?? appError, code: appError.code }, 'request failed');
    } else {
      request.log.info({ code: appError.code, reason: appError.message }, 'request rejected');
    }
    // Every 503 says when to come back, whichever path produced it.
    const headers =
      appError.status === 503
        ? { 'retry-after': String(DATABASE_RETRY_AFTER_SECONDS), ...appError.headers }
        : appError.headers;
    void reply.code(appError.status).headers(headers).send(appError.toBody());
  });
  app.setNotFoundHandler((request, reply) => {
    const allowed = routes?.methodsFor(request.url) ?? [];
    if (allowed.length > 0) {
      const path = request.url.split('?')[0];
      const error = new AppError('METHOD_NOT_ALLOWED', `${path} does not take ${request.method}.`, {
        details: { method: request.method, allowed },
      });
      void reply.code(405).header('allow', allowed.join(', ')).send(error.toBody());
      return;
    }
    const error = new AppError('NOT_FOUND', `No route for ${request.method} ${request.url.split('?')[0]}.`);
    void reply.code(404).send(error.toBody());
  });
}
