import type { AuthConfig } from '../../config.js';
import type { Queryable } from '../../internal/db.js';
import { toPublicUser, type AuthResult, type ClientContext, type Session } from './accounts.js';
import type { AuthRepository, SessionFilter, UserRow } from './repository.js';
import type { RevocationCache } from './revocations.js';
import { randomToken, tokenHash, type AccessTokens } from './tokens.js';

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
      /** Told of every session started (the usage meter's active users). */
      onSignIn?: (userId: string) => void;
    },
  ) {}

  /** Records the sign-in and starts a session for `user`, inside `q`'s transaction. */
  async signIn(q: Queryable, user: UserRow, context: ClientContext): Promise<AuthResult> {
    const signedIn = (await this.deps.repo.users.touchSignIn(q, user.id)) ?? user;
    const result = { user: toPublicUser(signedIn), session: await this.start(q, signedIn, context) };
    this.deps.onSignIn?.(user.id);
    return result;
  }

  /** Starts a session for a user inside `q`'s transaction and returns the session object. */
  private async start(q: Queryable, user: UserRow, context: ClientContext): Promise<Session> {
    const session = await this.deps.repo.sessions.insert(q, {
      userId: user.id,
      lifetimeSeconds: this.deps.config.sessionLifetimeSeconds,
      userAgent: context.userAgent?.slice(0, 512) ?? null,
      ip: context.ip,
    });
    const refreshToken = randomToken();
    await this.deps.repo.sessions.insertRefreshToken(q, session.id, tokenHash(refreshToken));
    return this.sessionObject(user, session.id, refreshToken);
  }

  /** The session as the API returns it: a fresh access token beside `refreshToken`. */
  async sessionObject(user: UserRow, sessionId: string, refreshToken: string): Promise<Session> {
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
