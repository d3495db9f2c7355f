import type { Database, Queryable } from '../../../internal/db.js';
import { runQuery } from '../../../internal/repository.js';

export type EmailTokenType = 'signup' | 'recovery' | 'magiclink' | 'email_change';

export interface EmailTokenRow {
  user_id: string;
  type: EmailTokenType;
  email: string;
  /** The password the sign-up that sent this confirmation chose (signup tokens only). */
  password_hash: string | null;
}

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
    await runQuery(
      q,
      `INSERT INTO basalt.email_tokens (token_hash, user_id, type, email, expires_at, password_hash)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)`,
      [token.hash, token.userId, token.type, token.email, token.ttlSeconds, token.passwordHash],
    );
  }

  /** Spends a token atomically: of two concurrent uses, only one gets the row. */
  async consume(q: Queryable, hash: Buffer, types: EmailTokenType[]): Promise<EmailTokenRow | null> {
    const rows = await runQuery<EmailTokenRow>(
      q,
      // The password a confirmation carried is handed out once, and not kept after.
      `UPDATE basalt.email_tokens t SET used_at = now(), password_hash = NULL
         FROM (SELECT token_hash, password_hash FROM basalt.email_tokens WHERE token_hash = $1 FOR UPDATE) old
        WHERE t.token_hash = old.token_hash
          AND t.type = ANY($2::text[]) AND t.used_at IS NULL AND t.expires_at > now()
        RETURNING t.user_id, t.type, t.email, old.password_hash`,
      [hash, types],
    );
    return rows[0] ?? null;
  }

  /** A new mail of a type makes the older unused ones of that user and type worthless. */
  async invalidate(q: Queryable, userId: string, type: EmailTokenType): Promise<void> {
    await runQuery(
      q,
      `UPDATE basalt.email_tokens SET used_at = now(), password_hash = NULL
        WHERE user_id = $1 AND type = $2 AND used_at IS NULL`,
      [userId, type],
    );
  }

  /** Deletes tokens expired for more than a day. */
  async sweep(): Promise<void> {
    await runQuery(this.db.pool, `DELETE FROM basalt.email_tokens WHERE expires_at < now() - interval '1 day'`);
  }
}
