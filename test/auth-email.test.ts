import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { errorCode, request, startTestApp, useTestApp } from './helpers.js';
import {
  STRONG_PASSWORD,
  signIn,
  useMailServer,
  tokenFromMail,
  uniqueEmail,
  type AuthBody,
  type UserBody,
} from './auth-helpers.js';

const mail = useMailServer();

const server = useTestApp({
  env: () => ({ SMTP_URL: mail.url, BASALT_AUTH_CONFIRM_EMAIL: 'true', BASALT_PUBLIC_URL: 'http://127.0.0.1:9' }),
});

const to = (address: string) => (m: { to: string[] }) => m.to.includes(address);

async function verify(body: Record<string, unknown>) {
  return request(server.url, 'POST', '/v1/auth/verify', { body });
}

async function confirmedUser(email = uniqueEmail()): Promise<string> {
  const created = await request(server.url, 'POST', '/v1/admin/users', {
    token: server.serviceKey,
    body: { email, password: STRONG_PASSWORD, email_confirm: true },
  });
  expect(created.status).toBe(201);
  return email;
}

describe('email confirmation', () => {
  it('signs up without a session, mails a link, and confirms with it', async () => {
    const email = uniqueEmail('confirm');
    const signup = await request(server.url, 'POST', '/v1/auth/signup', { body: { email, password: STRONG_PASSWORD } });
    expect(signup.status).toBe(201);
    expect((signup.body as AuthBody).session).toBeNull();
    const message = await mail.waitFor(to(email));
    expect(message.text).toContain('http://127.0.0.1:9/v1/auth/verify?type=signup&token=');
    const early = await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: STRONG_PASSWORD } });
    expect(early.status).toBe(403);
    const confirmed = await verify({ type: 'signup', token: tokenFromMail(message) });
    expect(confirmed.status).toBe(200);
    const body = confirmed.body as AuthBody;
    expect(body.user.email_confirmed_at).not.toBeNull();
    expect(body.session?.access_token).toBeTruthy();
    await signIn(server.url, email);
  });

  it('resends the confirmation after the mail interval, and voids the older link', async () => {
    const quick = await startTestApp(server.database, {
      SMTP_URL: mail.url,
      BASALT_AUTH_CONFIRM_EMAIL: 'true',
      BASALT_AUTH_EMAIL_INTERVAL: '1',
    });
    try {
      const email = uniqueEmail('resend');
      await request(quick.url, 'POST', '/v1/auth/signup', { body: { email, password: STRONG_PASSWORD } });
      const first = tokenFromMail(await mail.waitFor(to(email)));
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const resent = await request(quick.url, 'POST', '/v1/auth/resend', { body: { email } });
      expect(resent.status).toBe(202);
      const second = tokenFromMail(await mail.waitFor((m) => to(email)(m) && !m.text.includes(first)));
      expect((await verify({ type: 'signup', token: first })).status).toBe(400);
      expect((await verify({ type: 'signup', token: second })).status).toBe(200);
      // Confirmed: nothing more is sent, and the answer is the same.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      expect((await request(quick.url, 'POST', '/v1/auth/resend', { body: { email } })).status).toBe(202);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(mail.mails.filter(to(email))).toHaveLength(2);
    } finally {
      await quick.close();
    }
  });

  it('answers a sign-up with a taken address like a fresh one', async () => {
    const email = await confirmedUser();
    const again = await request(server.url, 'POST', '/v1/auth/signup', { body: { email, password: STRONG_PASSWORD } });
    expect(again.status).toBe(201);
    expect(Object.keys(again.body as object).sort()).toEqual(['session', 'user']);
    expect((again.body as AuthBody).session).toBeNull();
  });
});

describe('password recovery', () => {
  it('answers 202 for unknown and known addresses, and mails only the known one', async () => {
    const unknown = uniqueEmail('nobody');
    const known = await confirmedUser();
    const a = await request(server.url, 'POST', '/v1/auth/recover', { body: { email: unknown } });
    const b = await request(server.url, 'POST', '/v1/auth/recover', { body: { email: known } });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(a.text).toBe(b.text);
    await mail.waitFor(to(known));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(mail.mails.some(to(unknown))).toBe(false);
  });

  it('resets the password once with a token stored only hashed, and ends other sessions', async () => {
    const email = await confirmedUser();
    const before = (await signIn(server.url, email)).session!;
    await request(server.url, 'POST', '/v1/auth/recover', { body: { email } });
    const token = tokenFromMail(await mail.waitFor(to(email)));

    const digest = createHash('sha256').update(token).digest();
    const stored = await server.sql.query<{ token_hash: Buffer }>(
      'SELECT token_hash FROM basalt.email_tokens WHERE token_hash = $1',
      [digest],
    );
    expect(stored.rowCount).toBe(1);
    const plain = await server.sql.query(
      `SELECT 1 FROM basalt.email_tokens t WHERE position($1 in t::text) > 0 OR position($2 in t::text) > 0`,
      [token, Buffer.from(token).toString('hex')],
    );
    expect(plain.rowCount).toBe(0);

    // A weak choice is refused without spending the token.
    const weak = await verify({ type: 'recovery', token, password: 'password' });
    expect(weak.status).toBe(400);
    expect(errorCode(weak.body)).toBe('WEAK_PASSWORD');

    const reset = await verify({ type: 'recovery', token, password: 'my new long passphrase' });
    expect(reset.status).toBe(200);
    expect((reset.body as AuthBody).session).not.toBeNull();
    const reused = await verify({ type: 'recovery', token, password: 'another long passphrase' });
    expect(reused.status).toBe(400);
    expect(errorCode(reused.body)).toBe('INVALID_TOKEN');

    await signIn(server.url, email, 'my new long passphrase');
    const old = await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: STRONG_PASSWORD } });
    expect(errorCode(old.body)).toBe('INVALID_CREDENTIALS');
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: before.access_token })).status).toBe(401);
  });

  it('rejects an expired token', async () => {
    const quick = await startTestApp(server.database, {
      SMTP_URL: mail.url,
      BASALT_AUTH_EMAIL_TOKEN_TTL: '1',
    });
    try {
      const email = await confirmedUser();
      await request(quick.url, 'POST', '/v1/auth/recover', { body: { email } });
      const token = tokenFromMail(await mail.waitFor(to(email)));
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const late = await request(quick.url, 'POST', '/v1/auth/verify', {
        body: { type: 'recovery', token, password: 'my new long passphrase' },
      });
      expect(late.status).toBe(400);
      expect(errorCode(late.body)).toBe('INVALID_TOKEN');
    } finally {
      await quick.close();
    }
  });

  it('sends at most one mail per address per interval', async () => {
    const email = await confirmedUser();
    for (let i = 0; i < 3; i++) {
      expect((await request(server.url, 'POST', '/v1/auth/recover', { body: { email } })).status).toBe(202);
    }
    await mail.waitFor(to(email));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(mail.mails.filter(to(email))).toHaveLength(1);
  });

  it('does not accept a token of another type', async () => {
    const email = await confirmedUser();
    await request(server.url, 'POST', '/v1/auth/recover', { body: { email } });
    const token = tokenFromMail(await mail.waitFor(to(email)));
    expect(errorCode((await verify({ type: 'magiclink', token })).body)).toBe('INVALID_TOKEN');
    expect((await verify({ type: 'recovery', token, password: 'my new long passphrase' })).status).toBe(200);
  });
});

describe('magic links', () => {
  it('signs in with a mailed link, once', async () => {
    const email = await confirmedUser();
    expect((await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email } })).status).toBe(202);
    const token = tokenFromMail(await mail.waitFor(to(email)));
    const first = await verify({ type: 'magiclink', token });
    expect(first.status).toBe(200);
    expect((first.body as AuthBody).user.email).toBe(email);
    expect((await verify({ type: 'magiclink', token })).status).toBe(400);
  });

  it('follows the mailed GET link back to the app with the session in the fragment', async () => {
    const email = await confirmedUser();
    const redirect = 'http://127.0.0.1:9/welcome';
    await request(server.url, 'POST', '/v1/auth/magiclink', { body: { email, redirect_to: redirect } });
    const message = await mail.waitFor(to(email));
    const link = /http:\/\/127\.0\.0\.1:9(\/v1\/auth\/verify\?[^\s]+)/.exec(message.text)?.[1];
    expect(link).toBeTruthy();
    const response = await fetch(`${server.url}${link}`, { redirect: 'manual' });
    expect(response.status).toBe(302);
    const location = new URL(response.headers.get('location')!);
    expect(`${location.origin}${location.pathname}`).toBe(redirect);
    const params = new URLSearchParams(location.hash.slice(1));
    expect(params.get('access_token')).toBeTruthy();
    expect(params.get('refresh_token')).toBeTruthy();
    expect(params.get('type')).toBe('magiclink');
  });
});

describe('email change', () => {
  it('changes the address only after the new address confirms', async () => {
    const email = await confirmedUser();
    const { session } = await signIn(server.url, email);
    const next = uniqueEmail('new');
    const patched = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: session!.access_token,
      body: { email: next },
    });
    expect(patched.status).toBe(200);
    expect((patched.body as UserBody).email).toBe(email);
    const token = tokenFromMail(await mail.waitFor(to(next)));
    const confirmed = await verify({ type: 'email_change', token });
    expect(confirmed.status).toBe(200);
    expect((confirmed.body as AuthBody).user.email).toBe(next);
    await signIn(server.url, next);
  });

  it('answers an address that is taken like a free one, changes nothing, and tells that address', async () => {
    const email = await confirmedUser();
    const other = await confirmedUser();
    const { session } = await signIn(server.url, email);
    const patched = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: session!.access_token,
      body: { email: other },
    });
    expect(patched.status).toBe(200);
    expect((patched.body as UserBody).email).toBe(email);
    const notice = await mail.waitFor(to(other));
    expect(notice.text).toContain('already belongs to an account');
    expect(notice.text).not.toContain('token=');
  });
});
