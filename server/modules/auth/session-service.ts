import type { UserCaller, Caller, TokenVerifier } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import { refuseImpersonated, requireUser } from '../../internal/guards.js';
import type { Tx } from '../../internal/db.js';
import type { AuthConfig } from '../../config.js';
import {
  assertNotBanned,
  clientIp,
  isBanned,
  metadata,
  toPublicUser,
  type AuthResult,
  type ClientContext,
  type ExternalIdentity,
  type PublicUser,
  type SessionInfo,
} from './accounts.js';
import { actorOf, ANONYMOUS_ACTOR, userActor, type SignInFailure } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { normalizeEmail } from './email.js';
import type { EmailFlows } from './email-flows.js';
import { assertAcceptablePassword, type PasswordHasher } from './passwords.js';
import type { RateLimiter } from './rate-limit.js';
import type { RedirectPolicy } from './redirects.js';
import type { AuthRepository, SessionRow, UserRow } from './repository.js';
import type { RevocationCache } from './revocations.js';
import type { SessionIssuer } from './session-issuer.js';
import { randomToken, tokenHash, type AccessTokens, type SigningKeys } from './tokens.js';

/** For calls made without request context (functions, tests): no address, no agent. */
const NO_CONTEXT: ClientContext = Object.freeze({ ip: '', userAgent: null });

const INVALID_CREDENTIALS = () => new AppError('INVALID_CREDENTIALS');
const SESSION_ENDED = () => new AppError('UNAUTHENTICATED', 'The refresh token is invalid or its session has ended.');

export interface SessionServiceDeps {
  config: AuthConfig;
  repo: AuthRepository;
  hasher: PasswordHasher;
  keys: SigningKeys;
  tokens: AccessTokens;
  revocations: RevocationCache;
  limiter: RateLimiter;
  sessions: SessionIssuer;
  emailFlows: EmailFlows;
  redirects: RedirectPolicy;
  audit: AuditLog;
}

/**
 * Accounts and their sessions: sign-up, sign-in (password, anonymous, external identity),
 * refresh, sign-out, the caller's sessions and own account. Called by the HTTP routes, by
 * the OAuth flow (signInWithIdentity) and by the request context (verifier).
 */
export class SessionService {
  private readonly config: AuthConfig;
  private readonly repo: AuthRepository;
  private readonly sessions: SessionIssuer;

  constructor(private readonly deps: SessionServiceDeps) {
    this.config = deps.config;
    this.repo = deps.repo;
    this.sessions = deps.sessions;
  }

  /** Verifies access tokens for requests and websockets (the auth module hands it out as `verifier`). */
  readonly verifier: TokenVerifier = {
    verify: async (token: string): Promise<UserCaller> => {
      const claims = await this.deps.tokens.verify(token);
      if (await this.deps.revocations.isRevoked(claims.session_id)) {
        throw new AppError('UNAUTHENTICATED', 'The session of this access token has ended.');
      }
      return {
        role: claims.role,
        uid: claims.sub,
        email: claims.email,
        sessionId: claims.session_id,
        emailVerified: claims.email_verified,
        aal: claims.aal,
        claims: claims.app_metadata,
        expiresAt: claims.exp,
        ...(claims.act ? { impersonator: claims.act.sub } : {}),
      };
    },
  };

  jwks() {
    return this.deps.keys.jwks();
  }

  // ---- sign-up, sign-in ----------------------------------------------------------------

  async signUp(
    input: { email: string; password: string; data?: Record<string, unknown>; redirect_to?: string },
    context: ClientContext,
  ): Promise<AuthResult> {
    await this.deps.limiter.consume(`signup:ip:${clientIp(context)}`, this.config.rateLimits.signupPerIp);
    const email = normalizeEmail(input.email);
    assertAcceptablePassword(input.password);
    const userMetadata = metadata(input.data, 'data') ?? {};
    const redirectTo = this.deps.redirects.target(input.redirect_to);
    const passwordHash = await this.deps.hasher.hash(input.password);
    const mail = this.deps.emailFlows;
    try {
      return await this.repo.transaction(async (tx) => {
        const user = await this.repo.users.insert(tx, {
          email,
          emailConfirmed: false,
          isAnonymous: false,
          userMetadata,
          appMetadata: {},
          passwordHash,
        });
        await this.deps.audit.record(
          {
            type: 'auth.signup',
            userId: user.id,
            actor: userActor(user.id),
            ...context,
            details: { method: 'password', email, confirmation_required: this.config.confirmEmail },
          },
          { tx },
        );
        if (this.config.confirmEmail) {
          await mail.mailToken(tx, user, 'signup', email, redirectTo, passwordHash);
          return { user: toPublicUser(user), session: null };
        }
        return this.sessions.signIn(tx, user, context, 'signup');
      });
    } catch (error) {
      // With confirmation on, a taken address answers like a fresh one (no session either
      // way), so sign-up does not reveal who has an account. Without it, the caller would
      // expect a session, and 409 is the only honest answer.
      if (error instanceof AppError && error.code === 'ALREADY_EXISTS' && this.config.confirmEmail) {
        // An account nobody confirmed yet may be a stranger's pre-registration of this
        // address: this sign-up gets its own confirmation, carrying its own password.
        await this.repo.transaction(async (tx) => {
          const existing = await this.repo.users.byEmail(tx, email);
          if (existing?.email && existing.emailConfirmedAt === null && !isBanned(existing)) {
            await mail.mailToken(tx, existing, 'signup', existing.email, redirectTo, passwordHash);
          }
        });
        const now = new Date().toISOString();
        return {
          user: {
            id: crypto.randomUUID(),
            email,
            email_confirmed_at: null,
            is_anonymous: false,
            created_at: now,
            updated_at: now,
            last_sign_in_at: null,
            user_metadata: userMetadata,
            app_metadata: {},
          },
          session: null,
        };
      }
      throw error;
    }
  }

  /**
   * Every failure is recorded in the audit log with its reason (`auth.signin_failed`), on
   * its own (nothing else is written) and without ever failing the answer; the caller still
   * gets one answer for an unknown address and a wrong password.
   */
  async signIn(input: { email: string; password: string }, context: ClientContext): Promise<AuthResult> {
    const failed = async (reason: SignInFailure, error: unknown, userId: string | null = null): Promise<never> => {
      await this.deps.audit.record({
        type: 'auth.signin_failed',
        userId,
        actor: ANONYMOUS_ACTOR,
        ...context,
        details: { reason, email: input.email.slice(0, 320) },
      });
      throw error;
    };
    const ip = clientIp(context);
    const limits = this.config.rateLimits;
    const limited = (error: unknown) =>
      error instanceof AppError && error.code === 'RATE_LIMITED'
        ? failed('rate_limited', error)
        : Promise.reject(error);
    await this.deps.limiter.consume(`signin:ip:${ip}`, limits.signinPerIp).catch(limited);
    let email: string;
    try {
      email = normalizeEmail(input.email);
    } catch {
      // A malformed address cannot have an account; answer as for any unknown one.
      await this.deps.hasher.verifyDummy(input.password);
      return failed('invalid_email', INVALID_CREDENTIALS());
    }
    const account = email.toLowerCase();
    const perAccountIp = `signin-failed:account-ip:${account}|${ip}`;
    const perAccount = `signin-failed:account:${account}`;
    // Counted before the password is looked at, in one atomic upsert each, so that however
    // many attempts race, at most the limit of them is ever evaluated. A success gives its
    // count back below: only failures stay counted.
    await Promise.all([
      this.deps.limiter.consume(perAccountIp, limits.signinFailedPerAccountIp),
      this.deps.limiter.consume(perAccount, limits.signinFailedPerAccount),
    ]).catch(limited);

    const found = await this.repo.users.credentialsByEmail(email);
    let ok = false;
    if (found?.passwordHash) {
      const result = await this.deps.hasher.verify(found.passwordHash, input.password);
      ok = result.ok;
      if (result.rehash) {
        const upgraded = await this.deps.hasher.hash(input.password);
        await this.repo.users.rehashPassword(found.user.id, found.passwordHash, upgraded);
      }
    } else {
      await this.deps.hasher.verifyDummy(input.password);
    }
    if (!found) return failed('unknown_email', INVALID_CREDENTIALS());
    if (!ok) return failed(found.passwordHash ? 'wrong_password' : 'no_password', INVALID_CREDENTIALS(), found.user.id);
    await Promise.all([this.deps.limiter.refund(perAccountIp), this.deps.limiter.refund(perAccount)]);
    const user = found.user;
    try {
      assertNotBanned(user);
    } catch (error) {
      return failed('banned', error, user.id);
    }
    if (this.config.confirmEmail && user.emailConfirmedAt === null) {
      const error = new AppError('FORBIDDEN', 'Confirm your email address first.', {
        details: { reason: 'email_not_confirmed' },
      });
      return failed('email_not_confirmed', error, user.id);
    }
    return this.repo.transaction((tx) => this.sessions.signIn(tx, user, context, 'password'));
  }

  async signInAnonymously(input: { data?: Record<string, unknown> }, context: ClientContext): Promise<AuthResult> {
    await this.deps.limiter.consume(`anonymous:ip:${clientIp(context)}`, this.config.rateLimits.anonymousPerIp);
    const userMetadata = metadata(input.data, 'data') ?? {};
    return this.repo.transaction(async (tx) => {
      const user = await this.repo.users.insert(tx, {
        email: null,
        emailConfirmed: false,
        isAnonymous: true,
        userMetadata,
        appMetadata: {},
        passwordHash: null,
      });
      await this.deps.audit.record(
        {
          type: 'auth.signup',
          userId: user.id,
          actor: userActor(user.id),
          ...context,
          details: { method: 'anonymous' },
        },
        { tx },
      );
      return this.sessions.signIn(tx, user, context, 'anonymous');
    });
  }

  /**
   * For the OAuth / OIDC flow: finds the user of an external identity, or links it to the
   * user with the same email when the provider verified that email, or creates a user;
   * then starts a session. A banned user gets FORBIDDEN.
   *
   * Linking to an account whose own email was never confirmed would let someone who
   * registered the victim's address first keep a password into the victim's account, so
   * such an account is taken over by the verified owner: its password is removed, the
   * identities linked to it before are unlinked and its sessions are revoked before linking.
   */
  async signInWithIdentity(identity: ExternalIdentity, context: ClientContext): Promise<AuthResult> {
    const email = identity.email ? normalizeEmail(identity.email) : null;
    const userMetadata = metadata(identity.userMetadata, 'userMetadata') ?? {};
    const revoked: string[] = [];
    const result = await this.repo.transaction(async (tx) => {
      let user: UserRow | null = null;
      const existing = await this.repo.users.identity(tx, identity.provider, identity.subject);
      if (existing) {
        user = await this.repo.users.byId(tx, existing.userId, true);
      } else if (email) {
        const byEmail = await this.repo.users.byEmail(tx, email);
        if (byEmail) {
          if (!identity.emailVerified) {
            throw new AppError(
              'ALREADY_EXISTS',
              'An account with this email exists; sign in to it and link this provider, or use a provider that verifies the email.',
            );
          }
          user = await this.repo.users.byId(tx, byEmail.id, true);
          if (user && user.emailConfirmedAt === null) {
            await this.repo.users.setPasswordHash(tx, user.id, null);
            await this.repo.users.deleteIdentities(tx, user.id);
            revoked.push(...(await this.sessions.revoke(tx, { userId: user.id }, 'unverified_account_claimed')));
            user = await this.repo.users.update(tx, user.id, { emailConfirmed: true, isAnonymous: false });
          }
        }
      }
      if (!user) {
        user = await this.repo.users.insert(tx, {
          email,
          emailConfirmed: email !== null && identity.emailVerified,
          isAnonymous: false,
          userMetadata,
          appMetadata: { provider: identity.provider },
          passwordHash: null,
        });
        await this.deps.audit.record(
          {
            type: 'auth.signup',
            userId: user.id,
            actor: userActor(user.id),
            ...context,
            details: { method: 'oauth', provider: identity.provider, email },
          },
          { tx },
        );
      }
      assertNotBanned(user);
      await this.repo.users.upsertIdentity(tx, {
        userId: user.id,
        provider: identity.provider,
        subject: identity.subject,
        email,
        data: userMetadata,
      });
      return this.sessions.signIn(tx, user, context, 'oauth', { details: { provider: identity.provider } });
    });
    this.sessions.announce(revoked);
    return result;
  }

  /** Starts a session for an existing user, e.g. after a flow that authenticated them elsewhere. */
  async issueSession(userId: string, context: ClientContext): Promise<AuthResult> {
    return this.repo.transaction(async (tx) => {
      const user = await this.repo.users.byId(tx, userId);
      if (!user) throw new AppError('NOT_FOUND', 'No such user.');
      assertNotBanned(user);
      return this.sessions.signIn(tx, user, context, 'issued');
    });
  }

  // ---- refresh and sign-out -----------------------------------------------------------

  /**
   * Rotates a refresh token. The common case — a live session, a token not yet used or
   * reused within the grace window — is one statement, rate-limit counter included
   * (SessionRepository.refreshInOneStatement). Anything that ends a session (expiry,
   * inactivity, reuse after the grace window, a ban) goes through the locked transaction
   * below, which looks at everything again.
   */
  async refresh(refreshToken: string, context: ClientContext): Promise<AuthResult> {
    const hash = tokenHash(refreshToken);
    const next = randomToken();
    const attempt = await this.repo.sessions.refreshInOneStatement({
      limitKey: `refresh:ip:${clientIp(context)}`,
      windowSeconds: this.config.rateLimits.windowSeconds,
      limit: this.config.rateLimits.refreshPerIp,
      hash,
      nextHash: tokenHash(next),
      inactivitySeconds: this.config.sessionInactivitySeconds,
      reuseGraceSeconds: this.config.refreshReuseGraceSeconds,
    });
    switch (attempt.outcome) {
      case 'rate_limited':
        throw this.deps.limiter.limitedError(attempt.limit.resetSeconds);
      case 'unknown_token':
      case 'session_ended':
        throw SESSION_ENDED();
      case 'rotated':
        return {
          user: toPublicUser(attempt.user),
          session: await this.sessions.sessionObject(attempt.user, attempt.sessionId, next, attempt.aal),
        };
      case 'needs_locked_path':
        return this.refreshLocked(hash, context);
    }
  }

  /** The refresh that may end the session, in one transaction with the token and session locked. */
  private async refreshLocked(hash: Buffer, context: ClientContext): Promise<AuthResult> {
    const outcome = await this.repo.transaction(async (tx) => {
      const token = await this.repo.sessions.refreshTokenForUpdate(tx, hash);
      if (!token) return { error: SESSION_ENDED() } as const;
      const session = await this.repo.sessions.byId(tx, token.sessionId, true);
      if (!session || session.revokedAt !== null) return { error: SESSION_ENDED() } as const;
      const ended = this.sessionEndReason(session);
      if (ended) {
        return {
          error: SESSION_ENDED(),
          revoked: await this.sessions.revoke(tx, { sessionId: session.id }, ended),
        } as const;
      }
      if (token.rotatedAt !== null) {
        // Reuse. Within the grace window this is a second tab refreshing with the same
        // token, and it gets a token of its own; later, the token was stolen or replayed,
        // and the whole session goes.
        if ((token.rotatedSecondsAgo ?? Infinity) > this.config.refreshReuseGraceSeconds) {
          const revoked = await this.sessions.revoke(tx, { sessionId: session.id }, 'refresh_token_reuse');
          await this.deps.audit.record(
            {
              type: 'auth.refresh_token_reused',
              userId: session.userId,
              actor: ANONYMOUS_ACTOR,
              ...context,
              details: { session_id: session.id, rotated_seconds_ago: token.rotatedSecondsAgo },
            },
            { tx },
          );
          return { error: SESSION_ENDED(), revoked } as const;
        }
      } else {
        await this.repo.sessions.markRotated(tx, hash);
      }
      const user = await this.repo.users.byId(tx, session.userId);
      if (!user) return { error: SESSION_ENDED() } as const;
      if (isBanned(user)) {
        return {
          error: SESSION_ENDED(),
          revoked: await this.sessions.revoke(tx, { userId: user.id }, 'banned'),
        } as const;
      }
      const next = randomToken();
      await this.repo.sessions.insertRefreshToken(tx, session.id, tokenHash(next));
      await this.repo.sessions.touch(tx, session.id);
      return { user, sessionId: session.id, next, aal: session.aal } as const;
    });
    if ('error' in outcome) {
      if ('revoked' in outcome && outcome.revoked) this.sessions.announce(outcome.revoked);
      throw outcome.error;
    }
    return {
      user: toPublicUser(outcome.user),
      session: await this.sessions.sessionObject(outcome.user, outcome.sessionId, outcome.next, outcome.aal),
    };
  }

  private sessionEndReason(session: SessionRow): string | null {
    const now = Date.now();
    if (session.expiresAt.getTime() <= now) return 'expired';
    if (now - session.refreshedAt.getTime() > this.config.sessionInactivitySeconds * 1000) return 'inactive';
    return null;
  }

  async signOut(
    caller: Caller,
    scope: 'local' | 'global' | 'others' = 'local',
    context: ClientContext = NO_CONTEXT,
  ): Promise<void> {
    const user = requireUser(caller);
    // Ending the user's other sessions is theirs to decide, not a "view as" session's.
    if (scope !== 'local') refuseImpersonated(user, 'signing out other sessions');
    const filter =
      scope === 'local'
        ? { sessionId: user.sessionId }
        : scope === 'others'
          ? { userId: user.uid, exceptSessionId: user.sessionId }
          : { userId: user.uid };
    const reason = scope === 'global' ? 'signed_out_everywhere' : 'signed_out';
    const ids = await this.repo.transaction(async (tx) => {
      const revoked = await this.sessions.revoke(tx, filter, reason);
      await this.deps.audit.record(
        {
          type: 'auth.signout',
          userId: user.uid,
          actor: actorOf(user),
          ...context,
          details: { scope, session_id: user.sessionId, sessions_ended: revoked.length },
        },
        { tx },
      );
      return revoked;
    });
    this.sessions.announce(ids);
  }

  async listSessions(caller: Caller): Promise<SessionInfo[]> {
    const user = requireUser(caller);
    const rows = await this.repo.sessions.active(user.uid, this.config.sessionInactivitySeconds);
    return rows.map((row) => ({
      id: row.id,
      created_at: row.createdAt.toISOString(),
      refreshed_at: row.refreshedAt.toISOString(),
      expires_at: row.expiresAt.toISOString(),
      user_agent: row.userAgent,
      ip: row.ip,
      current: row.id === user.sessionId,
      impersonated_by: row.impersonatedBy,
    }));
  }

  async revokeSession(caller: Caller, sessionId: string, context: ClientContext = NO_CONTEXT): Promise<void> {
    const user = requireUser(caller);
    const session = await this.repo.sessions.byId(this.repo.pool, sessionId);
    if (!session || session.userId !== user.uid) throw new AppError('NOT_FOUND', 'No such session.');
    if (sessionId !== user.sessionId) refuseImpersonated(user, 'ending other sessions');
    const ids = await this.repo.transaction(async (tx) => {
      const revoked = await this.sessions.revoke(tx, { sessionId }, 'revoked_by_user');
      await this.deps.audit.record(
        {
          type: 'auth.session_revoked',
          userId: user.uid,
          actor: actorOf(user),
          ...context,
          details: { session_id: sessionId },
        },
        { tx },
      );
      return revoked;
    });
    this.sessions.announce(ids);
  }

  // ---- the signed-in user ---------------------------------------------------------------

  async getUser(caller: Caller): Promise<PublicUser> {
    const user = requireUser(caller);
    const row = await this.repo.users.byId(this.repo.pool, user.uid);
    if (!row) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
    return toPublicUser(row);
  }

  /**
   * Updates the caller's account. A new password revokes every other session. A new
   * email is confirmed through a mail to the new address before it takes effect; an
   * anonymous user giving an email (and password) becomes a permanent user, same id —
   * at once where confirmation is off, once the address is confirmed where it is on.
   * Where confirmation is on, an address taken by another account answers like a free
   * one, and the mail to it says that nothing changed.
   */
  async updateUser(
    caller: Caller,
    input: { email?: string; password?: string; data?: Record<string, unknown>; redirect_to?: string },
    context?: ClientContext,
  ): Promise<PublicUser> {
    const me = requireUser(caller);
    if (input.password !== undefined) refuseImpersonated(me, 'changing the password');
    if (input.email !== undefined) refuseImpersonated(me, 'changing the email address');
    const audit = (
      tx: Tx,
      type: 'auth.password_changed' | 'auth.email_change_requested' | 'auth.email_changed',
      details: Record<string, unknown>,
    ) =>
      this.deps.audit.record({ type, userId: me.uid, actor: actorOf(me), ...(context ?? NO_CONTEXT), details }, { tx });
    // The credentials of an account with a second factor change only from a session that
    // proved it: else a stolen password (aal1) could take the account over for good.
    if ((input.email !== undefined || input.password !== undefined) && me.aal !== 'aal2') {
      if (await this.repo.factors.hasActive(this.repo.pool, me.uid)) {
        throw new AppError(
          'MFA_REQUIRED',
          'Changing the email or password of this account needs a second factor first.',
        );
      }
    }
    // A new address gets a mail: count it against the same per-IP budget as recovery mails.
    if (input.email !== undefined && context) {
      await this.deps.limiter.consume(`email:ip:${clientIp(context)}`, this.config.rateLimits.emailPerIp);
    }
    const userMetadata = metadata(input.data, 'data');
    const newEmail = input.email === undefined ? undefined : normalizeEmail(input.email);
    if (input.password !== undefined) assertAcceptablePassword(input.password);
    const redirectTo = this.deps.redirects.target(input.redirect_to);
    const passwordHash = input.password === undefined ? null : await this.deps.hasher.hash(input.password);
    const mail = this.deps.emailFlows;
    const revoked: string[] = [];
    const updated = await this.repo.transaction(async (tx) => {
      const row = await this.repo.users.byId(tx, me.uid, true);
      if (!row) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
      if (passwordHash !== null && row.isAnonymous && row.email === null && newEmail === undefined) {
        throw new AppError('INVALID_REQUEST', 'An anonymous user must give an email together with a password.', {
          details: { field: 'email' },
        });
      }
      let user = row;
      if (userMetadata !== undefined) {
        user = (await this.repo.users.update(tx, row.id, { userMetadata })) ?? user;
      }
      if (newEmail !== undefined && newEmail.toLowerCase() !== (row.email ?? '').toLowerCase()) {
        if (row.isAnonymous && !this.config.confirmEmail) {
          // Without confirmation an address is taken on the caller's word, as at sign-up.
          user =
            (await this.repo.users.update(tx, row.id, {
              email: newEmail,
              emailConfirmed: false,
              isAnonymous: false,
            })) ?? user;
          await audit(tx, 'auth.email_changed', { old_email: row.email, new_email: newEmail, via: 'update' });
        } else {
          const taken = await this.repo.users.byEmail(tx, newEmail);
          if (taken && !this.config.confirmEmail) {
            throw new AppError('ALREADY_EXISTS', 'A user with this email already exists.');
          }
          if (taken) await mail.mailAddressTaken(tx, newEmail);
          else await mail.mailToken(tx, row, 'email_change', newEmail, redirectTo, null);
          // Recorded either way: the log must not tell less than the mail did.
          await audit(tx, 'auth.email_change_requested', {
            old_email: row.email,
            new_email: newEmail,
            ...(taken ? { address_taken: true } : {}),
          });
        }
      }
      if (passwordHash !== null) {
        await this.repo.users.setPasswordHash(tx, row.id, passwordHash);
        const others = { userId: row.id, exceptSessionId: me.sessionId };
        revoked.push(...(await this.sessions.revoke(tx, others, 'password_changed')));
        user = (await this.repo.users.update(tx, row.id, {})) ?? user;
        await audit(tx, 'auth.password_changed', { via: 'update', sessions_ended: revoked.length });
      }
      return user;
    });
    this.sessions.announce(revoked);
    return toPublicUser(updated);
  }
}
