import type { FastifyPluginAsync } from 'fastify';
import type { Platform } from '../../internal/platform.js';

const statusSchema = {
  type: 'object',
  properties: { status: { type: 'string' }, checks: { type: 'object', additionalProperties: { type: 'boolean' } } },
} as const;

/** Liveness, readiness and Prometheus metrics: the endpoints a load balancer and a scraper call. */
export const opsRoutes: FastifyPluginAsync<{ platform: Platform }> = async (app, { platform }) => {
  app.get(
    '/healthz',
    { schema: { tags: ['ops'], summary: 'The process is up', response: { 200: statusSchema } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['ops'],
        summary: 'Postgres and the storage backend answer',
        response: { 200: statusSchema, 503: statusSchema },
      },
    },
    async (_request, reply) => {
      const results = await Promise.all(
        platform.readiness.map(async ({ name, check }) => [name, await check().catch(() => false)] as const),
      );
      const checks = Object.fromEntries(results);
      const ready = results.every(([, ok]) => ok);
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ok' : 'unavailable', checks });
    },
  );

  app.get(
    '/metrics',
    { schema: { tags: ['ops'], summary: 'Prometheus metrics', hide: false } },
    async (_request, reply) => {
      const { contentType, body } = await platform.metrics.render();
      return reply.type(contentType).send(body);
    },
  );
};
