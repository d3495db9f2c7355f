/**
 * Auth events of second factors, as they happen: the one place an audit log (or metrics)
 * hooks in. The MFA and passkey services call the sink given to buildAuthModule; by default
 * nothing records them.
 */
export type AuthEventType =
  | 'mfa.totp_enrolled'
  | 'mfa.totp_verified'
  | 'mfa.challenge_succeeded'
  | 'mfa.challenge_failed'
  | 'mfa.recovery_code_used'
  | 'mfa.factor_removed'
  | 'mfa.factors_reset_by_admin'
  | 'passkey.registered'
  | 'passkey.removed'
  | 'passkey.signin_succeeded'
  | 'passkey.signin_failed';

export interface AuthEvent {
  type: AuthEventType;
  /** The user concerned; null for a failed passkey sign-in that named no known credential. */
  userId: string | null;
  ip: string | null;
  userAgent: string | null;
  /** e.g. `{factor_id}`, `{passkey_id}`, `{reason}` for failures. Never a code or secret. */
  details: Record<string, unknown>;
}

export type AuthEventSink = (event: AuthEvent) => void;

export const IGNORE_AUTH_EVENTS: AuthEventSink = () => undefined;
