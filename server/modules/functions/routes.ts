import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { AppError } from '../../internal/errors.js';
import { errorResponse } from '../../internal/http/errors.js';
import {
  closedObject,
  optionalTimestamp,
  timestamp,
  type ObjectSchemaOf,
} from '../../internal/http/response-schema.js';
import { requireService } from '../../internal/guards.js';
import type { LoadError } from './loader.js';
import type { LogLine } from './protocol.js';
import type { InvocationRecord } from './repository.js';
import type { FunctionSummary, FunctionsService } from './service.js';

export const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_-]{0,62}$' } },
} as const;

const invocationsQuery = closedObject({
  status: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'dead'] },
  limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
  before: { type: 'string', format: 'date-time' },
});

/** Every error is the catalogue's envelope; a function's own failure is 500 FUNCTION_ERROR or 504 FUNCTION_TIMEOUT. */
export const errors = { '4xx': errorResponse, '5xx': errorResponse } as const;

const functionSchema = closedObject({
  name: { type: 'string' },
  kind: { type: 'string', enum: ['document', 'object', 'auth', 'http', 'schedule'] },
  file: { type: 'string', description: 'Relative to the functions folder' },
  // What the definition's first argument names (collection and on, bucket, cron…): open by kind.
  trigger: { type: 'object', additionalProperties: true },
  options: closedObject({
    retries: { type: 'integer' },
    timeout_ms: { type: 'integer' },
    memory_mb: { type: 'integer' },
    concurrency: { type: 'integer' },
  }),
}) satisfies ObjectSchemaOf<FunctionSummary>;

const loadErrorSchema = closedObject({
  file: { type: 'string' },
  reason: { type: 'string' },
}) satisfies ObjectSchemaOf<LoadError>;

const logLineSchema = closedObject({
  level: { type: 'string', enum: ['info', 'warn', 'error'] },
  message: { type: 'string' },
  at: timestamp,
}) satisfies ObjectSchemaOf<LogLine>;

const invocationSchema = closedObject({
  id: { type: 'string', format: 'uuid' },
  job_id: { type: ['string', 'null'] },
  function: { type: 'string' },
  trigger: { type: 'string' },
  event_id: { type: ['string', 'null'] },
  status: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'dead'] },
  attempt: { type: 'integer' },
  cold_start: { type: 'boolean' },
  started_at: optionalTimestamp,
  finished_at: optionalTimestamp,
  duration_ms: { type: ['integer', 'null'] },
  error: { type: ['string', 'null'] },
  logs: { type: 'array', items: logLineSchema },
  created_at: timestamp,
}) satisfies ObjectSchemaOf<InvocationRecord>;

const DATE_TIME = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * `before` as a UTC instant Postgres can compare with. The schema's date-time format takes
 * what Postgres refuses: year 0 (`0000-01-01…`, 22008) and offsets beyond ±15:59 (22009).
 * The fraction is kept whole: a cursor taken from a row's `created_at` has microseconds.
 */
function invocationCursor(before: string | undefined): string | undefined {
  if (before === undefined) return undefined;
  const match = DATE_TIME.exec(before);
  const instant = match ? new Date(`${match[1]}T${match[2]}${(match[4] ?? '').toUpperCase()}`) : null;
  const year = instant ? instant.getUTCFullYear() : Number.NaN;
  if (!match || !instant || Number.isNaN(year) || year < 1 || year > 9999) {
    throw new AppError('INVALID_REQUEST', '"before" must be a date-time from year 1 to 9999.', {
      details: { field: 'before' },
    });
  }
  return instant.toISOString().replace(/\.\d{3}Z$/, `${match[3] ?? ''}Z`);
}

export interface FunctionRouteOptions {
  functions: FunctionsService;
  /** Re-queues a dead-lettered invocation's event; NOT_FOUND unless it is dead. */
  retry(invocationId: string): Promise<InvocationRecord>;
}

export const functionRoutes: FastifyPluginAsync<FunctionRouteOptions> = async (plugin, { functions, retry }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  // The key is checked before the parameters, so a stranger learns nothing from validation errors.
  const adminOnly = async (request: FastifyRequest) => requireService(request.caller);
  app.get(
    '/v1/admin/functions',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Functions and their triggers',
        response: {
          200: closedObject({
            functions: { type: 'array', items: functionSchema },
            errors: {
              type: 'array',
              description: 'Files of the functions folder that did not load',
              items: loadErrorSchema,
            },
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      return { functions: functions.list(), errors: [...functions.errors] };
    },
  );

  app.get(
    '/v1/admin/functions/:name/invocations',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Recent invocations of a function, newest first',
        params: nameParams,
        querystring: invocationsQuery,
        response: {
          200: closedObject({ invocations: { type: 'array', items: invocationSchema } }),
          ...errors,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      const invocations = await functions.invocationsOf(request.params.name, {
        status: request.query.status,
        limit: request.query.limit ? Number(request.query.limit) : 50,
        before: invocationCursor(request.query.before),
      });
      return { invocations };
    },
  );

  app.post(
    '/v1/admin/invocations/:id/retry',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Retry a dead-lettered invocation: its event is queued again with the same event id',
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } },
        response: {
          200: closedObject({ invocation: invocationSchema }),
          ...errors,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      return { invocation: await retry(request.params.id) };
    },
  );
};
