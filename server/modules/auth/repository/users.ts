import { and, count, eq, getTableColumns, ilike, sql, type InferSelectModel, type Placeholder } from 'drizzle-orm';
import type { PgUpdateSetSource } from 'drizzle-orm/pg-core';
import { identities, users, userSecrets } from '../../../db/schema.js';
import type { Database, Queryable } from '../../../internal/db.js';
import { mapDatabaseErrors } from '../../../internal/repository.js';

export type UserRow = InferSelectModel<typeof users>;
export type IdentityRow = Pick<InferSelectModel<typeof identities>, 'id' | 'userId' | 'provider' | 'subject' | 'email'>;

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

const EMAIL_TAKEN = 'A user with this email';

/** Matches an address as the unique index does (`lower(email)`), so that lookups use it. */
function emailIs(email: string | Placeholder) {
  return sql`lower(${users.email}) = lower(${email})`;
}

/** Merges `patch` into a jsonb column's object; a null value in it removes the key. */
function mergedJson(column: typeof users.userMetadata | typeof users.appMetadata, patch: Record<string, unknown>) {
  return sql`jsonb_strip_nulls(${column} || ${JSON.stringify(patch)}::jsonb)`;
}

/** basalt.users with their secrets (basalt.user_secrets) and external identities (basalt.identities). */
export class UserRepository {
  /**
   * Sign-in's lookup, built once and named: each pooled connection parses and plans it
   * once, and no request pays for building it.
   */
  private readonly credentials;

  constructor(private readonly db: Database) {
    this.credentials = db.drizzle
      .select({ user: getTableColumns(users), passwordHash: userSecrets.passwordHash })
      .from(users)
      .leftJoin(userSecrets, eq(userSecrets.userId, users.id))
      .where(emailIs(sql.placeholder('email')))
      .prepare('basalt_auth_credentials');
  }

  async insert(q: Queryable, user: NewUser): Promise<UserRow> {
    const orm = this.db.builder(q);
    return mapDatabaseErrors(async () => {
      const [row] = await orm
        .insert(users)
        .values({
          email: user.email,
          emailConfirmedAt: user.emailConfirmed ? sql`now()` : null,
          isAnonymous: user.isAnonymous,
          userMetadata: user.userMetadata,
          appMetadata: user.appMetadata,
        })
        .returning();
      await orm.insert(userSecrets).values({ userId: row!.id, passwordHash: user.passwordHash });
      return row!;
    }, EMAIL_TAKEN);
  }

  async byId(q: Queryable, id: string, forUpdate = false): Promise<UserRow | null> {
    const query = this.db.builder(q).select().from(users).where(eq(users.id, id));
    const [row] = await mapDatabaseErrors(() => (forUpdate ? query.for('update') : query));
    return row ?? null;
  }

  async byEmail(q: Queryable, email: string): Promise<UserRow | null> {
    const [row] = await mapDatabaseErrors(() => this.db.builder(q).select().from(users).where(emailIs(email)));
    return row ?? null;
  }

  /** The user and their password hash, for sign-in only. */
  async credentialsByEmail(email: string): Promise<{ user: UserRow; passwordHash: string | null } | null> {
    const [row] = await mapDatabaseErrors(() => this.credentials.execute({ email }));
    return row ?? null;
  }

  async setPasswordHash(q: Queryable, userId: string, hash: string | null): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(userSecrets)
        .values({ userId, passwordHash: hash })
        .onConflictDoUpdate({
          target: userSecrets.userId,
          set: { passwordHash: sql`excluded.password_hash`, updatedAt: sql`now()` },
        }),
    );
  }

  /** Replaces the hash only if it is still the one verified, so a concurrent password change wins. */
  async rehashPassword(userId: string, oldHash: string, newHash: string): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db.drizzle
        .update(userSecrets)
        .set({ passwordHash: newHash, updatedAt: sql`now()` })
        .where(and(eq(userSecrets.userId, userId), eq(userSecrets.passwordHash, oldHash))),
    );
  }

  async update(q: Queryable, id: string, patch: UserPatch): Promise<UserRow | null> {
    const set: PgUpdateSetSource<typeof users> = { updatedAt: sql`now()` };
    if (patch.email !== undefined) set.email = patch.email;
    if (patch.emailConfirmed !== undefined) {
      // A confirmed address keeps the time it was first confirmed.
      set.emailConfirmedAt = patch.emailConfirmed ? sql`coalesce(${users.emailConfirmedAt}, now())` : null;
    }
    if (patch.isAnonymous !== undefined) set.isAnonymous = patch.isAnonymous;
    if (patch.userMetadata !== undefined) set.userMetadata = mergedJson(users.userMetadata, patch.userMetadata);
    if (patch.appMetadata !== undefined) set.appMetadata = mergedJson(users.appMetadata, patch.appMetadata);
    if (patch.bannedUntil !== undefined) set.bannedUntil = patch.bannedUntil;
    const [row] = await mapDatabaseErrors(
      () => this.db.builder(q).update(users).set(set).where(eq(users.id, id)).returning(),
      EMAIL_TAKEN,
    );
    return row ?? null;
  }

  async touchSignIn(q: Queryable, id: string): Promise<UserRow | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(users)
        .set({ lastSignInAt: sql`now()` })
        .where(eq(users.id, id))
        .returning(),
    );
    return row ?? null;
  }

  async delete(q: Queryable, id: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db.builder(q).delete(users).where(eq(users.id, id)).returning({ id: users.id }),
    );
    return rows.length > 0;
  }

  /** A page of users by creation, optionally only those whose address contains `email`. */
  async list(options: { email: string | null; limit: number; offset: number }): Promise<{
    users: UserRow[];
    total: number;
  }> {
    const matching =
      options.email === null ? undefined : ilike(users.email, `%${options.email.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    return mapDatabaseErrors(async () => {
      const page = await this.db.drizzle
        .select()
        .from(users)
        .where(matching)
        .orderBy(users.createdAt, users.id)
        .limit(options.limit)
        .offset(options.offset);
      const [counted] = await this.db.drizzle.select({ total: count() }).from(users).where(matching);
      return { users: page, total: counted?.total ?? 0 };
    });
  }

  // ---- identities ----------------------------------------------------------------------

  async identity(q: Queryable, provider: string, subject: string): Promise<IdentityRow | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .select({
          id: identities.id,
          userId: identities.userId,
          provider: identities.provider,
          subject: identities.subject,
          email: identities.email,
        })
        .from(identities)
        .where(and(eq(identities.provider, provider), eq(identities.subject, subject))),
    );
    return row ?? null;
  }

  /** Unlinks every external identity of a user, e.g. when the verified owner claims the account. */
  async deleteIdentities(q: Queryable, userId: string): Promise<void> {
    await mapDatabaseErrors(() => this.db.builder(q).delete(identities).where(eq(identities.userId, userId)));
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
    await mapDatabaseErrors(
      () =>
        this.db
          .builder(q)
          .insert(identities)
          .values({
            userId: identity.userId,
            provider: identity.provider,
            subject: identity.subject,
            email: identity.email,
            identityData: identity.data,
            lastSignInAt: sql`now()`,
          })
          .onConflictDoUpdate({
            target: [identities.provider, identities.subject],
            set: {
              email: sql`excluded.email`,
              identityData: sql`excluded.identity_data`,
              lastSignInAt: sql`now()`,
              updatedAt: sql`now()`,
            },
          }),
      'This identity',
    );
  }
}
