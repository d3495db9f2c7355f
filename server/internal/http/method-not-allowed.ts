import FindMyWay from 'find-my-way';
import type { FastifyInstance } from 'fastify';

/** The methods a route table is asked about; Fastify serves no others. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
type Method = (typeof METHODS)[number];

export interface RouteTable {
  /**
   * The methods that would match this concrete request path (the URL, query string ignored),
   * in a stable order; empty when no route has the path at all.
   */
  methodsFor(url: string): string[];
}

/**
 * A second router fed with every route Fastify registers (an onRoute hook), so that a request
 * that matched no route can be told apart: a path no route has (404) from a path that takes
 * other methods (405 with `Allow`). Fastify's own router answers 404 for both. It must be
 * created before any route is registered. Routes on every path (the CORS preflight's
 * `OPTIONS *`) say nothing about a path and are left out.
 */
export function createRouteTable(app: FastifyInstance, options: { maxParamLength: number }): RouteTable {
  const router = FindMyWay({ ignoreTrailingSlash: true, maxParamLength: options.maxParamLength });
  const noop = (): void => undefined;
  app.addHook('onRoute', (route) => {
    if (route.url === '*' || route.url === '/*') return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      if (!(METHODS as readonly string[]).includes(method)) continue;
      // The same method and path twice (encapsulated plugins may) is already known.
      if (router.hasRoute(method as Method, route.url)) continue;
      try {
        router.on(method as Method, route.url, noop);
      } catch {
        // A path this router cannot take only loses its 405: a wrong method on it stays 404.
      }
    }
  });
  return {
    methodsFor(url) {
      const path = url.split('?')[0] ?? url;
      const allowed = new Set<string>();
      for (const method of METHODS) {
        try {
          if (router.find(method, path) !== null) allowed.add(method);
        } catch {
          // A path find-my-way cannot decode matches nothing; Fastify has already said 400.
          return [];
        }
      }
      // Fastify answers HEAD wherever it answers GET.
      if (allowed.has('GET')) allowed.add('HEAD');
      return METHODS.filter((method) => allowed.has(method));
    },
  };
}
