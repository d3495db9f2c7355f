import { describe, expect, it } from 'vitest';
import { errorCode, request, startTestApp, type TestApp, useTestApp, waitFor } from './helpers.js';
import { STRONG_PASSWORD, decodeJwt, requestFrom, signIn, uniqueEmail, type AuthBody } from './auth-helpers.js';

// Two instances on one database, as behind a load balancer. Limits are small so that
// tests reach them; each test uses its own loopback address as its client IP.
const env = {
  BASALT_AUTH_REVOCATION_POLL_MS: '1000',
  BASALT_AUTH_RATE_SIGNIN_FAILED_ACCOUNT_IP: '3',
  BASALT_AUTH_RATE_SIGNIN_FAILED_ACCOUNT: '6',
  BASALT_AUTH_RATE_SIGNUP_IP: '3',
  BASALT_AUTH_RATE_EMAIL_IP: '2',
  BASALT_AUTH_RATE_VERIFY_IP: '2',
  BASALT_AUTH_RATE_ANONYMOUS_IP: '2',
  BASALT_AUTH_RATE_REFRESH_IP: '2',
  BASALT_AUTH_RATE_SIGNIN_IP: '1000',
  // A long window, so that no test straddles a window boundary (windows are fixed).
  BASALT_AUTH_RATE_WINDOW: '86400',
};

const a = useTestApp({ env });
const b = useTestApp({ env, sharing: a });

/** A user made by the admin API (sign-up itself is limited to a few per IP here) and signed in. */
async function createConfirmedUser(server: TestApp, email = uniqueEmail()): Promise<AuthBody> {
  const created = await request(server.url, 'POST', '/v1/admin/users', {
    token: server.serviceKey,
    body: { email, password: STRONG_PASSWORD, email_confirm: true },
  });
  expect(created.status).toBe(201);
  return signIn(server.url, email);
}

async function rateLimitKeys(): Promise<string[]> {
  const { rows } = await a.sql.query<{ key: string }>('SELECT key FROM basalt.rate_limits');
  return rows.map((row) => row.key);
}

async function status(server: TestApp, token: string): Promise<number> {
  return (await request(server.url, 'GET', '/v1/auth/user', { token })).status;
}

describe('revocation across instances', () => {
  it('rejects a signed-out session on the other instance within 5 s', async () => {
    const { session } = await createConfirmedUser(a);
    expect(await status(b, session!.access_token)).toBe(200);
    await request(a.url, 'POST', '/v1/auth/signout', { token: session!.access_token });
    const started = Date.now();
    await waitFor('the token to be refused', async () => (await status(b, session!.access_token)) === 401, 5000, 50);
    const took = Date.now() - started;
    expect(took).toBeLessThan(5000);
  });

  it('learns of a revocation at once through LISTEN/NOTIFY, long before its next poll', async () => {
    const slow = await startTestApp(a.database, { ...env, BASALT_AUTH_REVOCATION_POLL_MS: '4000' });
    try {
      // Let the slow instance's first poll and LISTEN settle.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const { session } = await createConfirmedUser(a);
      expect(await status(slow, session!.access_token)).toBe(200);
      await request(a.url, 'POST', '/v1/auth/signout', { token: session!.access_token });
      const started = Date.now();
      await waitFor(
        'the token to be refused',
        async () => (await status(slow, session!.access_token)) === 401,
        5000,
        25,
      );
      const took = Date.now() - started;
      expect(took).toBeLessThan(1500);
    } finally {
      await slow.close();
    }
  });

  it('rejects a banned user on the other instance within 5 s', async () => {
    const { user, session } = await createConfirmedUser(b);
    expect(await status(a, session!.access_token)).toBe(200);
    const ban = await request(b.url, 'PATCH', `/v1/admin/users/${user.id}`, {
      token: b.serviceKey,
      body: { banned_until: new Date(Date.now() + 86_400_000).toISOString() },
    });
    expect(ban.status).toBe(200);
    await waitFor('the token to be refused', async () => (await status(a, session!.access_token)) === 401, 5000, 50);
  });

  it('rejects a deleted user on the other instance within 5 s', async () => {
    const { user, session } = await createConfirmedUser(a);
    await request(a.url, 'DELETE', `/v1/admin/users/${user.id}`, { token: a.serviceKey });
    await waitFor('the token to be refused', async () => (await status(b, session!.access_token)) === 401, 5000, 50);
  });

  it('refreshes on one instance a token issued by the other, and detects reuse across them', async () => {
    const { session } = await createConfirmedUser(a);
    const next = await request(b.url, 'POST', '/v1/auth/refresh', { body: { refresh_token: session!.refresh_token } });
    expect(next.status).toBe(200);
    expect(await status(a, (next.body as AuthBody).session!.access_token)).toBe(200);
  });

  it('verifies on one instance tokens signed with a key rotated in on the other', async () => {
    const email = uniqueEmail();
    await createConfirmedUser(a, email);
    const rotated = await request(a.url, 'POST', '/v1/admin/auth/keys/rotate', { token: a.serviceKey });
    const kid = (rotated.body as { kid: string }).kid;
    const fresh = await signIn(a.url, email);
    expect(decodeJwt(fresh.session!.access_token).header.kid).toBe(kid);
    expect(await status(b, fresh.session!.access_token)).toBe(200);
    const jwks = (await request(b.url, 'GET', '/.well-known/jwks.json')).body as { keys: Array<{ kid: string }> };
    expect(jwks.keys.map((key) => key.kid)).toContain(kid);
  });
});

describe('rate limits shared by the instances', () => {
  it('limits failed sign-ins per account and IP, across instances, without locking out other IPs', async () => {
    const email = uniqueEmail();
    await createConfirmedUser(a, email);
    const ip = '127.0.0.11';
    const wrong = { email, password: 'not the password at all' };
    expect((await requestFrom(ip, a.url, 'POST', '/v1/auth/signin', wrong)).status).toBe(400);
    expect((await requestFrom(ip, b.url, 'POST', '/v1/auth/signin', wrong)).status).toBe(400);
    expect((await requestFrom(ip, a.url, 'POST', '/v1/auth/signin', wrong)).status).toBe(400);
    const limited = await requestFrom(ip, b.url, 'POST', '/v1/auth/signin', { email, password: STRONG_PASSWORD });
    expect(limited.status).toBe(429);
    expect(errorCode(limited.body)).toBe('RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    // The real user, elsewhere, still gets in.
    const owner = await requestFrom('127.0.0.12', a.url, 'POST', '/v1/auth/signin', {
      email,
      password: STRONG_PASSWORD,
    });
    expect(owner.status).toBe(200);
  });

  it('caps failed sign-ins per account across all IPs at a higher number', async () => {
    const email = uniqueEmail();
    await createConfirmedUser(a, email);
    const wrong = { email, password: 'not the password at all' };
    for (const ip of ['127.0.0.21', '127.0.0.22', '127.0.0.23']) {
      for (let i = 0; i < 2; i++)
        expect((await requestFrom(ip, a.url, 'POST', '/v1/auth/signin', wrong)).status).toBe(400);
    }
    const capped = await requestFrom('127.0.0.24', b.url, 'POST', '/v1/auth/signin', wrong);
    expect(capped.status).toBe(429);
  });

  it('treats unknown accounts like known ones', async () => {
    const email = uniqueEmail('ghost');
    const ip = '127.0.0.31';
    for (let i = 0; i < 3; i++) {
      expect(
        (await requestFrom(ip, a.url, 'POST', '/v1/auth/signin', { email, password: 'whatever it is' })).status,
      ).toBe(400);
    }
    expect(
      (await requestFrom(ip, b.url, 'POST', '/v1/auth/signin', { email, password: 'whatever it is' })).status,
    ).toBe(429);
  });

  it('limits sign-ups, anonymous sign-ins, mails, verifications and refreshes per IP', async () => {
    const signup = (ip: string, server: TestApp) =>
      requestFrom(ip, server.url, 'POST', '/v1/auth/signup', { email: uniqueEmail(), password: STRONG_PASSWORD });
    expect((await signup('127.0.0.41', a)).status).toBe(201);
    expect((await signup('127.0.0.41', b)).status).toBe(201);
    expect((await signup('127.0.0.41', a)).status).toBe(201);
    expect((await signup('127.0.0.41', b)).status).toBe(429);

    const anon = (server: TestApp) => requestFrom('127.0.0.42', server.url, 'POST', '/v1/auth/anonymous');
    expect((await anon(a)).status).toBe(201);
    expect((await anon(b)).status).toBe(201);
    expect((await anon(a)).status).toBe(429);

    const recover = (server: TestApp) =>
      requestFrom('127.0.0.43', server.url, 'POST', '/v1/auth/recover', { email: uniqueEmail() });
    expect((await recover(a)).status).toBe(202);
    expect((await recover(b)).status).toBe(202);
    expect((await recover(a)).status).toBe(429);
    const magic = await requestFrom('127.0.0.43', b.url, 'POST', '/v1/auth/magiclink', { email: uniqueEmail() });
    expect(magic.status).toBe(429);

    const verify = (server: TestApp) =>
      requestFrom('127.0.0.44', server.url, 'POST', '/v1/auth/verify', { type: 'magiclink', token: 'guess' });
    expect((await verify(a)).status).toBe(400);
    expect((await verify(b)).status).toBe(400);
    expect((await verify(a)).status).toBe(429);

    const refresh = (server: TestApp) =>
      requestFrom('127.0.0.45', server.url, 'POST', '/v1/auth/refresh', { refresh_token: 'guess' });
    expect((await refresh(a)).status).toBe(401);
    expect((await refresh(b)).status).toBe(401);
    const limited = await refresh(a);
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBeTruthy();
  });

  it('takes the client IP from X-Forwarded-For only when told to trust the proxy', async () => {
    const proxied = await startTestApp(a.database, { ...env, BASALT_TRUST_PROXY: 'true' });
    try {
      const signup = (server: TestApp, ip: string) =>
        request(server.url, 'POST', '/v1/auth/signup', {
          body: { email: uniqueEmail(), password: STRONG_PASSWORD },
          headers: { 'x-forwarded-for': ip },
        });
      for (let i = 0; i < 3; i++) expect((await signup(proxied, '203.0.113.7')).status).toBe(201);
      expect((await signup(proxied, '203.0.113.7')).status).toBe(429);
      expect((await signup(proxied, '203.0.113.8')).status).toBe(201);
      // Without trust the header is ignored: the peer address is the client.
      await signup(a, '203.0.113.9');
      const keys = await rateLimitKeys();
      expect(keys).toContain('signup:ip:203.0.113.7');
      expect(keys).not.toContain('signup:ip:203.0.113.9');
    } finally {
      await proxied.close();
    }
  });
});
