import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';
import { PUBLIC_CALLER, SERVICE_CALLER, type Caller, type TokenVerifier } from '../caller.js';
import { safeEqual } from '../service-key.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling; resolved from the Authorization header before the handler runs. */
    caller: Caller;
  }
  interface FastifyContextConfig {
    /**
     * The route reads a bearer other than the service key itself (/metrics takes its own
     * scrape token), so such a token is not verified as a user's here: the caller stays public.
     */
    ownAuthorization?: boolean;
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Keeps a well-formed x-request-id from a proxy, so a request can be traced across hops; else makes one. */
export function requestIdFrom(header: string | string[] | undefined): string {
  const given = Array.isArray(header) ? header[0] : header;
  return given && REQUEST_ID.test(given) ? given : randomUUID();
}

export interface CallerResolver {
  serviceKey: string;
  /** The auth module's: verifies users' access tokens. */
  tokenVerifier: TokenVerifier;
}

/** Resolves a bearer token: the service key, a user's access token, or nothing (the public caller). */
export async function resolveCaller(token: string | null, resolver: CallerResolver): Promise<Caller> {
  if (token === null) return PUBLIC_CALLER;
  if (safeEqual(token, resolver.serviceKey)) return SERVICE_CALLER;
  return resolver.tokenVerifier.verify(token);
}

export function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (header === undefined || header === '') return null;
  const match = /^Bearer ([^\s]+)$/i.exec(header.trim());
  if (!match?.[1]) throw new AppError('UNAUTHENTICATED', 'The Authorization header must be "Bearer <token>".');
  return match[1];
}

export function registerRequestContext(app: FastifyInstance, resolver: CallerResolver): void {
  app.decorateRequest<Caller | null>('caller', null);
  // A callback hook, not an async one: the public caller and the service key resolve
  // without a promise; only a user's token waits for the verifier.
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    let token: string | null;
    try {
      token = bearerToken(request);
      if (token === null) {
        request.caller = PUBLIC_CALLER;
        done();
        return;
      }
      if (safeEqual(token, resolver.serviceKey)) {
        request.caller = SERVICE_CALLER;
        done();
        return;
      }
    } catch (error) {
      done(error as Error);
      return;
    }
    if (request.routeOptions.config.ownAuthorization === true) {
      request.caller = PUBLIC_CALLER;
      done();
      return;
    }
    resolveCaller(token, resolver).then(
      (caller) => {
        request.caller = caller;
        done();
      },
      (error: unknown) => done(error as Error),
    );
  });
}
