import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when the CORS hook answered a preflight (kept from @fastify/cors, whose OPTIONS route reads it). */
    corsPreflightEnabled: boolean;
  }
}

export interface CorsOptions {
  /** `*`, or the exact origins allowed to call (scheme, host and port). */
  origins: '*' | readonly string[];
  methods: readonly string[];
  allowedHeaders: readonly string[];
  exposedHeaders: readonly string[];
  /** Seconds a browser may cache a preflight answer. */
  maxAge: number;
  /** Paths (prefixes) whose routes answer an OPTIONS that is not a preflight themselves. */
  discoveryPaths?: readonly string[];
}

/**
 * CORS with every header value computed once at start-up. It answers exactly as
 * @fastify/cors did with the same static options (same headers, same order, same strict
 * preflight), without that plugin's per-request work: it copies its whole options object
 * and builds an origin-resolving closure on every request, a few per cent of a short request.
 * Credentials are never allowed: Basalt authenticates with bearer tokens, not cookies.
 */
export function registerCors(app: FastifyInstance, options: CorsOptions): void {
  const anyOrigin = options.origins === '*' || options.origins.includes('*');
  const allowed = new Set(anyOrigin ? [] : options.origins);
  const exposed = options.exposedHeaders.join(', ');
  const methods = options.methods.join(', ');
  const allowedHeaders = options.allowedHeaders.join(', ');
  const maxAge = String(options.maxAge);

  app.decorateRequest('corsPreflightEnabled', false);

  app.addHook('onRequest', (request, reply, done) => {
    if (anyOrigin) {
      void reply.header('Access-Control-Allow-Origin', '*');
    } else {
      // The answer depends on the Origin header, so caches must key on it.
      addOriginToVary(reply);
      const origin = request.headers.origin;
      if (origin !== undefined && allowed.has(origin)) void reply.header('Access-Control-Allow-Origin', origin);
    }
    void reply.header('Access-Control-Expose-Headers', exposed);

    if (request.raw.method !== 'OPTIONS') {
      done();
      return;
    }
    // A preflight: anything else sent with OPTIONS is not one and is refused.
    if (!request.headers.origin || !request.headers['access-control-request-method']) {
      if (options.discoveryPaths?.some((prefix) => request.url.startsWith(prefix))) {
        done();
        return;
      }
      void reply.status(400).type('text/plain').send('Invalid Preflight Request');
      return;
    }
    request.corsPreflightEnabled = true;
    void reply
      .header('Access-Control-Allow-Methods', methods)
      .header('Access-Control-Allow-Headers', allowedHeaders)
      .header('Access-Control-Max-Age', maxAge)
      .code(204)
      .header('Content-Length', '0')
      .send();
  });

  // Every path answers OPTIONS, so a preflight never falls through to a 404 or a 405.
  app.options('*', { schema: { hide: true } }, (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.corsPreflightEnabled) {
      reply.callNotFound();
      return;
    }
    void reply.send();
  });
}

function addOriginToVary(reply: FastifyReply): void {
  const vary = reply.getHeader('Vary');
  if (vary === undefined || vary === '' || vary === null) {
    void reply.header('Vary', 'Origin');
    return;
  }
  if (vary === '*') return;
  const current = Array.isArray(vary) ? vary.join(', ') : String(vary);
  const fields = current
    .toLowerCase()
    .split(',')
    .map((field) => field.trim());
  if (fields.includes('*')) void reply.header('Vary', '*');
  else if (!fields.includes('origin')) void reply.header('Vary', `${current}, Origin`);
}
