import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import type { InvocationRecord, InvocationStatus } from './repository.js';
import type { FunctionsService } from './service.js';

export const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_-]{0,62}$' } },
} as const;

const invocationsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'dead'] },
    limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
    before: { type: 'string', format: 'date-time' },
  },
} as const;

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

export const functionRoutes: FastifyPluginAsync<FunctionRouteOptions> = async (app, { functions, retry }) => {
  // The key is checked before the parameters, so a stranger learns nothing from validation errors.
  const adminOnly = async (request: FastifyRequest) => requireService(request.caller);
  app.get(
    '/v1/admin/functions',
    { preValidation: adminOnly, schema: { tags: ['admin'], summary: 'Functions and their triggers' } },
    async (request) => {
      requireService(request.caller);
      return { functions: functions.list(), errors: functions.errors };
    },
  );

  app.get<{ Params: { name: string }; Querystring: { status?: InvocationStatus; limit?: string; before?: string } }>(
    '/v1/admin/functions/:name/invocations',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Recent invocations of a function, newest first',
        params: nameParams,
        querystring: invocationsQuery,
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

  app.post<{ Params: { id: string } }>(
    '/v1/admin/invocations/:id/retry',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Retry a dead-lettered invocation: its event is queued again with the same event id',
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } },
      },
    },
    async (request) => {
      requireService(request.caller);
      return { invocation: await retry(request.params.id) };
    },
  );
};
