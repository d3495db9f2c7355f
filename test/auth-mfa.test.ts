import { createHash } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import QRCode from 'qrcode';
import { describe, expect, it } from 'vitest';
import { TOTP_SETTINGS } from '../server/modules/auth/mfa.js';
import { buildAuthModule } from '../server/modules/auth/module.js';
import { createClient } from '../client-sdk/src/index.js';
import { signIn, signUp, STRONG_PASSWORD, tokenFromMail, useMailServer, type AuthBody } from './auth-helpers.js';
import { claimsOf, enableTotp, freshStep, rfc6238Code, totpCode } from './auth-mfa-support.js';
import { createCollection, errorCode, request, useTestApp, waitFor } from './helpers.js';

const KEY_ENCRYPTION_KEY = 'k'.repeat(48);

describe('TOTP as configured is RFC 6238 (Appendix B test vectors, SHA-1)', () => {
  // The RFC's vectors use 8 digits; Basalt's codes are the same computation cut to 6.
  const vectors: Array<[number, string]> = [
    [59, '94287082'],
    [1111111109, '07081804'],
    [1111111111, '14050471'],
    [1234567890, '89005924'],
    [2000000000, '69279037'],
    [20000000000, '65353130'],
  ];
  const secret = Secret.fromUTF8('12345678901234567890');

  it.each(vectors)('T = %i s gives %s', (seconds, expected) => {
    const totp = new TOTP({ ...TOTP_SETTINGS, digits: 8, secret });
    expect(totp.generate({ timestamp: seconds * 1000 })).toBe(expected);
    // The 6-digit code is the same truncation modulo 10^6 (RFC 4226 section 5.3).
    const six = new TOTP({ ...TOTP_SETTINGS, secret });
    expect(six.generate({ timestamp: seconds * 1000 })).toBe(expected.slice(2));
  });

  it.each(vectors)(
    'the tests’ own RFC 6238 code (which the server must accept below): T = %i s gives %s',
    (seconds, expected) => {
      expect(rfc6238Code(Buffer.from('12345678901234567890'), seconds, 8)).toBe(expected);
      expect(rfc6238Code(Buffer.from('12345678901234567890'), seconds)).toBe(expected.slice(2));
    },
  );

  it('is SHA-1, 6 digits, 30 s', () => {
    expect(TOTP_SETTINGS).toEqual({ algorithm: 'SHA1', digits: 6, period: 30 });
  });
});

describe('second factors: TOTP and recovery codes', () => {
  const env = {
    BASALT_AUTH_KEY_ENCRYPTION_KEY: KEY_ENCRYPTION_KEY,
    BASALT_AUTH_RATE_MFA_FAILED_USER: '5',
    BASALT_AUTH_APP_NAME: 'Acme Notes',
  };
  const server = useTestApp({ env });
  // A second instance on the same database, as behind a load balancer.
  const second = useTestApp({ sharing: server, env });

  it('the whole flow: enroll, verify, sign in at aal1 with mfa_required, challenge to aal2, refresh keeps aal2', async () => {
    const user = await signUp(server.url);
    expect(claimsOf(user.session!.access_token).aal).toBe('aal1');
    expect(user.mfa_required).toBe(false);

    const enrolled = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', {
      token: user.token,
      body: { friendly_name: 'phone' },
    });
    expect(enrolled.status, enrolled.text).toBe(200);
    const enrollment = enrolled.body as { factor_id: string; secret: string; otpauth_url: string; qr_code: string };
    const url = new URL(enrollment.otpauth_url);
    expect(url.protocol).toBe('otpauth:');
    expect(url.host).toBe('totp');
    expect(url.searchParams.get('secret')).toBe(enrollment.secret);
    expect(url.searchParams.get('issuer')).toBe('Acme Notes');
    expect(url.searchParams.get('algorithm')).toBe('SHA1');
    expect(url.searchParams.get('digits')).toBe('6');
    expect(url.searchParams.get('period')).toBe('30');
    expect(decodeURIComponent(url.pathname)).toContain(user.email);
    expect(enrollment.qr_code).toMatch(/^data:image\/svg\+xml;base64,/);
    // The QR code is the otpauth URL itself (the same symbol the encoder draws for that text).
    expect(Buffer.from(enrollment.qr_code.split(',')[1]!, 'base64').toString()).toBe(
      await QRCode.toString(enrollment.otpauth_url, { type: 'svg', margin: 1 }),
    );

    // Sealed at rest with the key-encryption key: the database never holds the secret.
    const stored = await server.sql.query<{ secret: string; status: string }>(
      'SELECT secret, status FROM basalt.auth_factors WHERE id = $1',
      [enrollment.factor_id],
    );
    expect(stored.rows[0]!.status).toBe('unverified');
    expect(stored.rows[0]!.secret).toMatch(/^gcm:/);
    expect(stored.rows[0]!.secret).not.toContain(enrollment.secret);

    // An unverified factor does not count yet: sign-in is plain.
    expect((await signIn(server.url, user.email)).mfa_required).toBe(false);
    // A wrong code does not activate it.
    await freshStep();
    const wrong = await request(server.url, 'POST', '/v1/auth/mfa/totp/verify', {
      token: user.token,
      body: { factor_id: enrollment.factor_id, code: totpCode(enrollment.secret, 5) },
    });
    expect(errorCode(wrong.body)).toBe('INVALID_CREDENTIALS');

    const verified = await request(server.url, 'POST', '/v1/auth/mfa/totp/verify', {
      token: user.token,
      body: { factor_id: enrollment.factor_id, code: totpCode(enrollment.secret, -1) },
    });
    expect(verified.status, verified.text).toBe(200);
    const activation = verified.body as AuthBody & { recovery_codes: string[] };
    expect(activation.recovery_codes).toHaveLength(10);
    expect(new Set(activation.recovery_codes).size).toBe(10);
    for (const code of activation.recovery_codes) expect(code).toMatch(/^[a-z2-9]{5}-[a-z2-9]{5}$/);
    expect(claimsOf(activation.session!.access_token).aal).toBe('aal2');
    // Only digests are stored: SHA-256 of each code as typed without its dash, never the code.
    const codes = await server.sql.query<{ code_hash: Buffer }>(
      'SELECT code_hash FROM basalt.recovery_codes WHERE user_id = $1',
      [user.id],
    );
    const storedDigests = codes.rows.map((row) => row.code_hash.toString('hex')).toSorted();
    const digests = activation.recovery_codes.map((code) =>
      createHash('sha256').update(code.replace('-', '')).digest('hex'),
    );
    expect(storedDigests).toEqual(digests.toSorted());

    const listed = await request(server.url, 'GET', '/v1/auth/mfa/factors', {
      token: activation.session!.access_token,
    });
    expect(listed.body).toMatchObject({
      factors: [{ id: enrollment.factor_id, type: 'totp', status: 'verified', friendly_name: 'phone' }],
      recovery_codes_left: 10,
    });
    expect(listed.text).not.toContain(enrollment.secret);

    // A password sign-in now says a second factor is needed, and the session is aal1.
    const signedIn = await signIn(server.url, user.email);
    expect(signedIn.mfa_required).toBe(true);
    expect(claimsOf(signedIn.session!.access_token).aal).toBe('aal1');

    const challenged = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: signedIn.session!.access_token,
      body: { factor_id: enrollment.factor_id, code: totpCode(enrollment.secret) },
    });
    expect(challenged.status, challenged.text).toBe(200);
    const stepped = challenged.body as AuthBody;
    const claims = claimsOf(stepped.session!.access_token);
    expect(claims.aal).toBe('aal2');
    expect(claims.session_id).not.toBe(claimsOf(signedIn.session!.access_token).session_id);
    expect(stepped.mfa_required).toBe(false);

    // The aal1 session it replaced is over: its refresh token and (within 5 s) its access token.
    const oldRefresh = await request(server.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: signedIn.session!.refresh_token },
    });
    expect(errorCode(oldRefresh.body)).toBe('UNAUTHENTICATED');
    await waitFor('the aal1 token to stop working', async () => {
      const me = await request(server.url, 'GET', '/v1/auth/user', { token: signedIn.session!.access_token });
      return me.status === 401;
    });

    // A refresh keeps the level, on any instance.
    const refreshed = await request(second.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: stepped.session!.refresh_token },
    });
    expect(refreshed.status, refreshed.text).toBe(200);
    expect(claimsOf((refreshed.body as AuthBody).session!.access_token).aal).toBe('aal2');
    const aal1Refresh = await request(server.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: (await signIn(server.url, user.email)).session!.refresh_token },
    });
    expect(claimsOf((aal1Refresh.body as AuthBody).session!.access_token).aal).toBe('aal1');
  });

  it('a code is accepted once: replayed, or older than the last one used, it is refused', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    await freshStep();
    const code = totpCode(totp.secret);
    const a = await signIn(server.url, user.email);
    const first = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: a.session!.access_token,
      body: { factor_id: totp.factorId, code },
    });
    expect(first.status, first.text).toBe(200);
    const b = await signIn(server.url, user.email);
    const replay = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: b.session!.access_token,
      body: { factor_id: totp.factorId, code },
    });
    expect(replay.status).toBe(400);
    expect(errorCode(replay.body)).toBe('INVALID_CREDENTIALS');
    expect(replay.body).toMatchObject({ error: { details: { reason: 'code_already_used' } } });
    // The code of the step before (still inside the window) is older than the one used.
    const older = await request(second.url, 'POST', '/v1/auth/mfa/challenge', {
      token: b.session!.access_token,
      body: { factor_id: totp.factorId, code: totpCode(totp.secret, -1) },
    });
    expect(errorCode(older.body)).toBe('INVALID_CREDENTIALS');
    expect(claimsOf(b.session!.access_token).aal).toBe('aal1');
  });

  it('one code sent many times at once is accepted exactly once', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const sessions = await Promise.all(Array.from({ length: 8 }, () => signIn(server.url, user.email)));
    await freshStep();
    const code = totpCode(totp.secret);
    const answers = await Promise.all(
      sessions.map((session, i) =>
        request(i % 2 === 0 ? server.url : second.url, 'POST', '/v1/auth/mfa/challenge', {
          token: session.session!.access_token,
          body: { factor_id: totp.factorId, code },
        }),
      ),
    );
    // Exactly one wins. The others are refused as a used code, or (past the per-user budget
    // of 5, which counts attempts before they are checked) as rate limited.
    expect(
      answers.filter((answer) => answer.status === 200),
      answers.map((a) => a.text).join('\n'),
    ).toHaveLength(1);
    for (const answer of answers.filter((a) => a.status !== 200)) {
      expect(['INVALID_CREDENTIALS', 'RATE_LIMITED']).toContain(errorCode(answer.body));
    }
    expect(answers.filter((answer) => answer.status === 400).length).toBeGreaterThanOrEqual(3);
  });

  it('two activations of one factor racing with different codes: one wins and issues the recovery codes', async () => {
    const user = await signUp(server.url);
    const enrolled = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', { token: user.token, body: {} });
    const { factor_id: factorId, secret } = enrolled.body as { factor_id: string; secret: string };
    await freshStep();
    const answers = await Promise.all(
      [-1, 0].map((offset, i) =>
        request(i === 0 ? server.url : second.url, 'POST', '/v1/auth/mfa/totp/verify', {
          token: user.token,
          body: { factor_id: factorId, code: totpCode(secret, offset) },
        }),
      ),
    );
    const won = answers.filter((answer) => answer.status === 200);
    expect(won, answers.map((answer) => answer.text).join('\n')).toHaveLength(1);
    const codes = (won[0]!.body as { recovery_codes: string[] }).recovery_codes;
    // The winner's codes are the ones that work.
    const aal1 = (await signIn(server.url, user.email)).session!.access_token;
    const used = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aal1,
      body: { recovery_code: codes[0] },
    });
    expect(used.status, used.text).toBe(200);
  });

  it('a recovery code gives aal2 once; written in any case, with or without the dash', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const [code] = totp.recoveryCodes as [string];
    const a = await signIn(server.url, user.email);
    const used = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: a.session!.access_token,
      body: { recovery_code: ` ${code.toUpperCase().replace('-', '')} ` },
    });
    expect(used.status, used.text).toBe(200);
    expect(claimsOf((used.body as AuthBody).session!.access_token).aal).toBe('aal2');

    const b = await signIn(server.url, user.email);
    const again = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: b.session!.access_token,
      body: { recovery_code: code },
    });
    expect(errorCode(again.body)).toBe('INVALID_CREDENTIALS');
    const listed = await request(server.url, 'GET', '/v1/auth/mfa/factors', { token: b.session!.access_token });
    expect((listed.body as { recovery_codes_left: number }).recovery_codes_left).toBe(9);
    // Both at once, or neither: a challenge takes either form.
    const both = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: b.session!.access_token,
      body: { factor_id: totp.factorId, code: '123456', recovery_code: totp.recoveryCodes[1] },
    });
    expect(errorCode(both.body)).toBe('INVALID_REQUEST');
    const neither = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: b.session!.access_token,
      body: {},
    });
    expect(errorCode(neither.body)).toBe('INVALID_REQUEST');
    // Another user's recovery code is nobody's.
    const other = await signUp(server.url);
    await enableTotp(server.url, other.token);
    const otherSignIn = await signIn(server.url, other.email);
    const foreign = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: otherSignIn.session!.access_token,
      body: { recovery_code: totp.recoveryCodes[2] },
    });
    expect(errorCode(foreign.body)).toBe('INVALID_CREDENTIALS');
  });

  it('wrong codes are rate limited per user, counted together by every instance', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const session = (await signIn(server.url, user.email)).session!;
    const wrongCode = (n: number) => (Number(totpCode(totp.secret, 4)) + n).toString().padStart(6, '0').slice(-6);
    for (let i = 0; i < 5; i++) {
      const answer = await request(i % 2 === 0 ? server.url : second.url, 'POST', '/v1/auth/mfa/challenge', {
        token: session.access_token,
        body: { factor_id: totp.factorId, code: wrongCode(i) },
      });
      expect(errorCode(answer.body), answer.text).toBe('INVALID_CREDENTIALS');
    }
    await freshStep();
    for (const url of [server.url, second.url]) {
      const limited = await request(url, 'POST', '/v1/auth/mfa/challenge', {
        token: session.access_token,
        body: { factor_id: totp.factorId, code: totpCode(totp.secret) },
      });
      expect(limited.status).toBe(429);
      expect(errorCode(limited.body)).toBe('RATE_LIMITED');
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    // Recovery codes share the budget.
    const recovery = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: session.access_token,
      body: { recovery_code: totp.recoveryCodes[0] },
    });
    expect(recovery.status).toBe(429);
    // Another user is not affected.
    const other = await signUp(server.url);
    const otherTotp = await enableTotp(server.url, other.token);
    expect(otherTotp.recoveryCodes).toHaveLength(10);
  });

  it('removing a factor needs aal2; it ends every other session, and the last factor takes the recovery codes along', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const aal1 = (await signIn(server.url, user.email)).session!;
    const refused = await request(server.url, 'DELETE', `/v1/auth/mfa/factors/${totp.factorId}`, {
      token: aal1.access_token,
    });
    expect(refused.status).toBe(403);
    expect(errorCode(refused.body)).toBe('MFA_REQUIRED');
    // At aal1, adding another factor (a thief's own) is refused too.
    const enroll = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', {
      token: aal1.access_token,
      body: {},
    });
    expect(errorCode(enroll.body)).toBe('MFA_REQUIRED');

    const removed = await request(server.url, 'DELETE', `/v1/auth/mfa/factors/${totp.factorId}`, {
      token: totp.accessToken,
    });
    expect(removed.status, removed.text).toBe(204);
    const gone = await request(server.url, 'POST', '/v1/auth/refresh', { body: { refresh_token: aal1.refresh_token } });
    expect(errorCode(gone.body)).toBe('UNAUTHENTICATED');
    await waitFor('the other session to end', async () => {
      const me = await request(server.url, 'GET', '/v1/auth/user', { token: aal1.access_token });
      return me.status === 401;
    });
    // The session that removed it goes on.
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: totp.accessToken })).status).toBe(200);
    const codes = await server.sql.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM basalt.recovery_codes WHERE user_id = $1',
      [user.id],
    );
    expect(codes.rows[0]!.n).toBe(0);
    expect((await signIn(server.url, user.email)).mfa_required).toBe(false);
  });

  it('a new factor ends the user’s other sessions', async () => {
    const user = await signUp(server.url);
    const other = (await signIn(server.url, user.email)).session!;
    const totp = await enableTotp(server.url, user.token);
    expect(claimsOf(totp.accessToken).aal).toBe('aal2');
    const refresh = await request(second.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: other.refresh_token },
    });
    expect(errorCode(refresh.body)).toBe('UNAUTHENTICATED');
    await waitFor('the other session to end on every instance', async () => {
      const a = await request(server.url, 'GET', '/v1/auth/user', { token: other.access_token });
      const b = await request(second.url, 'GET', '/v1/auth/user', { token: other.access_token });
      return a.status === 401 && b.status === 401;
    });
    // The enrolling session itself was replaced by the aal2 one.
    await waitFor('the enrolling aal1 session to end', async () => {
      const me = await request(server.url, 'GET', '/v1/auth/user', { token: user.token });
      return me.status === 401;
    });
  });

  it('another user’s factor id is not found, whatever the call', async () => {
    const alice = await signUp(server.url);
    const bob = await signUp(server.url);
    const bobTotp = await enableTotp(server.url, bob.token);
    const aliceTotp = await enableTotp(server.url, alice.token);
    await freshStep();
    const challenge = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aliceTotp.accessToken,
      body: { factor_id: bobTotp.factorId, code: totpCode(bobTotp.secret) },
    });
    expect(errorCode(challenge.body)).toBe('NOT_FOUND');
    const verify = await request(server.url, 'POST', '/v1/auth/mfa/totp/verify', {
      token: aliceTotp.accessToken,
      body: { factor_id: bobTotp.factorId, code: totpCode(bobTotp.secret) },
    });
    expect(errorCode(verify.body)).toBe('NOT_FOUND');
    const remove = await request(server.url, 'DELETE', `/v1/auth/mfa/factors/${bobTotp.factorId}`, {
      token: aliceTotp.accessToken,
    });
    expect(errorCode(remove.body)).toBe('NOT_FOUND');
    const still = await server.sql.query('SELECT 1 FROM basalt.auth_factors WHERE id = $1', [bobTotp.factorId]);
    expect(still.rowCount).toBe(1);
  });

  it('auth.aal in a collection rule: aal1 is denied, aal2 allowed, in SQL queries and single-document checks', async () => {
    await createCollection(server, {
      name: 'vault',
      rules: { read: 'auth != null && auth.aal == "aal2"', create: 'auth.aal == "aal2" && incoming.owner == auth.uid' },
    });
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const aal1 = (await signIn(server.url, user.email)).session!.access_token;

    const deniedCreate = await request(server.url, 'POST', '/v1/db/vault', { token: aal1, body: { data: { n: 1 } } });
    expect(deniedCreate.status).toBe(403);
    expect(errorCode(deniedCreate.body)).toBe('FORBIDDEN');
    const created = await request(server.url, 'POST', '/v1/db/vault', {
      token: totp.accessToken,
      body: { data: { n: 1 } },
    });
    expect(created.status, created.text).toBe(201);
    const id = (created.body as { id: string }).id;

    const listAal1 = await request(server.url, 'POST', '/v1/db/vault/query', { token: aal1, body: {} });
    expect((listAal1.body as { docs: unknown[] }).docs).toHaveLength(0);
    const listAal2 = await request(server.url, 'POST', '/v1/db/vault/query', { token: totp.accessToken, body: {} });
    expect((listAal2.body as { docs: Array<{ id: string }> }).docs.map((doc) => doc.id)).toEqual([id]);

    const oneAal1 = await request(server.url, 'GET', `/v1/db/vault/${id}`, { token: aal1 });
    expect(oneAal1.status).toBe(404);
    const oneAal2 = await request(server.url, 'GET', `/v1/db/vault/${id}`, { token: totp.accessToken });
    expect(oneAal2.status).toBe(200);
  });

  it('the email and password of an account with a factor change only at aal2', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const aal1 = (await signIn(server.url, user.email)).session!.access_token;
    for (const body of [{ password: 'another good passphrase 7' }, { email: `moved-${user.email}` }]) {
      const refused = await request(server.url, 'PATCH', '/v1/auth/user', { token: aal1, body });
      expect(refused.status).toBe(403);
      expect(errorCode(refused.body)).toBe('MFA_REQUIRED');
    }
    // Metadata is not a credential.
    const data = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: aal1,
      body: { data: { theme: 'dark' } },
    });
    expect(data.status).toBe(200);
    const changed = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: totp.accessToken,
      body: { password: 'another good passphrase 7' },
    });
    expect(changed.status, changed.text).toBe(200);
  });

  it('an admin resets a user who lost every factor: factors, passkeys and recovery codes go, sessions end', async () => {
    const user = await signUp(server.url);
    const totp = await enableTotp(server.url, user.token);
    const byUser = await request(server.url, 'DELETE', `/v1/admin/users/${user.id}/factors`, {
      token: totp.accessToken,
    });
    expect(byUser.status).toBe(403);
    const reset = await request(server.url, 'DELETE', `/v1/admin/users/${user.id}/factors`, {
      token: server.serviceKey,
    });
    expect(reset.status, reset.text).toBe(200);
    expect(reset.body).toEqual({ removed: 1 });
    await waitFor('the aal2 session to end', async () => {
      const me = await request(server.url, 'GET', '/v1/auth/user', { token: totp.accessToken });
      return me.status === 401;
    });
    expect((await signIn(server.url, user.email)).mfa_required).toBe(false);
    const codes = await server.sql.query('SELECT 1 FROM basalt.recovery_codes WHERE user_id = $1', [user.id]);
    expect(codes.rowCount).toBe(0);
    const missing = await request(
      server.url,
      'DELETE',
      `/v1/admin/users/00000000-0000-4000-8000-000000000000/factors`,
      {
        token: server.serviceKey,
      },
    );
    expect(errorCode(missing.body)).toBe('NOT_FOUND');
  });

  it("support staff list a user's factors, passkeys and recovery codes left, never a secret or a key", async () => {
    const user = await signUp(server.url);
    const path = `/v1/admin/users/${user.id}/factors`;
    const none = await request(server.url, 'GET', path, { token: server.serviceKey });
    expect(none.status, none.text).toBe(200);
    expect(none.body).toEqual({ factors: [], passkeys: [], recovery_codes_left: 0 });

    const {
      factorId,
      secret,
      accessToken: aal2,
    } = await enableTotp(server.url, user.token, {
      friendly_name: 'Phone',
    });
    // A passkey as registration stores it; its public key must stay in the database.
    const publicKey = Buffer.from('a passkey public key, never to be shown');
    await server.sql.query(
      `INSERT INTO basalt.passkeys (user_id, credential_id, public_key, device_type, name) VALUES ($1, 'cred-1', $2, 'multiDevice', 'Laptop')`,
      [user.id, publicKey],
    );

    const listed = await request(server.url, 'GET', path, { token: server.serviceKey });
    expect(listed.status, listed.text).toBe(200);
    const body = listed.body as {
      factors: Array<Record<string, unknown>>;
      passkeys: Array<Record<string, unknown>>;
      recovery_codes_left: number;
    };
    expect(body.recovery_codes_left).toBe(10);
    expect(body.factors).toEqual([
      expect.objectContaining({ id: factorId, type: 'totp', friendly_name: 'Phone', status: 'verified' }),
    ]);
    expect(typeof body.factors[0]!.created_at).toBe('string');
    expect(typeof body.factors[0]!.last_used_at).toBe('string');
    expect(body.passkeys).toEqual([expect.objectContaining({ name: 'Laptop', last_used_at: null })]);
    // No secret in any form: the base32 secret, its sealed column, the key, the credential id, code digests.
    const sealed = await server.sql.query<{ secret: string }>('SELECT secret FROM basalt.auth_factors WHERE id = $1', [
      factorId,
    ]);
    const digests = await server.sql.query<{ code_hash: Buffer }>(
      'SELECT code_hash FROM basalt.recovery_codes WHERE user_id = $1',
      [user.id],
    );
    for (const leaked of [
      secret,
      sealed.rows[0]!.secret,
      publicKey.toString('base64'),
      publicKey.toString('base64url'),
      publicKey.toString('hex'),
      'cred-1',
      ...digests.rows.flatMap((row) => [row.code_hash.toString('hex'), row.code_hash.toString('base64')]),
    ]) {
      expect(listed.text).not.toContain(leaked);
    }
    for (const factor of body.factors) expect(Object.keys(factor)).not.toContain('secret');
    for (const passkey of body.passkeys) {
      expect(Object.keys(passkey)).not.toContain('public_key');
      expect(Object.keys(passkey)).not.toContain('credential_id');
      expect(Object.keys(passkey)).not.toContain('counter');
    }

    const byUser = await request(server.url, 'GET', path, { token: aal2 });
    expect(byUser.status).toBe(403);
    expect(errorCode(byUser.body)).toBe('FORBIDDEN');
    const missing = await request(server.url, 'GET', '/v1/admin/users/00000000-0000-4000-8000-000000000000/factors', {
      token: server.serviceKey,
    });
    expect(missing.status).toBe(404);
    expect(errorCode(missing.body)).toBe('NOT_FOUND');
  });

  it('anonymous users cannot enroll; the public cannot call any of it', async () => {
    const anonymous = await request(server.url, 'POST', '/v1/auth/anonymous');
    const token = (anonymous.body as AuthBody).session!.access_token;
    const enroll = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', { token, body: {} });
    expect(errorCode(enroll.body)).toBe('FORBIDDEN');
    for (const [method, path] of [
      ['POST', '/v1/auth/mfa/totp/enroll'],
      ['GET', '/v1/auth/mfa/factors'],
      ['POST', '/v1/auth/mfa/challenge'],
    ] as const) {
      const answer = await request(server.url, method, path, method === 'POST' ? { body: {} } : {});
      expect(answer.status, `${method} ${path}`).toBe(401);
    }
  });
});

describe('second factors: per-IP limit', () => {
  const env = { BASALT_AUTH_RATE_MFA_IP: '4', BASALT_AUTH_RATE_MFA_FAILED_USER: '1000' };
  const server = useTestApp({ env });
  const second = useTestApp({ sharing: server, env });

  it('wrong codes from one address are limited across users, counted together by every instance', async () => {
    const users = await Promise.all([signUp(server.url), signUp(server.url)]);
    const factors = [];
    for (const user of users) {
      const enrolled = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', { token: user.token, body: {} });
      factors.push((enrolled.body as { factor_id: string }).factor_id);
    }
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      // Alternating users, and instances in pairs: neither a user's nor an instance's count alone reaches 4.
      const answer = await request(i % 4 < 2 ? server.url : second.url, 'POST', '/v1/auth/mfa/totp/verify', {
        token: users[i % 2]!.token,
        body: { factor_id: factors[i % 2]!, code: '000000' },
      });
      statuses.push(answer.status);
    }
    expect(statuses).toEqual([400, 400, 400, 400, 429, 429]);
  });
});

describe('second factors: every first-factor sign-in says mfa_required, and the SDK', () => {
  const mail = useMailServer();
  const server = useTestApp({ env: () => ({ SMTP_URL: mail.url, BASALT_AUTH_EMAIL_INTERVAL: '0' }) });

  it('a magic-link sign-in of a user with a factor is aal1 with mfa_required, in the answer and the redirect', async () => {
    const user = await signUp(server.url);
    await enableTotp(server.url, user.token);
    const asked = mail.mails.length;
    expect((await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email: user.email } })).status).toBe(202);
    const link = await mail.waitFor((m) => m.to.includes(user.email) && mail.mails.indexOf(m) >= asked);
    const verified = await request(server.url, 'POST', '/v1/auth/verify', {
      body: { type: 'magiclink', token: tokenFromMail(link) },
    });
    expect(verified.status, verified.text).toBe(200);
    const body = verified.body as AuthBody;
    expect(body.mfa_required).toBe(true);
    expect(claimsOf(body.session!.access_token).aal).toBe('aal1');

    // The mailed GET link, followed back to the app: the fragment says so too.
    const before = mail.mails.length;
    expect((await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email: user.email } })).status).toBe(202);
    const again = await mail.waitFor((m) => m.to.includes(user.email) && mail.mails.indexOf(m) >= before);
    const app = `${new URL(server.config.publicUrl).origin}/welcome`;
    const query = new URLSearchParams({ type: 'magiclink', token: tokenFromMail(again), redirect_to: app });
    const followed = await fetch(`${server.url}/v1/auth/verify?${query.toString()}`, { redirect: 'manual' });
    expect(followed.status).toBe(302);
    const fragment = new URLSearchParams(new URL(followed.headers.get('location')!).hash.slice(1));
    expect(fragment.get('mfa_required')).toBe('true');
    expect(claimsOf(fragment.get('access_token')!).aal).toBe('aal1');
  });

  it('an OAuth sign-in (the identity entry point) of a user with a factor is aal1 with mfa_required', async () => {
    const auth = buildAuthModule(server.app.platform);
    await auth.start();
    try {
      const context = { ip: '127.0.0.1', userAgent: 'test' };
      const identity = { provider: 'idp', subject: `sub-${Date.now()}`, email: null, emailVerified: false };
      const first = await auth.service.signInWithIdentity(identity, context);
      expect(first.mfa_required).toBe(false);
      await enableTotp(server.url, first.session!.access_token);
      const again = await auth.service.signInWithIdentity(identity, context);
      expect(again.mfa_required).toBe(true);
      expect(claimsOf(again.session!.access_token).aal).toBe('aal1');
    } finally {
      await auth.stop();
    }
  });

  it('through the SDK: enrollTotp, verify, signIn says mfa_required, challenge gives aal2, auth.aal follows', async () => {
    const client = createClient(server.url, { persistSession: false, autoRefreshToken: false });
    const email = `sdk-${Date.now()}@example.com`;
    await client.auth.signUp({ email, password: STRONG_PASSWORD });
    expect(client.auth.aal).toBe('aal1');
    const enrollment = await client.auth.mfa.enrollTotp({ friendlyName: 'phone' });
    await freshStep();
    const { recovery_codes: codes } = await client.auth.mfa.verify({
      factorId: enrollment.factor_id,
      code: totpCode(enrollment.secret, -1),
    });
    expect(codes).toHaveLength(10);
    expect(client.auth.aal).toBe('aal2');
    expect((await client.auth.mfa.factors()).factors).toHaveLength(1);

    const other = createClient(server.url, { persistSession: false, autoRefreshToken: false });
    const signedIn = await other.auth.signIn({ email, password: STRONG_PASSWORD });
    expect(signedIn.mfa_required).toBe(true);
    expect(other.auth.aal).toBe('aal1');
    await expect(other.auth.mfa.remove(enrollment.factor_id)).rejects.toMatchObject({ code: 'MFA_REQUIRED' });
    await other.auth.mfa.challenge({ factorId: enrollment.factor_id, code: totpCode(enrollment.secret) });
    expect(other.auth.aal).toBe('aal2');
    // The session it replaced is gone; the new one works.
    expect((await other.auth.getUser()).email).toBe(email);

    const third = createClient(server.url, { persistSession: false, autoRefreshToken: false });
    await third.auth.signIn({ email, password: STRONG_PASSWORD });
    await third.auth.mfa.challenge({ recoveryCode: codes[0]! });
    expect(third.auth.aal).toBe('aal2');
    await third.auth.mfa.remove(enrollment.factor_id);
    expect((await third.auth.mfa.factors()).factors).toEqual([]);
    await third.auth.signOut();
    expect(third.auth.aal).toBeNull();
  });
});
