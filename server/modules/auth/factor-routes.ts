import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from '@simplewebauthn/server';
import type { FastifyPluginAsync } from 'fastify';
import { requireService } from '../../internal/guards.js';
import type { MfaService } from './mfa.js';
import type { PasskeyService } from './passkeys.js';
import { body, client, email, errors, idParams, noContent, optionalBody, uuid } from './routes.js';
import {
  authResponseSchema,
  factorListSchema,
  mfaVerifySchema,
  passkeyListSchema,
  passkeyRegisteredSchema,
  totpEnrollmentSchema,
  userFactorsSchema,
  webauthnOptionsSchema,
} from './schemas.js';

const totpCode = { type: 'string', pattern: '^[0-9]{6}$' } as const;
const recoveryCode = { type: 'string', minLength: 1, maxLength: 64 } as const;
const name = { type: 'string', minLength: 1, maxLength: 100 } as const;
/** base64url, as WebAuthn's JSON encodings use it. */
const b64url = (maxLength: number) => ({ type: 'string', maxLength, pattern: '^[A-Za-z0-9_-]*$' }) as const;
/** A ceremony's whole answer is a few KiB; anything near this limit is not one. */
const WEBAUTHN_BODY_LIMIT = 64 * 1024;

/** A PublicKeyCredential as JSON (RegistrationResponseJSON or AuthenticationResponseJSON). */
const credential = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'rawId', 'type', 'response'],
  properties: {
    id: b64url(1024),
    rawId: b64url(1024),
    type: { type: 'string', enum: ['public-key'] },
    authenticatorAttachment: { type: 'string', maxLength: 32 },
    clientExtensionResults: { type: 'object', additionalProperties: true, maxProperties: 16 },
    response: {
      type: 'object',
      additionalProperties: false,
      required: ['clientDataJSON'],
      properties: {
        clientDataJSON: b64url(8192),
        attestationObject: b64url(32768),
        authenticatorData: b64url(8192),
        signature: b64url(2048),
        userHandle: b64url(512),
        publicKey: b64url(4096),
        publicKeyAlgorithm: { type: 'integer' },
        transports: { type: 'array', maxItems: 10, items: { type: 'string', maxLength: 32 } },
      },
    },
  },
} as const;

export interface FactorRouteOptions {
  mfa: MfaService;
  passkeys: PasskeyService;
}

/** Second factors: TOTP and recovery codes under /v1/auth/mfa, passkeys under /v1/auth/passkeys. */
export const factorRoutes: FastifyPluginAsync<FactorRouteOptions> = async (plugin, { mfa, passkeys }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  const tags = ['auth'];

  app.post(
    '/v1/auth/mfa/totp/enroll',
    {
      schema: {
        tags,
        summary: 'Start enrolling a TOTP factor (needs aal2 when the account has a factor already)',
        body: optionalBody({ friendly_name: name }),
        response: { 200: totpEnrollmentSchema, ...errors },
      },
    },
    async (request) => mfa.enrollTotp(request.caller, request.body ?? {}, client(request)),
  );

  app.post(
    '/v1/auth/mfa/totp/verify',
    {
      schema: {
        tags,
        summary: 'Activate a TOTP factor with a code: recovery codes and an aal2 session; other sessions end',
        body: body({ factor_id: uuid, code: totpCode }, ['factor_id', 'code']),
        response: { 200: mfaVerifySchema, ...errors },
      },
    },
    async (request) => mfa.verifyTotp(request.caller, request.body, client(request)),
  );

  app.post(
    '/v1/auth/mfa/challenge',
    {
      schema: {
        tags,
        summary: 'Prove a second factor (a TOTP code or a recovery code): an aal2 session replaces this one',
        body: body({ factor_id: uuid, code: totpCode, recovery_code: recoveryCode }, []),
        response: { 200: authResponseSchema, ...errors },
      },
    },
    async (request) => mfa.challenge(request.caller, request.body, client(request)),
  );

  app.get(
    '/v1/auth/mfa/factors',
    { schema: { tags, summary: "The caller's TOTP factors", response: { 200: factorListSchema, ...errors } } },
    async (request) => mfa.listFactors(request.caller),
  );

  app.delete(
    '/v1/auth/mfa/factors/:id',
    {
      schema: {
        tags,
        summary: 'Remove a factor (needs aal2); other sessions end',
        params: idParams,
        response: noContent,
      },
    },
    async (request, reply) => {
      await mfa.removeFactor(request.caller, request.params.id, client(request));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/auth/passkeys/register/options',
    {
      schema: {
        tags,
        summary: 'WebAuthn registration options for the caller (PublicKeyCredentialCreationOptionsJSON)',
        response: { 200: webauthnOptionsSchema, ...errors },
      },
    },
    // Spread: the options interface has no index signature, which the open response schema's type asks for.
    async (request) => ({ ...(await passkeys.registerOptions(request.caller)) }),
  );

  app.post(
    '/v1/auth/passkeys/register/verify',
    {
      bodyLimit: WEBAUTHN_BODY_LIMIT,
      schema: {
        tags,
        summary: 'Store a new passkey: an aal2 session replaces this one; other sessions end',
        body: body({ credential, name }, ['credential']),
        response: { 200: passkeyRegisteredSchema, ...errors },
      },
    },
    async (request) =>
      passkeys.registerVerify(
        request.caller,
        { credential: request.body.credential as RegistrationResponseJSON, name: request.body.name },
        client(request),
      ),
  );

  app.post(
    '/v1/auth/passkeys/signin/options',
    {
      schema: {
        tags,
        summary: 'WebAuthn sign-in options (PublicKeyCredentialRequestOptionsJSON); no email: any discoverable passkey',
        security: [],
        body: optionalBody({ email }),
        response: { 200: webauthnOptionsSchema, ...errors },
      },
    },
    async (request) => ({ ...(await passkeys.signinOptions(request.body ?? {}, client(request))) }),
  );

  app.post(
    '/v1/auth/passkeys/signin/verify',
    {
      bodyLimit: WEBAUTHN_BODY_LIMIT,
      schema: {
        tags,
        summary: 'Sign in with a passkey: an aal2 session',
        security: [],
        body: body({ credential }, ['credential']),
        response: { 200: authResponseSchema, ...errors },
      },
    },
    async (request) =>
      passkeys.signinVerify({ credential: request.body.credential as AuthenticationResponseJSON }, client(request)),
  );

  app.delete(
    '/v1/admin/users/:id/factors',
    {
      // The key is checked before the body, as for every admin call.
      preValidation: async (request) => requireService(request.caller),
      // Audited by the service as `mfa.factors_reset_by_admin`, in the change's transaction.
      config: { audit: { recorded: true } },
      schema: {
        tags: ['admin'],
        summary: "Delete every second factor of a user (TOTP, passkeys, recovery codes) and end the user's sessions",
        params: idParams,
        response: {
          200: { type: 'object', additionalProperties: false, properties: { removed: { type: 'integer' } } },
          ...errors,
        },
      },
    },
    async (request) => mfa.resetByAdmin(request.caller, request.params.id, client(request)),
  );

  app.get(
    '/v1/admin/users/:id/factors',
    {
      preValidation: async (request) => requireService(request.caller),
      schema: {
        tags: ['admin'],
        summary: "A user's second factors (TOTP, passkeys) and unused recovery codes; never a secret or a key",
        params: idParams,
        response: { 200: userFactorsSchema, ...errors },
      },
    },
    async (request) => passkeys.factorsOfUser(request.caller, request.params.id),
  );

  app.get(
    '/v1/auth/passkeys',
    { schema: { tags, summary: "The caller's passkeys", response: { 200: passkeyListSchema, ...errors } } },
    async (request) => passkeys.list(request.caller),
  );

  app.delete(
    '/v1/auth/passkeys/:id',
    {
      schema: {
        tags,
        summary: 'Remove a passkey (needs aal2); other sessions end',
        params: idParams,
        response: noContent,
      },
    },
    async (request, reply) => {
      await passkeys.remove(request.caller, request.params.id, client(request));
      return reply.code(204).send(null);
    },
  );
};
