import type { Caller } from '../../internal/caller.js';

/**
 * What the audit log records (docs/auth.md#audit-log). Account events have closed names,
 * listed here, so a typo cannot invent a type nobody filters for; admin events are named
 * after their route (`admin.<path>.<verb>`, see adminEventType), so a new admin endpoint is
 * audited without adding a name here.
 */
export const AUTH_EVENT_TYPES = [
  'auth.signup',
  'auth.signin',
  'auth.signin_failed',
  'auth.signout',
  'auth.session_revoked',
  'auth.refresh_token_reused',
  'auth.password_changed',
  'auth.email_change_requested',
  'auth.email_changed',
  'auth.email_confirmed',
] as const;

/** Second factors; recorded by the MFA flows. */
export const MFA_EVENT_TYPES = [
  'mfa.totp_enrolled',
  'mfa.totp_verified',
  'mfa.challenge_succeeded',
  'mfa.challenge_failed',
  'mfa.recovery_code_used',
  'mfa.factor_removed',
  'mfa.factors_reset_by_admin',
] as const;

/** Passkeys (WebAuthn); recorded by the passkey flows. */
export const PASSKEY_EVENT_TYPES = [
  'passkey.registered',
  'passkey.removed',
  'passkey.signin_succeeded',
  'passkey.signin_failed',
] as const;

export type AuthEventType = (typeof AUTH_EVENT_TYPES)[number];
export type MfaEventType = (typeof MFA_EVENT_TYPES)[number];
export type PasskeyEventType = (typeof PASSKEY_EVENT_TYPES)[number];
/** A change made through the admin API: `admin.` and the route's name (adminEventType). */
export type AdminEventType = `admin.${string}`;
export type AuditEventType = AuthEventType | MfaEventType | PasskeyEventType | AdminEventType;

/** Why a sign-in failed; only the audit log tells these apart (the caller gets one answer). */
export type SignInFailure =
  | 'unknown_email'
  | 'wrong_password'
  | 'no_password'
  | 'invalid_email'
  | 'email_not_confirmed'
  | 'banned'
  | 'rate_limited';

/**
 * Who did it. A user acting in a session an admin started as them carries `impersonator`
 * (the `act.sub` of its access token), so everything done in a "view as" session is told
 * apart from what the user did.
 */
export type AuditActor =
  { type: 'service' } | { type: 'user'; id: string; impersonator?: string } | { type: 'anonymous' };

/** Where a request came from, as the audit log keeps it. */
export interface AuditOrigin {
  ip: string | null;
  userAgent: string | null;
}

/** One event to record. */
export interface AuditEvent extends Partial<AuditOrigin> {
  type: AuditEventType;
  /** The account the event is about (the per-user timeline), if any. */
  userId?: string | null;
  actor: AuditActor;
  details?: Record<string, unknown>;
}

/** An event as `GET /v1/admin/audit` returns it. */
export interface AuditRecord {
  /** Decimal digits; also the paging cursor (`before`). */
  id: string;
  type: string;
  at: string;
  user_id: string | null;
  actor: AuditActor;
  ip: string | null;
  user_agent: string | null;
  details: Record<string, unknown>;
}

export const ANONYMOUS_ACTOR: AuditActor = Object.freeze({ type: 'anonymous' });
export const SERVICE_ACTOR: AuditActor = Object.freeze({ type: 'service' });

/** The actor of a request's caller. */
export function actorOf(caller: Caller): AuditActor {
  switch (caller.role) {
    case 'service':
      return SERVICE_ACTOR;
    case 'public':
      return ANONYMOUS_ACTOR;
    default:
      return caller.impersonator === undefined
        ? { type: 'user', id: caller.uid }
        : { type: 'user', id: caller.uid, impersonator: caller.impersonator };
  }
}

/** The actor for events a user causes by themselves, e.g. signing in as `userId`. */
export function userActor(userId: string): AuditActor {
  return { type: 'user', id: userId };
}

const VERBS: Record<string, string> = { POST: 'create', PUT: 'put', PATCH: 'update', DELETE: 'delete' };

/**
 * The event type of a changing admin route, from its method and path: the literal segments
 * after `/v1/admin/` joined by dots, then what the call does. A route that ends in a literal
 * after a parameter names its action (`POST /users/:id/impersonate` → `admin.users.impersonate`);
 * otherwise the method does (`POST /collections` → `admin.collections.create`,
 * `PATCH /buckets/:name` → `admin.buckets.update`, `PUT /secrets/:name` → `admin.secrets.put`).
 * A route may name itself instead (route config `audit.type`), e.g. `admin.storage.sweep`.
 */
export function adminEventType(method: string, url: string): AdminEventType {
  const segments = url
    .replace(/^\/v1\/admin\/?/, '')
    .split('/')
    .filter(Boolean);
  const literals = segments.filter((segment) => !segment.startsWith(':'));
  const last = segments.at(-1);
  const actionAfterParam =
    method === 'POST' &&
    segments.length >= 2 &&
    last !== undefined &&
    !last.startsWith(':') &&
    segments.at(-2)?.startsWith(':');
  if (actionAfterParam) return `admin.${literals.join('.')}`;
  return `admin.${[...literals, VERBS[method] ?? method.toLowerCase()].join('.')}`;
}

/** Body fields whose values never reach the audit log: credentials, secrets, code. */
const REDACTED_FIELD = /password|secret|token|^value$|^files$|private|credential/i;
/** A body larger than this is recorded as its field names only. */
const MAX_BODY_DETAILS = 8 * 1024;

/** A request body as admin events keep it: sensitive fields redacted, a large one cut to its field names. */
export function redactedBody(body: unknown): unknown {
  if (body === undefined || body === null) return undefined;
  if (typeof body !== 'object' || Array.isArray(body)) return '[not an object]';
  const kept = Object.fromEntries(
    Object.entries(body as Record<string, unknown>).map(([key, value]) => [
      key,
      REDACTED_FIELD.test(key) ? '[redacted]' : value,
    ]),
  );
  if (JSON.stringify(kept).length > MAX_BODY_DETAILS) return { fields: Object.keys(kept), truncated: true };
  return kept;
}
