import { createHash } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { errorCode, request, useTestApp } from './helpers.js';
import { twoSessions, decodeJwt, requestFrom, signUp, type AuthBody, type SessionBody } from './auth-helpers.js';

// Refresh runs as one statement in the common case and falls back to a locked transaction
// when the session must end. These tests pin what either path does, concurrency included.

const server = useTestApp({ env: { BASALT_AUTH_RATE_REFRESH_IP: '3', BASALT_AUTH_RATE_WINDOW: '86400' } });

const hashOf = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();
const sessionIdOf = (session: SessionBody): string => decodeJwt(session.access_token).payload.session_id as string;

// Each test refreshes from a loopback address of its own: the per-IP limit here is 3.
let nextAddress = 10;
function refresher(): (token: string) => Promise<{ status: number; headers: Record<string, unknown>; body: unknown }> {
  const address = `127.0.1.${nextAddress++}`;
  return (token) => requestFrom(address, server.url, 'POST', '/v1/auth/refresh', { refresh_token: token });
}

async function rotatedAt(token: string): Promise<Date | null> {
  const { rows } = await server.sql.query<{ rotated_at: Date | null }>(
    'SELECT rotated_at FROM basalt.refresh_tokens WHERE token_hash = $1',
    [hashOf(token)],
  );
  if (rows.length === 0) throw new Error('no such token');
  return rows[0]!.rotated_at;
}

/** Resolves once a backend of the test database waits for a lock (the refresh under test). */
async function someoneWaitsForALock(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { rows } = await server.sql.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
    );
    if (rows.length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('no backend waited for a lock');
}

/**
 * Starts a refresh while another connection holds `statement` uncommitted, and commits it
 * once a backend waits for its lock: the refresh sees a write that lands while it waits.
 */
async function refreshWhileCommitting<Answer>(
  startRefresh: () => Promise<Answer>,
  statement: string,
  values: unknown[],
): Promise<Answer> {
  const writer = new pg.Client({ connectionString: server.database.url });
  await writer.connect();
  try {
    await writer.query('BEGIN');
    await writer.query(statement, values);
    const pending = startRefresh();
    await someoneWaitsForALock();
    await writer.query('COMMIT');
    return await pending;
  } finally {
    await writer.query('ROLLBACK').catch(() => undefined);
    await writer.end();
  }
}

describe('one refresh', () => {
  it('rotates the token, touches the session and returns the user with a valid access token', async () => {
    const refresh = refresher();
    const { user, session } = await signUp(server.url);
    const sessionId = sessionIdOf(session!);
    await server.sql.query(`UPDATE basalt.sessions SET refreshed_at = now() - interval '1 hour' WHERE id = $1`, [
      sessionId,
    ]);
    const answer = await refresh(session!.refresh_token);
    expect(answer.status).toBe(200);
    const body = answer.body as AuthBody;
    expect(body.user.id).toBe(user.id);
    expect(body.user.email).toBe(user.email);
    expect(sessionIdOf(body.session!)).toBe(sessionId);
    expect(await rotatedAt(session!.refresh_token)).not.toBeNull();
    expect(await rotatedAt(body.session!.refresh_token)).toBeNull();
    const { rows } = await server.sql.query<{ age: number }>(
      `SELECT extract(epoch FROM now() - refreshed_at)::float8 AS age FROM basalt.sessions WHERE id = $1`,
      [sessionId],
    );
    expect(rows[0]!.age).toBeLessThan(60);
    // The new access token is accepted by the server's own verifier.
    const me = await request(server.url, 'GET', '/v1/auth/user', { token: body.session!.access_token });
    expect(me.status).toBe(200);
    expect((me.body as { id: string }).id).toBe(user.id);
  });

  it('answers 401 to a token of a session signed out everywhere', async () => {
    const refresh = refresher();
    const { a, b } = await twoSessions(server.url);
    const out = await request(server.url, 'POST', '/v1/auth/signout', {
      token: a.access_token,
      body: { scope: 'global' },
    });
    expect(out.status).toBe(204);
    const answer = await refresh(b.refresh_token);
    expect(answer.status).toBe(401);
    expect(errorCode(answer.body)).toBe('UNAUTHENTICATED');
    expect(await rotatedAt(b.refresh_token)).toBeNull();
  });

  it('revokes every session of a user banned since the last refresh', async () => {
    const refresh = refresher();
    const { user, a, b } = await twoSessions(server.url);
    // Set directly, as a ban made by SQL would be: nothing revoked the sessions yet.
    await server.sql.query(`UPDATE basalt.users SET banned_until = now() + interval '1 day' WHERE id = $1`, [user.id]);
    expect((await refresh(a.refresh_token)).status).toBe(401);
    const { rows } = await server.sql.query<{ id: string; revoked_reason: string | null }>(
      'SELECT id, revoked_reason FROM basalt.sessions WHERE user_id = $1',
      [user.id],
    );
    expect(rows.length).toBe(3);
    expect(rows.every((row) => row.revoked_reason === 'banned')).toBe(true);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: b.access_token })).status).toBe(401);
  });
});

describe('concurrent refreshes', () => {
  it('gives every tab refreshing with one token at once a working token of its own, in one session', async () => {
    const { session } = await signUp(server.url);
    const tabs = 3;
    const refreshes = Array.from({ length: tabs }, () => refresher());
    const answers = await Promise.all(refreshes.map((refresh) => refresh(session!.refresh_token)));
    expect(answers.map((answer) => answer.status)).toEqual(Array(tabs).fill(200));
    const sessions = answers.map((answer) => (answer.body as AuthBody).session!);
    expect(new Set(sessions.map((next) => next.refresh_token)).size).toBe(tabs);
    expect(new Set(sessions.map(sessionIdOf))).toEqual(new Set([sessionIdOf(session!)]));
    // The old token was spent once; each new token is live and works.
    expect(await rotatedAt(session!.refresh_token)).not.toBeNull();
    for (const [i, next] of sessions.entries()) {
      expect(await rotatedAt(next.refresh_token)).toBeNull();
      expect((await refreshes[i]!(next.refresh_token)).status).toBe(200);
    }
  });

  it('lets a revocation that commits while the refresh waits win: 401 and no new token', async () => {
    const refresh = refresher();
    const { session } = await signUp(server.url);
    const sessionId = sessionIdOf(session!);
    const answer = await refreshWhileCommitting(
      () => refresh(session!.refresh_token),
      `UPDATE basalt.sessions SET revoked_at = now(), revoked_reason = 'test' WHERE id = $1`,
      [sessionId],
    );
    expect(answer.status).toBe(401);
    const { rows } = await server.sql.query('SELECT 1 FROM basalt.refresh_tokens WHERE session_id = $1', [sessionId]);
    expect(rows.length).toBe(1);
    expect(await rotatedAt(session!.refresh_token)).toBeNull();
  });

  it('sees a rotation that commits while it waits for the token: reuse after the grace window revokes', async () => {
    const refresh = refresher();
    const { session } = await signUp(server.url);
    const sessionId = sessionIdOf(session!);
    // Another refresh, long ago as far as the token is concerned, holds the token row.
    const answer = await refreshWhileCommitting(
      () => refresh(session!.refresh_token),
      `UPDATE basalt.refresh_tokens SET rotated_at = now() - interval '1 hour' WHERE token_hash = $1`,
      [hashOf(session!.refresh_token)],
    );
    expect(answer.status).toBe(401);
    const { rows } = await server.sql.query<{ revoked_reason: string | null }>(
      'SELECT revoked_reason FROM basalt.sessions WHERE id = $1',
      [sessionId],
    );
    expect(rows[0]!.revoked_reason).toBe('refresh_token_reuse');
  });
});

describe('the refresh rate limit', () => {
  it('counts failures and successes alike, and a 429 leaves the token unspent', async () => {
    const refresh = refresher();
    const { session } = await signUp(server.url);
    expect((await refresh('not-a-real-token')).status).toBe(401);
    const first = await refresh(session!.refresh_token);
    expect(first.status).toBe(200);
    const second = await refresh((first.body as AuthBody).session!.refresh_token);
    expect(second.status).toBe(200);
    const token = (second.body as AuthBody).session!.refresh_token;
    const limited = await refresh(token);
    expect(limited.status).toBe(429);
    expect(errorCode(limited.body)).toBe('RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(await rotatedAt(token)).toBeNull();
    // Another address has its own budget, and the token still works there.
    expect((await refresher()(token)).status).toBe(200);
  });
});
