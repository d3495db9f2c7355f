import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { requireService } from '../../internal/guards.js';
import { errorResponse } from '../../internal/http/errors.js';
import { closedObject } from '../../internal/http/response-schema.js';
import type { UsageService } from './service.js';

const count = { type: 'number' } as const;

const bucketSchema = closedObject({
  start: { type: 'string', format: 'date-time' },
  functions: {
    type: 'object',
    additionalProperties: closedObject({
      invocations: count,
      errors: count,
      cold_starts: count,
      duration_ms: count,
      gb_seconds: count,
    }),
  },
  documents: closedObject({ reads: count, writes: count }),
  storage: closedObject({ bytes_in: count, bytes_out: count, bytes_stored: count }),
  realtime: closedObject({ messages: count, peak_connections: count }),
  auth: closedObject({ active_users: count }),
});

const usageQuery = closedObject({
  from: { type: 'string', maxLength: 64 },
  to: { type: 'string', maxLength: 64 },
  granularity: { type: 'string', enum: ['hour', 'day'] },
});

export const usageRoutes: FastifyPluginAsync<{ usage: UsageService }> = async (plugin, { usage }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  // The key is checked before the parameters, so a stranger learns nothing from validation errors.
  const adminOnly = async (request: FastifyRequest) => requireService(request.caller);
  app.get(
    '/v1/admin/usage',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Usage per hour or per day, summed over every instance (docs/usage.md)',
        querystring: usageQuery,
        response: {
          200: closedObject({ buckets: { type: 'array', items: bucketSchema } }),
          '4xx': errorResponse,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      return usage.usage(request.query);
    },
  );
};
