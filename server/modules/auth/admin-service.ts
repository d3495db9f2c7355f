import type { Caller } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import type { Tx } from '../../internal/db.js';
import { redactedBody, SERVICE_ACTOR, type AdminEventType, type AuditOrigin } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import {
  assertNotBanned,
  metadata,
  toAdminUser,
  toPublicUser,
  type AdminUser,
  type AdminUserInput,
  type PublicUser,
  type Session,
} from './accounts.js';
import { normalizeEmail } from './email.js';
import { assertAcceptablePassword, type PasswordHasher } from './passwords.js';
import type { AuthRepository } from './repository.js';
import type { SessionIssuer } from './session-issuer.js';
import type { SigningKeys } from './tokens.js';

/** The admin users API and key rotation; every call needs the service key. */
export class AdminService {
  private readonly repo: AuthRepository;

  constructor(
    private readonly deps: {
      repo: AuthRepository;
      hasher: PasswordHasher;
      keys: SigningKeys;
      sessions: SessionIssuer;
      audit: AuditLog;
    },
  ) {
    this.repo = deps.repo;
  }

  /** Records an admin change to a user in its transaction (these routes are audited here, not by the hook). */
  private audit(
    tx: Tx,
    type: AdminEventType,
    userId: string,
    origin: AuditOrigin,
    details: Record<string, unknown>,
  ): Promise<void> {
    return this.deps.audit.record({ type, userId, actor: SERVICE_ACTOR, ...origin, details }, { tx });
  }

  async listUsers(
    caller: Caller,
    query: { email?: string; page?: number; per_page?: number },
  ): Promise<{ users: AdminUser[]; total: number; page: number; per_page: number }> {
    requireService(caller);
    const page = query.page ?? 1;
    const perPage = query.per_page ?? 50;
    const { users, total } = await this.repo.users.list({
      email: query.email === undefined || query.email === '' ? null : query.email.trim(),
      limit: perPage,
      offset: (page - 1) * perPage,
    });
    return { users: users.map(toAdminUser), total, page, per_page: perPage };
  }

  async getUser(caller: Caller, id: string): Promise<AdminUser> {
    requireService(caller);
    const row = await this.repo.users.byId(this.repo.pool, id);
    if (!row) throw new AppError('NOT_FOUND', 'No such user.');
    return toAdminUser(row);
  }

  async createUser(caller: Caller, input: AdminUserInput, origin: AuditOrigin = NO_ORIGIN): Promise<AdminUser> {
    requireService(caller);
    if (input.email === undefined) {
      throw new AppError('INVALID_REQUEST', '"email" is required.', { details: { field: 'email' } });
    }
    const email = normalizeEmail(input.email);
    const passwordHash = await this.passwordHash(input.password);
    const bannedUntil = parseBannedUntil(input.banned_until);
    const row = await this.repo.transaction(async (tx) => {
      const user = await this.repo.users.insert(tx, {
        email,
        emailConfirmed: input.email_confirm === true,
        isAnonymous: false,
        userMetadata: metadata(input.user_metadata, 'user_metadata') ?? {},
        appMetadata: metadata(input.app_metadata, 'app_metadata') ?? {},
        passwordHash,
      });
      await this.audit(tx, 'admin.users.create', user.id, origin, { body: redactedBody(input) });
      if (bannedUntil === undefined) return user;
      return (await this.repo.users.update(tx, user.id, { bannedUntil })) ?? user;
    });
    return toAdminUser(row);
  }

  /**
   * app_metadata reaches access tokens at the user's next refresh. A ban in the future
   * revokes every session at once (their access tokens stop within seconds).
   */
  async updateUser(
    caller: Caller,
    id: string,
    input: AdminUserInput,
    origin: AuditOrigin = NO_ORIGIN,
  ): Promise<AdminUser> {
    requireService(caller);
    const email = input.email === undefined ? undefined : normalizeEmail(input.email);
    const passwordHash = await this.passwordHash(input.password);
    const bannedUntil = parseBannedUntil(input.banned_until);
    const userMetadata = metadata(input.user_metadata, 'user_metadata');
    const appMetadata = metadata(input.app_metadata, 'app_metadata');
    const revoked: string[] = [];
    const row = await this.repo.transaction(async (tx) => {
      const existing = await this.repo.users.byId(tx, id, true);
      if (!existing) throw new AppError('NOT_FOUND', 'No such user.');
      const user = await this.repo.users.update(tx, id, {
        // A new address is unconfirmed unless the admin says otherwise.
        ...(email !== undefined ? { email, isAnonymous: false, emailConfirmed: false } : {}),
        ...(input.email_confirm !== undefined ? { emailConfirmed: input.email_confirm } : {}),
        ...(userMetadata !== undefined ? { userMetadata } : {}),
        ...(appMetadata !== undefined ? { appMetadata } : {}),
        ...(bannedUntil !== undefined ? { bannedUntil } : {}),
      });
      if (passwordHash !== null) await this.repo.users.setPasswordHash(tx, id, passwordHash);
      if (bannedUntil && bannedUntil.getTime() > Date.now()) {
        revoked.push(...(await this.deps.sessions.revoke(tx, { userId: id }, 'banned')));
      }
      await this.audit(tx, 'admin.users.update', id, origin, {
        body: redactedBody(input),
        ...(revoked.length > 0 ? { sessions_ended: revoked.length } : {}),
      });
      return user ?? existing;
    });
    this.deps.sessions.announce(revoked);
    return toAdminUser(row);
  }

  async deleteUser(caller: Caller, id: string, origin: AuditOrigin = NO_ORIGIN): Promise<void> {
    requireService(caller);
    const revoked = await this.repo.transaction(async (tx) => {
      const existing = await this.repo.users.byId(tx, id);
      const ids = await this.deps.sessions.revoke(tx, { userId: id }, 'user_deleted');
      if (!(await this.repo.users.delete(tx, id))) throw new AppError('NOT_FOUND', 'No such user.');
      await this.audit(tx, 'admin.users.delete', id, origin, {
        email: existing?.email ?? null,
        sessions_ended: ids.length,
      });
      return ids;
    });
    this.deps.sessions.announce(revoked);
  }

  /**
   * "View as": a session for user `id` that the service key starts, for `expires_in`
   * seconds (60–3600, default 900). Its access token carries `act: {sub: "service"}`; it has
   * no refresh token (it cannot outlive its token), refuses the account's sensitive changes,
   * shows in the user's own session list, and is audited (`admin.users.impersonate`) with
   * its session id, so what it then does is traceable to it (docs/auth.md#impersonation).
   */
  async impersonate(
    caller: Caller,
    id: string,
    input: { expires_in?: number },
    origin: AuditOrigin = NO_ORIGIN,
  ): Promise<{
    user: PublicUser;
    session: Omit<Session, 'refresh_token'> & { refresh_token: null };
    impersonated_by: string;
  }> {
    requireService(caller);
    const lifetime = input.expires_in ?? IMPERSONATION_DEFAULT_SECONDS;
    if (!Number.isInteger(lifetime) || lifetime < IMPERSONATION_MIN_SECONDS || lifetime > IMPERSONATION_MAX_SECONDS) {
      throw new AppError(
        'INVALID_REQUEST',
        `"expires_in" must be a whole number of seconds, ${IMPERSONATION_MIN_SECONDS}–${IMPERSONATION_MAX_SECONDS}.`,
        { details: { field: 'expires_in' } },
      );
    }
    const impersonator = 'service';
    return this.repo.transaction(async (tx) => {
      const user = await this.repo.users.byId(tx, id);
      if (!user) throw new AppError('NOT_FOUND', 'No such user.');
      assertNotBanned(user);
      const { session, sessionId } = await this.deps.sessions.impersonate(tx, user, {
        impersonator,
        lifetimeSeconds: lifetime,
        context: { ip: origin.ip ?? '', userAgent: origin.userAgent },
      });
      await this.audit(tx, 'admin.users.impersonate', id, origin, {
        session_id: sessionId,
        expires_in: lifetime,
        expires_at: session.expires_at,
      });
      return { user: toPublicUser(user), session, impersonated_by: impersonator };
    });
  }

  async rotateSigningKey(caller: Caller): Promise<{ kid: string }> {
    requireService(caller);
    return { kid: await this.deps.keys.rotate() };
  }

  /** The hash of a password an admin sets, or null when the input sets none. */
  private async passwordHash(password: string | undefined): Promise<string | null> {
    if (password === undefined) return null;
    assertAcceptablePassword(password);
    return this.deps.hasher.hash(password);
  }
}

/** An impersonated session's life, in seconds: default, least and most. */
export const IMPERSONATION_DEFAULT_SECONDS = 900;
export const IMPERSONATION_MIN_SECONDS = 60;
export const IMPERSONATION_MAX_SECONDS = 3600;

/** For calls made without a request (functions, tests). */
const NO_ORIGIN: AuditOrigin = Object.freeze({ ip: null, userAgent: null });

function parseBannedUntil(value: string | null | undefined): Date | null | undefined {
  if (value === undefined || value === null) return value;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) {
    throw new AppError('INVALID_REQUEST', '"banned_until" must be an ISO date-time or null.', {
      details: { field: 'banned_until' },
    });
  }
  return date;
}
