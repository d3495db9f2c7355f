import { createPrivateKey } from 'node:crypto';
import { SignJWT, importJWK, type JWK } from 'jose';
import pg from 'pg';
import { Database } from '../server/internal/db.js';
import { buildAuthModule } from '../server/modules/auth/module.js';
import { AuthRepository } from '../server/modules/auth/repository.js';
import { SigningKeys } from '../server/modules/auth/tokens.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, errorCode, request, silentLogger, startTestApp, useTestApp, waitFor } from './helpers.js';
import {
  twoSessions,
  STRONG_PASSWORD,
  decodeJwt,
  signIn,
  signUp,
  uniqueEmail,
  type AuthBody,
  type SessionBody,
  type UserBody,
} from './auth-helpers.js';

const server = useTestApp();

describe('sign-up and sign-in', () => {
  it('signs up, returns user and session, and never a password hash', async () => {
    const email = uniqueEmail('Alice');
    const response = await request(server.url, 'POST', '/v1/auth/signup', {
      body: {
        email: `  ${email.replace('example.com', 'EXAMPLE.com')} `,
        password: STRONG_PASSWORD,
        data: { name: 'A' },
      },
    });
    expect(response.status).toBe(201);
    const body = response.body as AuthBody;
    expect(body.user.email).toBe(email);
    expect(body.user.user_metadata).toEqual({ name: 'A' });
    expect(body.user.is_anonymous).toBe(false);
    expect(body.session?.token_type).toBe('bearer');
    expect(body.session?.expires_in).toBe(900);
    expect(response.text).not.toMatch(/argon2/);
    const { rows } = await server.sql.query<{ password_hash: string }>(
      'SELECT password_hash FROM basalt.user_secrets WHERE user_id = $1',
      [body.user.id],
    );
    expect(rows[0]?.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/);
  });

  it('keeps password hashes out of the change log', async () => {
    const { user } = await signUp(server.url);
    const { rows } = await server.sql.query<{ new_row: Record<string, unknown> }>(
      `SELECT new_row FROM basalt.changes WHERE table_name = 'users' AND row_id = $1`,
      [user.id],
    );
    expect(rows.length).toBeGreaterThan(0);
    expect(JSON.stringify(rows)).not.toContain('argon2');
    expect(rows[0]?.new_row.email).toBe(user.email);
  });

  it('rejects a taken email with 409, whatever its case', async () => {
    const email = uniqueEmail();
    await signUp(server.url, email);
    const again = await request(server.url, 'POST', '/v1/auth/signup', {
      body: { email: email.toUpperCase().replace('EXAMPLE.COM', 'example.com'), password: STRONG_PASSWORD },
    });
    expect(again.status).toBe(409);
    expect(errorCode(again.body)).toBe('ALREADY_EXISTS');
  });

  it('rejects short, long and common passwords with WEAK_PASSWORD', async () => {
    for (const [password, reason] of [
      ['short', 'length'],
      ['x'.repeat(257), 'length'],
      ['password', 'common'],
      ['Password1', 'common'],
      ['iloveyou', 'common'],
      ['1q2w3e4r5t', 'common'],
    ] as const) {
      const response = await request(server.url, 'POST', '/v1/auth/signup', {
        body: { email: uniqueEmail(), password },
      });
      expect(response.status, password).toBe(400);
      expect(errorCode(response.body)).toBe('WEAK_PASSWORD');
      expect((response.body as { error: { details: { reason: string } } }).error.details.reason).toBe(reason);
    }
    const ok = await request(server.url, 'POST', '/v1/auth/signup', {
      body: { email: uniqueEmail(), password: '🦊🦊🦊🦊🦊🦊🦊🦊' },
    });
    expect(ok.status).toBe(201);
  });

  it('answers unknown email and wrong password identically, in similar time', async () => {
    const email = uniqueEmail();
    await signUp(server.url, email);
    const time = async (body: unknown) => {
      const started = performance.now();
      const response = await request(server.url, 'POST', '/v1/auth/signin', { body });
      return { response, ms: performance.now() - started };
    };
    const wrong = await time({ email, password: 'wrong password here' });
    const unknown = await time({ email: uniqueEmail(), password: 'wrong password here' });
    expect(wrong.response.status).toBe(400);
    expect(unknown.response.status).toBe(400);
    expect(wrong.response.body).toEqual(unknown.response.body);
    expect(errorCode(wrong.response.body)).toBe('INVALID_CREDENTIALS');
    // Both run one argon2 verification; an unknown email must not answer in a fraction of the time.
    // Seven interleaved samples each: the median of three swung by 2× on a loaded machine.
    const wrongs: number[] = [];
    const unknowns: number[] = [];
    for (let i = 0; i < 7; i++) {
      wrongs.push((await time({ email, password: `wrong password ${i}` })).ms);
      unknowns.push((await time({ email: uniqueEmail(), password: `wrong password ${i}` })).ms);
    }
    const median = (values: number[]) => values.sort((a, b) => a - b)[3]!;
    expect(median(unknowns)).toBeGreaterThan(median(wrongs) * 0.5);
  });

  it('signs in and issues a well-formed access token', async () => {
    const email = uniqueEmail();
    const { user } = await signUp(server.url, email);
    const { session } = await signIn(server.url, email);
    const { header, payload } = decodeJwt(session!.access_token);
    expect(header).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
    expect(typeof header.kid).toBe('string');
    expect(payload).toMatchObject({
      sub: user.id,
      role: 'authenticated',
      email,
      aud: 'basalt',
      iss: `${server.config.publicUrl}/v1/auth`,
      app_metadata: {},
    });
    expect(typeof payload.session_id).toBe('string');
    expect((payload.exp as number) - (payload.iat as number)).toBe(900);
    const me = await request(server.url, 'GET', '/v1/auth/user', { token: session!.access_token });
    expect(me.status).toBe(200);
    expect((me.body as UserBody).id).toBe(user.id);
  });

  it('publishes the signing key in the JWKS', async () => {
    const { session } = await signUp(server.url);
    const jwks = await request(server.url, 'GET', '/.well-known/jwks.json');
    expect(jwks.status).toBe(200);
    const keys = (jwks.body as { keys: JWK[] }).keys;
    const kid = decodeJwt(session!.access_token).header.kid;
    const key = keys.find((k) => k.kid === kid);
    expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    expect(key).not.toHaveProperty('d');
  });

  it('rehashes a password at sign-in when the parameters were raised', async () => {
    const email = uniqueEmail();
    const { user } = await signUp(server.url, email);
    const stronger = await startTestApp(server.database, { BASALT_AUTH_ARGON2_TIME_COST: '3' });
    try {
      await signIn(stronger.url, email);
      const { rows } = await server.sql.query<{ password_hash: string }>(
        'SELECT password_hash FROM basalt.user_secrets WHERE user_id = $1',
        [user.id],
      );
      expect(rows[0]?.password_hash).toMatch(/\$m=19456,p=1,t=3\$/);
      await signIn(server.url, email);
    } finally {
      await stronger.close();
    }
  });
});

describe('access-token verification', () => {
  let session: SessionBody;
  let privateJwk: JWK;
  let kid: string;

  beforeAll(async () => {
    session = (await signUp(server.url)).session!;
    kid = decodeJwt(session.access_token).header.kid as string;
    const { rows } = await server.sql.query<{ private_key: string }>(
      'SELECT private_key FROM basalt.signing_keys WHERE kid = $1',
      [kid],
    );
    privateJwk = JSON.parse(rows[0]!.private_key.replace(/^plain:/, '')) as JWK;
  });

  async function forge(
    changes: { header?: Record<string, unknown>; claims?: Record<string, unknown> } = {},
  ): Promise<string> {
    const { payload } = decodeJwt(session.access_token);
    const key = await importJWK(privateJwk, 'ES256');
    return new SignJWT({ ...payload, ...changes.claims })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid, ...changes.header } as { alg: string })
      .sign(key);
  }

  async function status(token: string): Promise<{ status: number; code: string | undefined }> {
    const response = await request(server.url, 'GET', '/v1/auth/user', { token });
    return { status: response.status, code: errorCode(response.body) };
  }

  it('accepts a token forged with the real key and unchanged claims (control)', async () => {
    expect((await status(await forge())).status).toBe(200);
  });

  it('rejects alg none', async () => {
    const { payload } = decodeJwt(session.access_token);
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid })).toString('base64url');
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    expect(await status(`${header}.${body}.`)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
  });

  it('rejects HS256 signed with the public key', async () => {
    const { payload } = decodeJwt(session.access_token);
    const publicJwk = { ...privateJwk };
    delete publicJwk.d;
    const pem = createPrivateKey({ key: privateJwk as never, format: 'jwk' })
      .export({ format: 'pem', type: 'pkcs8' })
      .toString();
    for (const secret of [JSON.stringify(publicJwk), pem]) {
      const token = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid })
        .sign(new TextEncoder().encode(secret));
      expect(await status(token)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    }
  });

  it('rejects a wrong audience, a wrong issuer, a wrong type, an unknown kid and an expired token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases = [
      await forge({ claims: { aud: 'someone-else' } }),
      await forge({ claims: { iss: 'https://evil.example.com/v1/auth' } }),
      await forge({ header: { typ: 'JWT' } }),
      await forge({ header: { kid: 'no-such-key' } }),
      await forge({ claims: { iat: now - 3600, exp: now - 60 } }),
      await forge({ claims: { role: 'service' } }),
      session.access_token.slice(0, -4) + 'AAAA',
    ];
    for (const token of cases) expect(await status(token)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
  });

  it('rotates keys and keeps verifying tokens of the old key', async () => {
    const email = uniqueEmail();
    await signUp(server.url, email);
    const before = await signIn(server.url, email);
    const rotated = await request(server.url, 'POST', '/v1/admin/auth/keys/rotate', { token: server.serviceKey });
    expect(rotated.status).toBe(200);
    const newKid = (rotated.body as { kid: string }).kid;
    const after = await signIn(server.url, email);
    expect(decodeJwt(after.session!.access_token).header.kid).toBe(newKid);
    expect(decodeJwt(before.session!.access_token).header.kid).not.toBe(newKid);
    expect((await status(before.session!.access_token)).status).toBe(200);
    expect((await status(after.session!.access_token)).status).toBe(200);
    const kids = ((await request(server.url, 'GET', '/.well-known/jwks.json')).body as { keys: JWK[] }).keys.map(
      (key) => key.kid,
    );
    expect(kids).toEqual(expect.arrayContaining([newKid, decodeJwt(before.session!.access_token).header.kid]));
  });
});

describe('refresh tokens', () => {
  async function refresh(token: string) {
    return request(server.url, 'POST', '/v1/auth/refresh', { body: { refresh_token: token } });
  }

  it('rotates the refresh token and stores only its hash', async () => {
    const { session } = await signUp(server.url);
    expect(Buffer.from(session!.refresh_token, 'base64url').length).toBeGreaterThanOrEqual(16);
    const stored = await server.sql.query('SELECT 1 FROM basalt.refresh_tokens WHERE token_hash::text LIKE $1', [
      `%${session!.refresh_token}%`,
    ]);
    expect(stored.rowCount).toBe(0);
    const next = await refresh(session!.refresh_token);
    expect(next.status).toBe(200);
    const body = next.body as AuthBody;
    expect(body.session!.refresh_token).not.toBe(session!.refresh_token);
    expect(decodeJwt(body.session!.access_token).payload.session_id).toBe(
      decodeJwt(session!.access_token).payload.session_id,
    );
  });

  it('lets two tabs refresh with the same token at once, within the grace window', async () => {
    const { session } = await signUp(server.url);
    const [a, b] = await Promise.all([refresh(session!.refresh_token), refresh(session!.refresh_token)]);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    // Both new tokens work.
    expect((await refresh((a.body as AuthBody).session!.refresh_token)).status).toBe(200);
    expect((await refresh((b.body as AuthBody).session!.refresh_token)).status).toBe(200);
  });

  it('revokes the whole session when a rotated-out token is reused after the grace window', async () => {
    const quick = await startTestApp(server.database, {
      BASALT_AUTH_REFRESH_REUSE_GRACE: '1',
      BASALT_AUTH_REVOCATION_POLL_MS: '200',
    });
    try {
      const { session } = await signUp(quick.url);
      const first = await request(quick.url, 'POST', '/v1/auth/refresh', {
        body: { refresh_token: session!.refresh_token },
      });
      const fresh = (first.body as AuthBody).session!;
      await new Promise((resolve) => setTimeout(resolve, 1600));
      const replay = await request(quick.url, 'POST', '/v1/auth/refresh', {
        body: { refresh_token: session!.refresh_token },
      });
      expect(replay.status).toBe(401);
      expect(errorCode(replay.body)).toBe('UNAUTHENTICATED');
      // The legitimate holder's newer token and access token die with the session.
      const legit = await request(quick.url, 'POST', '/v1/auth/refresh', {
        body: { refresh_token: fresh.refresh_token },
      });
      expect(legit.status).toBe(401);
      const me = await request(quick.url, 'GET', '/v1/auth/user', { token: fresh.access_token });
      expect(me.status).toBe(401);
    } finally {
      await quick.close();
    }
  });

  it('rejects an unknown refresh token', async () => {
    const response = await refresh('not-a-real-token');
    expect(response.status).toBe(401);
    expect(errorCode(response.body)).toBe('UNAUTHENTICATED');
  });

  it('carries app_metadata set by an admin into the next token', async () => {
    const { user, session } = await signUp(server.url);
    const patched = await request(server.url, 'PATCH', `/v1/admin/users/${user.id}`, {
      token: server.serviceKey,
      body: { app_metadata: { role: 'admin', plan: 'pro' } },
    });
    expect(patched.status).toBe(200);
    const next = (await refresh(session!.refresh_token)).body as AuthBody;
    expect(decodeJwt(next.session!.access_token).payload.app_metadata).toEqual({ role: 'admin', plan: 'pro' });
    expect(next.user.app_metadata).toEqual({ role: 'admin', plan: 'pro' });
  });

  it('ends a session after its inactivity timeout and its absolute lifetime', async () => {
    const { session } = await signUp(server.url);
    const sessionId = decodeJwt(session!.access_token).payload.session_id as string;
    await server.sql.query(`UPDATE basalt.sessions SET refreshed_at = now() - interval '8 days' WHERE id = $1`, [
      sessionId,
    ]);
    expect((await refresh(session!.refresh_token)).status).toBe(401);
    const other = (await signUp(server.url)).session!;
    const otherId = decodeJwt(other.access_token).payload.session_id as string;
    await server.sql.query(`UPDATE basalt.sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      otherId,
    ]);
    expect((await refresh(other.refresh_token)).status).toBe(401);
  });
});

describe('sign-out and sessions', () => {
  /** Two sessions of one user; the first signs out with the scope given. */
  async function twoSessionsThenSignOut(scope: 'local' | 'global') {
    const sessions = await twoSessions(server.url);
    const out = await request(server.url, 'POST', '/v1/auth/signout', {
      token: sessions.a.access_token,
      body: { scope },
    });
    expect(out.status).toBe(204);
    return sessions;
  }

  it('signs out locally: the refresh token dies and the access token gets 401 within seconds', async () => {
    const { a, b } = await twoSessionsThenSignOut('local');
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: a.access_token })).status).toBe(401);
    expect(
      (await request(server.url, 'POST', '/v1/auth/refresh', { body: { refresh_token: a.refresh_token } })).status,
    ).toBe(401);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: b.access_token })).status).toBe(200);
  });

  it('signs out globally', async () => {
    const { b } = await twoSessionsThenSignOut('global');
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: b.access_token })).status).toBe(401);
  });

  it('lists sessions and revokes one', async () => {
    const { a, b } = await twoSessions(server.url);
    const list = await request(server.url, 'GET', '/v1/auth/sessions', { token: a.access_token });
    expect(list.status).toBe(200);
    const sessions = (list.body as { sessions: Array<{ id: string; current: boolean }> }).sessions;
    expect(sessions.length).toBe(3);
    expect(sessions.filter((s) => s.current)).toHaveLength(1);
    const bId = decodeJwt(b.access_token).payload.session_id as string;
    const del = await request(server.url, 'DELETE', `/v1/auth/sessions/${bId}`, { token: a.access_token });
    expect(del.status).toBe(204);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: b.access_token })).status).toBe(401);
    // Another user's session is not found, not revoked.
    const stranger = (await signUp(server.url)).session!;
    const aId = decodeJwt(a.access_token).payload.session_id as string;
    const foreign = await request(server.url, 'DELETE', `/v1/auth/sessions/${aId}`, { token: stranger.access_token });
    expect(foreign.status).toBe(404);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: a.access_token })).status).toBe(200);
  });

  it('requires a user token for user endpoints', async () => {
    for (const [method, path] of [
      ['GET', '/v1/auth/user'],
      ['PATCH', '/v1/auth/user'],
      ['GET', '/v1/auth/sessions'],
      ['POST', '/v1/auth/signout'],
    ] as const) {
      const response = await request(server.url, method, path, method === 'PATCH' ? { body: {} } : {});
      expect(response.status, `${method} ${path}`).toBe(401);
      expect(errorCode(response.body)).toBe('UNAUTHENTICATED');
    }
  });
});

describe('the user', () => {
  it('updates metadata and the password; a new password revokes the other sessions', async () => {
    const { user, a, b } = await twoSessions(server.url);
    const patched = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: a.access_token,
      body: { data: { theme: 'dark' }, password: 'a brand new passphrase' },
    });
    expect(patched.status).toBe(200);
    expect((patched.body as UserBody).user_metadata).toEqual({ theme: 'dark' });
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: a.access_token })).status).toBe(200);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: b.access_token })).status).toBe(401);
    await signIn(server.url, user.email, 'a brand new passphrase');
    const old = await request(server.url, 'POST', '/v1/auth/signin', {
      body: { email: user.email, password: STRONG_PASSWORD },
    });
    expect(old.status).toBe(400);
  });

  it('signs in anonymously and upgrades to email and password, keeping the id', async () => {
    const anon = await request(server.url, 'POST', '/v1/auth/anonymous');
    expect(anon.status).toBe(201);
    const { user, session } = anon.body as AuthBody;
    expect(user.is_anonymous).toBe(true);
    expect(user.email).toBeNull();
    expect(decodeJwt(session!.access_token).payload.role).toBe('anon');
    const alone = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: session!.access_token,
      body: { password: STRONG_PASSWORD },
    });
    expect(alone.status).toBe(400);
    const email = uniqueEmail('upgraded');
    const upgraded = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: session!.access_token,
      body: { email, password: STRONG_PASSWORD },
    });
    expect(upgraded.status).toBe(200);
    expect(upgraded.body).toMatchObject({ id: user.id, email, is_anonymous: false });
    const refreshed = await request(server.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: session!.refresh_token },
    });
    expect(decodeJwt((refreshed.body as AuthBody).session!.access_token).payload.role).toBe('authenticated');
    const signedIn = await signIn(server.url, email);
    expect(signedIn.user.id).toBe(user.id);
  });

  it('accepts an anonymous sign-in with a JSON body too', async () => {
    const anon = await request(server.url, 'POST', '/v1/auth/anonymous', { body: { data: { a: 1 } } });
    expect(anon.status).toBe(201);
    expect((anon.body as AuthBody).user.user_metadata).toEqual({ a: 1 });
  });
});

describe('admin users API', () => {
  it('creates, finds, pages, updates, bans and deletes users', async () => {
    const key = server.serviceKey;
    const email = uniqueEmail('managed');
    const created = await request(server.url, 'POST', '/v1/admin/users', {
      token: key,
      body: {
        email,
        password: STRONG_PASSWORD,
        email_confirm: true,
        app_metadata: { tier: 'gold' },
        user_metadata: { n: 1 },
      },
    });
    expect(created.status).toBe(201);
    const user = created.body as UserBody & { banned_until: string | null };
    expect(user.email_confirmed_at).not.toBeNull();
    expect(user.app_metadata).toEqual({ tier: 'gold' });

    const found = await request(
      server.url,
      'GET',
      `/v1/admin/users?email=${encodeURIComponent('managed-')}&per_page=1`,
      {
        token: key,
      },
    );
    expect(found.status).toBe(200);
    const page = found.body as { users: UserBody[]; total: number; page: number; per_page: number };
    expect(page.users).toHaveLength(1);
    expect(page.total).toBeGreaterThanOrEqual(1);
    const all = await request(server.url, 'GET', '/v1/admin/users?page=1&per_page=1000', { token: key });
    expect((all.body as { total: number }).total).toBeGreaterThan(5);
    const pctSearch = await request(server.url, 'GET', '/v1/admin/users?email=%25', { token: key });
    expect((pctSearch.body as { total: number }).total).toBe(0);

    expect((await request(server.url, 'GET', `/v1/admin/users/${user.id}`, { token: key })).status).toBe(200);

    const session = (await signIn(server.url, email)).session!;
    expect(decodeJwt(session.access_token).payload.app_metadata).toEqual({ tier: 'gold' });
    const banned = await request(server.url, 'PATCH', `/v1/admin/users/${user.id}`, {
      token: key,
      body: { banned_until: new Date(Date.now() + 3_600_000).toISOString() },
    });
    expect(banned.status).toBe(200);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: session.access_token })).status).toBe(401);
    const again = await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: STRONG_PASSWORD } });
    expect(again.status).toBe(403);
    const refresh = await request(server.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: session.refresh_token },
    });
    expect(refresh.status).toBe(401);
    await request(server.url, 'PATCH', `/v1/admin/users/${user.id}`, { token: key, body: { banned_until: null } });
    const back = (await signIn(server.url, email)).session!;

    const deleted = await request(server.url, 'DELETE', `/v1/admin/users/${user.id}`, { token: key });
    expect(deleted.status).toBe(204);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: back.access_token })).status).toBe(401);
    expect((await request(server.url, 'GET', `/v1/admin/users/${user.id}`, { token: key })).status).toBe(404);
    expect((await request(server.url, 'DELETE', `/v1/admin/users/${user.id}`, { token: key })).status).toBe(404);
    const { rows } = await server.sql.query(
      `SELECT op FROM basalt.changes WHERE table_name = 'users' AND row_id = $1`,
      [user.id],
    );
    expect(rows.map((row: { op: string }) => row.op)).toContain('delete');
  });
});

describe('the OpenAPI document', () => {
  it('describes the auth and admin-users endpoints', async () => {
    const spec = await request(server.url, 'GET', '/docs/json');
    expect(spec.status).toBe(200);
    const paths = Object.keys((spec.body as { paths: Record<string, unknown> }).paths);
    expect(paths).toEqual(
      expect.arrayContaining([
        '/v1/auth/signup',
        '/v1/auth/signin',
        '/v1/auth/refresh',
        '/v1/auth/verify',
        '/v1/auth/sessions/{id}',
        '/v1/admin/users',
        '/v1/admin/users/{id}',
        '/.well-known/jwks.json',
      ]),
    );
  });
});

describe('bad input never gets a 500', () => {
  const huge = 'x'.repeat(1024 * 1024);
  const cases: Array<[string, string, unknown]> = [
    ['POST', '/v1/auth/signup', {}],
    ['POST', '/v1/auth/signup', { email: 'a@example.com' }],
    ['POST', '/v1/auth/signup', { email: 42, password: STRONG_PASSWORD }],
    ['POST', '/v1/auth/signup', { email: 'not an email', password: STRONG_PASSWORD }],
    ['POST', '/v1/auth/signup', { email: 'a@b', password: STRONG_PASSWORD }],
    ['POST', '/v1/auth/signup', { email: huge, password: STRONG_PASSWORD }],
    ['POST', '/v1/auth/signup', { email: 'a@example.com', password: huge }],
    ['POST', '/v1/auth/signup', { email: 'a@example.com', password: STRONG_PASSWORD, data: 'x' }],
    [
      'POST',
      '/v1/auth/signup',
      { email: 'a@example.com', password: STRONG_PASSWORD, data: { big: 'y'.repeat(20_000) } },
    ],
    ['POST', '/v1/auth/signup', { email: 'a@example.com', password: STRONG_PASSWORD, extra: 1 }],
    ['POST', '/v1/auth/signup', [1, 2]],
    ['POST', '/v1/auth/signin', {}],
    ['POST', '/v1/auth/signin', { email: ['a'], password: 'x' }],
    ['POST', '/v1/auth/signin', { email: huge, password: 'x' }],
    ['POST', '/v1/auth/refresh', {}],
    ['POST', '/v1/auth/refresh', { refresh_token: 5 }],
    ['POST', '/v1/auth/refresh', { refresh_token: huge }],
    ['POST', '/v1/auth/recover', {}],
    ['POST', '/v1/auth/recover', { email: 'nope' }],
    ['POST', '/v1/auth/recover', { email: 'a@example.com', redirect_to: 'https://evil.example.net/' }],
    ['POST', '/v1/auth/magiclink', { email: null }],
    ['POST', '/v1/auth/verify', {}],
    ['POST', '/v1/auth/verify', { type: 'bogus', token: 'x' }],
    ['POST', '/v1/auth/verify', { type: 'recovery', token: 'x' }],
    ['POST', '/v1/auth/verify', { type: 'signup', token: huge }],
    ['POST', '/v1/auth/anonymous', { data: 7 }],
    ['GET', '/v1/auth/verify?type=signup', undefined],
  ];
  it.each(cases)('%s %s %#', async (method, path, body) => {
    const response = await request(server.url, method, path, body === undefined ? {} : { body });
    expect(response.status).toBe(400);
    expect(['INVALID_REQUEST', 'WEAK_PASSWORD']).toContain(errorCode(response.body));
  });

  it('answers bad input to user and admin endpoints with 400 too', async () => {
    const { session } = await signUp(server.url);
    const token = session!.access_token;
    const key = server.serviceKey;
    const checks = [
      await request(server.url, 'PATCH', '/v1/auth/user', { token, body: { email: 'bad' } }),
      await request(server.url, 'PATCH', '/v1/auth/user', { token, body: { password: 'short' } }),
      await request(server.url, 'PATCH', '/v1/auth/user', { token, body: { data: [1] } }),
      await request(server.url, 'PATCH', '/v1/auth/user', { token, body: { email: huge } }),
      await request(server.url, 'DELETE', '/v1/auth/sessions/not-a-uuid', { token }),
      await request(server.url, 'POST', '/v1/auth/signout', { token, body: { scope: 'everything' } }),
      await request(server.url, 'GET', '/v1/admin/users?page=0', { token: key }),
      await request(server.url, 'GET', '/v1/admin/users?per_page=abc', { token: key }),
      await request(server.url, 'GET', '/v1/admin/users/123', { token: key }),
      await request(server.url, 'POST', '/v1/admin/users', { token: key, body: {} }),
      await request(server.url, 'POST', '/v1/admin/users', { token: key, body: { email: 'bad' } }),
      await request(server.url, 'POST', '/v1/admin/users', {
        token: key,
        body: { email: uniqueEmail(), password: 'password' },
      }),
      await request(server.url, 'POST', '/v1/admin/users', {
        token: key,
        body: { email: uniqueEmail(), banned_until: 'not a date' },
      }),
      await request(server.url, 'PATCH', `/v1/admin/users/${crypto.randomUUID()}`, {
        token: key,
        body: { app_metadata: 5 },
      }),
    ];
    for (const response of checks) {
      expect(response.status, response.text).toBe(400);
      expect(['INVALID_REQUEST', 'WEAK_PASSWORD']).toContain(errorCode(response.body));
    }
    const missing = await request(server.url, 'PATCH', `/v1/admin/users/${crypto.randomUUID()}`, {
      token: key,
      body: { app_metadata: {} },
    });
    expect(missing.status).toBe(404);
  });

  it('answers malformed JSON with 400', async () => {
    const response = await request(server.url, 'POST', '/v1/auth/signin', {
      rawBody: '{"email":',
      headers: { 'content-type': 'application/json' },
    });
    expect(response.status).toBe(400);
  });
});

describe('signInWithIdentity (the entry point of OAuth)', () => {
  const context = { ip: '127.0.0.1', userAgent: 'test' };
  let auth: ReturnType<typeof buildAuthModule>;

  beforeAll(async () => {
    auth = buildAuthModule(server.app.platform);
    await auth.start();
  });
  afterAll(() => auth.stop());

  it('creates a user, then finds the same user by provider and subject', async () => {
    const email = uniqueEmail('oauth');
    const first = await auth.service.signInWithIdentity(
      { provider: 'idp', subject: `sub-${email}`, email, emailVerified: true, userMetadata: { name: 'O' } },
      context,
    );
    expect(first.user.email).toBe(email);
    expect(first.user.email_confirmed_at).not.toBeNull();
    expect(first.session).not.toBeNull();
    const again = await auth.service.signInWithIdentity(
      { provider: 'idp', subject: `sub-${email}`, email: null, emailVerified: false },
      context,
    );
    expect(again.user.id).toBe(first.user.id);
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: again.session!.access_token })).status).toBe(
      200,
    );
  });

  it('links to an existing user only when the provider verified the email', async () => {
    const email = uniqueEmail('link');
    const created = await request(server.url, 'POST', '/v1/admin/users', {
      token: server.serviceKey,
      body: { email, password: STRONG_PASSWORD, email_confirm: true },
    });
    const id = (created.body as UserBody).id;
    await expect(
      auth.service.signInWithIdentity({ provider: 'idp', subject: `u-${email}`, email, emailVerified: false }, context),
    ).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    const linked = await auth.service.signInWithIdentity(
      { provider: 'idp', subject: `v-${email}`, email, emailVerified: true },
      context,
    );
    expect(linked.user.id).toBe(id);
    // A confirmed account keeps its password.
    await signIn(server.url, email);
  });

  it('takes an unconfirmed account over for the verified owner: its password and sessions go', async () => {
    const email = uniqueEmail('squatted');
    const squatter = await signUp(server.url, email);
    const owner = await auth.service.signInWithIdentity(
      { provider: 'idp', subject: `owner-${email}`, email, emailVerified: true },
      context,
    );
    expect(owner.user.id).toBe(squatter.user.id);
    const old = await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: STRONG_PASSWORD } });
    expect(errorCode(old.body)).toBe('INVALID_CREDENTIALS');
    // Revoked through another module instance: this server learns it from its next poll.
    await waitFor(
      'the token to be refused',
      async () =>
        (await request(server.url, 'GET', '/v1/auth/user', { token: squatter.session!.access_token })).status === 401,
      5000,
    );
  });

  it('refuses a banned user', async () => {
    const email = uniqueEmail('banned-oauth');
    const first = await auth.service.signInWithIdentity(
      { provider: 'idp', subject: `b-${email}`, email, emailVerified: true },
      context,
    );
    await request(server.url, 'PATCH', `/v1/admin/users/${first.user.id}`, {
      token: server.serviceKey,
      body: { banned_until: new Date(Date.now() + 60_000).toISOString() },
    });
    await expect(
      auth.service.signInWithIdentity({ provider: 'idp', subject: `b-${email}`, email, emailVerified: true }, context),
    ).rejects.toMatchObject({ code: 'FORBIDDEN' });
  });
});

describe('signing keys at rest', () => {
  it('encrypts private keys with BASALT_AUTH_KEY_ENCRYPTION_KEY and refuses to start with another key', async () => {
    const fresh = await createTestDatabase();
    const key = 'k'.repeat(40);
    const encrypted = await startTestApp(fresh, { BASALT_AUTH_KEY_ENCRYPTION_KEY: key });
    try {
      const { session } = await signUp(encrypted.url);
      expect((await request(encrypted.url, 'GET', '/v1/auth/user', { token: session!.access_token })).status).toBe(200);
      const client = new pg.Client({ connectionString: fresh.url });
      await client.connect();
      const { rows } = await client.query<{ private_key: string }>('SELECT private_key FROM basalt.signing_keys');
      await client.end();
      expect(rows).toHaveLength(1);
      expect(rows[0]!.private_key).toMatch(/^gcm:/);
      expect(rows[0]!.private_key).not.toContain('"d"');
      const other = new Database({ url: fresh.url, max: 1 });
      try {
        const keys = new SigningKeys(new AuthRepository(other), {
          accessTokenTtlSeconds: 900,
          encryptionKey: 'x'.repeat(40),
          log: silentLogger,
        });
        await expect(keys.load()).rejects.toThrow();
      } finally {
        await other.close();
      }
    } finally {
      await encrypted.close();
      await fresh.drop();
    }
  });
});
