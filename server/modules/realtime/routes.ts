import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { requireService } from '../../internal/guards.js';
import { errorResponse } from '../../internal/http/errors.js';
import { closedList, closedObject } from '../../internal/http/response-schema.js';
import type { RealtimeService } from './service.js';

const realtimeSchema = {
  tags: ['realtime'],
  summary: 'Realtime websocket: live queries and channels (JSON text frames; see docs/realtime.md)',
  querystring: {
    type: 'object',
    properties: { access_token: { type: 'string', minLength: 1, maxLength: 8192 } },
    additionalProperties: true,
  },
} as const;

// Closed objects (additionalProperties: false): the serializer sends only the properties named,
// and the handler's return type is checked against them.
const connectionsSchema = closedObject({
  instance_id: { type: 'string' },
  connections: closedList({
    id: { type: 'string' },
    role: { type: 'string' },
    uid: { type: ['string', 'null'] },
    connected_at: { type: 'string', format: 'date-time' },
    ip: { type: ['string', 'null'] },
    user_agent: { type: ['string', 'null'] },
    subscriptions: closedList({
      id: { type: 'string' },
      collection: { type: 'string' },
      doc_id: { type: ['string', 'null'] },
      where: {},
      order_by: {},
      limit: { type: 'integer' },
      documents: { type: 'integer' },
      aggregate: closedObject({ group_by: {}, aggregates: {} }),
    }),
    channels: closedList({ channel: { type: 'string' }, presence: { type: 'boolean' } }),
  }),
});

/** `GET /v1/realtime`: upgrades to a websocket and hands it to the realtime service. */
export const realtimeRoutes: FastifyPluginAsync<{ realtime: RealtimeService }> = async (plugin, { realtime }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  app.get('/v1/realtime', { websocket: true, schema: realtimeSchema }, (socket, request) => {
    // A browser cannot set headers on a websocket: the token comes as ?access_token=;
    // an Authorization header (Node clients) was already resolved into request.caller.
    const token = request.query.access_token ?? bearerFrom(request.headers.authorization);
    const userAgent = request.headers['user-agent'];
    realtime.accept(socket, token, { ip: request.ip, userAgent: userAgent?.slice(0, 256) ?? null });
  });

  app.get(
    '/v1/admin/realtime',
    {
      // The key is checked before anything else, like every admin call.
      preValidation: async (request: FastifyRequest) => requireService(request.caller),
      schema: {
        tags: ['admin'],
        summary: "This instance's realtime connections with their live queries and channels (service key)",
        querystring: closedObject({}),
        response: { 200: connectionsSchema, '4xx': errorResponse },
      },
    },
    async () => realtime.describe(),
  );
};

function bearerFrom(header: string | undefined): string | null {
  const match = header ? /^Bearer ([^\s]+)$/i.exec(header.trim()) : null;
  return match?.[1] ?? null;
}
