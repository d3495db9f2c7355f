/**
 * The wire contract's shapes: what the server sends and takes, defined once. The server, the
 * SDK, the dashboard and `basalt/functions` import them from here, as they import the error
 * catalogue from `errors.ts`.
 */

export type DocumentData = Record<string, unknown>;

/** A stored document, as every API answer, live query and function event carries it. */
export interface Doc<T = DocumentData> {
  id: string;
  collection: string;
  owner: string | null;
  version: number;
  created_at: string;
  updated_at: string;
  data: T;
  /** Referenced documents asked for with `expand`: a document, a list of them, or null when absent or unreadable. */
  expand?: Record<string, Doc | Doc[] | null>;
  /** With a search and `highlight: true`: each search field's matching passages, HTML with `<mark>` around matches. */
  highlights?: Record<string, string>;
}

/** A stored object's metadata, as the storage API answers it and `onObject` events carry it. */
export interface StorageObject {
  id: string;
  bucket: string;
  path: string;
  size: number;
  content_type: string;
  etag: string;
  sha256: string;
  owner: string | null;
  created_at: string;
  updated_at: string;
}

/** How a live query's result changed. */
export type DocChangeType = 'added' | 'modified' | 'removed';

/** A session as the server issues it. `expires_at` is in seconds since the epoch. */
export interface Session {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  expires_at: number;
  refresh_token: string;
}

/** A user as the API shows it: never a password hash. */
export interface User {
  id: string;
  email: string | null;
  email_confirmed_at: string | null;
  is_anonymous: boolean;
  created_at: string;
  updated_at: string;
  last_sign_in_at: string | null;
  user_metadata: Record<string, unknown>;
  app_metadata: Record<string, unknown>;
}

export interface AuthResponse {
  user: User;
  session: Session | null;
  /**
   * On sign-ins: the user has a second factor and this session is `aal1`; a challenge
   * (`POST /v1/auth/mfa/challenge`) or a passkey sign-in gives an `aal2` session.
   */
  mfa_required?: boolean;
}

/** A session's authenticator assurance level: `aal2` once a second factor was proven. */
export type AssuranceLevel = 'aal1' | 'aal2';

/** A TOTP factor, as `GET /v1/auth/mfa/factors` lists it (never its secret). */
export interface MfaFactor {
  id: string;
  type: 'totp';
  status: 'unverified' | 'verified';
  friendly_name: string | null;
  created_at: string;
  verified_at: string | null;
  last_used_at: string | null;
}

/** What enrolling a TOTP factor answers: the secret, once, for the authenticator app. */
export interface TotpEnrollment {
  factor_id: string;
  secret: string;
  otpauth_url: string;
  /** The otpauth URL as a QR code: an SVG `data:` URL for an `<img>`. */
  qr_code: string;
}

/** Verifying a factor: the recovery codes (shown once) and the `aal2` session that replaces the caller's. */
export interface MfaVerifyResponse extends AuthResponse {
  recovery_codes: string[];
}

/** A registered passkey (never its public key). */
export interface Passkey {
  id: string;
  name: string | null;
  device_type: string;
  backed_up: boolean;
  transports: string[];
  created_at: string;
  last_used_at: string | null;
}

/** Registering a passkey: the passkey and the `aal2` session that replaces the caller's. */
export interface PasskeyRegisterResponse extends AuthResponse {
  passkey: Passkey;
}

/** One of a user's sessions, as `GET /v1/auth/sessions` lists it. */
export interface SessionInfo {
  id: string;
  created_at: string;
  refreshed_at: string;
  expires_at: string;
  user_agent: string | null;
  ip: string | null;
  current: boolean;
  /** Set on a session an admin started as this user ("view as"): who did, e.g. `service`. */
  impersonated_by: string | null;
}
