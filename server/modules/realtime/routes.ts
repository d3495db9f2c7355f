import type { FastifyPluginAsync } from 'fastify';
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

/** `GET /v1/realtime`: upgrades to a websocket and hands it to the realtime service. */
export const realtimeRoutes: FastifyPluginAsync<{ realtime: RealtimeService }> = async (app, { realtime }) => {
  app.get<{ Querystring: { access_token?: string } }>(
    '/v1/realtime',
    { websocket: true, schema: realtimeSchema },
    (socket, request) => {
      // A browser cannot set headers on a websocket: the token comes as ?access_token=;
      // an Authorization header (Node clients) was already resolved into request.caller.
      const token = request.query.access_token ?? bearerFrom(request.headers.authorization);
      realtime.accept(socket, token);
    },
  );
};

function bearerFrom(header: string | undefined): string | null {
  const match = header ? /^Bearer ([^\s]+)$/i.exec(header.trim()) : null;
  return match?.[1] ?? null;
}
