import { and, eq, isNull, lt, sql, type InferSelectModel } from 'drizzle-orm';
import { emailTokens } from '../../../db/schema.js';
import type { Database, Queryable } from '../../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../../internal/repository.js';

type EmailToken = InferSelectModel<typeof emailTokens>;
export type EmailTokenType = EmailToken['type'];

/** What spending a token hands out; `passwordHash` is the sign-up's chosen password (signup tokens only). */
export type EmailTokenRow = Pick<EmailToken, 'userId' | 'type' | 'email' | 'passwordHash'>;

/** basalt.email_tokens: the single-use tokens that mailed links and codes carry. */
export class EmailTokenRepository {
  constructor(private readonly db: Database) {}

  async insert(
    q: Queryable,
    token: {
      hash: Buffer;
      userId: string;
      type: EmailTokenType;
      email: string;
      ttlSeconds: number;
      passwordHash: string | null;
    },
  ): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(emailTokens)
        .values({
          tokenHash: token.hash,
          userId: token.userId,
          type: token.type,
          email: token.email,
          expiresAt: sql`now() + make_interval(secs => ${token.ttlSeconds})`,
          passwordHash: token.passwordHash,
        }),
    );
  }

  /** Spends a token atomically: of two concurrent uses, only one gets the row. */
  async consume(q: Queryable, hash: Buffer, types: EmailTokenType[]): Promise<EmailTokenRow | null> {
    // Hand-written: RETURNING must give the password hash as it was before this UPDATE
    // cleared it (the password a confirmation carried is handed out once, and not kept after).
    const rows = await runQuery<EmailTokenRow>(
      q,
      `UPDATE basalt.email_tokens t SET used_at = now(), password_hash = NULL
         FROM (SELECT token_hash, password_hash FROM basalt.email_tokens WHERE token_hash = $1 FOR UPDATE) old
        WHERE t.token_hash = old.token_hash
          AND t.type = ANY($2::text[]) AND t.used_at IS NULL AND t.expires_at > now()
        RETURNING t.user_id AS "userId", t.type, t.email, old.password_hash AS "passwordHash"`,
      [hash, types],
    );
    return rows[0] ?? null;
  }

  /** A new mail of a type makes the older unused ones of that user and type worthless. */
  async invalidate(q: Queryable, userId: string, type: EmailTokenType): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(emailTokens)
        .set({ usedAt: sql`now()`, passwordHash: null })
        .where(and(eq(emailTokens.userId, userId), eq(emailTokens.type, type), isNull(emailTokens.usedAt))),
    );
  }

  /** Deletes tokens expired for more than a day. */
  async sweep(): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db.drizzle.delete(emailTokens).where(lt(emailTokens.expiresAt, sql`now() - interval '1 day'`)),
    );
  }
}
