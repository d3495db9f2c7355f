/**
 * Attacks on second factors: TOTP codes, recovery codes, factor ids of other users, the
 * assurance level, and passkey ceremonies (challenges, malformed and oversized credentials).
 */
import { expect } from 'vitest';
import { signIn, signUp, type AuthBody } from '../auth-helpers.js';
import { claimsOf, enableTotp, forgedAssertion, freshStep, totpCode } from '../auth-mfa-support.js';
import { errorCode, request, type TestApp } from '../helpers.js';
import { securitySuite } from './harness.js';

interface TotpUser {
  id: string;
  email: string;
  factorId: string;
  secret: string;
  recoveryCodes: string[];
  aal2: string;
  aal1: string;
}

interface Fixture {
  alice: TotpUser;
  bob: TotpUser;
  /** A "view as" session an admin started as alice. */
  aliceViewed: string;
}

async function impersonate(server: TestApp, userId: string): Promise<string> {
  const started = await request(server.url, 'POST', `/v1/admin/users/${userId}/impersonate`, {
    token: server.serviceKey,
    body: {},
  });
  if (started.status !== 201) throw new Error(`impersonate failed: ${started.status} ${started.text}`);
  return (started.body as { session: { access_token: string } }).session.access_token;
}

async function totpUser(server: TestApp): Promise<TotpUser> {
  const user = await signUp(server.url);
  const totp = await enableTotp(server.url, user.token);
  const aal1 = (await signIn(server.url, user.email)).session!.access_token;
  return { id: user.id, email: user.email, ...totp, aal2: totp.accessToken, aal1 };
}

function challenge(server: TestApp, token: string, body: Record<string, unknown>) {
  return request(server.url, 'POST', '/v1/auth/mfa/challenge', { token, body });
}

securitySuite<Fixture>({
  surface: 'auth: second factors',
  env: { BASALT_AUTH_RATE_MFA_FAILED_USER: '4' },
  async setup(server) {
    const alice = await totpUser(server);
    return { alice, bob: await totpUser(server), aliceViewed: await impersonate(server, alice.id) };
  },
  tokenOf(fixture, actor) {
    if (actor === 'alice:viewed') return fixture.aliceViewed;
    const [name, level] = actor.split(':') as ['alice' | 'bob', 'aal1' | 'aal2'];
    return fixture[name]?.[level];
  },
  attacks: [
    {
      name: 'a TOTP code is replayed after it gave aal2',
      async run(_fixture, server) {
        const user = await totpUser(server);
        await freshStep();
        const code = totpCode(user.secret);
        expect((await challenge(server, user.aal1, { factor_id: user.factorId, code })).status).toBe(200);
        const again = (await signIn(server.url, user.email)).session!.access_token;
        const replay = await challenge(server, again, { factor_id: user.factorId, code });
        expect(replay.status).toBe(400);
        expect(errorCode(replay.body)).toBe('INVALID_CREDENTIALS');
      },
    },
    {
      name: 'a recovery code is used a second time',
      async run(_fixture, server) {
        const user = await totpUser(server);
        const code = user.recoveryCodes[0]!;
        expect((await challenge(server, user.aal1, { recovery_code: code })).status).toBe(200);
        const again = (await signIn(server.url, user.email)).session!.access_token;
        const reuse = await challenge(server, again, { recovery_code: code });
        expect(errorCode(reuse.body)).toBe('INVALID_CREDENTIALS');
        expect(claimsOf(again).aal).toBe('aal1');
      },
    },
    {
      name: 'wrong codes are guessed until the limit answers 429, even for the right code',
      async run(_fixture, server) {
        const user = await totpUser(server);
        for (let i = 0; i < 4; i++) {
          const wrong = await challenge(server, user.aal1, { factor_id: user.factorId, code: '00000' + i });
          expect(errorCode(wrong.body)).toBe('INVALID_CREDENTIALS');
        }
        await freshStep();
        const right = await challenge(server, user.aal1, { factor_id: user.factorId, code: totpCode(user.secret) });
        expect(right.status).toBe(429);
        expect(errorCode(right.body)).toBe('RATE_LIMITED');
        expect(right.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
      },
    },
    {
      name: "a challenge names another user's factor id",
      request: (f) => ({
        method: 'POST',
        path: '/v1/auth/mfa/challenge',
        as: 'alice:aal1',
        body: { factor_id: f.bob.factorId, code: '123456' },
      }),
      status: 404,
      code: 'NOT_FOUND',
    },
    {
      name: "a removal names another user's factor id, at aal2",
      request: (f) => ({ method: 'DELETE', path: `/v1/auth/mfa/factors/${f.bob.factorId}`, as: 'alice:aal2' }),
      status: 404,
      code: 'NOT_FOUND',
    },
    {
      name: 'a factor is removed at aal1 (a stolen password or aal1 token)',
      request: (f) => ({ method: 'DELETE', path: `/v1/auth/mfa/factors/${f.alice.factorId}`, as: 'alice:aal1' }),
      status: 403,
      code: 'MFA_REQUIRED',
      async check(_result, f, server) {
        const listed = await request(server.url, 'GET', '/v1/auth/mfa/factors', { token: f.alice.aal1 });
        expect((listed.body as { factors: Array<{ id: string }> }).factors.map((x) => x.id)).toEqual([
          f.alice.factorId,
        ]);
      },
    },
    {
      name: 'a second factor is enrolled at aal1 (the thief’s own authenticator)',
      request: () => ({ method: 'POST', path: '/v1/auth/mfa/totp/enroll', as: 'alice:aal1', body: {} }),
      status: 403,
      code: 'MFA_REQUIRED',
    },
    {
      name: 'a passkey is registered at aal1 on an account with a factor',
      request: () => ({ method: 'POST', path: '/v1/auth/passkeys/register/options', as: 'alice:aal1' }),
      status: 403,
      code: 'MFA_REQUIRED',
    },
    {
      name: 'a passkey is removed at aal1',
      request: () => ({
        method: 'DELETE',
        path: '/v1/auth/passkeys/00000000-0000-4000-8000-000000000000',
        as: 'alice:aal1',
      }),
      status: 403,
      code: 'MFA_REQUIRED',
    },
    {
      name: 'the password of an account with a factor is changed at aal1 (a takeover from a stolen password)',
      request: () => ({
        method: 'PATCH',
        path: '/v1/auth/user',
        as: 'alice:aal1',
        body: { password: 'attacker chose this passphrase' },
      }),
      status: 403,
      code: 'MFA_REQUIRED',
    },
    {
      name: 'the email of an account with a factor is changed at aal1 (a takeover from a stolen password)',
      request: () => ({
        method: 'PATCH',
        path: '/v1/auth/user',
        as: 'alice:aal1',
        body: { email: 'attacker@example.com' },
      }),
      status: 403,
      code: 'MFA_REQUIRED',
      async check(_result, f, server) {
        const me = await request(server.url, 'GET', '/v1/auth/user', { token: f.alice.aal2 });
        expect((me.body as { email: string }).email).toBe(f.alice.email);
      },
    },
    {
      name: "a user resets another user's factors through the admin API",
      request: (f) => ({ method: 'DELETE', path: `/v1/admin/users/${f.bob.id}/factors`, as: 'alice:aal2' }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'the aal claim of an aal1 token is rewritten to aal2',
      async run(f, server) {
        const [header, payload, signature] = f.alice.aal1.split('.') as [string, string, string];
        const claims = { ...claimsOf(f.alice.aal1), aal: 'aal2' };
        const forged = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
        expect(payload).not.toBe(forged.split('.')[1]);
        const answer = await request(server.url, 'DELETE', `/v1/auth/mfa/factors/${f.alice.factorId}`, {
          token: forged,
        });
        expect(answer.status).toBe(401);
      },
    },
    {
      name: 'a passkey sign-in challenge is used twice',
      async run(_fixture, server) {
        const options = await request(server.url, 'POST', '/v1/auth/passkeys/signin/options', { body: {} });
        expect(options.status).toBe(200);
        const credential = forgedAssertion((options.body as { challenge: string }).challenge);
        const first = await request(server.url, 'POST', '/v1/auth/passkeys/signin/verify', { body: { credential } });
        expect(errorCode(first.body)).toBe('INVALID_CREDENTIALS');
        const second = await request(server.url, 'POST', '/v1/auth/passkeys/signin/verify', { body: { credential } });
        expect(second.status).toBe(400);
        expect(errorCode(second.body)).toBe('INVALID_TOKEN');
      },
    },
    {
      name: 'a registration challenge issued to one user is answered by another',
      async run(f, server) {
        const options = await request(server.url, 'POST', '/v1/auth/passkeys/register/options', { token: f.bob.aal2 });
        expect(options.status).toBe(200);
        const credential = {
          ...forgedAssertion((options.body as { challenge: string }).challenge),
          response: {
            clientDataJSON: forgedAssertion((options.body as { challenge: string }).challenge).response.clientDataJSON,
            attestationObject: 'AAAA',
          },
        };
        const answer = await request(server.url, 'POST', '/v1/auth/passkeys/register/verify', {
          token: f.alice.aal2,
          body: { credential },
        });
        expect(errorCode(answer.body)).toBe('INVALID_TOKEN');
      },
    },
    {
      name: 'a malformed credential: no response',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/passkeys/signin/verify',
        body: { credential: { id: 'AAAA', rawId: 'AAAA', type: 'public-key' } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a malformed credential: clientDataJSON is not JSON',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/passkeys/signin/verify',
        body: {
          credential: {
            id: 'AAAA',
            rawId: 'AAAA',
            type: 'public-key',
            response: { clientDataJSON: 'bm90IGpzb24', authenticatorData: 'AAAA', signature: 'AAAA' },
          },
        },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a malformed credential: not base64url, or another type',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/passkeys/signin/verify',
        body: { credential: { id: '<script>', rawId: 'AAAA', type: 'password', response: { clientDataJSON: 'e30' } } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a registration whose attestation is garbage, for a real challenge',
      async run(f, server) {
        const user = await signUp(server.url);
        const options = await request(server.url, 'POST', '/v1/auth/passkeys/register/options', { token: user.token });
        const clientData = {
          type: 'webauthn.create',
          challenge: (options.body as { challenge: string }).challenge,
          origin: server.url,
        };
        const answer = await request(server.url, 'POST', '/v1/auth/passkeys/register/verify', {
          token: user.token,
          body: {
            credential: {
              id: 'AAAA',
              rawId: 'AAAA',
              type: 'public-key',
              response: {
                clientDataJSON: Buffer.from(JSON.stringify(clientData)).toString('base64url'),
                attestationObject: 'AAAAAAAA',
              },
            },
          },
        });
        expect(answer.status).toBe(400);
        expect(errorCode(answer.body)).toBe('INVALID_CREDENTIALS');
        expect(f.alice.id).not.toBe(user.id);
        const listed = await request(server.url, 'GET', '/v1/auth/passkeys', { token: user.token });
        expect((listed.body as { passkeys: unknown[] }).passkeys).toEqual([]);
      },
    },
    {
      name: 'an oversized passkey body (200 KiB)',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/passkeys/signin/verify',
        rawBody: JSON.stringify({ credential: { id: 'A'.repeat(200 * 1024) } }),
        headers: { 'content-type': 'application/json' },
      }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'an oversized recovery code and a code that is not 6 digits',
      async run(f, server) {
        const long = await challenge(server, f.alice.aal1, { recovery_code: 'a'.repeat(10_000) });
        expect(errorCode(long.body)).toBe('INVALID_REQUEST');
        const letters = await challenge(server, f.alice.aal1, { factor_id: f.alice.factorId, code: 'abcdef' });
        expect(errorCode(letters.body)).toBe('INVALID_REQUEST');
        const extra = await challenge(server, f.alice.aal1, { factor_id: f.alice.factorId, code: '123456', x: 1 });
        expect(errorCode(extra.body)).toBe('INVALID_REQUEST');
      },
    },
    {
      name: 'an impersonated session enrols a TOTP factor',
      request: () => ({ method: 'POST', path: '/v1/auth/mfa/totp/enroll', as: 'alice:viewed', body: {} }),
      status: 403,
      code: 'FORBIDDEN',
      check(result) {
        expect(result.body).toMatchObject({ error: { details: { reason: 'impersonated' } } });
      },
    },
    {
      name: 'an impersonated session verifies a factor',
      request: (f) => ({
        method: 'POST',
        path: '/v1/auth/mfa/totp/verify',
        as: 'alice:viewed',
        body: { factor_id: f.alice.factorId, code: '123456' },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session proves a factor with the right code (it would start a session of its own)',
      request: (f) => ({
        method: 'POST',
        path: '/v1/auth/mfa/challenge',
        as: 'alice:viewed',
        body: { factor_id: f.alice.factorId, code: totpCode(f.alice.secret) },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session uses a recovery code',
      request: (f) => ({
        method: 'POST',
        path: '/v1/auth/mfa/challenge',
        as: 'alice:viewed',
        body: { recovery_code: f.alice.recoveryCodes[9] },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session removes a factor',
      request: (f) => ({ method: 'DELETE', path: `/v1/auth/mfa/factors/${f.alice.factorId}`, as: 'alice:viewed' }),
      status: 403,
      code: 'FORBIDDEN',
      async check(_result, f, server) {
        const listed = await request(server.url, 'GET', '/v1/auth/mfa/factors', { token: f.alice.aal2 });
        expect((listed.body as { factors: Array<{ id: string }> }).factors.map((x) => x.id)).toEqual([
          f.alice.factorId,
        ]);
      },
    },
    {
      name: 'an impersonated session starts a passkey registration',
      request: () => ({ method: 'POST', path: '/v1/auth/passkeys/register/options', as: 'alice:viewed' }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session answers a passkey registration',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/passkeys/register/verify',
        as: 'alice:viewed',
        body: {
          credential: { ...forgedAssertion('AAAA'), response: { clientDataJSON: 'e30', attestationObject: 'AAAA' } },
        },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session removes a passkey',
      request: () => ({
        method: 'DELETE',
        path: '/v1/auth/passkeys/00000000-0000-4000-8000-000000000000',
        as: 'alice:viewed',
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session of a user with a factor is aal1 and names its actor',
      async run(f) {
        const claims = claimsOf(f.aliceViewed);
        expect(claims.aal).toBe('aal1');
        expect(claims.act).toEqual({ sub: 'service' });
      },
    },
    {
      name: 'the factor list never carries a secret or a recovery code',
      request: () => ({ method: 'GET', path: '/v1/auth/mfa/factors', as: 'alice:aal2' }),
      status: 200,
      mustNotContain: (f) => [f.alice.secret, ...f.alice.recoveryCodes],
      check(result) {
        expect((result.body as AuthBody & { factors: unknown[] }).factors).toHaveLength(1);
      },
    },
  ],
});
