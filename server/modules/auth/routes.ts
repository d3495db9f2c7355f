import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { AppError } from '../../internal/errors.js';
import { errorResponse } from '../../internal/http/errors.js';
import { requireService } from '../../internal/guards.js';
import {
  acceptedSchema,
  adminUserSchema,
  authResponseSchema,
  impersonationSchema,
  jwksSchema,
  redirectSchema,
  rotatedKeySchema,
  sessionListSchema,
  userPageSchema,
  userSchema,
} from './schemas.js';
import type { AuthResult, ClientContext } from './accounts.js';
import type { AdminService } from './admin-service.js';
import type { EmailFlows } from './email-flows.js';
import type { SessionService } from './session-service.js';
import { auditOrigin } from '../audit/routes.js';

export const email = { type: 'string', minLength: 1, maxLength: 320 } as const;
// The service enforces 8–256 characters (WEAK_PASSWORD); the schema only stops absurd sizes.
const password = { type: 'string', minLength: 1, maxLength: 4096 } as const;
const metadata = { type: 'object', additionalProperties: true } as const;
const redirectTo = { type: 'string', minLength: 1, maxLength: 2048 } as const;
const token = { type: 'string', minLength: 1, maxLength: 512 } as const;
export const uuid = {
  type: 'string',
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
} as const;
const verifyType = { type: 'string', enum: ['signup', 'recovery', 'magiclink', 'email_change'] } as const;
export const idParams = { type: 'object', required: ['id'], properties: { id: uuid } } as const;

export function body<const Properties extends object, const Required extends readonly (keyof Properties & string)[]>(
  properties: Properties,
  required: Required,
) {
  return { type: 'object', additionalProperties: false, required, properties } as const;
}

/**
 * A body that may be absent altogether (e.g. POST /anonymous without any body). Absent, it
 * reaches the handler as undefined, which the schema's type (object or null) does not say.
 */
export function optionalBody<const Properties extends object>(properties: Properties) {
  return { type: ['object', 'null'], additionalProperties: false, properties } as const;
}

/** Every error is the catalogue's envelope. */
export const errors = { '4xx': errorResponse, '5xx': errorResponse } as const;
export const noContent = { 204: { type: 'null' }, ...errors } as const;

export function client(request: FastifyRequest): ClientContext {
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
    // The app must ask for the second factor before it has an aal2 session.
    ...(result.mfa_required ? { mfa_required: 'true' } : {}),
  }).toString();
}

/** Auth endpoints under /v1/auth, the admin users API, key rotation and the JWKS. */
export interface AuthRouteOptions {
  service: SessionService;
  emailFlows: EmailFlows;
  admin: AdminService;
}

export const authRoutes: FastifyPluginAsync<AuthRouteOptions> = async (plugin, { service, emailFlows, admin }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  const tags = ['auth'];

  app.post(
    '/v1/auth/signup',
    {
      schema: {
        tags,
        summary: 'Sign up with email and password',
        body: body({ email, password, data: metadata, redirect_to: redirectTo }, ['email', 'password']),
        response: { 201: authResponseSchema, ...errors },
      },
    },
    async (request, reply) => reply.code(201).send(await service.signUp(request.body, client(request))),
  );

  app.post(
    '/v1/auth/signin',
    {
      schema: {
        tags,
        summary: 'Sign in with email and password',
        body: body({ email, password }, ['email', 'password']),
        response: { 200: authResponseSchema, ...errors },
      },
    },
    async (request) => service.signIn(request.body, client(request)),
  );

  app.post(
    '/v1/auth/anonymous',
    {
      schema: {
        tags,
        summary: 'Sign in as a new anonymous user',
        body: optionalBody({ data: metadata }),
        response: { 201: authResponseSchema, ...errors },
      },
    },
    async (request, reply) =>
      reply.code(201).send(await service.signInAnonymously(request.body ?? {}, client(request))),
  );

  app.post(
    '/v1/auth/refresh',
    {
      schema: {
        tags,
        summary: 'Exchange a refresh token for a new session (the token is rotated)',
        body: body({ refresh_token: token }, ['refresh_token']),
        response: { 200: authResponseSchema, ...errors },
      },
    },
    async (request) => service.refresh(request.body.refresh_token, client(request)),
  );

  app.post(
    '/v1/auth/signout',
    {
      schema: {
        tags,
        summary: 'Sign out this session (local), all sessions (global) or all others',
        body: optionalBody({ scope: { type: 'string', enum: ['local', 'global', 'others'] } }),
        response: noContent,
      },
    },
    async (request, reply) => {
      await service.signOut(request.caller, request.body?.scope ?? 'local', client(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/v1/auth/user',
    { schema: { tags, summary: 'The signed-in user', response: { 200: userSchema, ...errors } } },
    async (request) => service.getUser(request.caller),
  );

  app.patch(
    '/v1/auth/user',
    {
      schema: {
        tags,
        summary: 'Update the signed-in user (email change is confirmed by mail)',
        body: body({ email, password, data: metadata, redirect_to: redirectTo }, []),
        response: { 200: userSchema, ...errors },
      },
    },
    async (request) => service.updateUser(request.caller, request.body, client(request)),
  );

  app.post(
    '/v1/auth/recover',
    {
      schema: {
        tags,
        summary: 'Mail a password-recovery link (202 whether or not the account exists)',
        body: body({ email, redirect_to: redirectTo }, ['email']),
        response: { 202: acceptedSchema, ...errors },
      },
    },
    async (request, reply) => {
      await emailFlows.recover(request.body, client(request));
      return reply.code(202).send({});
    },
  );

  app.post(
    '/v1/auth/magiclink',
    {
      schema: {
        tags,
        summary: 'Mail a sign-in link (202 whether or not the account exists)',
        body: body({ email, redirect_to: redirectTo }, ['email']),
        response: { 202: acceptedSchema, ...errors },
      },
    },
    async (request, reply) => {
      await emailFlows.magicLink(request.body, client(request));
      return reply.code(202).send({});
    },
  );

  app.post(
    '/v1/auth/resend',
    {
      schema: {
        tags,
        summary: 'Mail a new confirmation link to an unconfirmed address (202 in every case)',
        body: body({ email, redirect_to: redirectTo }, ['email']),
        response: { 202: acceptedSchema, ...errors },
      },
    },
    async (request, reply) => {
      await emailFlows.resendConfirmation(request.body, client(request));
      return reply.code(202).send({});
    },
  );

  app.post(
    '/v1/auth/verify',
    {
      schema: {
        tags,
        summary: 'Spend a mailed token and start a session',
        body: body({ type: verifyType, token, password }, ['type', 'token']),
        response: { 200: authResponseSchema, ...errors },
      },
    },
    async (request) => emailFlows.verify(request.body, client(request)),
  );

  // The link in a mail. Opening it confirms (or signs in) and returns to the app with the
  // session in the URL fragment; a recovery link only hands the token to the app, which
  // asks for the new password and POSTs /v1/auth/verify.
  app.get(
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
        response: { 200: authResponseSchema, 302: redirectSchema, ...errors },
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

  app.get(
    '/v1/auth/sessions',
    { schema: { tags, summary: "The caller's active sessions", response: { 200: sessionListSchema, ...errors } } },
    async (request) => ({ sessions: await service.listSessions(request.caller) }),
  );

  app.delete(
    '/v1/auth/sessions/:id',
    { schema: { tags, summary: 'Revoke one of the caller’s sessions', params: idParams, response: noContent } },
    async (request, reply) => {
      await service.revokeSession(request.caller, request.params.id, client(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/.well-known/jwks.json',
    {
      schema: {
        tags,
        summary: 'Public keys that verify access tokens',
        security: [],
        response: { 200: jwksSchema, ...errors },
      },
    },
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
  } as const;

  app.post(
    '/v1/admin/auth/keys/rotate',
    {
      preValidation: adminOnly,
      config: { audit: { type: 'admin.auth.keys.rotate' } },
      schema: {
        tags: adminTags,
        summary: 'Start signing with a new key; old keys stay until their tokens expire',
        response: { 200: rotatedKeySchema, ...errors },
      },
    },
    async (request) => admin.rotateSigningKey(request.caller),
  );

  app.get(
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
        response: { 200: userPageSchema, ...errors },
      },
    },
    async (request) =>
      admin.listUsers(request.caller, {
        email: request.query.email,
        page: request.query.page === undefined ? undefined : Number(request.query.page),
        per_page: request.query.per_page === undefined ? undefined : Number(request.query.per_page),
      }),
  );

  app.post(
    '/v1/admin/users',
    {
      preValidation: adminOnly,
      // Audited by the service, in the change's transaction.
      config: { audit: { recorded: true } },
      schema: {
        tags: adminTags,
        summary: 'Create a user',
        body: body(adminUserBody, ['email']),
        response: { 201: adminUserSchema, ...errors },
      },
    },
    async (request, reply) =>
      reply.code(201).send(await admin.createUser(request.caller, request.body, auditOrigin(request))),
  );

  app.get(
    '/v1/admin/users/:id',
    {
      preValidation: adminOnly,
      schema: {
        tags: adminTags,
        summary: 'Get a user',
        params: idParams,
        response: { 200: adminUserSchema, ...errors },
      },
    },
    async (request) => admin.getUser(request.caller, request.params.id),
  );

  app.patch(
    '/v1/admin/users/:id',
    {
      preValidation: adminOnly,
      config: { audit: { recorded: true } },
      schema: {
        tags: adminTags,
        summary: 'Update a user: metadata, email, password, ban (banned_until)',
        params: idParams,
        body: body(adminUserBody, []),
        response: { 200: adminUserSchema, ...errors },
      },
    },
    async (request) => admin.updateUser(request.caller, request.params.id, request.body, auditOrigin(request)),
  );

  app.delete(
    '/v1/admin/users/:id',
    {
      preValidation: adminOnly,
      config: { audit: { recorded: true } },
      schema: {
        tags: adminTags,
        summary: 'Delete a user and end their sessions',
        params: idParams,
        response: noContent,
      },
    },
    async (request, reply) => {
      await admin.deleteUser(request.caller, request.params.id, auditOrigin(request));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/admin/users/:id/impersonate',
    {
      preValidation: adminOnly,
      config: { audit: { recorded: true } },
      schema: {
        tags: adminTags,
        summary:
          'Start a short session as this user ("view as"): no refresh token, token carries act: {sub: "service"}',
        params: idParams,
        body: optionalBody({ expires_in: { type: 'integer' } }),
        response: { 201: impersonationSchema, ...errors },
      },
    },
    async (request, reply) =>
      reply
        .code(201)
        .send(await admin.impersonate(request.caller, request.params.id, request.body ?? {}, auditOrigin(request))),
  );
};
