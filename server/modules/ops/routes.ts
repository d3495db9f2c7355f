import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { TokenVerifier } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import { bearerToken, resolveCaller } from '../../internal/http/request-context.js';
import type { ReadinessCheck } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { safeEqual } from '../../internal/service-key.js';

const healthSchema = {
  type: 'object',
  required: ['status'],
  additionalProperties: false,
  properties: { status: { type: 'string', enum: ['ok'] } },
} as const;

const readinessSchema = {
  type: 'object',
  required: ['status', 'checks'],
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['ok', 'unavailable'] },
    checks: {
      type: 'object',
      description: 'Each check by name (postgres, storage): whether it answered',
      additionalProperties: { type: 'boolean' },
    },
  },
} as const;

export interface OpsOptions {
  platform: Platform;
  /** What /readyz checks (Postgres, the storage backend). */
  readiness: ReadinessCheck[];
  /** Verifies a user's token sent to /metrics, to refuse it with 403 rather than 401. */
  tokenVerifier: TokenVerifier;
}

/** Liveness, readiness and Prometheus metrics: the endpoints a load balancer and a scraper call. */
export const opsRoutes: FastifyPluginAsync<OpsOptions> = async (plugin, { platform, readiness, tokenVerifier }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  app.get(
    '/healthz',
    { schema: { tags: ['ops'], summary: 'The process is up', response: { 200: healthSchema } } },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['ops'],
        summary: 'Postgres and the storage backend answer',
        response: { 200: readinessSchema, 503: readinessSchema },
      },
    },
    async (_request, reply) => {
      const results = await Promise.all(
        readiness.map(async ({ name, check }) => [name, await check().catch(() => false)] as const),
      );
      const checks = Object.fromEntries(results);
      const ready = results.every(([, ok]) => ok);
      return reply.code(ready ? 200 : 503).send({ status: ready ? ('ok' as const) : ('unavailable' as const), checks });
    },
  );

  /**
   * /metrics names every route and function and shows the traffic of each: it is for the
   * operator's scraper, which sends the service key or, better, BASALT_METRICS_TOKEN (a
   * token that can read metrics and nothing else). No token is 401, a user's token 403.
   */
  const assertScraper = async (request: FastifyRequest): Promise<void> => {
    const token = bearerToken(request);
    if (token === null) {
      throw new AppError(
        'UNAUTHENTICATED',
        '/metrics needs the service key or the metrics token (BASALT_METRICS_TOKEN).',
      );
    }
    const { metricsToken, serviceKey } = platform.config;
    if (metricsToken !== null && safeEqual(token, metricsToken)) return;
    requireService(await resolveCaller(token, { serviceKey, tokenVerifier }));
  };

  app.get(
    '/metrics',
    {
      config: { ownAuthorization: true },
      onRequest: assertScraper,
      schema: {
        tags: ['ops'],
        summary: 'Prometheus metrics (the service key or BASALT_METRICS_TOKEN as a bearer)',
        hide: false,
      },
    },
    async (_request, reply) => {
      const { contentType, body } = await platform.metrics.render();
      return reply.type(contentType).send(body);
    },
  );
};
