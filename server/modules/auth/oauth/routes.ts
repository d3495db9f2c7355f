import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Platform } from '../../../internal/platform.js';
import { RateLimiter } from '../rate-limit.js';
import { AuthRepository } from '../repository.js';
import { OAuthRepository } from './repository.js';
import { OAuthService, type CallbackQuery, type CookieInstruction, type IdentitySignIn } from './service.js';

const redirectResponse = {
  302: {
    description: 'Redirect (Location header)',
    type: 'null',
  },
} as const;

const errorResponse = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' }, details: { type: 'object' } },
    },
  },
} as const;

const authorizeSchema = {
  tags: ['auth'],
  summary: 'Start an OAuth / OpenID Connect sign-in',
  description:
    'Redirects to the provider (authorization code flow with PKCE S256, state and nonce). ' +
    '`redirect_to` must be exactly one of BASALT_AUTH_REDIRECT_URLS; it defaults to the first of them.',
  security: [],
  querystring: {
    type: 'object',
    properties: {
      provider: { type: 'string', minLength: 1, maxLength: 64 },
      redirect_to: { type: 'string', minLength: 1, maxLength: 2048 },
    },
    required: ['provider'],
  },
  response: { ...redirectResponse, 400: errorResponse, 429: errorResponse, 503: errorResponse },
} as const;

const param = { type: 'string', maxLength: 8192 } as const;

const callbackSchema = {
  tags: ['auth'],
  summary: 'Where the provider sends the browser back',
  description:
    "Redirects to the sign-in's redirect_to with the session in the fragment (`#access_token=...&refresh_token=..." +
    '&expires_in=...&expires_at=...&token_type=bearer`), or with `#error=...&error_code=...&error_description=...`. ' +
    'A missing, unknown, used or expired state is answered 400.',
  security: [],
  querystring: {
    type: 'object',
    properties: { code: param, state: param, error: param, error_description: param, iss: param },
  },
  response: { ...redirectResponse, 400: errorResponse },
} as const;

function setCookie(reply: FastifyReply, cookie: CookieInstruction): void {
  const attributes = [
    `${cookie.name}=${cookie.value}`,
    `Path=${cookie.path}`,
    `Max-Age=${cookie.maxAge}`,
    'HttpOnly',
    // Lax: the cookie must come back on the provider's top-level redirect to the callback.
    'SameSite=Lax',
    ...(cookie.secure ? ['Secure'] : []),
  ];
  void reply.header('set-cookie', attributes.join('; '));
}

/**
 * GET /v1/auth/authorize and GET /v1/auth/callback. `auth` is the auth core, which
 * creates or finds the user and issues the session.
 */
export const oauthRoutes: FastifyPluginAsync<{ platform: Platform; auth: IdentitySignIn }> = async (
  app,
  { platform, auth },
) => {
  const oauth = new OAuthService({
    config: platform.config,
    repository: new OAuthRepository(platform.db),
    auth,
    limiter: new RateLimiter(new AuthRepository(platform.db), platform.config.auth.rateLimits.windowSeconds),
    log: platform.log,
  });

  app.get<{ Querystring: { provider: string; redirect_to?: string } }>(
    '/v1/auth/authorize',
    // No HEAD twin: a prefetch or link preview must not create sign-ins.
    { schema: authorizeSchema, exposeHeadRoute: false },
    async (request, reply) => {
      const { url, cookie } = await oauth.authorize(
        { provider: request.query.provider, redirectTo: request.query.redirect_to },
        { ip: request.ip },
      );
      setCookie(reply, cookie);
      return reply.header('cache-control', 'no-store').redirect(url, 302);
    },
  );

  app.get<{ Querystring: CallbackQuery }>(
    '/v1/auth/callback',
    // No HEAD twin: a HEAD would spend the single-use state.
    { schema: callbackSchema, exposeHeadRoute: false },
    async (request, reply) => {
      const result = await oauth.callback(request.query, {
        cookieHeader: request.headers.cookie,
        userAgent: request.headers['user-agent'] ?? null,
        ip: request.ip,
      });
      setCookie(reply, result.clearCookie);
      return reply.header('cache-control', 'no-store').redirect(result.location, 302);
    },
  );
};
