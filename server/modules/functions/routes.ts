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
import { adminChangeEvent } from '../audit/routes.js';
import { checkedJsonParser } from '../../internal/http/json-body.js';
import type { LoadError } from './loader.js';
import type { LogLine } from './protocol.js';
import type { InvocationRecord } from './repository.js';
import type { TraceInvocation } from './trace-tree.js';
import { DEPLOY_BODY_LIMIT } from './deploy-files.js';
import type { SecretStore, SecretSummary } from './secrets.js';
import type { DeployedFunction, FunctionSummary, FunctionsService, VersionSummary } from './service.js';

const nameParams = {
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
const errors = { '4xx': errorResponse, '5xx': errorResponse } as const;

const functionSchema = closedObject({
  name: { type: 'string' },
  kind: { type: 'string', enum: ['document', 'object', 'auth', 'http', 'schedule', 'event'] },
  file: { type: 'string', description: 'The entry: a deployed file, or the file in the functions folder' },
  // What the definition's first argument names (collection and on, bucket, cron…): open by kind.
  trigger: { type: 'object', additionalProperties: true },
  options: closedObject({
    retries: { type: 'integer' },
    timeout_ms: { type: 'integer' },
    memory_mb: { type: 'integer' },
    concurrency: { type: 'integer' },
  }),
  version: { type: 'integer' },
  source: { type: 'string', enum: ['api', 'folder'] },
  deployed_at: timestamp,
}) satisfies ObjectSchemaOf<FunctionSummary>;

const deployedSchema = closedObject({
  name: { type: 'string' },
  version: { type: 'integer' },
  kind: { type: 'string', enum: ['document', 'object', 'auth', 'http', 'schedule', 'event'] },
  trigger: { type: 'object', additionalProperties: true },
  options: { type: 'object', additionalProperties: true },
  deployed_at: timestamp,
}) satisfies ObjectSchemaOf<DeployedFunction>;

const versionSchema = closedObject({
  version: { type: 'integer' },
  deployed_at: timestamp,
  active: { type: 'boolean' },
  source: { type: 'string', enum: ['api', 'folder'] },
}) satisfies ObjectSchemaOf<VersionSummary>;

const secretParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', maxLength: 200 } },
} as const;

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
  version: { type: ['integer', 'null'] },
  trace_id: { type: ['string', 'null'], description: 'The trace of the run (docs/tracing.md)' },
  parent_invocation_id: {
    type: ['string', 'null'],
    description: 'The run whose write or publish started this one; null for the first run of a trace',
  },
}) satisfies ObjectSchemaOf<InvocationRecord>;

const traceInvocationSchema = closedObject({
  id: { type: 'string', format: 'uuid' },
  function: { type: 'string' },
  trigger: {
    type: 'string',
    description: 'What started the run: http, schedule, document.create, object.upload, user.created, …',
  },
  status: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'dead'] },
  attempt: { type: 'integer' },
  event_id: { type: ['string', 'null'] },
  parent_invocation_id: { type: ['string', 'null'] },
  started_at: optionalTimestamp,
  finished_at: optionalTimestamp,
  duration_ms: { type: ['integer', 'null'] },
  error: { type: ['string', 'null'] },
  depth: { type: 'integer', description: 'Distance from the root of its tree (0 for a root)' },
}) satisfies ObjectSchemaOf<TraceInvocation>;

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
  secrets: SecretStore;
  /** Re-queues a dead-lettered invocation's event; NOT_FOUND unless it is dead. */
  retry(invocationId: string): Promise<InvocationRecord>;
}

export const functionRoutes: FastifyPluginAsync<FunctionRouteOptions> = async (
  plugin,
  { functions, secrets, retry },
) => {
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
      return { functions: await functions.list(), errors: [...functions.errors] };
    },
  );

  app.put(
    '/v1/admin/functions/:name',
    {
      preValidation: adminOnly,
      bodyLimit: DEPLOY_BODY_LIMIT,
      schema: {
        tags: ['admin'],
        summary: 'Deploy a function: built and loaded first, then live on every instance as a new version',
        params: nameParams,
        body: {
          type: 'object',
          required: ['files', 'entry'],
          additionalProperties: false,
          properties: {
            files: { type: 'object', additionalProperties: { type: 'string' } },
            entry: { type: 'string', maxLength: 255 },
          },
        },
        response: { 201: deployedSchema, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      requireService(request.caller);
      const deployed = await functions.deploy(
        request.params.name,
        request.body.files,
        request.body.entry,
        adminChangeEvent(request, 201),
      );
      return reply.code(201).send(deployed);
    },
  );

  app.get(
    '/v1/admin/functions/:name/versions',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Every version of a function, newest first',
        params: nameParams,
        response: { 200: closedObject({ versions: { type: 'array', items: versionSchema } }), ...errors },
      },
    },
    async (request) => {
      requireService(request.caller);
      return { versions: await functions.versionsOf(request.params.name) };
    },
  );

  app.post(
    '/v1/admin/functions/:name/rollback',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Make an earlier version live again',
        params: nameParams,
        body: {
          type: 'object',
          required: ['version'],
          additionalProperties: false,
          properties: { version: { type: 'integer', minimum: 1, maximum: 2_147_483_647 } },
        },
        response: { 200: deployedSchema, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request) => {
      requireService(request.caller);
      return functions.rollback(request.params.name, request.body.version, adminChangeEvent(request, 200));
    },
  );

  app.delete(
    '/v1/admin/functions/:name',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Undeploy a function; its queued events are dead-lettered',
        params: nameParams,
        response: { 204: { type: 'null' }, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      requireService(request.caller);
      await functions.undeploy(request.params.name, adminChangeEvent(request, 204));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/v1/admin/secrets',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Secret names (values never leave the server)',
        response: {
          200: closedObject({
            secrets: {
              type: 'array',
              items: closedObject({
                name: { type: 'string' },
                updated_at: timestamp,
              }) satisfies ObjectSchemaOf<SecretSummary>,
            },
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      return { secrets: await secrets.list() };
    },
  );

  app.put(
    '/v1/admin/secrets/:name',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Set a secret (encrypted at rest); functions that declare it read it as ctx.secrets',
        params: secretParams,
        body: {
          type: 'object',
          required: ['value'],
          additionalProperties: false,
          properties: { value: { type: 'string' } },
        },
        response: { 204: { type: 'null' }, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      requireService(request.caller);
      await secrets.set(request.params.name, request.body.value, adminChangeEvent(request, 204));
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/v1/admin/secrets/:name',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Delete a secret',
        params: secretParams,
        response: { 204: { type: 'null' }, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      requireService(request.caller);
      await secrets.delete(request.params.name, adminChangeEvent(request, 204));
      return reply.code(204).send(null);
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

  app.get(
    '/v1/admin/traces/:trace_id',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'The function runs of a trace, as a tree',
        description:
          'Every recorded run of the trace in tree order: each root, then depth first the runs its writes, ' +
          'uploads and publishes triggered (siblings by start time). 400 for a malformed id, 404 when no run ' +
          'of the trace is recorded. See docs/tracing.md.',
        params: {
          type: 'object',
          required: ['trace_id'],
          properties: { trace_id: { type: 'string', maxLength: 64 } },
        },
        response: {
          200: closedObject({
            trace_id: { type: 'string' },
            invocations: { type: 'array', items: traceInvocationSchema },
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      const traceId = request.params.trace_id;
      return { trace_id: traceId, invocations: await functions.trace(traceId) };
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

/** Headers a function never sees: the caller's credentials are already verified into `auth`. */
const HIDDEN_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);

/** A request body as a function gets it: its bytes as sent, and what they parse to. */
class ReceivedBody {
  constructor(
    readonly bytes: Uint8Array,
    readonly parsed: unknown,
  ) {}
}

const NO_BODY = new ReceivedBody(new Uint8Array(0), null);

/** The media type of a Content-Type header, without parameters, in lower case. */
function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

/**
 * `ANY /v1/functions/:name`, in a scope of its own: it takes a body of any content type
 * (within the server's body limit) and keeps its bytes, for signature checks such as
 * Stripe's, besides the JSON (application/json) or text (text/plain) they parse to.
 */
export const httpFunctionRoute: FastifyPluginAsync<{ functions: FunctionsService }> = async (plugin, { functions }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  const parseJson = checkedJsonParser(plugin);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
    const received = body as Buffer;
    // A copy with a buffer of its own: the parser's buffer may be a view of a larger pooled
    // one, all of which would cross to the worker; this one can be moved there whole.
    const bytes = new Uint8Array(received);
    const type = mediaType(request.headers['content-type']);
    if (type === 'application/json') {
      parseJson(request, received.toString('utf8'), (error, value) =>
        error ? done(error, undefined) : done(null, new ReceivedBody(bytes, value)),
      );
      return;
    }
    done(null, new ReceivedBody(bytes, type === 'text/plain' ? received.toString('utf8') : null));
  });

  // The query and the body are the function's to read: neither has a schema, so both are unknown here.
  app.route({
    method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v1/functions/:name',
    schema: {
      tags: ['functions'],
      summary: 'Call an HTTP function; its JSON result, or the Response it returns, is the response',
      params: nameParams,
      response: {
        200: { description: 'The JSON value the function returned, or the body of the Response it returned' },
        ...errors,
      },
    },
    handler: async (request, reply) => {
      const headers: Record<string, string> = {};
      // Object.keys rather than Object.entries: no [key, value] pair allocated per header on this hot path.
      for (const key of Object.keys(request.headers)) {
        const value = request.headers[key];
        if (value === undefined || HIDDEN_HEADERS.has(key)) continue;
        headers[key] = Array.isArray(value) ? value.join(', ') : value;
      }
      const query: Record<string, string> = {};
      const received = (request.query ?? {}) as Record<string, unknown>;
      for (const key of Object.keys(received)) {
        const value = received[key];
        if (typeof value === 'string') query[key] = value;
      }
      const body = request.body instanceof ReceivedBody ? request.body : NO_BODY;
      const answer = await functions.invokeHttp(request.params.name, request.caller, {
        method: request.method,
        path: request.url.split('?')[0] ?? request.url,
        query,
        headers,
        body: body.parsed,
        rawBody: body.bytes,
      });
      if (answer.kind === 'json') {
        // Always JSON, also for a bare string or number, so clients can parse every answer alike.
        return reply.type('application/json; charset=utf-8').send(answer.json);
      }
      // The headers were checked in the worker (see readFunctionResponse); several set-cookie add up.
      reply.code(answer.status);
      for (const [name, value] of answer.headers) reply.header(name, value);
      return reply.send(Buffer.from(answer.body.buffer, answer.body.byteOffset, answer.body.byteLength));
    },
  });
};
