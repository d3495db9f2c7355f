import {
  and,
  desc,
  eq,
  getTableColumns,
  gt,
  isNotNull,
  isNull,
  lt,
  ne,
  or,
  sql,
  type InferSelectModel,
} from 'drizzle-orm';
import { refreshTokens, sessions, users } from '../../../db/schema.js';
import type { Database, Queryable } from '../../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../../internal/repository.js';
import { windowStartSql } from './rate-limits.js';
import type { RevocationRepository } from './revocations.js';
import type { UserRow } from './users.js';

export type SessionRow = InferSelectModel<typeof sessions>;

export type RefreshTokenRow = InferSelectModel<typeof refreshTokens> & {
  /** Seconds since rotation, computed by Postgres so that clocks of instances never matter. */
  rotatedSecondsAgo: number | null;
};

/** Which live sessions a revocation ends. */
export interface SessionFilter {
  sessionId?: string;
  userId?: string;
  exceptSessionId?: string;
}

/** `now() - n seconds`, in the database's clock. */
function secondsAgo(seconds: number) {
  return sql`now() - make_interval(secs => ${seconds})`;
}

/** The users table's columns by database name and row-type key: the refresh statement returns a UserRow. */
const USER_COLUMNS = Object.entries(getTableColumns(users)).map(([key, column]) => ({ key, name: column.name }));

/**
 * One refresh in one statement (see SessionRepository.refreshInOneStatement). $1 rate-limit key,
 * $2 window (s), $3 limit, $4 token hash, $5 inactivity timeout (s), $6 reuse grace (s),
 * $7 hash of the next token. Data-modifying CTEs run in the order their RETURNING feeds
 * each other: hit, then tok (locks the token, only when under the limit), found, touched
 * (only when every check passes), then spent and issued (only when touched returned a row).
 */
const REFRESH_IN_ONE_STATEMENT = `
WITH hit AS (
  INSERT INTO basalt.rate_limits AS r (key, window_start, count)
  VALUES ($1, ${windowStartSql(2)}, 1)
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
         s.id AS sid, s.revoked_at IS NOT NULL AS revoked, s.aal AS session_aal,
         s.expires_at > now() AND s.refreshed_at > now() - make_interval(secs => $5) AS live,
         coalesce(u.banned_until > now(), false) AS banned,
         ${USER_COLUMNS.map((column) => `u.${column.name}`).join(', ')}
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
       f.session_id, f.sid, f.revoked, f.session_aal, (SELECT i.session_id FROM issued i) AS issued_session,
       ${USER_COLUMNS.map((column) => `f.${column.name} AS "${column.key}"`).join(', ')}
  FROM hit LEFT JOIN found f ON true`;

interface RefreshAttemptRow extends Omit<UserRow, 'id'> {
  id: string | null;
  hit_count: number;
  hit_reset_seconds: number;
  session_id: string | null;
  sid: string | null;
  revoked: boolean | null;
  session_aal: 'aal1' | 'aal2' | null;
  issued_session: string | null;
}

/** What one refresh statement did; only `rotated` wrote anything besides the rate-limit counter. */
export type RefreshAttempt = { limit: { count: number; resetSeconds: number } } & (
  | { outcome: 'rate_limited' | 'unknown_token' | 'session_ended' | 'needs_locked_path' }
  | { outcome: 'rotated'; sessionId: string; user: UserRow; aal: 'aal1' | 'aal2' }
);

/** basalt.sessions and basalt.refresh_tokens: sessions, their rotation and their end. */
export class SessionRepository {
  constructor(
    private readonly db: Database,
    private readonly revocations: RevocationRepository,
  ) {}

  async insert(
    q: Queryable,
    session: {
      userId: string;
      lifetimeSeconds: number;
      userAgent: string | null;
      ip: string | null;
      impersonatedBy?: string;
      aal: 'aal1' | 'aal2';
    },
  ): Promise<SessionRow> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(sessions)
        .values({
          userId: session.userId,
          expiresAt: sql`now() + make_interval(secs => ${session.lifetimeSeconds})`,
          userAgent: session.userAgent,
          ip: session.ip,
          impersonatedBy: session.impersonatedBy ?? null,
          aal: session.aal,
        })
        .returning(),
    );
    return row!;
  }

  async byId(q: Queryable, id: string, forUpdate = false): Promise<SessionRow | null> {
    const query = this.db.builder(q).select().from(sessions).where(eq(sessions.id, id));
    const [row] = await mapDatabaseErrors(() => (forUpdate ? query.for('update') : query));
    return row ?? null;
  }

  /** The user's sessions that have not ended, newest first. */
  async active(userId: string, inactivitySeconds: number): Promise<SessionRow[]> {
    return mapDatabaseErrors(() =>
      this.db.drizzle
        .select()
        .from(sessions)
        .where(
          and(
            eq(sessions.userId, userId),
            isNull(sessions.revokedAt),
            gt(sessions.expiresAt, sql`now()`),
            gt(sessions.refreshedAt, secondsAgo(inactivitySeconds)),
          ),
        )
        .orderBy(desc(sessions.createdAt)),
    );
  }

  /** Marks the session used now: its inactivity timeout starts again. */
  async touch(q: Queryable, id: string): Promise<void> {
    const orm = this.db.builder(q);
    await mapDatabaseErrors(() =>
      orm
        .update(sessions)
        .set({ refreshedAt: sql`now()` })
        .where(eq(sessions.id, id)),
    );
  }

  /** Revokes matching live sessions and records them for every instance's revocation cache. */
  async revoke(q: Queryable, filter: SessionFilter, reason: string): Promise<string[]> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(sessions)
        .set({ revokedAt: sql`now()`, revokedReason: reason })
        .where(
          and(
            isNull(sessions.revokedAt),
            filter.sessionId === undefined ? undefined : eq(sessions.id, filter.sessionId),
            filter.userId === undefined ? undefined : eq(sessions.userId, filter.userId),
            filter.exceptSessionId === undefined ? undefined : ne(sessions.id, filter.exceptSessionId),
          ),
        )
        .returning({ id: sessions.id }),
    );
    const ids = rows.map((row) => row.id);
    await this.revocations.record(q, ids);
    return ids;
  }

  async insertRefreshToken(q: Queryable, sessionId: string, hash: Buffer): Promise<void> {
    await mapDatabaseErrors(() => this.db.builder(q).insert(refreshTokens).values({ tokenHash: hash, sessionId }));
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
    const rows = await runQuery<RefreshAttemptRow>(
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
        emailConfirmedAt: row.emailConfirmedAt,
        isAnonymous: row.isAnonymous,
        userMetadata: row.userMetadata,
        appMetadata: row.appMetadata,
        bannedUntil: row.bannedUntil,
        lastSignInAt: row.lastSignInAt,
        createdAt: row.createdAt,
        updatedAt: row.updatedAt,
      };
      return { outcome: 'rotated', limit, sessionId: row.issued_session, user, aal: row.session_aal ?? 'aal1' };
    }
    // Expired, inactive, reused after the grace window, banned — or a concurrent change
    // made the session UPDATE skip: all need the locked path, which decides anew.
    return { outcome: 'needs_locked_path', limit };
  }

  /** Locks the token row, so that concurrent refreshes with one token take turns. */
  async refreshTokenForUpdate(q: Queryable, hash: Buffer): Promise<RefreshTokenRow | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .select({
          ...getTableColumns(refreshTokens),
          rotatedSecondsAgo: sql<number | null>`extract(epoch FROM now() - ${refreshTokens.rotatedAt})::float8`,
        })
        .from(refreshTokens)
        .where(eq(refreshTokens.tokenHash, hash))
        .for('update'),
    );
    return row ?? null;
  }

  async markRotated(q: Queryable, hash: Buffer): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(refreshTokens)
        .set({ rotatedAt: sql`now()` })
        .where(and(eq(refreshTokens.tokenHash, hash), isNull(refreshTokens.rotatedAt))),
    );
  }

  /** Deletes sessions that ended longer ago than `horizonSeconds` (their tokens go with them). */
  async sweep(horizonSeconds: number): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db.drizzle
        .delete(sessions)
        .where(
          and(
            or(isNotNull(sessions.revokedAt), lt(sessions.expiresAt, sql`now()`)),
            lt(sql`coalesce(${sessions.revokedAt}, ${sessions.expiresAt})`, secondsAgo(horizonSeconds)),
          ),
        ),
    );
  }
}
