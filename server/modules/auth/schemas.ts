/**
 * The response schemas of the auth routes: what /docs shows, and what Fastify serializes
 * with. A property missing here would be dropped from the response, so each schema is
 * checked against its wire type (`ObjectSchemaOf`).
 */
import type { JWK } from 'jose';
import type {
  MfaFactor,
  MfaVerifyResponse,
  Passkey,
  PasskeyRegisterResponse,
  Session,
  SessionInfo,
  TotpEnrollment,
} from '../../../client-sdk/src/wire.js';
import { optionalTimestamp, timestamp, type ObjectSchemaOf } from '../../internal/http/response-schema.js';
import type { AdminUser, AuthResult, PublicUser } from './accounts.js';

/** Metadata is the application's own JSON object: every key goes out as stored. */
const openObject = { type: 'object', additionalProperties: true } as const;

const userProperties = {
  id: { type: 'string', format: 'uuid' },
  email: { type: ['string', 'null'] },
  email_confirmed_at: optionalTimestamp,
  is_anonymous: { type: 'boolean' },
  created_at: timestamp,
  updated_at: timestamp,
  last_sign_in_at: optionalTimestamp,
  user_metadata: openObject,
  app_metadata: openObject,
} as const;

export const userSchema = {
  type: 'object',
  description: 'A user (never a password hash)',
  additionalProperties: false,
  properties: userProperties,
} as const satisfies ObjectSchemaOf<PublicUser>;

export const adminUserSchema = {
  type: 'object',
  description: 'A user as the admin API shows it',
  additionalProperties: false,
  properties: { ...userProperties, banned_until: optionalTimestamp },
} as const satisfies ObjectSchemaOf<AdminUser>;

const sessionSchema = {
  type: ['object', 'null'],
  description: 'null when the email must be confirmed first',
  additionalProperties: false,
  properties: {
    access_token: { type: 'string' },
    token_type: { type: 'string', enum: ['bearer'] },
    expires_in: { type: 'integer', description: 'Seconds until the access token expires' },
    expires_at: { type: 'integer', description: 'When the access token expires, in seconds since the epoch' },
    refresh_token: { type: 'string' },
  },
} as const satisfies ObjectSchemaOf<Session>;

const authResponseProperties = {
  user: userSchema,
  session: sessionSchema,
  mfa_required: {
    type: 'boolean',
    description:
      'On sign-ins: the user has a second factor and this session is aal1 (POST /v1/auth/mfa/challenge or a passkey sign-in gives aal2)',
  },
} as const;

export const authResponseSchema = {
  type: 'object',
  additionalProperties: false,
  properties: authResponseProperties,
} as const satisfies ObjectSchemaOf<AuthResult>;

// ---- second factors -------------------------------------------------------------------

export const totpEnrollmentSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    factor_id: { type: 'string', format: 'uuid' },
    secret: { type: 'string', description: 'Base32; shown once' },
    otpauth_url: { type: 'string' },
    qr_code: { type: 'string', description: 'The otpauth URL as an SVG QR code, a data: URL' },
  },
} as const satisfies ObjectSchemaOf<TotpEnrollment>;

export const mfaVerifySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ...authResponseProperties,
    recovery_codes: { type: 'array', items: { type: 'string' }, description: 'Single-use; shown once' },
  },
} as const satisfies ObjectSchemaOf<MfaVerifyResponse>;

const factorSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string', format: 'uuid' },
    type: { type: 'string', enum: ['totp'] },
    status: { type: 'string', enum: ['unverified', 'verified'] },
    friendly_name: { type: ['string', 'null'] },
    created_at: timestamp,
    verified_at: optionalTimestamp,
    last_used_at: optionalTimestamp,
  },
} as const satisfies ObjectSchemaOf<MfaFactor>;

export const factorListSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    factors: { type: 'array', items: factorSchema },
    recovery_codes_left: { type: 'integer' },
  },
} as const;

const passkeySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string', format: 'uuid' },
    name: { type: ['string', 'null'] },
    device_type: { type: 'string' },
    backed_up: { type: 'boolean' },
    transports: { type: 'array', items: { type: 'string' } },
    created_at: timestamp,
    last_used_at: optionalTimestamp,
  },
} as const satisfies ObjectSchemaOf<Passkey>;

export const passkeyListSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { passkeys: { type: 'array', items: passkeySchema } },
} as const;

export const passkeyRegisteredSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { ...authResponseProperties, passkey: passkeySchema },
} as const satisfies ObjectSchemaOf<PasskeyRegisterResponse>;

/** WebAuthn options JSON (W3C WebAuthn level 3), passed on as @simplewebauthn/server builds them. */
export const webauthnOptionsSchema = {
  type: 'object',
  description: 'PublicKeyCredentialCreationOptionsJSON or PublicKeyCredentialRequestOptionsJSON',
  additionalProperties: true,
} as const;

const sessionInfoSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string', format: 'uuid' },
    created_at: timestamp,
    refreshed_at: timestamp,
    expires_at: timestamp,
    user_agent: { type: ['string', 'null'] },
    ip: { type: ['string', 'null'] },
    current: { type: 'boolean', description: 'The session of the token that asked' },
    impersonated_by: {
      type: ['string', 'null'],
      description: 'Who started this session as the user ("view as" by an admin: `service`); null for the user’s own',
    },
  },
} as const satisfies ObjectSchemaOf<SessionInfo>;

export const sessionListSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { sessions: { type: 'array', items: sessionInfoSchema } },
} as const;

/** `POST /v1/admin/users/:id/impersonate`: a session without a refresh token. */
export const impersonationSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    user: userSchema,
    session: {
      type: 'object',
      additionalProperties: false,
      properties: {
        ...sessionSchema.properties,
        refresh_token: { type: 'null', description: 'None: the session ends with its access token' },
      },
    },
    impersonated_by: { type: 'string', description: 'The `act.sub` of the token: `service`' },
  },
} as const;

/** The 202 of the mail-sending calls: the same empty answer whether or not the account exists. */
export const acceptedSchema = {
  type: 'object',
  description: 'Accepted',
  additionalProperties: false,
  properties: {},
} as const;

export const jwksSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    // A JWK's members depend on its key type (RFC 7517): each key goes out whole.
    keys: { type: 'array', items: { type: 'object', additionalProperties: true } },
  },
} as const satisfies ObjectSchemaOf<{ keys: JWK[] }>;

export const rotatedKeySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { kid: { type: 'string', description: 'The id of the new signing key' } },
} as const;

export const userPageSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    users: { type: 'array', items: adminUserSchema },
    total: { type: 'integer' },
    page: { type: 'integer' },
    per_page: { type: 'integer' },
  },
} as const;

/** A 302 back to the app or on to a provider: the Location header is the answer, there is no body. */
export const redirectSchema = { type: 'null', description: 'Redirect (Location header)' } as const;

export const userFactorsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    factors: { type: 'array', items: factorSchema },
    passkeys: { type: 'array', items: passkeySchema },
    recovery_codes_left: { type: 'integer' },
  },
} as const;
