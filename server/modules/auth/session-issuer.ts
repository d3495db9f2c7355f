import type { AuthConfig } from '../../config.js';
import type { Queryable } from '../../internal/db.js';
import { toPublicUser, type AuthResult, type ClientContext, type Session } from './accounts.js';
import type { AuthRepository, SessionFilter, UserRow } from './repository.js';
import type { RevocationCache } from './revocations.js';
import { randomToken, tokenHash, type AccessTokens, type AssuranceLevel } from './tokens.js';

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
    },
  ) {}

  /**
   * Records the sign-in and starts a session for `user` at `aal`, inside `q`'s transaction.
   * A first-factor sign-in of a user who has a second factor says `mfa_required: true`: the
   * session is aal1 until a challenge (or a passkey sign-in) proves the second factor.
   */
  async signIn(
    q: Queryable,
    user: UserRow,
    context: ClientContext,
    aal: AssuranceLevel = 'aal1',
  ): Promise<AuthResult & { mfa_required: boolean }> {
    const signedIn = (await this.deps.repo.users.touchSignIn(q, user.id)) ?? user;
    const mfaRequired = aal === 'aal1' && (await this.deps.repo.factors.hasActive(q, user.id));
    return {
      user: toPublicUser(signedIn),
      session: await this.start(q, signedIn, context, aal),
      mfa_required: mfaRequired,
    };
  }

  /** Starts a session for a user inside `q`'s transaction and returns the session object. */
  private async start(q: Queryable, user: UserRow, context: ClientContext, aal: AssuranceLevel): Promise<Session> {
    const session = await this.deps.repo.sessions.insert(q, {
      userId: user.id,
      lifetimeSeconds: this.deps.config.sessionLifetimeSeconds,
      userAgent: context.userAgent?.slice(0, 512) ?? null,
      ip: context.ip,
      aal,
    });
    const refreshToken = randomToken();
    await this.deps.repo.sessions.insertRefreshToken(q, session.id, tokenHash(refreshToken));
    return this.sessionObject(user, session.id, refreshToken, aal);
  }

  /** The session as the API returns it: a fresh access token beside `refreshToken`. */
  async sessionObject(user: UserRow, sessionId: string, refreshToken: string, aal: AssuranceLevel): Promise<Session> {
    const verified = user.email !== null && user.emailConfirmedAt !== null;
    const { token, expiresAt, expiresIn } = await this.deps.tokens.issue({
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
    });
    return {
      access_token: token,
      token_type: 'bearer',
      expires_in: expiresIn,
      expires_at: expiresAt,
      refresh_token: refreshToken,
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
    const result = await this.signIn(q, user, context, 'aal2');
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

  /** Revokes in a transaction of its own and updates this instance's cache at once. */
  async revokeNow(filter: SessionFilter, reason: string): Promise<void> {
    const ids = await this.deps.repo.transaction((tx) => this.revoke(tx, filter, reason));
    this.announce(ids);
  }
}
