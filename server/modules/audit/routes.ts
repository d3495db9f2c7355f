import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify';
import { errorResponse } from '../../internal/http/errors.js';
import { closedObject } from '../../internal/http/response-schema.js';
import { requireService } from '../../internal/guards.js';
import { actorOf, adminEventType, redactedBody, type AuditEvent, type AuditOrigin } from './events.js';
import type { AuditLog } from './service.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * How the admin-change hook audits this route (changing `/v1/admin/*` routes only):
     * `type` names the event instead of the route-derived name; `recorded: true` says the
     * route's service records the event itself, in the transaction of the change.
     */
    audit?: { type?: `admin.${string}`; recorded?: boolean };
  }
}

/** Where a request came from: the client address as the trusted-proxy setting resolves it. */
export function auditOrigin(request: FastifyRequest): AuditOrigin {
  const agent = request.headers['user-agent'];
  return { ip: request.ip || null, userAgent: typeof agent === 'string' ? agent : null };
}

const CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
function methodsOf(route: RouteOptions): string[] {
  return (Array.isArray(route.method) ? route.method : [route.method]).map((method) => method.toUpperCase());
}

/** Whether a route is a changing admin call, and so audited (by the hook or by its service). */
export function isChangingAdminRoute(method: string, url: string): boolean {
  return url.startsWith('/v1/admin/') && CHANGING.has(method.toUpperCase());
}

/**
 * The event of a changing admin call: `{type: "admin.<route>", details: {method, route,
 * params, query, body, status}}`, the body redacted (redactedBody). The hook below records
 * it after the change; a route whose service records it in the change's transaction
 * (`config.audit.recorded`) builds it here with the status it answers on success and hands
 * it to the service, so both give the same event.
 */
export function adminChangeEvent(request: FastifyRequest, status: number): AuditEvent {
  const route = request.routeOptions.url ?? request.url;
  const config = request.routeOptions.config as { audit?: { type?: `admin.${string}` } } | undefined;
  const body = redactedBody(request.body);
  const query = request.query as Record<string, unknown> | undefined;
  return {
    type: config?.audit?.type ?? adminEventType(request.method, route),
    actor: actorOf(request.caller),
    ...auditOrigin(request),
    details: {
      method: request.method,
      route,
      params: request.params ?? {},
      ...(query && Object.keys(query).length > 0 ? { query } : {}),
      ...(body === undefined ? {} : { body }),
      status,
    },
  };
}

/**
 * Audits every changing admin call (`POST`/`PUT`/`PATCH`/`DELETE` under `/v1/admin/`) that
 * succeeds: a route hook, added to each such route as it is registered, so an admin
 * endpoint added later is audited without code of its own. It records
 * `{type: "admin.<route>", details: {method, route, params, query, body}}` after the handler
 * succeeded and before the answer leaves, so the caller never sees success for a change the
 * log lacks. The change has committed by then: an event that cannot be written is logged as
 * an error, and the answer stays the change's. Routes whose service records the event in
 * the change's own transaction say so (`config.audit.recorded`). Must be called before the
 * routes are registered.
 */
export function auditAdminChanges(app: FastifyInstance, audit: AuditLog): void {
  app.addHook('onRoute', (route) => {
    const url = route.url ?? route.path;
    const methods = methodsOf(route).filter((method) => isChangingAdminRoute(method, url));
    const config = route.config as { audit?: { type?: `admin.${string}`; recorded?: boolean } } | undefined;
    if (methods.length === 0 || config?.audit?.recorded === true) return;
    const record: onSendHookHandler = async (request, reply, payload) => {
      if (reply.statusCode >= 400) return payload;
      await audit.record(adminChangeEvent(request, reply.statusCode));
      return payload;
    };
    const existing = route.onSend;
    route.onSend = existing === undefined ? [record] : [...(Array.isArray(existing) ? existing : [existing]), record];
  });
}

const eventSchema = closedObject({
  id: { type: 'string' },
  type: { type: 'string' },
  at: { type: 'string', format: 'date-time' },
  user_id: { type: ['string', 'null'] },
  actor: {
    type: 'object',
    additionalProperties: false,
    properties: { type: { type: 'string' }, id: { type: 'string' }, impersonator: { type: 'string' } },
  },
  ip: { type: ['string', 'null'] },
  user_agent: { type: ['string', 'null'] },
  details: { type: 'object', additionalProperties: true },
});

/** `GET /v1/admin/audit`: service key only. */
export const auditRoutes: FastifyPluginAsync<{ audit: AuditLog }> = async (plugin, { audit }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  app.get(
    '/v1/admin/audit',
    {
      // The key is checked before the query, so a stranger learns nothing from validation errors.
      preValidation: async (request: FastifyRequest) => requireService(request.caller),
      schema: {
        tags: ['admin'],
        summary: 'Audit events, newest first; page with `before` = the `next_before` of the previous page',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            user_id: {
              type: 'string',
              pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
            },
            // An exact type, or a prefix: ending in "." (`auth.`) or "*" (`admin.users*`).
            type: { type: 'string', pattern: '^[a-z0-9_.]{0,128}\\*?$' },
            before: { type: 'string', pattern: '^[1-9][0-9]{0,17}$' },
            limit: { type: 'string', pattern: '^[1-9][0-9]{0,3}$' },
          },
        },
        response: {
          200: closedObject({
            events: { type: 'array', items: eventSchema },
            next_before: { type: ['string', 'null'] },
          }),
          '4xx': errorResponse,
          '5xx': errorResponse,
        },
      },
    },
    async (request) =>
      audit.list(request.caller, {
        user_id: request.query.user_id,
        type: request.query.type,
        before: request.query.before,
        limit: request.query.limit === undefined ? undefined : Number(request.query.limit),
      }),
  );
};
