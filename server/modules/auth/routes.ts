import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import type { Platform } from '../../internal/platform.js';
import type { AuthModule } from './module.js';
import type { AdminUserInput, AuthResult, ClientContext, VerifyType } from './accounts.js';

const email = { type: 'string', minLength: 1, maxLength: 320 } as const;
// The service enforces 8–256 characters (WEAK_PASSWORD); the schema only stops absurd sizes.
const password = { type: 'string', minLength: 1, maxLength: 4096 } as const;
const metadata = { type: 'object', additionalProperties: true } as const;
const redirectTo = { type: 'string', minLength: 1, maxLength: 2048 } as const;
const token = { type: 'string', minLength: 1, maxLength: 512 } as const;
const uuid = {
  type: 'string',
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
} as const;
const verifyType = { type: 'string', enum: ['signup', 'recovery', 'magiclink', 'email_change'] } as const;
const idParams = { type: 'object', required: ['id'], properties: { id: uuid } } as const;

function body(properties: Record<string, unknown>, required: string[] = []) {
  return { type: 'object', additionalProperties: false, required, properties } as const;
}

/** A body that may be absent altogether (e.g. POST /anonymous without any body). */
function optionalBody(properties: Record<string, unknown>) {
  return { type: ['object', 'null'], additionalProperties: false, properties } as const;
}

function client(request: FastifyRequest): ClientContext {
  const agent = request.headers['user-agent'];
  return { ip: request.ip, userAgent: typeof agent === 'string' ? agent : null };
}

/** The session of a result as URL-fragment parameters, for redirects back to the app. */
function fragment(result: AuthResult, type: string): string {
  const session = result.session;
  if (!session) return new URLSearchParams({ type }).toString();
  return new URLSearchParams({
    access_token: session.access_token,
    refresh_token: session.refresh_token,
    expires_in: String(session.expires_in),
    expires_at: String(session.expires_at),
    token_type: session.token_type,
    type,
  }).toString();
}

/** Auth endpoints under /v1/auth, the admin users API, key rotation and the JWKS. */
export const authRoutes: FastifyPluginAsync<{ platform: Platform; auth: AuthModule }> = async (app, { auth }) => {
  const { service, emailFlows, admin } = auth;
  const tags = ['auth'];

  app.post<{ Body: { email: string; password: string; data?: Record<string, unknown>; redirect_to?: string } }>(
    '/v1/auth/signup',
    {
      schema: {
        tags,
        summary: 'Sign up with email and password',
        body: body({ email, password, data: metadata, redirect_to: redirectTo }, ['email', 'password']),
      },
    },
    async (request, reply) => reply.code(201).send(await service.signUp(request.body, client(request))),
  );

  app.post<{ Body: { email: string; password: string } }>(
    '/v1/auth/signin',
    {
      schema: {
        tags,
        summary: 'Sign in with email and password',
        body: body({ email, password }, ['email', 'password']),
      },
    },
    async (request) => service.signIn(request.body, client(request)),
  );

  app.post<{ Body: { data?: Record<string, unknown> } | null | undefined }>(
    '/v1/auth/anonymous',
    { schema: { tags, summary: 'Sign in as a new anonymous user', body: optionalBody({ data: metadata }) } },
    async (request, reply) =>
      reply.code(201).send(await service.signInAnonymously(request.body ?? {}, client(request))),
  );

  app.post<{ Body: { refresh_token: string } }>(
    '/v1/auth/refresh',
    {
      schema: {
        tags,
        summary: 'Exchange a refresh token for a new session (the token is rotated)',
        body: body({ refresh_token: token }, ['refresh_token']),
      },
    },
    async (request) => service.refresh(request.body.refresh_token, client(request)),
  );

  app.post<{ Body: { scope?: 'local' | 'global' | 'others' } | null | undefined }>(
    '/v1/auth/signout',
    {
      schema: {
        tags,
        summary: 'Sign out this session (local), all sessions (global) or all others',
        body: optionalBody({ scope: { type: 'string', enum: ['local', 'global', 'others'] } }),
      },
    },
    async (request, reply) => {
      await service.signOut(request.caller, request.body?.scope ?? 'local');
      return reply.code(204).send();
    },
  );

  app.get('/v1/auth/user', { schema: { tags, summary: 'The signed-in user' } }, async (request) =>
    service.getUser(request.caller),
  );

  app.patch<{ Body: { email?: string; password?: string; data?: Record<string, unknown>; redirect_to?: string } }>(
    '/v1/auth/user',
    {
      schema: {
        tags,
        summary: 'Update the signed-in user (email change is confirmed by mail)',
        body: body({ email, password, data: metadata, redirect_to: redirectTo }),
      },
    },
    async (request) => service.updateUser(request.caller, request.body, client(request)),
  );

  app.post<{ Body: { email: string; redirect_to?: string } }>(
    '/v1/auth/recover',
    {
      schema: {
        tags,
        summary: 'Mail a password-recovery link (202 whether or not the account exists)',
        body: body({ email, redirect_to: redirectTo }, ['email']),
      },
    },
    async (request, reply) => {
      await emailFlows.recover(request.body, client(request));
      return reply.code(202).send({});
    },
  );

  app.post<{ Body: { email: string; redirect_to?: string } }>(
    '/v1/auth/magiclink',
    {
      schema: {
        tags,
        summary: 'Mail a sign-in link (202 whether or not the account exists)',
        body: body({ email, redirect_to: redirectTo }, ['email']),
      },
    },
    async (request, reply) => {
      await emailFlows.magicLink(request.body, client(request));
      return reply.code(202).send({});
    },
  );

  app.post<{ Body: { email: string; redirect_to?: string } }>(
    '/v1/auth/resend',
    {
      schema: {
        tags,
        summary: 'Mail a new confirmation link to an unconfirmed address (202 in every case)',
        body: body({ email, redirect_to: redirectTo }, ['email']),
      },
    },
    async (request, reply) => {
      await emailFlows.resendConfirmation(request.body, client(request));
      return reply.code(202).send({});
    },
  );

  app.post<{ Body: { type: VerifyType; token: string; password?: string } }>(
    '/v1/auth/verify',
    {
      schema: {
        tags,
        summary: 'Spend a mailed token and start a session',
        body: body({ type: verifyType, token, password }, ['type', 'token']),
      },
    },
    async (request) => emailFlows.verify(request.body, client(request)),
  );

  // The link in a mail. Opening it confirms (or signs in) and returns to the app with the
  // session in the URL fragment; a recovery link only hands the token to the app, which
  // asks for the new password and POSTs /v1/auth/verify.
  app.get<{ Querystring: { type: VerifyType; token: string; redirect_to?: string } }>(
    '/v1/auth/verify',
    {
      schema: {
        tags,
        summary: 'The link mailed to users',
        querystring: {
          type: 'object',
          required: ['type', 'token'],
          properties: { type: verifyType, token, redirect_to: redirectTo },
        },
      },
    },
    async (request, reply) => {
      const { type, token: value, redirect_to: target } = request.query;
      // Only the normalized form is ever written into the Location header.
      const redirect = target === undefined ? null : emailFlows.allowedRedirect(target);
      if (type === 'recovery') {
        if (!redirect) {
          throw new AppError('INVALID_REQUEST', 'Recovery needs a new password: POST /v1/auth/verify with it.');
        }
        return reply.redirect(`${redirect}#${new URLSearchParams({ type, token: value }).toString()}`, 302);
      }
      const result = await emailFlows.verify({ type, token: value }, client(request));
      if (!redirect) return result;
      return reply.redirect(`${redirect}#${fragment(result, type)}`, 302);
    },
  );

  app.get('/v1/auth/sessions', { schema: { tags, summary: "The caller's active sessions" } }, async (request) => ({
    sessions: await service.listSessions(request.caller),
  }));

  app.delete<{ Params: { id: string } }>(
    '/v1/auth/sessions/:id',
    { schema: { tags, summary: 'Revoke one of the caller’s sessions', params: idParams } },
    async (request, reply) => {
      await service.revokeSession(request.caller, request.params.id);
      return reply.code(204).send();
    },
  );

  app.get(
    '/.well-known/jwks.json',
    { schema: { tags, summary: 'Public keys that verify access tokens', security: [] } },
    async (_request, reply) => reply.header('cache-control', 'public, max-age=60').send(await service.jwks()),
  );

  // ---- admin (service key) -------------------------------------------------------------

  const adminTags = ['admin'];
  // The key is checked before the body, so a stranger learns nothing from validation errors.
  const adminOnly = async (request: FastifyRequest) => requireService(request.caller);
  const adminUserBody = {
    email,
    password,
    email_confirm: { type: 'boolean' },
    app_metadata: metadata,
    user_metadata: metadata,
    banned_until: { type: ['string', 'null'], maxLength: 64 },
  };

  app.post(
    '/v1/admin/auth/keys/rotate',
    {
      preValidation: adminOnly,
      schema: { tags: adminTags, summary: 'Start signing with a new key; old keys stay until their tokens expire' },
    },
    async (request) => admin.rotateSigningKey(request.caller),
  );

  app.get<{ Querystring: { email?: string; page?: string; per_page?: string } }>(
    '/v1/admin/users',
    {
      preValidation: adminOnly,
      schema: {
        tags: adminTags,
        summary: 'List users, optionally searching by email',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            email: { type: 'string', maxLength: 320 },
            // Query strings are not coerced (coerceTypes is off app-wide), so numbers come as digits.
            page: { type: 'string', pattern: '^[1-9][0-9]{0,6}$' },
            per_page: { type: 'string', pattern: '^([1-9][0-9]{0,2}|1000)$' },
          },
        },
      },
    },
    async (request) =>
      admin.listUsers(request.caller, {
        email: request.query.email,
        page: request.query.page === undefined ? undefined : Number(request.query.page),
        per_page: request.query.per_page === undefined ? undefined : Number(request.query.per_page),
      }),
  );

  app.post<{ Body: AdminUserInput }>(
    '/v1/admin/users',
    {
      preValidation: adminOnly,
      schema: { tags: adminTags, summary: 'Create a user', body: body(adminUserBody, ['email']) },
    },
    async (request, reply) => reply.code(201).send(await admin.createUser(request.caller, request.body)),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/admin/users/:id',
    { preValidation: adminOnly, schema: { tags: adminTags, summary: 'Get a user', params: idParams } },
    async (request) => admin.getUser(request.caller, request.params.id),
  );

  app.patch<{ Params: { id: string }; Body: AdminUserInput }>(
    '/v1/admin/users/:id',
    {
      preValidation: adminOnly,
      schema: {
        tags: adminTags,
        summary: 'Update a user: metadata, email, password, ban (banned_until)',
        params: idParams,
        body: body(adminUserBody),
      },
    },
    async (request) => admin.updateUser(request.caller, request.params.id, request.body),
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/admin/users/:id',
    {
      preValidation: adminOnly,
      schema: { tags: adminTags, summary: 'Delete a user and end their sessions', params: idParams },
    },
    async (request, reply) => {
      await admin.deleteUser(request.caller, request.params.id);
      return reply.code(204).send();
    },
  );
};
