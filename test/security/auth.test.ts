/**
 * Attacks on accounts, sessions and tokens. Two tables: one against a default start (sign-up
 * gives a session at once), one with BASALT_AUTH_CONFIRM_EMAIL=true. Both mail through a real
 * SMTP server, so the takeover rows follow the links an address's owner would receive.
 */
import pg from 'pg';
import { afterAll, expect, onTestFinished } from 'vitest';
import {
  STRONG_PASSWORD,
  decodeJwt,
  startMailServer,
  tokenFromMail,
  uniqueEmail,
  type AuthBody,
  type ReceivedMail,
  type SessionBody,
  type UserBody,
} from '../auth-helpers.js';
import { buildAuthModule } from '../../server/modules/auth/module.js';
import { createCollection } from '../documents-support.js';
import { errorCode, request, type TestApp, waitFor } from '../helpers.js';
import { securitySuite } from './harness.js';

const mail = await startMailServer();
afterAll(() => mail.close());

const PUBLIC_URL = 'http://127.0.0.1:9';
const ATTACKER_PASSWORD = 'attacker chose this passphrase';
const VICTIM_PASSWORD = 'the real owner chose this one';

const to = (address: string) => (m: ReceivedMail) => m.to.includes(address);

/** The newest mail to `address` whose text contains `marker`, waiting for it to arrive. */
async function newestMail(address: string, marker: string, after = 0): Promise<ReceivedMail> {
  await mail.waitFor((m) => to(address)(m) && m.text.includes(marker) && mail.mails.indexOf(m) >= after);
  return mail.mails.filter((m) => to(address)(m) && m.text.includes(marker)).at(-1)!;
}

async function signUpWith(server: TestApp, email: string, password: string) {
  return request(server.url, 'POST', '/v1/auth/signup', { body: { email, password } });
}

async function signInStatus(server: TestApp, email: string, password: string): Promise<string | number> {
  const answer = await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password } });
  return answer.status === 200 ? 200 : (errorCode(answer.body) ?? answer.status);
}

async function verify(server: TestApp, type: string, token: string, password?: string) {
  const answer = await request(server.url, 'POST', '/v1/auth/verify', {
    body: password === undefined ? { type, token } : { type, token, password },
  });
  expect(answer.status, answer.text).toBe(200);
  return answer.body as AuthBody;
}

/** Every credential the attacker kept is dead: access token, refresh token and password. */
async function expectLockedOut(server: TestApp, email: string, session: SessionBody): Promise<void> {
  expect((await request(server.url, 'GET', '/v1/auth/user', { token: session.access_token })).status).toBe(401);
  const refreshed = await request(server.url, 'POST', '/v1/auth/refresh', {
    body: { refresh_token: session.refresh_token },
  });
  expect(refreshed.status).toBe(401);
  expect(await signInStatus(server, email, ATTACKER_PASSWORD)).toBe('INVALID_CREDENTIALS');
}

async function adminUser(server: TestApp, id: string): Promise<UserBody> {
  return (await request(server.url, 'GET', `/v1/admin/users/${id}`, { token: server.serviceKey })).body as UserBody;
}

/** A mailed-link request answers 202 while the users table is locked: its lookup runs after the answer. */
async function answersBeforeLookup(server: TestApp, path: string, email: string): Promise<void> {
  const locker = new pg.Client({ connectionString: server.config.databaseUrl });
  await locker.connect();
  try {
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE basalt.users IN ACCESS EXCLUSIVE MODE');
    const started = Date.now();
    const answer = await fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email }),
      signal: AbortSignal.timeout(5000),
    }).catch((error: unknown) => ({ status: `no answer while the lookup was blocked (${String(error)})` }));
    expect(answer.status).toBe(202);
    expect(Date.now() - started).toBeLessThan(5000);
  } finally {
    await locker.query('ROLLBACK').catch(() => undefined);
    await locker.end();
  }
}

/** Opens a recovery link (which redirects without spending its token) and returns where it sends the browser. */
async function verifyLinkLocation(server: TestApp, redirectTo: string) {
  const query = new URLSearchParams({ type: 'recovery', token: 'abc', redirect_to: redirectTo });
  const response = await fetch(`${server.url}/v1/auth/verify?${query.toString()}`, { redirect: 'manual' });
  await response.arrayBuffer();
  return {
    status: response.status,
    location: response.headers.get('location'),
    setCookie: response.headers.get('set-cookie'),
  };
}

interface Fixture {
  alice: AuthBody;
  aliceEmail: string;
  bob: AuthBody;
  deleted: AuthBody;
}

securitySuite<Fixture>({
  surface: 'auth',
  env: {
    SMTP_URL: mail.url,
    BASALT_PUBLIC_URL: PUBLIC_URL,
    BASALT_AUTH_EMAIL_INTERVAL: '0',
    BASALT_AUTH_RATE_EMAIL_IP: '10000',
    BASALT_AUTH_RATE_SIGNIN_FAILED_ACCOUNT_IP: '5',
    BASALT_AUTH_REFRESH_REUSE_GRACE: '0',
  },
  async setup(server) {
    const aliceEmail = uniqueEmail('alice');
    const alice = (await signUpWith(server, aliceEmail, STRONG_PASSWORD)).body as AuthBody;
    const bob = (await signUpWith(server, uniqueEmail('bob'), STRONG_PASSWORD)).body as AuthBody;
    const deleted = (await signUpWith(server, uniqueEmail('deleted'), STRONG_PASSWORD)).body as AuthBody;
    const removed = await request(server.url, 'DELETE', `/v1/admin/users/${deleted.user.id}`, {
      token: server.serviceKey,
    });
    expect(removed.status).toBe(204);
    await createCollection(server, { name: 'verified_only', rules: { read: 'auth.email_verified == true' } });
    const doc = await request(server.url, 'POST', '/v1/db/verified_only', {
      token: server.serviceKey,
      body: { id: 'v1', data: { secret: 'for proven addresses' } },
    });
    expect(doc.status).toBe(201);
    return { alice, aliceEmail, bob, deleted };
  },
  tokenOf(fixture, actor) {
    if (actor === 'alice') return fixture.alice.session!.access_token;
    if (actor === 'bob') return fixture.bob.session!.access_token;
    if (actor === 'deleted') return fixture.deleted.session!.access_token;
    return undefined;
  },
  attacks: [
    // ---- pre-registration takeover ------------------------------------------------------
    {
      name: 'pre-registers the address, keeps a session; the owner signs in by magic link',
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        const attacker = (await signUpWith(server, victim, ATTACKER_PASSWORD)).body as AuthBody;
        expect(attacker.session).not.toBeNull();
        await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email: victim } });
        const owner = await verify(server, 'magiclink', tokenFromMail(await newestMail(victim, 'type=magiclink')));
        await expectLockedOut(server, victim, attacker.session!);
        expect((await request(server.url, 'GET', '/v1/auth/user', { token: owner.session!.access_token })).status).toBe(
          200,
        );
        expect((await adminUser(server, owner.user.id)).email_confirmed_at).not.toBeNull();
      },
    },
    {
      name: 'pre-registers the address; the owner confirms it through a resent confirmation',
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        const attacker = (await signUpWith(server, victim, ATTACKER_PASSWORD)).body as AuthBody;
        await request(server.url, 'POST', '/v1/auth/resend', { body: { email: victim } });
        await verify(server, 'signup', tokenFromMail(await newestMail(victim, 'type=signup')));
        await expectLockedOut(server, victim, attacker.session!);
      },
    },
    {
      name: 'pre-registers the address; the owner recovers it',
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        const attacker = (await signUpWith(server, victim, ATTACKER_PASSWORD)).body as AuthBody;
        await request(server.url, 'POST', '/v1/auth/recover', { body: { email: victim } });
        const token = tokenFromMail(await newestMail(victim, 'type=recovery'));
        await verify(server, 'recovery', token, VICTIM_PASSWORD);
        await expectLockedOut(server, victim, attacker.session!);
        expect(await signInStatus(server, victim, VICTIM_PASSWORD)).toBe(200);
      },
    },
    {
      name: 'pre-registers the address; the owner signs in with OAuth, the provider vouching for the address',
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        const attacker = (await signUpWith(server, victim, ATTACKER_PASSWORD)).body as AuthBody;
        // What the OAuth callback calls once the provider answered (its own flow is in auth-oauth.test.ts).
        const oauth = buildAuthModule(server.app.platform);
        onTestFinished(() => oauth.stop());
        await oauth.start();
        const owner = await oauth.service.signInWithIdentity(
          { provider: 'idp', subject: `owner-${victim}`, email: victim, emailVerified: true },
          { ip: '127.0.0.1', userAgent: 'test' },
        );
        expect(owner.user.id).toBe(attacker.user.id);
        // Revoked through another module instance: this server learns it within its poll.
        await waitFor(
          'the token to be refused',
          async () =>
            (await request(server.url, 'GET', '/v1/auth/user', { token: attacker.session!.access_token })).status ===
            401,
          5000,
        );
        await expectLockedOut(server, victim, attacker.session!);
      },
    },
    {
      name: "signs in with OAuth from a provider that does not verify emails, naming the owner's address; the owner uses a magic link",
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        const oauth = buildAuthModule(server.app.platform);
        onTestFinished(() => oauth.stop());
        await oauth.start();
        const identity = { provider: 'lax', subject: `attacker-${victim}`, email: victim, emailVerified: false };
        const context = { ip: '127.0.0.1', userAgent: 'test' };
        const attacker = await oauth.service.signInWithIdentity(identity, context);
        await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email: victim } });
        const owner = await verify(server, 'magiclink', tokenFromMail(await newestMail(victim, 'type=magiclink')));
        expect(owner.user.id).toBe(attacker.user.id);
        await waitFor(
          'the token to be refused',
          async () =>
            (await request(server.url, 'GET', '/v1/auth/user', { token: attacker.session!.access_token })).status ===
            401,
          5000,
        );
        // The provider login no longer leads into the account.
        await expect(oauth.service.signInWithIdentity(identity, context)).rejects.toMatchObject({
          code: 'ALREADY_EXISTS',
        });
      },
    },
    {
      name: 'a proven owner keeps their password and other sessions when they use a magic link later',
      source: 'issue 15 #3 (control)',
      async run(_fixture, server) {
        const email = uniqueEmail('owner');
        await signUpWith(server, email, STRONG_PASSWORD);
        await request(server.url, 'POST', '/v1/auth/recover', { body: { email } });
        await verify(server, 'recovery', tokenFromMail(await newestMail(email, 'type=recovery')), VICTIM_PASSWORD);
        const before = (
          await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: VICTIM_PASSWORD } })
        ).body as AuthBody;
        await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email } });
        await verify(server, 'magiclink', tokenFromMail(await newestMail(email, 'type=magiclink')));
        expect(await signInStatus(server, email, VICTIM_PASSWORD)).toBe(200);
        const still = await request(server.url, 'GET', '/v1/auth/user', { token: before.session!.access_token });
        expect(still.status).toBe(200);
      },
    },

    // ---- auth.email_verified ----------------------------------------------------------------
    {
      name: 'an unproven address does not pass a rule that asks for a verified email; once proven it does',
      source: 'issue 15 #4',
      async run(_fixture, server) {
        const email = uniqueEmail('unproven');
        const signedUp = (await signUpWith(server, email, STRONG_PASSWORD)).body as AuthBody;
        const claims = decodeJwt(signedUp.session!.access_token).payload;
        expect(claims.email_verified).toBe(false);
        const hidden = await request(server.url, 'GET', '/v1/db/verified_only/v1', {
          token: signedUp.session!.access_token,
        });
        expect(hidden.status).toBe(404);
        await request(server.url, 'POST', '/v1/auth/resend', { body: { email } });
        const proven = await verify(server, 'signup', tokenFromMail(await newestMail(email, 'type=signup')));
        expect(decodeJwt(proven.session!.access_token).payload.email_verified).toBe(true);
        const shown = await request(server.url, 'GET', '/v1/db/verified_only/v1', {
          token: proven.session!.access_token,
        });
        expect(shown.status).toBe(200);
      },
    },

    // ---- sign-in limits -----------------------------------------------------------------
    {
      name: '60 concurrent wrong passwords for one account: at most the limit (5) are evaluated',
      source: 'issue 15 #5',
      async run(_fixture, server) {
        const email = uniqueEmail('guessed');
        await signUpWith(server, email, STRONG_PASSWORD);
        const answers = await Promise.all(
          Array.from({ length: 60 }, (_, i) =>
            request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: `wrong guess ${i}` } }),
          ),
        );
        const evaluated = answers.filter((a) => errorCode(a.body) === 'INVALID_CREDENTIALS').length;
        const limited = answers.filter((a) => errorCode(a.body) === 'RATE_LIMITED').length;
        expect(evaluated).toBeLessThanOrEqual(5);
        expect(evaluated + limited).toBe(60);
      },
    },
    {
      name: 'a correct password does not use up the failure budget',
      source: 'issue 15 #5 (control)',
      async run(_fixture, server) {
        const email = uniqueEmail('owner');
        await signUpWith(server, email, STRONG_PASSWORD);
        for (let i = 0; i < 8; i++) expect(await signInStatus(server, email, STRONG_PASSWORD)).toBe(200);
        for (let i = 0; i < 5; i++)
          expect(await signInStatus(server, email, 'wrong guess')).toBe('INVALID_CREDENTIALS');
        expect(await signInStatus(server, email, STRONG_PASSWORD)).toBe('RATE_LIMITED');
      },
    },

    // ---- mailed links do not tell known addresses from unknown ones ------------------------
    {
      name: 'recover, magic link and resend answer before looking the address up',
      source: 'issue 15 #6',
      async run(fixture, server) {
        for (const path of ['/v1/auth/recover', '/v1/auth/magiclink', '/v1/auth/resend']) {
          await answersBeforeLookup(server, path, fixture.aliceEmail);
          await answersBeforeLookup(server, path, uniqueEmail('nobody'));
        }
        // The work still happens after the answer.
        const mark = mail.mails.length;
        await request(server.url, 'POST', '/v1/auth/recover', { body: { email: fixture.aliceEmail } });
        await newestMail(fixture.aliceEmail, 'type=recovery', mark);
      },
    },

    // ---- hostile metadata -------------------------------------------------------------------
    {
      name: 'sign-up with NUL in data',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/signup',
        body: { email: uniqueEmail('nul'), password: STRONG_PASSWORD, data: { name: 'a\u0000b' } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'user update with a NUL key in data',
      source: 'issue 15 #9',
      request: () => ({ method: 'PATCH', path: '/v1/auth/user', as: 'alice', body: { data: { 'k\u0000': 1 } } }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'user update with data nested 5,000 deep',
      source: 'issue 15 #9',
      request: () => ({
        method: 'PATCH',
        path: '/v1/auth/user',
        as: 'alice',
        rawBody: `{"data":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'sign-up with data nested 100,000 deep',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/signup',
        rawBody: `{"email":"${uniqueEmail('deep')}","password":"${STRONG_PASSWORD}","data":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'admin sets app_metadata with NUL',
      source: 'issue 15 #9',
      request: (f) => ({
        method: 'PATCH',
        path: `/v1/admin/users/${f.bob.user.id}`,
        as: 'service',
        body: { app_metadata: { role: 'x\u0000' } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'admin creates a user with NUL in user_metadata',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/admin/users',
        as: 'service',
        body: { email: uniqueEmail('nul'), user_metadata: { a: ['\u0000'] } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },

    // ---- redirects ----------------------------------------------------------------------
    {
      name: 'redirect_to with a line break and a header after it is sent back only normalized',
      source: 'issue 15 #13',
      async run(_fixture, server) {
        const location = await verifyLinkLocation(server, `${PUBLIC_URL}/app\r\nSet-Cookie: session=evil`);
        expect(location.status).toBe(302);
        expect(location.setCookie).toBeNull();
        expect(location.location).toBe(`${PUBLIC_URL}/appSet-Cookie:%20session=evil#type=recovery&token=abc`);
      },
    },
    {
      name: 'redirect_to is compared and echoed in its normalized form (backslash, dot segments, fragment)',
      source: 'issue 15 #13',
      async run(_fixture, server) {
        const location = await verifyLinkLocation(server, `${PUBLIC_URL}\\a/../b/./c#frag`);
        expect(location.status).toBe(302);
        expect(location.location).toBe(`${PUBLIC_URL}/b/c#type=recovery&token=abc`);
      },
    },
    {
      name: 'redirect_to on another origin',
      request: () => ({
        method: 'GET',
        path: `/v1/auth/verify?type=recovery&token=abc&redirect_to=${encodeURIComponent('https://evil.example/x')}`,
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'redirect_to with a javascript: URL',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/magiclink',
        body: { email: uniqueEmail('x'), redirect_to: 'javascript:alert(1)//127.0.0.1:9' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },

    // ---- forged and stale tokens ------------------------------------------------------------
    {
      name: 'an access token whose signature is spelled non-canonically (spare bits set)',
      source: 'issue 15 #13',
      async run(fixture, server) {
        const [header, payload, signature] = fixture.alice.session!.access_token.split('.') as [string, string, string];
        const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
        const last = alphabet.indexOf(signature.at(-1)!);
        // 64 bytes take 86 characters; the last one carries 2 bits and 4 spare ones.
        const variant = `${signature.slice(0, -1)}${alphabet[last ^ 1]}`;
        expect(Buffer.from(variant, 'base64url').equals(Buffer.from(signature, 'base64url'))).toBe(true);
        const forged = `${header}.${payload}.${variant}`;
        const answer = await request(server.url, 'GET', '/v1/auth/user', { token: forged });
        expect(answer.status).toBe(401);
        expect(errorCode(answer.body)).toBe('UNAUTHENTICATED');
        const padded = await request(server.url, 'GET', '/v1/auth/user', {
          token: `${header}.${payload}=.${signature}`,
        });
        expect(padded.status).toBe(401);
        // The canonical token still works.
        const control = await request(server.url, 'GET', '/v1/auth/user', {
          token: fixture.alice.session!.access_token,
        });
        expect(control.status).toBe(200);
      },
    },
    {
      name: 'an access token with a changed claim (role) but the original signature',
      request: (f) => {
        const [header, payload, signature] = f.bob.session!.access_token.split('.') as [string, string, string];
        const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
        const changed = Buffer.from(JSON.stringify({ ...claims, sub: f.alice.user.id })).toString('base64url');
        return {
          method: 'GET',
          path: '/v1/auth/user',
          headers: { authorization: `Bearer ${header}.${changed}.${signature}` },
        };
      },
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'the access token of a deleted user',
      request: () => ({ method: 'GET', path: '/v1/auth/user', as: 'deleted' }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'the refresh token of a deleted user',
      request: (f) => ({
        method: 'POST',
        path: '/v1/auth/refresh',
        body: { refresh_token: f.deleted.session!.refresh_token },
      }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'a rotated-out refresh token replayed: the whole session ends',
      async run(_fixture, server) {
        const email = uniqueEmail('replayed');
        const first = ((await signUpWith(server, email, STRONG_PASSWORD)).body as AuthBody).session!;
        const rotated = await request(server.url, 'POST', '/v1/auth/refresh', {
          body: { refresh_token: first.refresh_token },
        });
        expect(rotated.status).toBe(200);
        const current = (rotated.body as AuthBody).session!;
        await new Promise((resolve) => setTimeout(resolve, 1100));
        const replay = await request(server.url, 'POST', '/v1/auth/refresh', {
          body: { refresh_token: first.refresh_token },
        });
        expect(replay.status).toBe(401);
        const after = await request(server.url, 'POST', '/v1/auth/refresh', {
          body: { refresh_token: current.refresh_token },
        });
        expect(after.status).toBe(401);
        expect((await request(server.url, 'GET', '/v1/auth/user', { token: current.access_token })).status).toBe(401);
      },
    },

    {
      name: 'an access token presented as a refresh token',
      request: (f) => ({
        method: 'POST',
        path: '/v1/auth/refresh',
        body: { refresh_token: f.bob.session!.access_token.slice(0, 512) },
      }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'the JWKS is read for private key material',
      request: () => ({ method: 'GET', path: '/.well-known/jwks.json' }),
      status: 200,
      mustNotContain: () => ['"d":', 'private'],
    },
    {
      name: 'the user object is read for a password hash',
      request: () => ({ method: 'GET', path: '/v1/auth/user', as: 'alice' }),
      status: 200,
      mustNotContain: () => ['$argon2', 'password'],
    },
    {
      name: 'the admin user list is read for password hashes',
      request: () => ({ method: 'GET', path: '/v1/admin/users?per_page=1000', as: 'service' }),
      status: 200,
      mustNotContain: () => ['$argon2', 'password'],
    },

    // ---- privileges -----------------------------------------------------------------------
    {
      name: 'a user lists users through the admin API',
      request: () => ({ method: 'GET', path: '/v1/admin/users', as: 'alice' }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: (f) => [f.bob.user.id],
    },
    {
      name: 'a user sets their own app_metadata through the admin API',
      request: (f) => ({
        method: 'PATCH',
        path: `/v1/admin/users/${f.alice.user.id}`,
        as: 'alice',
        body: { app_metadata: { role: 'admin' } },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a user sets app_metadata through their own profile',
      request: () => ({
        method: 'PATCH',
        path: '/v1/auth/user',
        as: 'alice',
        body: { app_metadata: { role: 'admin' } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a user rotates the signing key',
      request: () => ({ method: 'POST', path: '/v1/admin/auth/keys/rotate', as: 'alice' }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: "a user revokes another user's session",
      request: (f) => ({
        method: 'DELETE',
        path: `/v1/auth/sessions/${String(decodeJwt(f.bob.session!.access_token).payload.session_id)}`,
        as: 'alice',
      }),
      status: 404,
      code: 'NOT_FOUND',
      async check(_result, f, server) {
        expect((await request(server.url, 'GET', '/v1/auth/user', { token: f.bob.session!.access_token })).status).toBe(
          200,
        );
      },
    },
  ],
});

securitySuite<Record<string, never>>({
  surface: 'auth (email confirmation on)',
  env: {
    SMTP_URL: mail.url,
    BASALT_PUBLIC_URL: PUBLIC_URL,
    BASALT_AUTH_CONFIRM_EMAIL: 'true',
    BASALT_AUTH_EMAIL_INTERVAL: '0',
    BASALT_AUTH_RATE_EMAIL_IP: '10000',
  },
  setup: () => Promise.resolve({}),
  attacks: [
    {
      name: 'pre-registers the address with a password; the owner signs up and confirms their own mail',
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        expect((await signUpWith(server, victim, ATTACKER_PASSWORD)).status).toBe(201);
        await newestMail(victim, 'type=signup');
        const mark = mail.mails.length;
        const again = await signUpWith(server, victim, VICTIM_PASSWORD);
        expect(again.status).toBe(201);
        expect((again.body as AuthBody).session).toBeNull();
        await verify(server, 'signup', tokenFromMail(await newestMail(victim, 'type=signup', mark)));
        expect(await signInStatus(server, victim, VICTIM_PASSWORD)).toBe(200);
        expect(await signInStatus(server, victim, ATTACKER_PASSWORD)).toBe('INVALID_CREDENTIALS');
      },
    },
    {
      name: 'pre-registers the address with a password; the owner signs in by magic link',
      source: 'issue 15 #3',
      async run(_fixture, server) {
        const victim = uniqueEmail('victim');
        await signUpWith(server, victim, ATTACKER_PASSWORD);
        await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email: victim } });
        await verify(server, 'magiclink', tokenFromMail(await newestMail(victim, 'type=magiclink')));
        expect(await signInStatus(server, victim, ATTACKER_PASSWORD)).toBe('INVALID_CREDENTIALS');
      },
    },
    {
      name: 'a sign-up confirmed with its own mail keeps its password (control)',
      async run(_fixture, server) {
        const email = uniqueEmail('honest');
        await signUpWith(server, email, VICTIM_PASSWORD);
        await verify(server, 'signup', tokenFromMail(await newestMail(email, 'type=signup')));
        expect(await signInStatus(server, email, VICTIM_PASSWORD)).toBe(200);
      },
    },
    {
      name: "an anonymous user claims someone's address with a password, then refreshes",
      source: 'issue 15 #4',
      async run(_fixture, server) {
        const anonymous = (await request(server.url, 'POST', '/v1/auth/anonymous')).body as AuthBody;
        const claimed = uniqueEmail('claimed');
        const patched = await request(server.url, 'PATCH', '/v1/auth/user', {
          token: anonymous.session!.access_token,
          body: { email: claimed, password: ATTACKER_PASSWORD },
        });
        expect(patched.status).toBe(200);
        expect(patched.body).toMatchObject({ email: null, is_anonymous: true });
        const refreshed = await request(server.url, 'POST', '/v1/auth/refresh', {
          body: { refresh_token: anonymous.session!.refresh_token },
        });
        const claims = decodeJwt((refreshed.body as AuthBody).session!.access_token).payload;
        expect(claims.role).toBe('anon');
        expect(claims.email ?? null).toBeNull();
        expect(claims.email_verified).toBe(false);
        expect(await signInStatus(server, claimed, ATTACKER_PASSWORD)).toBe('INVALID_CREDENTIALS');

        // Whoever reads the address can finish the upgrade; then the token names it, verified.
        const confirmed = await verify(
          server,
          'email_change',
          tokenFromMail(await newestMail(claimed, 'type=email_change')),
        );
        expect(confirmed.user).toMatchObject({ id: anonymous.user.id, email: claimed, is_anonymous: false });
        const upgraded = decodeJwt(confirmed.session!.access_token).payload;
        expect(upgraded).toMatchObject({ role: 'authenticated', email: claimed, email_verified: true });
      },
    },
    {
      name: 'an anonymous user probes whether an address has an account',
      source: 'issue 15 #7',
      async run(_fixture, server) {
        const taken = uniqueEmail('taken');
        const created = await request(server.url, 'POST', '/v1/admin/users', {
          token: server.serviceKey,
          body: { email: taken, password: STRONG_PASSWORD, email_confirm: true },
        });
        expect(created.status).toBe(201);
        const probe = async (email: string) => {
          const anonymous = (await request(server.url, 'POST', '/v1/auth/anonymous')).body as AuthBody;
          const answer = await request(server.url, 'PATCH', '/v1/auth/user', {
            token: anonymous.session!.access_token,
            body: { email },
          });
          const user = answer.body as UserBody;
          return {
            status: answer.status,
            shape: { ...user, id: '', created_at: '', updated_at: '', last_sign_in_at: '' },
          };
        };
        const free = uniqueEmail('free');
        const [onTaken, onFree] = [await probe(taken), await probe(free)];
        expect(onTaken).toEqual(onFree);
        expect(onTaken.status).toBe(200);
        // The owner of the taken address is told, and gets no link that could change anything.
        const notice = await newestMail(taken, 'already belongs to an account');
        expect(notice.text).not.toMatch(/token=/);
        await newestMail(free, 'type=email_change');
      },
    },
    {
      name: 'a signed-in user probes whether an address has an account by changing theirs',
      source: 'issue 15 #7',
      async run(_fixture, server) {
        const mine = uniqueEmail('mine');
        const taken = uniqueEmail('taken');
        for (const email of [mine, taken]) {
          await request(server.url, 'POST', '/v1/admin/users', {
            token: server.serviceKey,
            body: { email, password: STRONG_PASSWORD, email_confirm: true },
          });
        }
        const session = (
          (await request(server.url, 'POST', '/v1/auth/signin', { body: { email: mine, password: STRONG_PASSWORD } }))
            .body as AuthBody
        ).session!;
        const answer = await request(server.url, 'PATCH', '/v1/auth/user', {
          token: session.access_token,
          body: { email: taken },
        });
        expect(answer.status).toBe(200);
        expect((answer.body as UserBody).email).toBe(mine);
        await newestMail(taken, 'already belongs to an account');
      },
    },
  ],
});
