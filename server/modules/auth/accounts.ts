import type { AuthResponse, User } from '../../../client-sdk/src/wire.js';
import { AppError } from '../../internal/errors.js';
import { assertUserJson } from '../../internal/user-json.js';
import type { EmailTokenType, UserRow } from './repository.js';

/**
 * The account shapes of the auth API and the small rules every auth service shares:
 * how a stored user is shown, when it counts as banned, what metadata it may carry.
 */

/** Where a request came from: rate limits key on the IP; sessions remember both. */
export interface ClientContext {
  ip: string;
  userAgent: string | null;
}

export type { Session, SessionInfo } from '../../../client-sdk/src/wire.js';
/** The user object of the API (the wire contract's shape). */
export type PublicUser = User;

/** What admin calls see: the user plus the fields only an admin manages. */
export interface AdminUser extends PublicUser {
  banned_until: string | null;
}

/** What sign-up, sign-in and verification answer. */
export type AuthResult = AuthResponse;

/** What an OAuth / OIDC provider told us about the person signing in. */
export interface ExternalIdentity {
  /** Provider name as configured, e.g. `github`. */
  provider: string;
  /** The provider's stable id of the account (`sub`). */
  subject: string;
  email: string | null;
  /** Whether the provider vouches that the person controls `email`. */
  emailVerified: boolean;
  /** Merged into a new user's user_metadata and kept on the identity (name, avatar...). */
  userMetadata?: Record<string, unknown>;
}

export type VerifyType = EmailTokenType;

export interface AdminUserInput {
  email?: string;
  password?: string;
  email_confirm?: boolean;
  app_metadata?: Record<string, unknown>;
  user_metadata?: Record<string, unknown>;
  banned_until?: string | null;
}

const MAX_METADATA_BYTES = 16 * 1024;

/** An optional instant as the API writes it. */
export function iso(date: Date | null): string | null {
  return date === null ? null : date.toISOString();
}

export function toPublicUser(row: UserRow): PublicUser {
  return {
    id: row.id,
    email: row.email,
    email_confirmed_at: iso(row.emailConfirmedAt),
    is_anonymous: row.isAnonymous,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
    last_sign_in_at: iso(row.lastSignInAt),
    user_metadata: row.userMetadata,
    app_metadata: row.appMetadata,
  };
}

export function toAdminUser(row: UserRow): AdminUser {
  return { ...toPublicUser(row), banned_until: iso(row.bannedUntil) };
}

export function isBanned(row: UserRow): boolean {
  return row.bannedUntil !== null && row.bannedUntil.getTime() > Date.now();
}

/** Throws FORBIDDEN for a user whose ban has not ended. */
export function assertNotBanned(row: UserRow): void {
  if (isBanned(row)) throw new AppError('FORBIDDEN', 'This account is banned.', { details: { reason: 'banned' } });
}

/** Checks user- or app-metadata given by a caller: JSON Postgres can store, and not too large. */
export function metadata(
  value: Record<string, unknown> | undefined,
  field: string,
): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  // Before measuring: JSON.stringify of hostile depth would overflow, and Postgres cannot store NUL.
  assertUserJson(value, field);
  if (Buffer.byteLength(JSON.stringify(value)) > MAX_METADATA_BYTES) {
    throw new AppError('INVALID_REQUEST', `"${field}" is larger than ${MAX_METADATA_BYTES} bytes.`, {
      details: { field },
    });
  }
  return value;
}

/** The rate-limit key of a request's origin; a request without a known address shares one. */
export function clientIp(context: ClientContext): string {
  return context.ip || 'unknown';
}
