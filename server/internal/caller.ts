/**
 * Who is making a request. Resolved once per request (or per websocket auth message)
 * and passed explicitly into services; rules see it as `auth`.
 */
export type Caller = PublicCaller | ServiceCaller | UserCaller;

export interface PublicCaller {
  role: 'public';
}

export interface ServiceCaller {
  role: 'service';
}

export interface UserCaller {
  role: 'authenticated' | 'anon';
  uid: string;
  email: string | null;
  sessionId: string;
  /** Whether `email` is proven (confirmed by mail, or verified by an OAuth provider); absent means no. */
  emailVerified?: boolean;
  /** The session's assurance level (`aal2` after a second factor); absent means `aal1`. */
  aal?: 'aal1' | 'aal2';
  /** The user's app_metadata, as carried in the access token. */
  claims: Record<string, unknown>;
  /** Access-token expiry, seconds since the epoch. */
  expiresAt: number;
  /**
   * Set in a session an admin started as this user ("view as"): who acts (the token's
   * `act.sub`, `service`). Such a session may not change the account's credentials.
   */
  impersonator?: string;
}

export const PUBLIC_CALLER: PublicCaller = Object.freeze({ role: 'public' });
export const SERVICE_CALLER: ServiceCaller = Object.freeze({ role: 'service' });

export function isUser(caller: Caller): caller is UserCaller {
  return caller.role === 'authenticated' || caller.role === 'anon';
}

/** Verifies a user's access token; throws AppError UNAUTHENTICATED when it is not valid. */
export interface TokenVerifier {
  verify(token: string): Promise<UserCaller>;
}
