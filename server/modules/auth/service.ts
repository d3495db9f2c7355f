import type { AuthResponse, Session, SessionInfo, User } from '../../../client-sdk/src/wire.js';
import type { UserCaller, Caller, TokenVerifier } from '../../internal/caller.js';
import type { Queryable, Tx } from '../../internal/db.js';
import { AppError } from '../../internal/errors.js';
import { requireService, requireUser } from '../../internal/guards.js';
import type { Logger } from '../../internal/log.js';
import { assertUserJson } from '../../internal/user-json.js';
import type { AuthConfig } from '../../config.js';
import { normalizeEmail } from './email.js';
import type { Mailer } from './mailer.js';
import { assertAcceptablePassword, type PasswordHasher } from './passwords.js';
import type { RateLimiter } from './rate-limit.js';
import type { AuthRepository, EmailTokenType, SessionRow, UserRow } from './repository.js';
import type { RevocationCache } from './revocations.js';
import { randomToken, tokenHash, type AccessTokens, type SigningKeys } from './tokens.js';

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

function iso(date: Date | null): string | null {
  return date === null ? null : date.toISOString();
}

export function toPublicUser(row: UserRow): PublicUser {
  return {
    id: row.id,
    email: row.email,
    email_confirmed_at: iso(row.email_confirmed_at),
    is_anonymous: row.is_anonymous,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    last_sign_in_at: iso(row.last_sign_in_at),
    user_metadata: row.user_metadata,
    app_metadata: row.app_metadata,
  };
}

function toAdminUser(row: UserRow): AdminUser {
  return { ...toPublicUser(row), banned_until: iso(row.banned_until) };
}

function isBanned(row: UserRow): boolean {
  return row.banned_until !== null && row.banned_until.getTime() > Date.now();
}

function metadata(value: Record<string, unknown> | undefined, field: string): Record<string, unknown> | undefined {
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

const INVALID_CREDENTIALS = () => new AppError('INVALID_CREDENTIALS');
const SESSION_ENDED = () => new AppError('UNAUTHENTICATED', 'The refresh token is invalid or its session has ended.');

export interface AuthServiceDeps {
  config: AuthConfig;
  publicUrl: string;
  repo: AuthRepository;
  hasher: PasswordHasher;
  keys: SigningKeys;
  tokens: AccessTokens;
  revocations: RevocationCache;
  limiter: RateLimiter;
  mailer: Mailer;
  log: Logger;
}

/**
 * The rules of accounts and sessions. Called by the HTTP routes, by the OAuth flow
 * (signInWithIdentity) and by anything else that needs a user or a session.
 */
export class AuthService {
  private readonly config: AuthConfig;
  private readonly repo: AuthRepository;
  /** BASALT_AUTH_REDIRECT_URLS in normalized form, so that they compare with normalized requests. */
  private readonly allowedRedirects: ReadonlySet<string>;
  private readonly publicOrigin: string;
  /** Work that runs after the answer was sent (see mailIfKnown); awaited by drain(). */
  private readonly background = new Set<Promise<void>>();

  constructor(private readonly deps: AuthServiceDeps) {
    this.config = deps.config;
    this.repo = deps.repo;
    this.publicOrigin = new URL(deps.publicUrl).origin;
    this.allowedRedirects = new Set(
      deps.config.redirectUrls.flatMap((url) => {
        const normalized = normalizeUrl(url);
        return normalized === null ? [] : [normalized];
      }),
    );
  }

  /** Waits for the work still running after its answer was sent; called when the app closes. */
  async drain(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  /** Runs `work` without making the caller wait; a failure is logged, as no one is left to answer. */
  private runInBackground(what: string, work: () => Promise<void>): void {
    const task = work()
      .catch((error: unknown) => this.deps.log.error({ err: error }, `auth: ${what} failed`))
      .finally(() => this.background.delete(task));
    this.background.add(task);
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
        claims: claims.app_metadata,
        expiresAt: claims.exp,
      };
    },
  };

  // ---- sessions ------------------------------------------------------------------------

  /** Starts a session for a user inside `q`'s transaction and returns the session object. */
  private async startSession(q: Queryable, user: UserRow, context: ClientContext): Promise<Session> {
    const session = await this.repo.insertSession(q, {
      userId: user.id,
      lifetimeSeconds: this.config.sessionLifetimeSeconds,
      userAgent: context.userAgent?.slice(0, 512) ?? null,
      ip: context.ip,
    });
    const refreshToken = randomToken();
    await this.repo.insertRefreshToken(q, session.id, tokenHash(refreshToken));
    return this.sessionObject(user, session.id, refreshToken);
  }

  private async sessionObject(user: UserRow, sessionId: string, refreshToken: string): Promise<Session> {
    const verified = user.email !== null && user.email_confirmed_at !== null;
    const { token, expiresAt, expiresIn } = await this.deps.tokens.issue({
      sub: user.id,
      role: user.is_anonymous ? 'anon' : 'authenticated',
      // Where confirmation is required, a token never names an address nobody proved (an
      // OAuth email the provider did not verify, an address an admin set unconfirmed), so a
      // rule granting by `auth.email` cannot be met by merely typing someone's address.
      email: this.config.confirmEmail && !verified ? null : user.email,
      email_verified: verified,
      session_id: sessionId,
      is_anonymous: user.is_anonymous,
      app_metadata: user.app_metadata,
    });
    return {
      access_token: token,
      token_type: 'bearer',
      expires_in: expiresIn,
      expires_at: expiresAt,
      refresh_token: refreshToken,
    };
  }

  private async revoke(
    q: Queryable,
    filter: { sessionId?: string; userId?: string; exceptSessionId?: string },
    reason: string,
  ): Promise<string[]> {
    return this.repo.revokeSessions(q, filter, reason);
  }

  /** Revokes in a transaction of its own and updates this instance's cache at once. */
  private async revokeNow(
    filter: { sessionId?: string; userId?: string; exceptSessionId?: string },
    reason: string,
  ): Promise<void> {
    const ids = await this.repo.transaction((tx) => this.revoke(tx, filter, reason));
    this.deps.revocations.add(ids);
  }

  private clientIp(context: ClientContext): string {
    return context.ip || 'unknown';
  }

  // ---- sign-up, sign-in ----------------------------------------------------------------

  async signUp(
    input: { email: string; password: string; data?: Record<string, unknown>; redirect_to?: string },
    context: ClientContext,
  ): Promise<AuthResult> {
    await this.deps.limiter.consume(`signup:ip:${this.clientIp(context)}`, this.config.rateLimits.signupPerIp);
    const email = normalizeEmail(input.email);
    assertAcceptablePassword(input.password);
    const userMetadata = metadata(input.data, 'data') ?? {};
    const redirectTo = this.redirect(input.redirect_to);
    const passwordHash = await this.deps.hasher.hash(input.password);
    try {
      return await this.repo.transaction(async (tx) => {
        const user = await this.repo.insertUser(tx, {
          email,
          emailConfirmed: false,
          isAnonymous: false,
          userMetadata,
          appMetadata: {},
          passwordHash,
        });
        if (this.config.confirmEmail) {
          await this.mailToken(tx, user, 'signup', email, redirectTo, passwordHash);
          return { user: toPublicUser(user), session: null };
        }
        const signedIn = (await this.repo.touchSignIn(tx, user.id)) ?? user;
        return { user: toPublicUser(signedIn), session: await this.startSession(tx, signedIn, context) };
      });
    } catch (error) {
      // With confirmation on, a taken address answers like a fresh one (no session either
      // way), so sign-up does not reveal who has an account. Without it, the caller would
      // expect a session, and 409 is the only honest answer.
      if (error instanceof AppError && error.code === 'ALREADY_EXISTS' && this.config.confirmEmail) {
        // An account nobody confirmed yet may be a stranger's pre-registration of this
        // address: this sign-up gets its own confirmation, carrying its own password.
        await this.repo.transaction(async (tx) => {
          const existing = await this.repo.userByEmail(tx, email);
          if (existing?.email && existing.email_confirmed_at === null && !isBanned(existing)) {
            await this.mailToken(tx, existing, 'signup', existing.email, redirectTo, passwordHash);
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

  async signIn(input: { email: string; password: string }, context: ClientContext): Promise<AuthResult> {
    const ip = this.clientIp(context);
    const limits = this.config.rateLimits;
    await this.deps.limiter.consume(`signin:ip:${ip}`, limits.signinPerIp);
    let email: string;
    try {
      email = normalizeEmail(input.email);
    } catch {
      // A malformed address cannot have an account; answer as for any unknown one.
      await this.deps.hasher.verifyDummy(input.password);
      throw INVALID_CREDENTIALS();
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
    ]);

    const found = await this.repo.credentialsByEmail(this.repo.pool, email);
    let ok = false;
    if (found?.passwordHash) {
      const result = await this.deps.hasher.verify(found.passwordHash, input.password);
      ok = result.ok;
      if (result.rehash) {
        const upgraded = await this.deps.hasher.hash(input.password);
        await this.repo.rehashPassword(this.repo.pool, found.user.id, found.passwordHash, upgraded);
      }
    } else {
      await this.deps.hasher.verifyDummy(input.password);
    }
    if (!ok || !found) throw INVALID_CREDENTIALS();
    await Promise.all([this.deps.limiter.refund(perAccountIp), this.deps.limiter.refund(perAccount)]);
    const user = found.user;
    if (isBanned(user)) throw new AppError('FORBIDDEN', 'This account is banned.', { details: { reason: 'banned' } });
    if (this.config.confirmEmail && user.email_confirmed_at === null) {
      throw new AppError('FORBIDDEN', 'Confirm your email address first.', {
        details: { reason: 'email_not_confirmed' },
      });
    }
    return this.repo.transaction(async (tx) => {
      const signedIn = (await this.repo.touchSignIn(tx, user.id)) ?? user;
      return { user: toPublicUser(signedIn), session: await this.startSession(tx, signedIn, context) };
    });
  }

  async signInAnonymously(input: { data?: Record<string, unknown> }, context: ClientContext): Promise<AuthResult> {
    await this.deps.limiter.consume(`anonymous:ip:${this.clientIp(context)}`, this.config.rateLimits.anonymousPerIp);
    const userMetadata = metadata(input.data, 'data') ?? {};
    return this.repo.transaction(async (tx) => {
      const user = await this.repo.insertUser(tx, {
        email: null,
        emailConfirmed: false,
        isAnonymous: true,
        userMetadata,
        appMetadata: {},
        passwordHash: null,
      });
      const signedIn = (await this.repo.touchSignIn(tx, user.id)) ?? user;
      return { user: toPublicUser(signedIn), session: await this.startSession(tx, signedIn, context) };
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
      const existing = await this.repo.identity(tx, identity.provider, identity.subject);
      if (existing) {
        user = await this.repo.userById(tx, existing.user_id, true);
      } else if (email) {
        const byEmail = await this.repo.userByEmail(tx, email);
        if (byEmail) {
          if (!identity.emailVerified) {
            throw new AppError(
              'ALREADY_EXISTS',
              'An account with this email exists; sign in to it and link this provider, or use a provider that verifies the email.',
            );
          }
          user = await this.repo.userById(tx, byEmail.id, true);
          if (user && user.email_confirmed_at === null) {
            await this.repo.setPasswordHash(tx, user.id, null);
            await this.repo.deleteIdentities(tx, user.id);
            revoked.push(...(await this.revoke(tx, { userId: user.id }, 'unverified_account_claimed')));
            user = await this.repo.updateUser(tx, user.id, { emailConfirmed: true, isAnonymous: false });
          }
        }
      }
      if (!user) {
        user = await this.repo.insertUser(tx, {
          email,
          emailConfirmed: email !== null && identity.emailVerified,
          isAnonymous: false,
          userMetadata,
          appMetadata: { provider: identity.provider },
          passwordHash: null,
        });
      }
      if (isBanned(user)) throw new AppError('FORBIDDEN', 'This account is banned.', { details: { reason: 'banned' } });
      await this.repo.upsertIdentity(tx, {
        userId: user.id,
        provider: identity.provider,
        subject: identity.subject,
        email,
        data: userMetadata,
      });
      const signedIn = (await this.repo.touchSignIn(tx, user.id)) ?? user;
      return { user: toPublicUser(signedIn), session: await this.startSession(tx, signedIn, context) };
    });
    this.deps.revocations.add(revoked);
    return result;
  }

  /** Starts a session for an existing user, e.g. after a flow that authenticated them elsewhere. */
  async issueSession(userId: string, context: ClientContext): Promise<AuthResult> {
    return this.repo.transaction(async (tx) => {
      const user = await this.repo.userById(tx, userId);
      if (!user) throw new AppError('NOT_FOUND', 'No such user.');
      if (isBanned(user)) throw new AppError('FORBIDDEN', 'This account is banned.', { details: { reason: 'banned' } });
      const signedIn = (await this.repo.touchSignIn(tx, user.id)) ?? user;
      return { user: toPublicUser(signedIn), session: await this.startSession(tx, signedIn, context) };
    });
  }

  // ---- refresh and sign-out -----------------------------------------------------------

  /**
   * Rotates a refresh token. The common case — a live session, a token not yet used or
   * reused within the grace window — is one statement, rate-limit counter included
   * (AuthRepository.refreshInOneStatement). Anything that ends a session (expiry,
   * inactivity, reuse after the grace window, a ban) goes through the locked transaction
   * below, which looks at everything again.
   */
  async refresh(refreshToken: string, context: ClientContext): Promise<AuthResult> {
    const hash = tokenHash(refreshToken);
    const next = randomToken();
    const attempt = await this.repo.refreshInOneStatement({
      limitKey: `refresh:ip:${this.clientIp(context)}`,
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
          session: await this.sessionObject(attempt.user, attempt.sessionId, next),
        };
      case 'needs_locked_path':
        return this.refreshLocked(hash);
    }
  }

  /** The refresh that may end the session, in one transaction with the token and session locked. */
  private async refreshLocked(hash: Buffer): Promise<AuthResult> {
    const outcome = await this.repo.transaction(async (tx) => {
      const token = await this.repo.refreshTokenForUpdate(tx, hash);
      if (!token) return { error: SESSION_ENDED() } as const;
      const session = await this.repo.sessionById(tx, token.session_id, true);
      if (!session || session.revoked_at !== null) return { error: SESSION_ENDED() } as const;
      const ended = this.sessionEndReason(session);
      if (ended) {
        return { error: SESSION_ENDED(), revoked: await this.revoke(tx, { sessionId: session.id }, ended) } as const;
      }
      if (token.rotated_at !== null) {
        // Reuse. Within the grace window this is a second tab refreshing with the same
        // token, and it gets a token of its own; later, the token was stolen or replayed,
        // and the whole session goes.
        if ((token.rotated_seconds_ago ?? Infinity) > this.config.refreshReuseGraceSeconds) {
          const revoked = await this.revoke(tx, { sessionId: session.id }, 'refresh_token_reuse');
          return { error: SESSION_ENDED(), revoked } as const;
        }
      } else {
        await this.repo.markRotated(tx, hash);
      }
      const user = await this.repo.userById(tx, session.user_id);
      if (!user) return { error: SESSION_ENDED() } as const;
      if (isBanned(user)) {
        return { error: SESSION_ENDED(), revoked: await this.revoke(tx, { userId: user.id }, 'banned') } as const;
      }
      const next = randomToken();
      await this.repo.insertRefreshToken(tx, session.id, tokenHash(next));
      await this.repo.touchSession(tx, session.id);
      return { user, sessionId: session.id, next } as const;
    });
    if ('error' in outcome) {
      if ('revoked' in outcome && outcome.revoked) this.deps.revocations.add(outcome.revoked);
      throw outcome.error;
    }
    return {
      user: toPublicUser(outcome.user),
      session: await this.sessionObject(outcome.user, outcome.sessionId, outcome.next),
    };
  }

  private sessionEndReason(session: SessionRow): string | null {
    const now = Date.now();
    if (session.expires_at.getTime() <= now) return 'expired';
    if (now - session.refreshed_at.getTime() > this.config.sessionInactivitySeconds * 1000) return 'inactive';
    return null;
  }

  async signOut(caller: Caller, scope: 'local' | 'global' | 'others' = 'local'): Promise<void> {
    const user = requireUser(caller);
    if (scope === 'local') await this.revokeNow({ sessionId: user.sessionId }, 'signed_out');
    else if (scope === 'others')
      await this.revokeNow({ userId: user.uid, exceptSessionId: user.sessionId }, 'signed_out');
    else await this.revokeNow({ userId: user.uid }, 'signed_out_everywhere');
  }

  async listSessions(caller: Caller): Promise<SessionInfo[]> {
    const user = requireUser(caller);
    const rows = await this.repo.activeSessions(this.repo.pool, user.uid, this.config.sessionInactivitySeconds);
    return rows.map((row) => ({
      id: row.id,
      created_at: row.created_at.toISOString(),
      refreshed_at: row.refreshed_at.toISOString(),
      expires_at: row.expires_at.toISOString(),
      user_agent: row.user_agent,
      ip: row.ip,
      current: row.id === user.sessionId,
    }));
  }

  async revokeSession(caller: Caller, sessionId: string): Promise<void> {
    const user = requireUser(caller);
    const session = await this.repo.sessionById(this.repo.pool, sessionId);
    if (!session || session.user_id !== user.uid) throw new AppError('NOT_FOUND', 'No such session.');
    await this.revokeNow({ sessionId }, 'revoked_by_user');
  }

  // ---- the signed-in user ---------------------------------------------------------------

  async getUser(caller: Caller): Promise<PublicUser> {
    const user = requireUser(caller);
    const row = await this.repo.userById(this.repo.pool, user.uid);
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
    // A new address gets a mail: count it against the same per-IP budget as recovery mails.
    if (input.email !== undefined && context) {
      await this.deps.limiter.consume(`email:ip:${this.clientIp(context)}`, this.config.rateLimits.emailPerIp);
    }
    const userMetadata = metadata(input.data, 'data');
    const newEmail = input.email === undefined ? undefined : normalizeEmail(input.email);
    if (input.password !== undefined) assertAcceptablePassword(input.password);
    const redirectTo = this.redirect(input.redirect_to);
    const passwordHash = input.password === undefined ? null : await this.deps.hasher.hash(input.password);
    const revoked: string[] = [];
    const updated = await this.repo.transaction(async (tx) => {
      const row = await this.repo.userById(tx, me.uid, true);
      if (!row) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
      if (passwordHash !== null && row.is_anonymous && row.email === null && newEmail === undefined) {
        throw new AppError('INVALID_REQUEST', 'An anonymous user must give an email together with a password.', {
          details: { field: 'email' },
        });
      }
      let user = row;
      if (userMetadata !== undefined) {
        user = (await this.repo.updateUser(tx, row.id, { userMetadata })) ?? user;
      }
      if (newEmail !== undefined && newEmail.toLowerCase() !== (row.email ?? '').toLowerCase()) {
        if (row.is_anonymous && !this.config.confirmEmail) {
          // Without confirmation an address is taken on the caller's word, as at sign-up.
          user =
            (await this.repo.updateUser(tx, row.id, { email: newEmail, emailConfirmed: false, isAnonymous: false })) ??
            user;
        } else {
          const taken = await this.repo.userByEmail(tx, newEmail);
          if (taken && !this.config.confirmEmail) {
            throw new AppError('ALREADY_EXISTS', 'A user with this email already exists.');
          }
          if (taken) await this.mailAddressTaken(tx, newEmail);
          else await this.mailToken(tx, row, 'email_change', newEmail, redirectTo, null);
        }
      }
      if (passwordHash !== null) {
        await this.repo.setPasswordHash(tx, row.id, passwordHash);
        revoked.push(...(await this.revoke(tx, { userId: row.id, exceptSessionId: me.sessionId }, 'password_changed')));
        user = (await this.repo.updateUser(tx, row.id, {})) ?? user;
      }
      return user;
    });
    this.deps.revocations.add(revoked);
    return toPublicUser(updated);
  }

  // ---- mailed tokens -------------------------------------------------------------------

  private redirect(redirectTo: string | undefined): string | null {
    if (redirectTo === undefined) return null;
    return this.allowedRedirect(redirectTo);
  }

  /**
   * The normalized form of an allowed `redirect_to` (one of BASALT_AUTH_REDIRECT_URLS, or
   * any URL on BASALT_PUBLIC_URL's origin), or 400. Only the normalized form is compared
   * and ever sent back: the raw text may hold what a browser or a header would read
   * differently from the URL parser (control characters, backslashes, a fragment).
   */
  allowedRedirect(url: string): string {
    const normalized = normalizeUrl(url);
    if (
      normalized === null ||
      !(this.allowedRedirects.has(normalized) || new URL(normalized).origin === this.publicOrigin)
    ) {
      throw new AppError('INVALID_REQUEST', '"redirect_to" is not an allowed redirect URL.', {
        details: { field: 'redirect_to' },
      });
    }
    return normalized;
  }

  private async mailToken(
    q: Tx,
    user: UserRow,
    type: EmailTokenType,
    email: string,
    redirectTo: string | null,
    /** For a sign-up's own confirmation: the password it chose, kept when the mail is spent. */
    passwordHash: string | null = null,
  ): Promise<void> {
    const interval = this.config.emailIntervalSeconds;
    if (interval > 0 && !(await this.repo.claimInterval(q, `mail:${email.toLowerCase()}`, interval))) return;
    await this.repo.invalidateEmailTokens(q, user.id, type);
    const token = randomToken();
    await this.repo.insertEmailToken(q, {
      hash: tokenHash(token),
      userId: user.id,
      type,
      email,
      ttlSeconds: this.config.emailTokenTtlSeconds,
      passwordHash,
    });
    const link = new URL(`${this.deps.publicUrl}/v1/auth/verify`);
    link.searchParams.set('type', type);
    link.searchParams.set('token', token);
    if (redirectTo) link.searchParams.set('redirect_to', redirectTo);
    const minutes = Math.max(1, Math.round(this.config.emailTokenTtlSeconds / 60));
    const texts: Record<EmailTokenType, { subject: string; intro: string }> = {
      signup: { subject: 'Confirm your email address', intro: 'Confirm your email address by opening this link:' },
      recovery: { subject: 'Reset your password', intro: 'Reset your password by opening this link:' },
      magiclink: { subject: 'Your sign-in link', intro: 'Sign in by opening this link:' },
      email_change: {
        subject: 'Confirm your new email address',
        intro: 'Confirm your new email address with this link:',
      },
    };
    const text = texts[type];
    this.deps.mailer.send({
      to: email,
      subject: text.subject,
      text: [
        text.intro,
        '',
        link.toString(),
        '',
        `Or use this code: ${token}`,
        '',
        `It works once and expires in ${minutes} minute${minutes === 1 ? '' : 's'}. If you did not ask for it, ignore this mail.`,
      ].join('\n'),
    });
  }

  /**
   * Tells the owner of `email` that someone asked to give it to another account, and that
   * nothing changed: the asker sees the same answer as for a free address, and only whoever
   * reads this address learns that it is taken.
   */
  private async mailAddressTaken(q: Tx, email: string): Promise<void> {
    const interval = this.config.emailIntervalSeconds;
    if (interval > 0 && !(await this.repo.claimInterval(q, `mail:${email.toLowerCase()}`, interval))) return;
    this.deps.mailer.send({
      to: email,
      subject: 'Your email address is already in use',
      text: [
        'Someone asked to use this email address for an account, but it already belongs to an account, so nothing was changed.',
        '',
        'If it was you, sign in to that account (or reset its password) instead. If it was not you, ignore this mail.',
      ].join('\n'),
    });
  }

  /** Mails a recovery link when the address has an account; answers the same either way. */
  async recover(input: { email: string; redirect_to?: string }, context: ClientContext): Promise<void> {
    await this.mailIfKnown(input, 'recovery', context);
  }

  async magicLink(input: { email: string; redirect_to?: string }, context: ClientContext): Promise<void> {
    await this.mailIfKnown(input, 'magiclink', context);
  }

  /** Mails a new confirmation link to an address that signed up and has not confirmed yet. */
  async resendConfirmation(input: { email: string; redirect_to?: string }, context: ClientContext): Promise<void> {
    await this.mailIfKnown(input, 'signup', context);
  }

  private async mailIfKnown(
    input: { email: string; redirect_to?: string },
    type: 'recovery' | 'magiclink' | 'signup',
    context: ClientContext,
  ): Promise<void> {
    await this.deps.limiter.consume(`email:ip:${this.clientIp(context)}`, this.config.rateLimits.emailPerIp);
    const email = normalizeEmail(input.email);
    const redirectTo = this.redirect(input.redirect_to);
    // Everything that depends on whether the address has an account runs after the answer,
    // so that the answer's timing cannot tell known addresses from unknown ones.
    this.runInBackground(`${type} mail`, () =>
      this.repo.transaction(async (tx) => {
        const user = await this.repo.userByEmail(tx, email);
        if (!user || isBanned(user) || user.email === null) return;
        if (type === 'signup' && user.email_confirmed_at !== null) return;
        await this.mailToken(tx, user, type, user.email, redirectTo);
      }),
    );
  }

  /** Spends a mailed token and starts a session. Recovery sets the new password and ends all other sessions. */
  async verify(
    input: { type: VerifyType; token: string; password?: string },
    context: ClientContext,
  ): Promise<AuthResult> {
    await this.deps.limiter.consume(`verify:ip:${this.clientIp(context)}`, this.config.rateLimits.verifyPerIp);
    let passwordHash: string | null = null;
    if (input.type === 'recovery') {
      if (input.password === undefined) {
        throw new AppError('INVALID_REQUEST', 'A recovery needs the new "password".', {
          details: { field: 'password' },
        });
      }
      // Checked before the token is spent, so a weak choice does not burn the link.
      assertAcceptablePassword(input.password);
      passwordHash = await this.deps.hasher.hash(input.password);
    }
    const revoked: string[] = [];
    const result = await this.repo.transaction(async (tx) => {
      const token = await this.repo.consumeEmailToken(tx, tokenHash(input.token), [input.type]);
      if (!token) throw new AppError('INVALID_TOKEN');
      let user = await this.repo.userById(tx, token.user_id, true);
      if (!user) throw new AppError('INVALID_TOKEN');
      if (isBanned(user)) throw new AppError('FORBIDDEN', 'This account is banned.', { details: { reason: 'banned' } });
      const sameEmail = (user.email ?? '').toLowerCase() === token.email.toLowerCase();
      if (token.type === 'email_change') {
        // Cleared, then set: the new address's confirmation time is now, not the old one's.
        // An anonymous user's address waited for this mail; now it is a permanent user.
        user = await this.repo.updateUser(tx, user.id, {
          email: token.email,
          emailConfirmed: false,
          isAnonymous: false,
        });
        user = user && (await this.repo.updateUser(tx, user.id, { emailConfirmed: true }));
      } else {
        // The account's address changed since this mail was sent: the mail proves nothing now.
        if (!sameEmail) throw new AppError('INVALID_TOKEN');
        if (user.email_confirmed_at === null) {
          // The first proof of the address. Until now anyone could have registered it and
          // may hold its password, sessions and linked logins (an OAuth provider that did not
          // verify the address): the owner takes the account over. Only the password this
          // very mail was sent for (a sign-up's own confirmation) or the one this recovery
          // sets survives; every session before this one ends.
          await this.repo.setPasswordHash(tx, user.id, passwordHash ?? token.password_hash);
          await this.repo.deleteIdentities(tx, user.id);
          revoked.push(...(await this.revoke(tx, { userId: user.id }, 'unverified_account_claimed')));
        }
        user = await this.repo.updateUser(tx, user.id, { emailConfirmed: true });
      }
      if (!user) throw new AppError('INVALID_TOKEN');
      if (passwordHash !== null) {
        await this.repo.setPasswordHash(tx, user.id, passwordHash);
        revoked.push(...(await this.revoke(tx, { userId: user.id }, 'password_reset')));
      }
      const signedIn = (await this.repo.touchSignIn(tx, user.id)) ?? user;
      return { user: toPublicUser(signedIn), session: await this.startSession(tx, signedIn, context) };
    });
    this.deps.revocations.add(revoked);
    return result;
  }

  // ---- admin ---------------------------------------------------------------------------

  async adminListUsers(
    caller: Caller,
    query: { email?: string; page?: number; per_page?: number },
  ): Promise<{ users: AdminUser[]; total: number; page: number; per_page: number }> {
    requireService(caller);
    const page = query.page ?? 1;
    const perPage = query.per_page ?? 50;
    const { users, total } = await this.repo.listUsers(this.repo.pool, {
      email: query.email === undefined || query.email === '' ? null : query.email.trim(),
      limit: perPage,
      offset: (page - 1) * perPage,
    });
    return { users: users.map(toAdminUser), total, page, per_page: perPage };
  }

  async adminGetUser(caller: Caller, id: string): Promise<AdminUser> {
    requireService(caller);
    const row = await this.repo.userById(this.repo.pool, id);
    if (!row) throw new AppError('NOT_FOUND', 'No such user.');
    return toAdminUser(row);
  }

  async adminCreateUser(caller: Caller, input: AdminUserInput): Promise<AdminUser> {
    requireService(caller);
    if (input.email === undefined) {
      throw new AppError('INVALID_REQUEST', '"email" is required.', { details: { field: 'email' } });
    }
    const email = normalizeEmail(input.email);
    if (input.password !== undefined) assertAcceptablePassword(input.password);
    const passwordHash = input.password === undefined ? null : await this.deps.hasher.hash(input.password);
    const bannedUntil = this.bannedUntil(input.banned_until);
    const row = await this.repo.transaction(async (tx) => {
      const user = await this.repo.insertUser(tx, {
        email,
        emailConfirmed: input.email_confirm === true,
        isAnonymous: false,
        userMetadata: metadata(input.user_metadata, 'user_metadata') ?? {},
        appMetadata: metadata(input.app_metadata, 'app_metadata') ?? {},
        passwordHash,
      });
      if (bannedUntil === undefined) return user;
      return (await this.repo.updateUser(tx, user.id, { bannedUntil })) ?? user;
    });
    return toAdminUser(row);
  }

  private bannedUntil(value: string | null | undefined): Date | null | undefined {
    if (value === undefined || value === null) return value;
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) {
      throw new AppError('INVALID_REQUEST', '"banned_until" must be an ISO date-time or null.', {
        details: { field: 'banned_until' },
      });
    }
    return date;
  }

  /**
   * app_metadata reaches access tokens at the user's next refresh. A ban in the future
   * revokes every session at once (their access tokens stop within seconds).
   */
  async adminUpdateUser(caller: Caller, id: string, input: AdminUserInput): Promise<AdminUser> {
    requireService(caller);
    const email = input.email === undefined ? undefined : normalizeEmail(input.email);
    if (input.password !== undefined) assertAcceptablePassword(input.password);
    const passwordHash = input.password === undefined ? null : await this.deps.hasher.hash(input.password);
    const bannedUntil = this.bannedUntil(input.banned_until);
    const userMetadata = metadata(input.user_metadata, 'user_metadata');
    const appMetadata = metadata(input.app_metadata, 'app_metadata');
    const revoked: string[] = [];
    const row = await this.repo.transaction(async (tx) => {
      const existing = await this.repo.userById(tx, id, true);
      if (!existing) throw new AppError('NOT_FOUND', 'No such user.');
      const user = await this.repo.updateUser(tx, id, {
        // A new address is unconfirmed unless the admin says otherwise.
        ...(email !== undefined ? { email, isAnonymous: false, emailConfirmed: false } : {}),
        ...(input.email_confirm !== undefined ? { emailConfirmed: input.email_confirm } : {}),
        ...(userMetadata !== undefined ? { userMetadata } : {}),
        ...(appMetadata !== undefined ? { appMetadata } : {}),
        ...(bannedUntil !== undefined ? { bannedUntil } : {}),
      });
      if (passwordHash !== null) await this.repo.setPasswordHash(tx, id, passwordHash);
      if (bannedUntil && bannedUntil.getTime() > Date.now()) {
        revoked.push(...(await this.revoke(tx, { userId: id }, 'banned')));
      }
      return user ?? existing;
    });
    this.deps.revocations.add(revoked);
    return toAdminUser(row);
  }

  async adminDeleteUser(caller: Caller, id: string): Promise<void> {
    requireService(caller);
    const revoked = await this.repo.transaction(async (tx) => {
      const ids = await this.revoke(tx, { userId: id }, 'user_deleted');
      if (!(await this.repo.deleteUser(tx, id))) throw new AppError('NOT_FOUND', 'No such user.');
      return ids;
    });
    this.deps.revocations.add(revoked);
  }

  async rotateSigningKey(caller: Caller): Promise<{ kid: string }> {
    requireService(caller);
    return { kid: await this.deps.keys.rotate() };
  }

  jwks() {
    return this.deps.keys.jwks();
  }
}

/** A URL's normalized form (as the WHATWG parser writes it, without fragment), or null if it is no http(s) URL. */
function normalizeUrl(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
  // Basalt appends the session as the fragment; a fragment of the caller's would swallow it.
  parsed.hash = '';
  return parsed.href;
}
