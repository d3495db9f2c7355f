import type { Database, Queryable } from '../../../internal/db.js';
import { runQuery } from '../../../internal/repository.js';

export interface UserRow {
  id: string;
  email: string | null;
  email_confirmed_at: Date | null;
  is_anonymous: boolean;
  user_metadata: Record<string, unknown>;
  app_metadata: Record<string, unknown>;
  banned_until: Date | null;
  last_sign_in_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export interface IdentityRow {
  id: string;
  user_id: string;
  provider: string;
  subject: string;
  email: string | null;
}

export interface NewUser {
  email: string | null;
  emailConfirmed: boolean;
  isAnonymous: boolean;
  userMetadata: Record<string, unknown>;
  appMetadata: Record<string, unknown>;
  passwordHash: string | null;
}

export interface UserPatch {
  email?: string | null;
  emailConfirmed?: boolean;
  isAnonymous?: boolean;
  /** Merged into the stored object (top-level keys; a null value removes the key). */
  userMetadata?: Record<string, unknown>;
  appMetadata?: Record<string, unknown>;
  bannedUntil?: Date | null;
}

export const USER_COLUMNS = `id, email, email_confirmed_at, is_anonymous, user_metadata, app_metadata, banned_until,
  last_sign_in_at, created_at, updated_at`;

/** basalt.users with their secrets (basalt.user_secrets) and external identities (basalt.identities). */
export class UserRepository {
  constructor(private readonly db: Database) {}

  async insert(q: Queryable, user: NewUser): Promise<UserRow> {
    const [row] = await runQuery<UserRow>(
      q,
      `INSERT INTO basalt.users (email, email_confirmed_at, is_anonymous, user_metadata, app_metadata)
       VALUES ($1, CASE WHEN $2::boolean THEN now() END, $3, $4, $5)
       RETURNING ${USER_COLUMNS}`,
      [user.email, user.emailConfirmed, user.isAnonymous, user.userMetadata, user.appMetadata],
      'A user with this email',
    );
    await runQuery(q, `INSERT INTO basalt.user_secrets (user_id, password_hash) VALUES ($1, $2)`, [
      row!.id,
      user.passwordHash,
    ]);
    return row!;
  }

  async byId(q: Queryable, id: string, forUpdate = false): Promise<UserRow | null> {
    const rows = await runQuery<UserRow>(
      q,
      `SELECT ${USER_COLUMNS} FROM basalt.users WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`,
      [id],
    );
    return rows[0] ?? null;
  }

  async byEmail(q: Queryable, email: string): Promise<UserRow | null> {
    const rows = await runQuery<UserRow>(q, `SELECT ${USER_COLUMNS} FROM basalt.users WHERE lower(email) = lower($1)`, [
      email,
    ]);
    return rows[0] ?? null;
  }

  /** The user and their password hash, for sign-in only. */
  async credentialsByEmail(email: string): Promise<{ user: UserRow; passwordHash: string | null } | null> {
    const rows = await runQuery<UserRow & { password_hash: string | null }>(
      this.db.pool,
      `SELECT ${USER_COLUMNS.replace(/(\w+)/g, 'u.$1')}, s.password_hash
         FROM basalt.users u LEFT JOIN basalt.user_secrets s ON s.user_id = u.id
        WHERE lower(u.email) = lower($1)`,
      [email],
    );
    const row = rows[0];
    if (!row) return null;
    const { password_hash: passwordHash, ...user } = row;
    return { user, passwordHash };
  }

  async setPasswordHash(q: Queryable, userId: string, hash: string | null): Promise<void> {
    await runQuery(
      q,
      `INSERT INTO basalt.user_secrets (user_id, password_hash) VALUES ($1, $2)
       ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()`,
      [userId, hash],
    );
  }

  /** Replaces the hash only if it is still the one verified, so a concurrent password change wins. */
  async rehashPassword(userId: string, oldHash: string, newHash: string): Promise<void> {
    await runQuery(
      this.db.pool,
      `UPDATE basalt.user_secrets SET password_hash = $3, updated_at = now() WHERE user_id = $1 AND password_hash = $2`,
      [userId, oldHash, newHash],
    );
  }

  async update(q: Queryable, id: string, patch: UserPatch): Promise<UserRow | null> {
    const sets: string[] = [];
    const values: unknown[] = [id];
    const add = (sql: (p: string) => string, value: unknown) => {
      values.push(value);
      sets.push(sql(`$${values.length}`));
    };
    if (patch.email !== undefined) add((p) => `email = ${p}`, patch.email);
    if (patch.emailConfirmed !== undefined) {
      add(
        (p) => `email_confirmed_at = CASE WHEN ${p}::boolean THEN coalesce(email_confirmed_at, now()) END`,
        patch.emailConfirmed,
      );
    }
    if (patch.isAnonymous !== undefined) add((p) => `is_anonymous = ${p}`, patch.isAnonymous);
    if (patch.userMetadata !== undefined) {
      add((p) => `user_metadata = jsonb_strip_nulls(user_metadata || ${p}::jsonb)`, patch.userMetadata);
    }
    if (patch.appMetadata !== undefined) {
      add((p) => `app_metadata = jsonb_strip_nulls(app_metadata || ${p}::jsonb)`, patch.appMetadata);
    }
    if (patch.bannedUntil !== undefined) add((p) => `banned_until = ${p}`, patch.bannedUntil);
    sets.push('updated_at = now()');
    const rows = await runQuery<UserRow>(
      q,
      `UPDATE basalt.users SET ${sets.join(', ')} WHERE id = $1 RETURNING ${USER_COLUMNS}`,
      values,
      'A user with this email',
    );
    return rows[0] ?? null;
  }

  async touchSignIn(q: Queryable, id: string): Promise<UserRow | null> {
    const rows = await runQuery<UserRow>(
      q,
      `UPDATE basalt.users SET last_sign_in_at = now() WHERE id = $1 RETURNING ${USER_COLUMNS}`,
      [id],
    );
    return rows[0] ?? null;
  }

  async delete(q: Queryable, id: string): Promise<boolean> {
    const rows = await runQuery<{ id: string }>(q, `DELETE FROM basalt.users WHERE id = $1 RETURNING id`, [id]);
    return rows.length > 0;
  }

  async list(options: { email: string | null; limit: number; offset: number }): Promise<{
    users: UserRow[];
    total: number;
  }> {
    const pattern = options.email === null ? null : `%${options.email.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    const users = await runQuery<UserRow>(
      this.db.pool,
      `SELECT ${USER_COLUMNS} FROM basalt.users
        WHERE $1::text IS NULL OR email ILIKE $1
        ORDER BY created_at, id LIMIT $2 OFFSET $3`,
      [pattern, options.limit, options.offset],
    );
    const [count] = await runQuery<{ total: string }>(
      this.db.pool,
      `SELECT count(*) AS total FROM basalt.users WHERE $1::text IS NULL OR email ILIKE $1`,
      [pattern],
    );
    return { users, total: Number(count?.total ?? 0) };
  }

  // ---- identities ----------------------------------------------------------------------

  async identity(q: Queryable, provider: string, subject: string): Promise<IdentityRow | null> {
    const rows = await runQuery<IdentityRow>(
      q,
      `SELECT id, user_id, provider, subject, email FROM basalt.identities WHERE provider = $1 AND subject = $2`,
      [provider, subject],
    );
    return rows[0] ?? null;
  }

  /** Unlinks every external identity of a user, e.g. when the verified owner claims the account. */
  async deleteIdentities(q: Queryable, userId: string): Promise<void> {
    await runQuery(q, `DELETE FROM basalt.identities WHERE user_id = $1`, [userId]);
  }

  async upsertIdentity(
    q: Queryable,
    identity: {
      userId: string;
      provider: string;
      subject: string;
      email: string | null;
      data: Record<string, unknown>;
    },
  ): Promise<void> {
    await runQuery(
      q,
      `INSERT INTO basalt.identities (user_id, provider, subject, email, identity_data, last_sign_in_at)
       VALUES ($1, $2, $3, $4, $5, now())
       ON CONFLICT (provider, subject) DO UPDATE
         SET email = EXCLUDED.email, identity_data = EXCLUDED.identity_data, last_sign_in_at = now(), updated_at = now()`,
      [identity.userId, identity.provider, identity.subject, identity.email, identity.data],
      'This identity',
    );
  }
}
