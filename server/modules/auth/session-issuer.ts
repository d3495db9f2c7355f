import type { AuthConfig } from '../../config.js';
import type { Queryable } from '../../internal/db.js';
import { userActor } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { toPublicUser, type AuthResult, type ClientContext, type Session } from './accounts.js';
import type { AuthRepository, SessionFilter, UserRow } from './repository.js';
import type { RevocationCache } from './revocations.js';
import { randomToken, tokenHash, type AccessClaims, type AccessTokens, type AssuranceLevel } from './tokens.js';

/**
 * Starts and ends sessions: the one place that writes a session with its first refresh
 * token, signs access tokens for it, and revokes sessions. Sign-in, mailed links and admin
 * calls all go through it.
 */
export class SessionIssuer {
  constructor(
    private readonly deps: {
      config: AuthConfig;
      repo: AuthRepository;
      tokens: AccessTokens;
      revocations: RevocationCache;
      audit: AuditLog;
      /** Told of every session started (the usage meter's active users). */
      onSignIn?: (userId: string) => void;
    },
  ) {}

  /**
   * Records the sign-in and starts a session for `user` at `aal`, inside `q`'s transaction; the
   * `auth.signin` audit event (with `method`: password, signup, anonymous, oauth, passkey, a
   * mailed link's type…) commits with it. A first-factor sign-in of a user who has a second
   * factor says `mfa_required: true`: the session is aal1 until a challenge (or a passkey
   * sign-in) proves the second factor.
   */
  async signIn(
    q: Queryable,
    user: UserRow,
    context: ClientContext,
    method: string,
    options: { details?: Record<string, unknown>; aal?: AssuranceLevel } = {},
  ): Promise<AuthResult & { mfa_required: boolean }> {
    const aal = options.aal ?? 'aal1';
    const signedIn = (await this.deps.repo.users.touchSignIn(q, user.id)) ?? user;
    const mfaRequired = aal === 'aal1' && (await this.deps.repo.factors.hasActive(q, user.id));
    const { session, sessionId } = await this.start(q, signedIn, context, aal);
    await this.deps.audit.record(
      {
        type: 'auth.signin',
        userId: user.id,
        actor: userActor(user.id),
        ...context,
        details: { method, session_id: sessionId, aal, ...options.details },
      },
      { tx: q },
    );
    this.deps.onSignIn?.(user.id);
    return { user: toPublicUser(signedIn), session, mfa_required: mfaRequired };
  }

  /** Starts a session for a user inside `q`'s transaction and returns the session object. */
  private async start(
    q: Queryable,
    user: UserRow,
    context: ClientContext,
    aal: AssuranceLevel,
  ): Promise<{ session: Session; sessionId: string }> {
    const session = await this.deps.repo.sessions.insert(q, {
      userId: user.id,
      lifetimeSeconds: this.deps.config.sessionLifetimeSeconds,
      userAgent: context.userAgent?.slice(0, 512) ?? null,
      ip: context.ip,
      aal,
    });
    const refreshToken = randomToken();
    await this.deps.repo.sessions.insertRefreshToken(q, session.id, tokenHash(refreshToken));
    return { session: await this.sessionObject(user, session.id, refreshToken, aal), sessionId: session.id };
  }

  /**
   * A session an admin starts as `user` ("view as"): no refresh token, so it ends when its
   * access token does (`lifetimeSeconds`), and its token names the admin in `act`. It is
   * aal1 whatever factors the user has: the admin proved none of them, so the session sees
   * what a signed-in user who has not yet passed a challenge sees.
   */
  async impersonate(
    q: Queryable,
    user: UserRow,
    options: { impersonator: string; lifetimeSeconds: number; context: ClientContext },
  ): Promise<{ session: Omit<Session, 'refresh_token'> & { refresh_token: null }; sessionId: string }> {
    const row = await this.deps.repo.sessions.insert(q, {
      userId: user.id,
      lifetimeSeconds: options.lifetimeSeconds,
      userAgent: options.context.userAgent?.slice(0, 512) ?? null,
      ip: options.context.ip,
      impersonatedBy: options.impersonator,
      aal: 'aal1',
    });
    const { token, expiresAt, expiresIn } = await this.deps.tokens.issue(
      { ...this.claims(user, row.id, 'aal1'), act: { sub: options.impersonator } },
      options.lifetimeSeconds,
    );
    return {
      session: {
        access_token: token,
        token_type: 'bearer',
        expires_in: expiresIn,
        expires_at: expiresAt,
        refresh_token: null,
      },
      sessionId: row.id,
    };
  }

  /** The session as the API returns it: a fresh access token beside `refreshToken`. */
  async sessionObject(user: UserRow, sessionId: string, refreshToken: string, aal: AssuranceLevel): Promise<Session> {
    const { token, expiresAt, expiresIn } = await this.deps.tokens.issue(this.claims(user, sessionId, aal));
    return {
      access_token: token,
      token_type: 'bearer',
      expires_in: expiresIn,
      expires_at: expiresAt,
      refresh_token: refreshToken,
    };
  }

  private claims(user: UserRow, sessionId: string, aal: AssuranceLevel): AccessClaims {
    const verified = user.email !== null && user.emailConfirmedAt !== null;
    return {
      sub: user.id,
      role: user.isAnonymous ? 'anon' : 'authenticated',
      // Where confirmation is required, a token never names an address nobody proved (an
      // OAuth email the provider did not verify, an address an admin set unconfirmed), so a
      // rule granting by `auth.email` cannot be met by merely typing someone's address.
      email: this.deps.config.confirmEmail && !verified ? null : user.email,
      email_verified: verified,
      session_id: sessionId,
      is_anonymous: user.isAnonymous,
      app_metadata: user.appMetadata,
      aal,
    };
  }

  /**
   * A second factor was proven: ends the sessions `end` names (at least the caller's own,
   * which a new `aal2` session replaces) and starts that session, inside `q`'s transaction.
   * Replacing rather than upgrading the session means an `aal1` refresh token or access
   * token taken earlier never turns into an `aal2` one. Announce `revoked` after commit.
   */
  async stepUp(
    q: Queryable,
    user: UserRow,
    context: ClientContext,
    end: SessionFilter,
    reason: string,
  ): Promise<{ result: AuthResult; revoked: string[] }> {
    const revoked = await this.revoke(q, end, reason);
    const result = await this.signIn(q, user, context, 'step_up', { details: { reason }, aal: 'aal2' });
    return { result, revoked };
  }

  /**
   * Revokes matching sessions inside `q`'s transaction and returns their ids; hand them to
   * {@link announce} once that transaction committed.
   */
  revoke(q: Queryable, filter: SessionFilter, reason: string): Promise<string[]> {
    return this.deps.repo.sessions.revoke(q, filter, reason);
  }

  /** Makes committed revocations count on this instance at once (others follow by poll and hint). */
  announce(sessionIds: string[]): void {
    this.deps.revocations.add(sessionIds);
  }
}
