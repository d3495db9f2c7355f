import type pg from 'pg';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { fromPostgresError } from '../../internal/errors.js';
import { ADVISORY_LOCK_NAMESPACES, ADVISORY_LOCKS } from '../../internal/advisory-locks.js';

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

export interface SessionRow {
  id: string;
  user_id: string;
  created_at: Date;
  refreshed_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  revoked_reason: string | null;
  user_agent: string | null;
  ip: string | null;
}

export interface RefreshTokenRow {
  token_hash: Buffer;
  session_id: string;
  created_at: Date;
  rotated_at: Date | null;
  /** Seconds since rotation, computed by Postgres so that clocks of instances never matter. */
  rotated_seconds_ago: number | null;
}

export type EmailTokenType = 'signup' | 'recovery' | 'magiclink' | 'email_change';

export interface EmailTokenRow {
  user_id: string;
  type: EmailTokenType;
  email: string;
  /** The password the sign-up that sent this confirmation chose (signup tokens only). */
  password_hash: string | null;
}

export interface SigningKeyRow {
  kid: string;
  alg: string;
  public_jwk: Record<string, unknown>;
  private_key: string;
  created_at: Date;
  retired_at: Date | null;
}

export interface IdentityRow {
  id: string;
  user_id: string;
  provider: string;
  subject: string;
  email: string | null;
}

const USER_COLUMNS = `id, email, email_confirmed_at, is_anonymous, user_metadata, app_metadata, banned_until,
  last_sign_in_at, created_at, updated_at`;

export const REVOCATION_CHANNEL = 'basalt_revocations';

/**
 * One refresh in one statement (see AuthRepository.refreshInOneStatement). $1 rate-limit key,
 * $2 window (s), $3 limit, $4 token hash, $5 inactivity timeout (s), $6 reuse grace (s),
 * $7 hash of the next token. Data-modifying CTEs run in the order their RETURNING feeds
 * each other: hit, then tok (locks the token, only when under the limit), found, touched
 * (only when every check passes), then spent and issued (only when touched returned a row).
 */
const REFRESH_IN_ONE_STATEMENT = `
WITH hit AS (
  INSERT INTO basalt.rate_limits AS r (key, window_start, count)
  VALUES ($1, to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $2) * $2), 1)
  ON CONFLICT (key, window_start) DO UPDATE SET count = r.count + 1
  RETURNING r.count,
    ceil(extract(epoch FROM r.window_start + make_interval(secs => $2) - clock_timestamp()))::int AS reset_seconds
), tok AS (
  SELECT t.session_id, t.rotated_at IS NOT NULL AS rotated,
         extract(epoch FROM now() - t.rotated_at)::float8 AS rotated_seconds_ago
    FROM basalt.refresh_tokens t
   WHERE t.token_hash = $4 AND (SELECT h.count FROM hit h) <= $3
     FOR UPDATE
), found AS (
  SELECT tok.session_id, tok.rotated, tok.rotated_seconds_ago,
         s.id AS sid, s.revoked_at IS NOT NULL AS revoked,
         s.expires_at > now() AND s.refreshed_at > now() - make_interval(secs => $5) AS live,
         coalesce(u.banned_until > now(), false) AS banned,
         ${USER_COLUMNS.replace(/(\w+)/g, 'u.$1')}
    FROM tok
    LEFT JOIN basalt.sessions s ON s.id = tok.session_id
    LEFT JOIN basalt.users u ON u.id = s.user_id
), touched AS (
  UPDATE basalt.sessions s SET refreshed_at = now()
    FROM found f
   WHERE s.id = f.sid AND f.id IS NOT NULL AND f.live AND NOT f.banned
     AND (NOT f.rotated OR f.rotated_seconds_ago <= $6)
     AND s.revoked_at IS NULL AND s.expires_at > now()
     AND s.refreshed_at > now() - make_interval(secs => $5)
  RETURNING s.id
), spent AS (
  UPDATE basalt.refresh_tokens t SET rotated_at = now()
    FROM touched WHERE t.token_hash = $4 AND t.rotated_at IS NULL
), issued AS (
  INSERT INTO basalt.refresh_tokens (token_hash, session_id) SELECT $7, id FROM touched
  RETURNING session_id
)
SELECT hit.count AS hit_count, hit.reset_seconds AS hit_reset_seconds,
       f.session_id, f.sid, f.revoked, (SELECT i.session_id FROM issued i) AS issued_session,
       ${USER_COLUMNS.replace(/(\w+)/g, 'f.$1')}
  FROM hit LEFT JOIN found f ON true`;

interface RefreshAttemptRow extends Omit<UserRow, 'id'> {
  id: string | null;
  hit_count: number;
  hit_reset_seconds: number;
  session_id: string | null;
  sid: string | null;
  revoked: boolean | null;
  issued_session: string | null;
}

/** What one refresh statement did; only `rotated` wrote anything besides the rate-limit counter. */
export type RefreshAttempt = { limit: { count: number; resetSeconds: number } } & (
  | { outcome: 'rate_limited' | 'unknown_token' | 'session_ended' | 'needs_locked_path' }
  | { outcome: 'rotated'; sessionId: string; user: UserRow }
);

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

/** All SQL of the auth module. Every method maps Postgres errors onto the catalogue. */
export class AuthRepository {
  constructor(private readonly db: Database) {}

  get pool(): Queryable {
    return this.db.pool;
  }

  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(work);
  }

  private async run<R extends object>(
    q: Queryable,
    text: string | { name: string; text: string },
    values: unknown[],
    context?: string,
  ): Promise<R[]> {
    try {
      const result = typeof text === 'string' ? await q.query(text, values) : await q.query({ ...text, values });
      return result.rows as R[];
    } catch (error) {
      throw fromPostgresError(error, context);
    }
  }

  // ---- installation ----------------------------------------------------------------------

  /**
   * The access tokens' issuer of this database: `proposed` if none is stored yet (the first
   * start), else the stored one. Two statements, so that an instance that loses the race
   * to store it reads the winner's, committed after this statement's snapshot began.
   */
  async issuer(proposed: string): Promise<string> {
    await this.run(
      this.db.pool,
      `INSERT INTO basalt.instance (key, value) VALUES ('auth_issuer', $1) ON CONFLICT (key) DO NOTHING`,
      [proposed],
    );
    const [row] = await this.run<{ value: string }>(
      this.db.pool,
      `SELECT value FROM basalt.instance WHERE key = 'auth_issuer'`,
      [],
    );
    return row?.value ?? proposed;
  }

  // ---- users ---------------------------------------------------------------------------

  async insertUser(q: Queryable, user: NewUser): Promise<UserRow> {
    const [row] = await this.run<UserRow>(
      q,
      `INSERT INTO basalt.users (email, email_confirmed_at, is_anonymous, user_metadata, app_metadata)
       VALUES ($1, CASE WHEN $2::boolean THEN now() END, $3, $4, $5)
       RETURNING ${USER_COLUMNS}`,
      [user.email, user.emailConfirmed, user.isAnonymous, user.userMetadata, user.appMetadata],
      'A user with this email',
    );
    await this.run(q, `INSERT INTO basalt.user_secrets (user_id, password_hash) VALUES ($1, $2)`, [
      row!.id,
      user.passwordHash,
    ]);
    return row!;
  }

  async userById(q: Queryable, id: string, forUpdate = false): Promise<UserRow | null> {
    const rows = await this.run<UserRow>(
      q,
      `SELECT ${USER_COLUMNS} FROM basalt.users WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`,
      [id],
    );
    return rows[0] ?? null;
  }

  async userByEmail(q: Queryable, email: string): Promise<UserRow | null> {
    const rows = await this.run<UserRow>(q, `SELECT ${USER_COLUMNS} FROM basalt.users WHERE lower(email) = lower($1)`, [
      email,
    ]);
    return rows[0] ?? null;
  }

  /** The user and their password hash, for sign-in only. */
  async credentialsByEmail(
    q: Queryable,
    email: string,
  ): Promise<{ user: UserRow; passwordHash: string | null } | null> {
    const rows = await this.run<UserRow & { password_hash: string | null }>(
      q,
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
    await this.run(
      q,
      `INSERT INTO basalt.user_secrets (user_id, password_hash) VALUES ($1, $2)
       ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()`,
      [userId, hash],
    );
  }

  /** Replaces the hash only if it is still the one verified, so a concurrent password change wins. */
  async rehashPassword(q: Queryable, userId: string, oldHash: string, newHash: string): Promise<void> {
    await this.run(
      q,
      `UPDATE basalt.user_secrets SET password_hash = $3, updated_at = now() WHERE user_id = $1 AND password_hash = $2`,
      [userId, oldHash, newHash],
    );
  }

  async hasPassword(q: Queryable, userId: string): Promise<boolean> {
    const rows = await this.run<{ has: boolean }>(
      q,
      `SELECT password_hash IS NOT NULL AS has FROM basalt.user_secrets WHERE user_id = $1`,
      [userId],
    );
    return rows[0]?.has ?? false;
  }

  async updateUser(q: Queryable, id: string, patch: UserPatch): Promise<UserRow | null> {
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
    const rows = await this.run<UserRow>(
      q,
      `UPDATE basalt.users SET ${sets.join(', ')} WHERE id = $1 RETURNING ${USER_COLUMNS}`,
      values,
      'A user with this email',
    );
    return rows[0] ?? null;
  }

  async touchSignIn(q: Queryable, id: string): Promise<UserRow | null> {
    const rows = await this.run<UserRow>(
      q,
      `UPDATE basalt.users SET last_sign_in_at = now() WHERE id = $1 RETURNING ${USER_COLUMNS}`,
      [id],
    );
    return rows[0] ?? null;
  }

  async deleteUser(q: Queryable, id: string): Promise<boolean> {
    const rows = await this.run<{ id: string }>(q, `DELETE FROM basalt.users WHERE id = $1 RETURNING id`, [id]);
    return rows.length > 0;
  }

  async listUsers(
    q: Queryable,
    options: { email: string | null; limit: number; offset: number },
  ): Promise<{ users: UserRow[]; total: number }> {
    const pattern = options.email === null ? null : `%${options.email.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    const users = await this.run<UserRow>(
      q,
      `SELECT ${USER_COLUMNS} FROM basalt.users
        WHERE $1::text IS NULL OR email ILIKE $1
        ORDER BY created_at, id LIMIT $2 OFFSET $3`,
      [pattern, options.limit, options.offset],
    );
    const [count] = await this.run<{ total: string }>(
      q,
      `SELECT count(*) AS total FROM basalt.users WHERE $1::text IS NULL OR email ILIKE $1`,
      [pattern],
    );
    return { users, total: Number(count?.total ?? 0) };
  }

  // ---- identities ----------------------------------------------------------------------

  async identity(q: Queryable, provider: string, subject: string): Promise<IdentityRow | null> {
    const rows = await this.run<IdentityRow>(
      q,
      `SELECT id, user_id, provider, subject, email FROM basalt.identities WHERE provider = $1 AND subject = $2`,
      [provider, subject],
    );
    return rows[0] ?? null;
  }

  /** Unlinks every external identity of a user, e.g. when the verified owner claims the account. */
  async deleteIdentities(q: Queryable, userId: string): Promise<void> {
    await this.run(q, `DELETE FROM basalt.identities WHERE user_id = $1`, [userId]);
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
    await this.run(
      q,
      `INSERT INTO basalt.identities (user_id, provider, subject, email, identity_data, last_sign_in_at)
       VALUES ($1, $2, $3, $4, $5, now())
       ON CONFLICT (provider, subject) DO UPDATE
         SET email = EXCLUDED.email, identity_data = EXCLUDED.identity_data, last_sign_in_at = now(), updated_at = now()`,
      [identity.userId, identity.provider, identity.subject, identity.email, identity.data],
      'This identity',
    );
  }

  // ---- sessions and refresh tokens -----------------------------------------------------

  async insertSession(
    q: Queryable,
    session: { userId: string; lifetimeSeconds: number; userAgent: string | null; ip: string | null },
  ): Promise<SessionRow> {
    const [row] = await this.run<SessionRow>(
      q,
      `INSERT INTO basalt.sessions (user_id, expires_at, user_agent, ip)
       VALUES ($1, now() + make_interval(secs => $2), $3, $4) RETURNING *`,
      [session.userId, session.lifetimeSeconds, session.userAgent, session.ip],
    );
    return row!;
  }

  async sessionById(q: Queryable, id: string, forUpdate = false): Promise<SessionRow | null> {
    const rows = await this.run<SessionRow>(
      q,
      `SELECT * FROM basalt.sessions WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`,
      [id],
    );
    return rows[0] ?? null;
  }

  async activeSessions(q: Queryable, userId: string, inactivitySeconds: number): Promise<SessionRow[]> {
    return this.run<SessionRow>(
      q,
      `SELECT * FROM basalt.sessions
        WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
          AND refreshed_at > now() - make_interval(secs => $2)
        ORDER BY created_at DESC`,
      [userId, inactivitySeconds],
    );
  }

  async touchSession(q: Queryable, id: string): Promise<void> {
    await this.run(q, `UPDATE basalt.sessions SET refreshed_at = now() WHERE id = $1`, [id]);
  }

  /** Revokes matching live sessions and records them for every instance's revocation cache. */
  async revokeSessions(
    q: Queryable,
    filter: { sessionId?: string; userId?: string; exceptSessionId?: string },
    reason: string,
  ): Promise<string[]> {
    const rows = await this.run<{ id: string }>(
      q,
      `UPDATE basalt.sessions SET revoked_at = now(), revoked_reason = $4
        WHERE revoked_at IS NULL
          AND ($1::uuid IS NULL OR id = $1)
          AND ($2::uuid IS NULL OR user_id = $2)
          AND ($3::uuid IS NULL OR id <> $3)
        RETURNING id`,
      [filter.sessionId ?? null, filter.userId ?? null, filter.exceptSessionId ?? null, reason],
    );
    const ids = rows.map((row) => row.id);
    if (ids.length > 0) {
      await this.run(
        q,
        `INSERT INTO basalt.session_revocations (session_id) SELECT unnest($1::uuid[])
         ON CONFLICT (session_id) DO NOTHING`,
        [ids],
      );
      // A wake-up hint for every instance's cache, delivered at commit; the poll is the carrier.
      await this.run(q, `SELECT pg_notify('${REVOCATION_CHANNEL}', '')`, []);
    }
    return ids;
  }

  async insertRefreshToken(q: Queryable, sessionId: string, hash: Buffer): Promise<void> {
    await this.run(q, `INSERT INTO basalt.refresh_tokens (token_hash, session_id) VALUES ($1, $2)`, [hash, sessionId]);
  }

  /**
   * The whole common refresh in one statement, so one round trip and one commit: counts the
   * request against the rate limit; if under it, locks the token (concurrent refreshes with
   * one token take turns), checks its session and user, and — only when nothing is wrong —
   * touches the session, marks the token rotated and inserts `nextHash` for the same session.
   * The session's state is re-checked by the UPDATE on its newest version, so a revocation
   * that commits while this statement waits for a lock still wins. When anything is wrong it
   * writes nothing but the counter and says what it found; ending a session is left to the
   * caller's locked path ({@link refreshTokenForUpdate} and friends).
   */
  async refreshInOneStatement(input: {
    limitKey: string;
    windowSeconds: number;
    limit: number;
    hash: Buffer;
    nextHash: Buffer;
    inactivitySeconds: number;
    reuseGraceSeconds: number;
  }): Promise<RefreshAttempt> {
    const rows = await this.run<RefreshAttemptRow>(
      this.db.pool,
      {
        // Named: each pooled connection parses and plans it once.
        name: 'basalt_auth_refresh',
        text: REFRESH_IN_ONE_STATEMENT,
      },
      [
        input.limitKey,
        input.windowSeconds,
        input.limit,
        input.hash,
        input.inactivitySeconds,
        input.reuseGraceSeconds,
        input.nextHash,
      ],
    );
    const row = rows[0]!;
    const limit = { count: row.hit_count, resetSeconds: Math.max(1, row.hit_reset_seconds) };
    if (row.hit_count > input.limit) return { outcome: 'rate_limited', limit };
    if (row.session_id === null) return { outcome: 'unknown_token', limit };
    if (row.sid === null || row.revoked) return { outcome: 'session_ended', limit };
    if (row.id === null) return { outcome: 'session_ended', limit };
    if (row.issued_session !== null) {
      const user: UserRow = {
        id: row.id,
        email: row.email,
        email_confirmed_at: row.email_confirmed_at,
        is_anonymous: row.is_anonymous,
        user_metadata: row.user_metadata,
        app_metadata: row.app_metadata,
        banned_until: row.banned_until,
        last_sign_in_at: row.last_sign_in_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
      };
      return { outcome: 'rotated', limit, sessionId: row.issued_session, user };
    }
    // Expired, inactive, reused after the grace window, banned — or a concurrent change
    // made the session UPDATE skip: all need the locked path, which decides anew.
    return { outcome: 'needs_locked_path', limit };
  }

  /** Locks the token row, so that concurrent refreshes with one token take turns. */
  async refreshTokenForUpdate(q: Queryable, hash: Buffer): Promise<RefreshTokenRow | null> {
    const rows = await this.run<RefreshTokenRow>(
      q,
      `SELECT token_hash, session_id, created_at, rotated_at,
              extract(epoch FROM now() - rotated_at)::float8 AS rotated_seconds_ago
         FROM basalt.refresh_tokens WHERE token_hash = $1 FOR UPDATE`,
      [hash],
    );
    return rows[0] ?? null;
  }

  async markRotated(q: Queryable, hash: Buffer): Promise<void> {
    await this.run(
      q,
      `UPDATE basalt.refresh_tokens SET rotated_at = now() WHERE token_hash = $1 AND rotated_at IS NULL`,
      [hash],
    );
  }

  /** Sessions revoked since `since` (by the database clock), and the database's now. */
  async revocationsSince(
    q: Queryable,
    since: Date | null,
    horizonSeconds: number,
  ): Promise<{ ids: string[]; now: Date }> {
    const rows = await this.run<{ session_id: string | null; now: Date }>(
      q,
      `SELECT r.session_id, n.now FROM (SELECT clock_timestamp() AS now) n
         LEFT JOIN basalt.session_revocations r
           ON r.revoked_at > coalesce($1::timestamptz, n.now - make_interval(secs => $2))`,
      [since, horizonSeconds],
    );
    return {
      ids: rows.flatMap((row) => (row.session_id ? [row.session_id] : [])),
      now: rows[0]?.now ?? new Date(),
    };
  }

  async sessionIsRevoked(q: Queryable, sessionId: string): Promise<boolean> {
    const rows = await this.run(q, `SELECT 1 FROM basalt.session_revocations WHERE session_id = $1`, [sessionId]);
    return rows.length > 0;
  }

  /** Subscribes a listener's own session (not a pooled one) to revocation hints. */
  async listenForRevocations(client: pg.Client): Promise<void> {
    await client.query(`LISTEN ${REVOCATION_CHANNEL}`);
  }

  // ---- email tokens --------------------------------------------------------------------

  async insertEmailToken(
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
    await this.run(
      q,
      `INSERT INTO basalt.email_tokens (token_hash, user_id, type, email, expires_at, password_hash)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)`,
      [token.hash, token.userId, token.type, token.email, token.ttlSeconds, token.passwordHash],
    );
  }

  /** Spends a token atomically: of two concurrent uses, only one gets the row. */
  async consumeEmailToken(q: Queryable, hash: Buffer, types: EmailTokenType[]): Promise<EmailTokenRow | null> {
    const rows = await this.run<EmailTokenRow>(
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
  async invalidateEmailTokens(q: Queryable, userId: string, type: EmailTokenType): Promise<void> {
    await this.run(
      q,
      `UPDATE basalt.email_tokens SET used_at = now(), password_hash = NULL
        WHERE user_id = $1 AND type = $2 AND used_at IS NULL`,
      [userId, type],
    );
  }

  // ---- signing keys --------------------------------------------------------------------

  async signingKeys(q: Queryable, horizonSeconds: number): Promise<SigningKeyRow[]> {
    return this.run<SigningKeyRow>(
      q,
      `SELECT * FROM basalt.signing_keys
        WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
        ORDER BY created_at DESC`,
      [horizonSeconds],
    );
  }

  /** Creates the first key unless another instance already did; returns whether it inserted. */
  async insertFirstSigningKey(key: Omit<SigningKeyRow, 'created_at' | 'retired_at'>): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.signingKeys]);
      const existing = await this.run(tx, `SELECT 1 FROM basalt.signing_keys WHERE retired_at IS NULL`, []);
      if (existing.length > 0) return false;
      await this.insertKey(tx, key);
      return true;
    });
  }

  async rotateSigningKey(key: Omit<SigningKeyRow, 'created_at' | 'retired_at'>): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.signingKeys]);
      await this.run(tx, `UPDATE basalt.signing_keys SET retired_at = clock_timestamp() WHERE retired_at IS NULL`, []);
      await this.insertKey(tx, key);
    });
  }

  private async insertKey(q: Queryable, key: Omit<SigningKeyRow, 'created_at' | 'retired_at'>): Promise<void> {
    await this.run(q, `INSERT INTO basalt.signing_keys (kid, alg, public_jwk, private_key) VALUES ($1, $2, $3, $4)`, [
      key.kid,
      key.alg,
      key.public_jwk,
      key.private_key,
    ]);
  }

  // ---- rate limits ---------------------------------------------------------------------

  /**
   * Adds `amount` to the counter of `key` in the current fixed window and returns the new
   * count and the seconds until the window ends. One atomic upsert: instances never race.
   */
  async hit(key: string, windowSeconds: number, amount: number): Promise<{ count: number; resetSeconds: number }> {
    const [row] = await this.run<{ count: number; reset_seconds: number }>(
      this.db.pool,
      `WITH w AS (
         SELECT to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $2) * $2) AS start
       )
       INSERT INTO basalt.rate_limits (key, window_start, count)
       SELECT $1, w.start, $3 FROM w
       ON CONFLICT (key, window_start) DO UPDATE SET count = basalt.rate_limits.count + EXCLUDED.count
       RETURNING count,
         ceil(extract(epoch FROM window_start + make_interval(secs => $2) - clock_timestamp()))::int AS reset_seconds`,
      [key, windowSeconds, amount],
    );
    return { count: row!.count, resetSeconds: Math.max(1, row!.reset_seconds) };
  }

  /**
   * Sliding "at most once per `seconds`" for `key` (e.g. one mail per address a minute):
   * records now and returns true unless an earlier claim is younger than `seconds`. Must
   * run in a transaction: the advisory lock makes concurrent claims on any instance take turns.
   */
  async claimInterval(tx: Tx, key: string, seconds: number): Promise<boolean> {
    await this.run(tx, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [
      ADVISORY_LOCK_NAMESPACES.intervalClaims,
      key,
    ]);
    const rows = await this.run(
      tx,
      `INSERT INTO basalt.rate_limits (key, window_start, count)
       SELECT $1, clock_timestamp(), 1
        WHERE NOT EXISTS (
          SELECT 1 FROM basalt.rate_limits
           WHERE key = $1 AND window_start > clock_timestamp() - make_interval(secs => $2))
       RETURNING 1`,
      [key, seconds],
    );
    return rows.length > 0;
  }

  /**
   * Takes one count back from `key` in the current window, never below zero and never into
   * a window that has no count yet (the count it gives back was made in an earlier one).
   */
  async unhit(key: string, windowSeconds: number): Promise<void> {
    await this.run(
      this.db.pool,
      `UPDATE basalt.rate_limits SET count = count - 1
        WHERE key = $1 AND count > 0
          AND window_start = to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $2) * $2)`,
      [key, windowSeconds],
    );
  }

  // ---- housekeeping --------------------------------------------------------------------

  /** Deletes what can no longer matter: old counters, spent tokens, ended sessions' tokens. */
  async sweep(horizonSeconds: number): Promise<void> {
    await this.run(this.db.pool, `DELETE FROM basalt.rate_limits WHERE window_start < now() - interval '1 day'`, []);
    await this.run(this.db.pool, `DELETE FROM basalt.email_tokens WHERE expires_at < now() - interval '1 day'`, []);
    await this.run(
      this.db.pool,
      `DELETE FROM basalt.session_revocations WHERE revoked_at < now() - make_interval(secs => $1)`,
      [horizonSeconds],
    );
    await this.run(
      this.db.pool,
      `DELETE FROM basalt.sessions WHERE (revoked_at IS NOT NULL OR expires_at < now())
          AND coalesce(revoked_at, expires_at) < now() - make_interval(secs => $1)`,
      [horizonSeconds],
    );
  }
}
