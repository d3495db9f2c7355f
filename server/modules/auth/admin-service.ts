import type { Caller } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import { metadata, toAdminUser, type AdminUser, type AdminUserInput } from './accounts.js';
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
    },
  ) {
    this.repo = deps.repo;
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

  async createUser(caller: Caller, input: AdminUserInput): Promise<AdminUser> {
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
      if (bannedUntil === undefined) return user;
      return (await this.repo.users.update(tx, user.id, { bannedUntil })) ?? user;
    });
    return toAdminUser(row);
  }

  /**
   * app_metadata reaches access tokens at the user's next refresh. A ban in the future
   * revokes every session at once (their access tokens stop within seconds).
   */
  async updateUser(caller: Caller, id: string, input: AdminUserInput): Promise<AdminUser> {
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
      return user ?? existing;
    });
    this.deps.sessions.announce(revoked);
    return toAdminUser(row);
  }

  async deleteUser(caller: Caller, id: string): Promise<void> {
    requireService(caller);
    const revoked = await this.repo.transaction(async (tx) => {
      const ids = await this.deps.sessions.revoke(tx, { userId: id }, 'user_deleted');
      if (!(await this.repo.users.delete(tx, id))) throw new AppError('NOT_FOUND', 'No such user.');
      return ids;
    });
    this.deps.sessions.announce(revoked);
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
