import type { AuthConfig } from '../../config.js';
import type { Queryable } from '../../internal/db.js';
import { userActor } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { toPublicUser, type AuthResult, type ClientContext, type Session } from './accounts.js';
import type { AuthRepository, SessionFilter, UserRow } from './repository.js';
import type { RevocationCache } from './revocations.js';
import { randomToken, tokenHash, type AccessClaims, type AccessTokens } from './tokens.js';

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
   * Records the sign-in and starts a session for `user`, inside `q`'s transaction; the
   * `auth.signin` audit event (with `method`: password, signup, anonymous, oauth, a mailed
   * link's type…) commits with it.
   */
  async signIn(
    q: Queryable,
    user: UserRow,
    context: ClientContext,
    method: string,
    details: Record<string, unknown> = {},
  ): Promise<AuthResult> {
    const signedIn = (await this.deps.repo.users.touchSignIn(q, user.id)) ?? user;
    const { session, sessionId } = await this.start(q, signedIn, context);
    await this.deps.audit.record(
      {
        type: 'auth.signin',
        userId: user.id,
        actor: userActor(user.id),
        ...context,
        details: { method, session_id: sessionId, ...details },
      },
      { tx: q },
    );
    this.deps.onSignIn?.(user.id);
    return { user: toPublicUser(signedIn), session };
  }

  /** Starts a session for a user inside `q`'s transaction and returns the session object. */
  private async start(
    q: Queryable,
    user: UserRow,
    context: ClientContext,
  ): Promise<{ session: Session; sessionId: string }> {
    const session = await this.deps.repo.sessions.insert(q, {
      userId: user.id,
      lifetimeSeconds: this.deps.config.sessionLifetimeSeconds,
      userAgent: context.userAgent?.slice(0, 512) ?? null,
      ip: context.ip,
    });
    const refreshToken = randomToken();
    await this.deps.repo.sessions.insertRefreshToken(q, session.id, tokenHash(refreshToken));
    return { session: await this.sessionObject(user, session.id, refreshToken), sessionId: session.id };
  }

  /**
   * A session an admin starts as `user` ("view as"): no refresh token, so it ends when its
   * access token does (`lifetimeSeconds`), and its token names the admin in `act`.
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
    });
    const { token, expiresAt, expiresIn } = await this.deps.tokens.issue(
      { ...this.claims(user, row.id), act: { sub: options.impersonator } },
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
  async sessionObject(user: UserRow, sessionId: string, refreshToken: string): Promise<Session> {
    const { token, expiresAt, expiresIn } = await this.deps.tokens.issue(this.claims(user, sessionId));
    return {
      access_token: token,
      token_type: 'bearer',
      expires_in: expiresIn,
      expires_at: expiresAt,
      refresh_token: refreshToken,
    };
  }

  private claims(user: UserRow, sessionId: string): AccessClaims {
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
    };
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
