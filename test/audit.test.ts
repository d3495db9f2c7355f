import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { AuditRepository } from '../server/modules/audit/repository.js';
import { AuditLog } from '../server/modules/audit/service.js';
import { adminEventType } from '../server/modules/audit/events.js';
import { isChangingAdminRoute } from '../server/modules/audit/routes.js';
import { ADVISORY_LOCKS } from '../server/internal/advisory-locks.js';
import { silentLogger } from './helpers.js';
import { errorCode, request, startTestApp, useTestApp, waitFor, type SharedTestApp } from './helpers.js';
import { STRONG_PASSWORD, signIn, signUp, uniqueEmail, type AuthBody } from './auth-helpers.js';
import { enableTotp, forgedAssertion, freshStep, totpCode } from './auth-mfa-support.js';

/**
 * The audit log: every account event (in the transaction of its change, failed sign-ins on
 * their own), every changing admin call (a route hook, so new admin routes are covered), the
 * admin API that reads it, its retention, and impersonation ("view as").
 */

interface AuditEventBody {
  id: string;
  type: string;
  at: string;
  user_id: string | null;
  actor: { type: string; id?: string; impersonator?: string };
  ip: string | null;
  user_agent: string | null;
  details: Record<string, unknown>;
}

const FUNCTIONS = {
  // Fails at once, no retries: its first run is dead-lettered, for the retry route.
  'alwaysFails.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'doomed', on: 'create', retries: 0 }, async () => {
      throw new Error('always');
    });`,
};

const server = useTestApp({
  functions: FUNCTIONS,
  env: {
    BASALT_TRUST_PROXY: 'true',
    BASALT_AUTH_REFRESH_REUSE_GRACE: '0',
    BASALT_AUTH_RATE_SIGNIN_FAILED_ACCOUNT_IP: '3',
  },
});

/** A deploy body: one HTTP function answering `answer`. */
function deployBody(answer: string): { files: Record<string, string>; entry: string } {
  return {
    files: {
      'index.ts': `import { http } from 'basalt/functions';\nexport default http(async () => (${JSON.stringify(answer)}));\n`,
    },
    entry: 'index.ts',
  };
}

async function deploy(name: string, answer: string): Promise<void> {
  const deployed = await request(server.url, 'PUT', `/v1/admin/functions/${name}`, {
    token: server.serviceKey,
    body: deployBody(answer),
  });
  expect(deployed.status, deployed.text).toBe(201);
}

let ipCounter = 10;
/** A fresh client address per test, so per-IP limits of one test never touch another. */
function nextIp(): string {
  ipCounter += 1;
  return `203.0.113.${ipCounter}`;
}

async function events(app: SharedTestApp, query: Record<string, string> = {}): Promise<AuditEventBody[]> {
  const search = new URLSearchParams(query).toString();
  const response = await request(app.url, 'GET', `/v1/admin/audit${search ? `?${search}` : ''}`, {
    token: app.serviceKey,
  });
  expect(response.status, response.text).toBe(200);
  return (response.body as { events: AuditEventBody[] }).events;
}

async function eventsOf(userId: string, type?: string): Promise<AuditEventBody[]> {
  return events(server, { user_id: userId, ...(type ? { type } : {}), limit: '500' });
}

function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

describe('account events', () => {
  it('records a sign-up and its sign-in with the client address (X-Forwarded-For, trusted) and user agent', async () => {
    const email = uniqueEmail('audit');
    const ip = nextIp();
    const response = await request(server.url, 'POST', '/v1/auth/signup', {
      body: { email, password: STRONG_PASSWORD },
      headers: { 'x-forwarded-for': ip, 'user-agent': 'audit-test/1.0' },
    });
    expect(response.status).toBe(201);
    const body = response.body as AuthBody;
    const recorded = await eventsOf(body.user.id);
    expect(recorded.map((event) => event.type)).toEqual(['auth.signin', 'auth.signup']);
    const [signin, signup] = recorded as [AuditEventBody, AuditEventBody];
    expect(signup).toMatchObject({
      user_id: body.user.id,
      actor: { type: 'user', id: body.user.id },
      ip,
      user_agent: 'audit-test/1.0',
      details: { method: 'password', email, confirmation_required: false },
    });
    expect(signin.details).toMatchObject({ method: 'signup' });
    expect(typeof signin.details.session_id).toBe('string');
    expect(Number(signin.id)).toBeGreaterThan(Number(signup.id));
    expect(Date.parse(signin.at)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('records failed sign-ins with why: wrong password, unknown email, malformed email, banned, rate limited', async () => {
    const user = await signUp(server.url);
    const ip = nextIp();
    const attempt = (email: string, password: string) =>
      request(server.url, 'POST', '/v1/auth/signin', { body: { email, password }, headers: { 'x-forwarded-for': ip } });

    const unknown = uniqueEmail('nobody');
    expect((await attempt(unknown, STRONG_PASSWORD)).status).toBe(400);
    expect((await attempt('not an address', STRONG_PASSWORD)).status).toBe(400);
    for (let i = 0; i < 3; i++) expect((await attempt(user.email, 'wrong password here')).status).toBe(400);
    // The fourth failure for this account and address is over the limit of 3.
    const limited = await attempt(user.email, 'wrong password here');
    expect(limited.status).toBe(429);

    const forUser = await eventsOf(user.id, 'auth.signin_failed');
    expect(forUser.map((event) => event.details.reason)).toEqual([
      'wrong_password',
      'wrong_password',
      'wrong_password',
    ]);
    expect(forUser.every((event) => event.ip === ip && event.actor.type === 'anonymous')).toBe(true);

    const failures = await events(server, { type: 'auth.signin_failed', limit: '500' });
    const byEmail = (email: string) => failures.find((event) => event.details.email === email);
    // A limited attempt is refused before any account lookup (it stays cheap): it names the address.
    expect(
      failures.find((event) => event.details.reason === 'rate_limited' && event.details.email === user.email),
    ).toMatchObject({
      user_id: null,
      ip,
    });
    expect(byEmail(unknown)).toMatchObject({ user_id: null, details: { reason: 'unknown_email' } });
    expect(byEmail('not an address')).toMatchObject({ user_id: null, details: { reason: 'invalid_email' } });
    // The wrong password itself is never recorded.
    expect(JSON.stringify(failures)).not.toContain('wrong password here');

    const banned = await signUp(server.url);
    const ban = await request(server.url, 'PATCH', `/v1/admin/users/${banned.id}`, {
      token: server.serviceKey,
      body: { banned_until: new Date(Date.now() + 3_600_000).toISOString() },
    });
    expect(ban.status).toBe(200);
    const refused = await request(server.url, 'POST', '/v1/auth/signin', {
      body: { email: banned.email, password: STRONG_PASSWORD },
      headers: { 'x-forwarded-for': nextIp() },
    });
    expect(refused.status).toBe(403);
    expect((await eventsOf(banned.id, 'auth.signin_failed'))[0]?.details.reason).toBe('banned');
  });

  it('records a sign-in, sign-outs and ending one session, each with its session', async () => {
    const user = await signUp(server.url);
    const first = await signIn(server.url, user.email);
    const second = await signIn(server.url, user.email);
    const third = await signIn(server.url, user.email);
    const signins = await eventsOf(user.id, 'auth.signin');
    expect(signins.filter((event) => event.details.method === 'password')).toHaveLength(3);

    const sessions = (
      (await request(server.url, 'GET', '/v1/auth/sessions', { token: first.session!.access_token })).body as {
        sessions: { id: string; current: boolean; impersonated_by: string | null }[];
      }
    ).sessions;
    expect(sessions.every((session) => session.impersonated_by === null)).toBe(true);
    const secondId = claimsOf(second.session!.access_token).session_id as string;
    const revoke = await request(server.url, 'DELETE', `/v1/auth/sessions/${secondId}`, {
      token: first.session!.access_token,
    });
    expect(revoke.status).toBe(204);

    const local = await request(server.url, 'POST', '/v1/auth/signout', { token: third.session!.access_token });
    expect(local.status).toBe(204);
    const global = await request(server.url, 'POST', '/v1/auth/signout', {
      token: first.session!.access_token,
      body: { scope: 'global' },
    });
    expect(global.status).toBe(204);

    const signouts = await eventsOf(user.id, 'auth.signout');
    expect(signouts.map((event) => event.details.scope)).toEqual(['global', 'local']);
    expect(signouts[1]?.details.session_id).toBe(claimsOf(third.session!.access_token).session_id);
    expect(signouts[0]?.actor).toEqual({ type: 'user', id: user.id });
    const revoked = await eventsOf(user.id, 'auth.session_revoked');
    expect(revoked[0]?.details.session_id).toBe(secondId);
  });

  it('records refresh-token reuse, which ends the session', async () => {
    const user = await signUp(server.url);
    const first = user.session!.refresh_token;
    const rotated = await request(server.url, 'POST', '/v1/auth/refresh', { body: { refresh_token: first } });
    expect(rotated.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const reused = await request(server.url, 'POST', '/v1/auth/refresh', { body: { refresh_token: first } });
    expect(reused.status).toBe(401);
    const recorded = await eventsOf(user.id, 'auth.refresh_token_reused');
    expect(recorded).toHaveLength(1);
    expect(recorded[0]?.details.session_id).toBe(claimsOf(user.session!.access_token).session_id);
  });

  it('records password and email changes, never the password', async () => {
    const user = await signUp(server.url);
    const newPassword = 'another strong passphrase 99';
    const changed = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: user.token,
      body: { password: newPassword },
    });
    expect(changed.status).toBe(200);
    const newEmail = uniqueEmail('moved');
    const moving = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: user.token,
      body: { email: newEmail },
    });
    expect(moving.status).toBe(200);
    const recorded = await eventsOf(user.id);
    const password = recorded.find((event) => event.type === 'auth.password_changed');
    expect(password).toMatchObject({ actor: { type: 'user', id: user.id }, details: { via: 'update' } });
    const email = recorded.find((event) => event.type === 'auth.email_change_requested');
    expect(email?.details).toMatchObject({ old_email: user.email, new_email: newEmail });
    expect(JSON.stringify(recorded)).not.toContain(newPassword);
  });

  it('writes no event for a change that fails: the event commits with its change or not at all', async () => {
    const user = await signUp(server.url);
    const other = await signUp(server.url);
    // The address is taken, so the whole update (password included) is refused and rolled back.
    const refused = await request(server.url, 'PATCH', '/v1/auth/user', {
      token: user.token,
      body: { email: other.email, password: 'a fresh passphrase 1234' },
    });
    expect(refused.status).toBe(409);
    const recorded = await eventsOf(user.id);
    expect(recorded.map((event) => event.type)).toEqual(['auth.signin', 'auth.signup']);

    // An admin delete of a user that is not there rolls back, its event with it.
    const missing = '00000000-0000-4000-8000-000000000000';
    const deleted = await request(server.url, 'DELETE', `/v1/admin/users/${missing}`, { token: server.serviceKey });
    expect(deleted.status).toBe(404);
    expect(await eventsOf(missing)).toEqual([]);

    // The recorder itself: an event recorded in a transaction that then fails is gone with it.
    const audit = new AuditLog(new AuditRepository(server.app.platform.db), { log: silentLogger, retentionDays: 90 });
    await expect(
      server.app.platform.db.transaction(async (tx) => {
        await audit.record({ type: 'auth.password_changed', userId: user.id, actor: { type: 'service' } }, { tx });
        throw new Error('the change failed');
      }),
    ).rejects.toThrow('the change failed');
    expect((await eventsOf(user.id)).map((event) => event.type)).toEqual(['auth.signin', 'auth.signup']);
  });

  it('never fails a sign-in answer because its failure could not be recorded', async () => {
    const audit = new AuditLog(new AuditRepository(server.app.platform.db), { log: silentLogger, retentionDays: 90 });
    // An actor Postgres cannot store (a NUL in JSON text) makes the write fail; record() swallows it.
    await expect(
      audit.record({ type: 'auth.signin_failed', actor: { type: 'anonymous' }, details: { email: 'a\u0000b' } }),
    ).resolves.toBeUndefined();
  });
});

describe('email confirmation', () => {
  const confirming = useTestApp({ env: { BASALT_AUTH_CONFIRM_EMAIL: 'true' } });

  it('records a sign-in refused because the address is not confirmed', async () => {
    const email = uniqueEmail('unconfirmed');
    const signedUp = await request(confirming.url, 'POST', '/v1/auth/signup', {
      body: { email, password: STRONG_PASSWORD },
    });
    expect(signedUp.status).toBe(201);
    const userId = (signedUp.body as AuthBody).user.id;
    const refused = await request(confirming.url, 'POST', '/v1/auth/signin', {
      body: { email, password: STRONG_PASSWORD },
    });
    expect(refused.status).toBe(403);
    const recorded = await events(confirming, { user_id: userId });
    expect(recorded.map((event) => [event.type, event.details.reason])).toEqual([
      ['auth.signin_failed', 'email_not_confirmed'],
      ['auth.signup', undefined],
    ]);
    expect(recorded[1]?.details.confirmation_required).toBe(true);
  });
});

describe('admin changes', () => {
  it('names admin events after their route', () => {
    expect(adminEventType('POST', '/v1/admin/collections')).toBe('admin.collections.create');
    expect(adminEventType('PATCH', '/v1/admin/buckets/:name')).toBe('admin.buckets.update');
    expect(adminEventType('DELETE', '/v1/admin/users/:id')).toBe('admin.users.delete');
    expect(adminEventType('PUT', '/v1/admin/secrets/:name')).toBe('admin.secrets.put');
    expect(adminEventType('POST', '/v1/admin/users/:id/impersonate')).toBe('admin.users.impersonate');
    expect(adminEventType('POST', '/v1/admin/functions/:name/rollback')).toBe('admin.functions.rollback');
  });

  /**
   * One successful call per changing admin route. Every such route the app registers must
   * have an entry here, so an admin endpoint added later fails this test until it is walked
   * (and so shown to be audited).
   */
  const calls: Record<
    string,
    (ctx: { user: string; deadInvocation: () => Promise<string> }) => Promise<{ path: string; body?: unknown }>
  > = {
    'POST /v1/admin/auth/keys/rotate': async () => ({ path: '/v1/admin/auth/keys/rotate' }),
    'POST /v1/admin/users': async () => ({
      path: '/v1/admin/users',
      body: { email: uniqueEmail('admin-made'), password: STRONG_PASSWORD },
    }),
    'PATCH /v1/admin/users/{id}': async ({ user }) => ({
      path: `/v1/admin/users/${user}`,
      body: { app_metadata: { plan: 'pro' } },
    }),
    'POST /v1/admin/users/{id}/impersonate': async ({ user }) => ({
      path: `/v1/admin/users/${user}/impersonate`,
      body: {},
    }),
    'DELETE /v1/admin/users/{id}': async ({ user }) => ({ path: `/v1/admin/users/${user}` }),
    // A user of its own: the walk may delete the shared one first.
    'DELETE /v1/admin/users/{id}/factors': async () => ({
      path: `/v1/admin/users/${(await signUp(server.url)).id}/factors`,
    }),
    'POST /v1/admin/collections': async () => ({
      path: '/v1/admin/collections',
      body: { name: 'walked', rules: { read: 'true' } },
    }),
    'PATCH /v1/admin/collections/{name}': async () => ({
      path: '/v1/admin/collections/walked',
      body: { rules: { read: 'auth != null' } },
    }),
    'DELETE /v1/admin/collections/{name}': async () => ({ path: '/v1/admin/collections/walked' }),
    'POST /v1/admin/buckets': async () => ({ path: '/v1/admin/buckets', body: { name: 'walked' } }),
    'PATCH /v1/admin/buckets/{name}': async () => ({ path: '/v1/admin/buckets/walked', body: { public: true } }),
    'DELETE /v1/admin/buckets/{name}': async () => ({ path: '/v1/admin/buckets/walked' }),
    'POST /v1/admin/storage/sweep': async () => ({ path: '/v1/admin/storage/sweep', body: {} }),
    'POST /v1/admin/invocations/{id}/retry': async ({ deadInvocation }) => ({
      path: `/v1/admin/invocations/${await deadInvocation()}/retry`,
    }),
    'PUT /v1/admin/functions/{name}': async () => ({
      path: '/v1/admin/functions/walked',
      body: deployBody('walked'),
    }),
    'POST /v1/admin/functions/{name}/rollback': async () => {
      // Two versions, so there is an earlier one to go back to.
      for (const answer of ['one', 'two']) await deploy('walkedBack', answer);
      return { path: '/v1/admin/functions/walkedBack/rollback', body: { version: 1 } };
    },
    'DELETE /v1/admin/functions/{name}': async () => {
      await deploy('walkedGone', 'soon gone');
      return { path: '/v1/admin/functions/walkedGone' };
    },
    'PUT /v1/admin/topics/{topic}': async () => ({
      path: '/v1/admin/topics/walked.topic',
      body: { rules: { publish: 'auth != null' } },
    }),
    'DELETE /v1/admin/topics/{topic}': async () => ({ path: '/v1/admin/topics/walked.topic' }),
    'PUT /v1/admin/secrets/{name}': async () => ({
      path: '/v1/admin/secrets/WALKED_SECRET',
      body: { value: 'walked secret value' },
    }),
    'DELETE /v1/admin/secrets/{name}': async () => {
      const set = await request(server.url, 'PUT', '/v1/admin/secrets/WALKED_GONE', {
        token: server.serviceKey,
        body: { value: 'soon gone' },
      });
      expect(set.status).toBe(204);
      return { path: '/v1/admin/secrets/WALKED_GONE' };
    },
  };
  const expectedTypes: Record<string, string> = {
    'POST /v1/admin/auth/keys/rotate': 'admin.auth.keys.rotate',
    'POST /v1/admin/storage/sweep': 'admin.storage.sweep',
    'DELETE /v1/admin/users/{id}/factors': 'mfa.factors_reset_by_admin',
  };

  it('records every changing admin route the app registers, with the service as actor', async () => {
    const spec = server.app.swagger() as { paths: Record<string, Record<string, unknown>> };
    const routes = Object.entries(spec.paths).flatMap(([path, operations]) =>
      Object.keys(operations)
        .map((method) => method.toUpperCase())
        .filter((method) => isChangingAdminRoute(method, path))
        .map((method) => `${method} ${path}`),
    );
    expect(routes.length).toBeGreaterThanOrEqual(Object.keys(calls).length);
    expect(
      routes.filter((route) => !(route in calls)),
      'changing admin routes with no call in this test',
    ).toEqual([]);

    const user = (await signUp(server.url)).id;
    const deadInvocation = async () => {
      const created = await request(server.url, 'POST', '/v1/admin/collections', {
        token: server.serviceKey,
        body: { name: 'doomed' },
      });
      expect(created.status).toBe(201);
      expect(
        (await request(server.url, 'POST', '/v1/db/doomed', { token: server.serviceKey, body: { data: {} } })).status,
      ).toBe(201);
      return waitFor('a dead-lettered invocation', async () => {
        const listed = await request(server.url, 'GET', '/v1/admin/functions/alwaysFails/invocations?status=dead', {
          token: server.serviceKey,
        });
        return (listed.body as { invocations: { id: string }[] }).invocations[0]?.id;
      });
    };
    // Deletes last: what they delete was created and changed first.
    const order = routes.toSorted((a, b) => Number(a.startsWith('DELETE')) - Number(b.startsWith('DELETE')));
    for (const route of order) {
      const [method, pattern] = route.split(' ') as [string, string];
      const call = await calls[route]!({ user, deadInvocation });
      const before = (await events(server, { limit: '1' }))[0]?.id ?? '0';
      const response = await request(server.url, method, call.path, { token: server.serviceKey, body: call.body });
      expect(response.status, `${route}: ${response.text}`).toBeLessThan(300);
      const after = (await events(server, { limit: '50' })).filter((event) => BigInt(event.id) > BigInt(before));
      const type = expectedTypes[route] ?? adminEventType(method, pattern.replace(/\{(\w+)\}/g, ':$1'));
      const event = after.find((candidate) => candidate.type === type);
      expect(event, `${route} recorded ${type}`).toBeDefined();
      expect(event?.actor).toEqual({ type: 'service' });
    }
  });

  it('records the change itself, with secrets redacted, and nothing for a refused change', async () => {
    const created = await request(server.url, 'POST', '/v1/admin/collections', {
      token: server.serviceKey,
      body: { name: 'recorded', rules: { read: 'auth != null' } },
      headers: { 'x-forwarded-for': '198.51.100.7', 'user-agent': 'admin-cli' },
    });
    expect(created.status).toBe(201);
    const duplicate = await request(server.url, 'POST', '/v1/admin/collections', {
      token: server.serviceKey,
      body: { name: 'recorded' },
    });
    expect(duplicate.status).toBe(409);
    const recorded = (await events(server, { type: 'admin.collections.create', limit: '500' })).filter(
      (event) => (event.details.body as { name?: string } | undefined)?.name === 'recorded',
    );
    expect(recorded).toHaveLength(1);
    expect(recorded[0]).toMatchObject({
      ip: '198.51.100.7',
      user_agent: 'admin-cli',
      details: { method: 'POST', route: '/v1/admin/collections', body: { rules: { read: 'auth != null' } } },
    });

    const user = await signUp(server.url);
    const secretPassword = 'admin set passphrase 777';
    const patched = await request(server.url, 'PATCH', `/v1/admin/users/${user.id}`, {
      token: server.serviceKey,
      body: { password: secretPassword, app_metadata: { role: 'admin' } },
    });
    expect(patched.status).toBe(200);
    const update = (await eventsOf(user.id, 'admin.users.update'))[0];
    expect(update?.details.body).toEqual({ password: '[redacted]', app_metadata: { role: 'admin' } });
    expect(JSON.stringify(await eventsOf(user.id))).not.toContain(secretPassword);
  });

  it('records deploys, rollbacks, undeploys and secret changes, never a secret value or the source', async () => {
    const secretValue = 'sk_live_audit_never_logged_42';
    const set = await request(server.url, 'PUT', '/v1/admin/secrets/AUDITED_KEY', {
      token: server.serviceKey,
      body: { value: secretValue },
    });
    expect(set.status).toBe(204);
    const removed = await request(server.url, 'DELETE', '/v1/admin/secrets/AUDITED_KEY', { token: server.serviceKey });
    expect(removed.status).toBe(204);
    const secretPut = (await events(server, { type: 'admin.secrets.put', limit: '500' })).find(
      (event) => (event.details.params as { name?: string }).name === 'AUDITED_KEY',
    );
    expect(secretPut?.details).toMatchObject({ route: '/v1/admin/secrets/:name', body: { value: '[redacted]' } });
    const secretDelete = (await events(server, { type: 'admin.secrets.delete', limit: '500' })).find(
      (event) => (event.details.params as { name?: string }).name === 'AUDITED_KEY',
    );
    expect(secretDelete?.details).toMatchObject({ method: 'DELETE', status: 204 });

    const sourceMarker = 'audited source marker';
    await deploy('audited', sourceMarker);
    await deploy('audited', 'second');
    const rolled = await request(server.url, 'POST', '/v1/admin/functions/audited/rollback', {
      token: server.serviceKey,
      body: { version: 1 },
    });
    expect(rolled.status).toBe(200);
    const undeployed = await request(server.url, 'DELETE', '/v1/admin/functions/audited', { token: server.serviceKey });
    expect(undeployed.status).toBe(204);
    // A refused deploy (it does not build) changes nothing and records nothing.
    const refused = await request(server.url, 'PUT', '/v1/admin/functions/audited', {
      token: server.serviceKey,
      body: { files: { 'index.ts': 'export default http(async () => {\n' }, entry: 'index.ts' },
    });
    expect(refused.status).toBe(422);

    const recorded = (await events(server, { type: 'admin.functions*', limit: '500' })).filter(
      (event) => (event.details.params as { name?: string }).name === 'audited',
    );
    expect(recorded.map((event) => event.type)).toEqual([
      'admin.functions.delete',
      'admin.functions.rollback',
      'admin.functions.put',
      'admin.functions.put',
    ]);
    expect(recorded[1]?.details.body).toEqual({ version: 1 });
    expect(recorded[2]?.details.body).toEqual({ files: '[redacted]', entry: 'index.ts' });
    const everything = JSON.stringify(await events(server, { type: 'admin.', limit: '500' }));
    expect(everything).not.toContain(secretValue);
    expect(everything).not.toContain(sourceMarker);
  });
});

describe('admin changes in the transaction of the change', () => {
  /**
   * Test-only helpers in the database: a deleted row leaves no row to read the xmin of, so a
   * trigger notes each deletion in a side table (its row's xmin is the deleting transaction);
   * and an audit write of anything named "unrecordable" fails, as a crash would.
   */
  const installProbes = async (): Promise<void> => {
    await server.sql.query(`
      CREATE TABLE IF NOT EXISTS public.audit_probe_deleted (tbl text NOT NULL, key text NOT NULL);
      CREATE OR REPLACE FUNCTION public.audit_probe_note_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO public.audit_probe_deleted VALUES (TG_TABLE_NAME, to_jsonb(OLD)->>TG_ARGV[0]);
          RETURN OLD;
        END $$;
      CREATE OR REPLACE FUNCTION public.audit_probe_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'audit write refused by the test';
        END $$;
      CREATE OR REPLACE TRIGGER audit_probe_deleted AFTER DELETE ON basalt.collections
        FOR EACH ROW EXECUTE FUNCTION public.audit_probe_note_delete('name');
      CREATE OR REPLACE TRIGGER audit_probe_deleted AFTER DELETE ON basalt.buckets
        FOR EACH ROW EXECUTE FUNCTION public.audit_probe_note_delete('name');
      CREATE OR REPLACE TRIGGER audit_probe_deleted AFTER DELETE ON basalt.secrets
        FOR EACH ROW EXECUTE FUNCTION public.audit_probe_note_delete('name');
      CREATE OR REPLACE TRIGGER audit_probe_deleted AFTER DELETE ON basalt.function_active
        FOR EACH ROW EXECUTE FUNCTION public.audit_probe_note_delete('name');
      CREATE OR REPLACE TRIGGER audit_probe_deleted AFTER DELETE ON basalt.topics
        FOR EACH ROW EXECUTE FUNCTION public.audit_probe_note_delete('name');
      CREATE OR REPLACE TRIGGER audit_probe_refuse BEFORE INSERT ON basalt.audit_log
        FOR EACH ROW WHEN (strpos(lower(NEW.details::text), 'unrecordable') > 0)
        EXECUTE FUNCTION public.audit_probe_refuse();
    `);
  };

  /** The id of the transaction that wrote the one row `query` selects (Postgres' xmin). */
  const writer = async (query: string, params: unknown[]): Promise<string> => {
    const rows = await server.sql.query<{ xmin: string }>(query, params);
    expect(rows.rows, `${query} ${JSON.stringify(params)}`).toHaveLength(1);
    return rows.rows[0]!.xmin;
  };
  /** The admin event of `type` about the resource `name` (a route parameter, or the created body's name). */
  const eventWriter = (type: string, name: string) =>
    writer(
      `SELECT xmin::text AS xmin FROM basalt.audit_log
        WHERE type = $1
          AND coalesce(details->'params'->>'name', details->'params'->>'topic', details->'body'->>'name') = $2`,
      [type, name],
    );
  const rowWriter = (table: string, column: string, key: string) =>
    writer(`SELECT xmin::text AS xmin FROM basalt.${table} WHERE ${column} = $1`, [key]);
  const deletionWriter = (table: string, key: string) =>
    writer(`SELECT xmin::text AS xmin FROM public.audit_probe_deleted WHERE tbl = $1 AND key = $2`, [table, key]);

  async function call(method: string, path: string, body?: unknown): Promise<void> {
    const response = await request(server.url, method, path, { token: server.serviceKey, body });
    expect(response.status, `${method} ${path}: ${response.text}`).toBeLessThan(300);
  }

  it('collections: create, update (rules, refs, search) and delete share a transaction with their event', async () => {
    await installProbes();
    await call('POST', '/v1/admin/collections', { name: 'txnotes', rules: { read: 'true' } });
    expect(await eventWriter('admin.collections.create', 'txnotes')).toBe(
      await rowWriter('collections', 'name', 'txnotes'),
    );
    const created = (await events(server, { type: 'admin.collections.create', limit: '500' })).find(
      (event) => (event.details.body as { name?: string } | undefined)?.name === 'txnotes',
    );
    // The shape the route hook gives every other admin event.
    expect(created?.details).toEqual({
      method: 'POST',
      route: '/v1/admin/collections',
      params: {},
      body: { name: 'txnotes', rules: { read: 'true' } },
      status: 201,
    });

    await call('PATCH', '/v1/admin/collections/txnotes', {
      rules: { read: 'auth != null' },
      refs: { author: 'users' },
      search: { fields: ['title'] },
    });
    expect(await eventWriter('admin.collections.update', 'txnotes')).toBe(
      await rowWriter('collections', 'name', 'txnotes'),
    );

    await call('DELETE', '/v1/admin/collections/txnotes');
    expect(await eventWriter('admin.collections.delete', 'txnotes')).toBe(
      await deletionWriter('collections', 'txnotes'),
    );
  });

  it('buckets: create, update and delete share a transaction with their event', async () => {
    await installProbes();
    await call('POST', '/v1/admin/buckets', { name: 'txbucket' });
    expect(await eventWriter('admin.buckets.create', 'txbucket')).toBe(await rowWriter('buckets', 'name', 'txbucket'));
    await call('PATCH', '/v1/admin/buckets/txbucket', { public: true });
    expect(await eventWriter('admin.buckets.update', 'txbucket')).toBe(await rowWriter('buckets', 'name', 'txbucket'));
    await call('DELETE', '/v1/admin/buckets/txbucket');
    expect(await eventWriter('admin.buckets.delete', 'txbucket')).toBe(await deletionWriter('buckets', 'txbucket'));
  });

  it('secrets: set and delete share a transaction with their event, which never holds the value', async () => {
    await installProbes();
    await call('PUT', '/v1/admin/secrets/TX_SECRET', { value: 'tx secret value 31337' });
    expect(await eventWriter('admin.secrets.put', 'TX_SECRET')).toBe(await rowWriter('secrets', 'name', 'TX_SECRET'));
    await call('DELETE', '/v1/admin/secrets/TX_SECRET');
    expect(await eventWriter('admin.secrets.delete', 'TX_SECRET')).toBe(await deletionWriter('secrets', 'TX_SECRET'));
    const recorded = (await events(server, { type: 'admin.secrets*', limit: '500' })).filter(
      (event) => (event.details.params as { name?: string }).name === 'TX_SECRET',
    );
    expect(recorded.map((event) => event.details)).toEqual([
      { method: 'DELETE', route: '/v1/admin/secrets/:name', params: { name: 'TX_SECRET' }, status: 204 },
      {
        method: 'PUT',
        route: '/v1/admin/secrets/:name',
        params: { name: 'TX_SECRET' },
        body: { value: '[redacted]' },
        status: 204,
      },
    ]);
  });

  it('functions: deploy, rollback and undeploy share a transaction with their event, which never holds the source', async () => {
    await installProbes();
    await call('PUT', '/v1/admin/functions/txdeployed', deployBody('tx source marker'));
    const deployedBy = await eventWriter('admin.functions.put', 'txdeployed');
    expect(deployedBy).toBe(
      await writer(`SELECT xmin::text AS xmin FROM basalt.function_versions WHERE name = $1 AND version = 1`, [
        'txdeployed',
      ]),
    );
    expect(deployedBy).toBe(await rowWriter('function_active', 'name', 'txdeployed'));

    await deploy('txrolled', 'one');
    await deploy('txrolled', 'two');
    await call('POST', '/v1/admin/functions/txrolled/rollback', { version: 1 });
    expect(await eventWriter('admin.functions.rollback', 'txrolled')).toBe(
      await rowWriter('function_active', 'name', 'txrolled'),
    );

    await call('DELETE', '/v1/admin/functions/txdeployed');
    expect(await eventWriter('admin.functions.delete', 'txdeployed')).toBe(
      await deletionWriter('function_active', 'txdeployed'),
    );
    const recorded = (await events(server, { type: 'admin.functions*', limit: '500' })).filter(
      (event) => (event.details.params as { name?: string }).name === 'txdeployed',
    );
    expect(recorded.map((event) => event.details)).toEqual([
      { method: 'DELETE', route: '/v1/admin/functions/:name', params: { name: 'txdeployed' }, status: 204 },
      {
        method: 'PUT',
        route: '/v1/admin/functions/:name',
        params: { name: 'txdeployed' },
        body: { files: '[redacted]', entry: 'index.ts' },
        status: 201,
      },
    ]);
    expect(JSON.stringify(recorded)).not.toContain('tx source marker');
  });

  it('topics: setting and dropping rules share a transaction with their event', async () => {
    await installProbes();
    await call('PUT', '/v1/admin/topics/tx.topic', { rules: { publish: 'auth != null' } });
    expect(await eventWriter('admin.topics.put', 'tx.topic')).toBe(await rowWriter('topics', 'name', 'tx.topic'));
    await call('DELETE', '/v1/admin/topics/tx.topic');
    expect(await eventWriter('admin.topics.delete', 'tx.topic')).toBe(await deletionWriter('topics', 'tx.topic'));
  });

  it('makes no change whose event cannot be written', async () => {
    await installProbes();
    const collection = await request(server.url, 'POST', '/v1/admin/collections', {
      token: server.serviceKey,
      body: { name: 'unrecordable' },
    });
    expect(collection.status).toBe(500);
    const bucket = await request(server.url, 'POST', '/v1/admin/buckets', {
      token: server.serviceKey,
      body: { name: 'unrecordable' },
    });
    expect(bucket.status).toBe(500);
    const secret = await request(server.url, 'PUT', '/v1/admin/secrets/UNRECORDABLE', {
      token: server.serviceKey,
      body: { value: 'never stored' },
    });
    expect(secret.status).toBe(500);
    const deployed = await request(server.url, 'PUT', '/v1/admin/functions/unrecordable', {
      token: server.serviceKey,
      body: deployBody('never live'),
    });
    expect(deployed.status).toBe(500);
    const topic = await request(server.url, 'PUT', '/v1/admin/topics/unrecordable', {
      token: server.serviceKey,
      body: { rules: { publish: 'true' } },
    });
    expect(topic.status).toBe(500);
    for (const table of ['collections', 'buckets', 'secrets', 'function_versions', 'function_active', 'topics']) {
      const left = await server.sql.query(`SELECT 1 FROM basalt.${table} WHERE lower(name) = 'unrecordable'`);
      expect(left.rows, table).toEqual([]);
    }
  });
});

describe('GET /v1/admin/audit', () => {
  it('pages newest first with before, and filters by user and by exact type or prefix', async () => {
    const user = await signUp(server.url);
    for (let i = 0; i < 3; i++) await signIn(server.url, user.email);
    const all = await eventsOf(user.id);
    expect(all.map((event) => event.type)).toEqual([
      'auth.signin',
      'auth.signin',
      'auth.signin',
      'auth.signin',
      'auth.signup',
    ]);

    const seen: string[] = [];
    let before: string | undefined;
    for (;;) {
      const response = await request(
        server.url,
        'GET',
        `/v1/admin/audit?user_id=${user.id}&limit=2${before ? `&before=${before}` : ''}`,
        { token: server.serviceKey },
      );
      expect(response.status).toBe(200);
      const page = response.body as { events: AuditEventBody[]; next_before: string | null };
      expect(page.events.length).toBeLessThanOrEqual(2);
      seen.push(...page.events.map((event) => event.id));
      if (page.next_before === null) break;
      expect(page.next_before).toBe(page.events.at(-1)?.id);
      before = page.next_before;
    }
    expect(seen).toEqual(all.map((event) => event.id));
    const ids = seen.map((id) => BigInt(id));
    expect(ids.every((id, i) => i === 0 || id < (ids[i - 1] as bigint))).toBe(true);

    expect((await eventsOf(user.id, 'auth.signup')).map((event) => event.type)).toEqual(['auth.signup']);
    expect(await eventsOf(user.id, 'auth.sign')).toEqual([]); // exact, not a prefix
    expect((await eventsOf(user.id, 'auth.')).length).toBe(5);
    expect((await eventsOf(user.id, 'auth.signi*')).length).toBe(4);
    expect(await eventsOf(user.id, 'admin.')).toEqual([]);
    // LIKE's own characters in a prefix are literal.
    expect(await eventsOf(user.id, 'auth_*')).toEqual([]);
  });

  it('orders by the numeric id, also where ids gain a digit', async () => {
    const user = await signUp(server.url);
    // Next ids: ...9997, 9998, 9999, 10000, 10001...: text order would put 10000 after 9999.
    await server.sql.query(
      "SELECT setval('basalt.audit_log_id_seq', GREATEST((SELECT last_value FROM basalt.audit_log_id_seq), 9995))",
    );
    for (let i = 0; i < 6; i++) await signIn(server.url, user.email);
    const all = await eventsOf(user.id, 'auth.signin');
    const ids = all.map((event) => BigInt(event.id));
    expect(ids.some((id) => id >= 10_000n)).toBe(true);
    expect(ids).toEqual([...ids].sort((a, b) => (a > b ? -1 : 1)));
    const page = await events(server, { user_id: user.id, type: 'auth.signin', limit: '3' });
    const next = await events(server, { user_id: user.id, type: 'auth.signin', limit: '3', before: page.at(-1)!.id });
    expect([...page, ...next].map((event) => event.id)).toEqual(all.slice(0, 6).map((event) => event.id));
  });

  it('refuses bad parameters with INVALID_REQUEST', async () => {
    for (const query of [
      'limit=0',
      'limit=501',
      'limit=abc',
      'before=-1',
      'before=abc',
      'user_id=nope',
      'type=AUTH',
      'extra=1',
    ]) {
      const response = await request(server.url, 'GET', `/v1/admin/audit?${query}`, { token: server.serviceKey });
      expect(response.status, query).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
  });
});

describe('retention', () => {
  it('prunes events older than the retention, on one instance at a time', async () => {
    const user = await signUp(server.url);
    await server.sql.query(
      `INSERT INTO basalt.audit_log (type, user_id, actor, at)
       SELECT 'auth.signin', $1, '{"type":"anonymous"}', now() - make_interval(days => d)
         FROM unnest(ARRAY[91, 120, 400]) AS d`,
      [user.id],
    );
    expect(await eventsOf(user.id)).toHaveLength(5);
    const audit = new AuditLog(new AuditRepository(server.app.platform.db), { log: silentLogger, retentionDays: 90 });

    // While another instance holds the prune lock, this one skips.
    const other = new pg.Client({ connectionString: server.database.url });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query('SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.auditPrune]);
      expect(await audit.prune()).toBeNull();
      await other.query('COMMIT');
    } finally {
      await other.end();
    }
    expect(await eventsOf(user.id)).toHaveLength(5);

    expect(await audit.prune()).toBeGreaterThanOrEqual(3);
    const left = await eventsOf(user.id);
    expect(left.map((event) => event.type)).toEqual(['auth.signin', 'auth.signup']);
  });

  it('a server prunes with its configured retention: 90 days by default, else BASALT_AUDIT_RETENTION_DAYS', async () => {
    const user = await signUp(server.url);
    await server.sql.query(
      `INSERT INTO basalt.audit_log (type, user_id, actor, at, details)
       SELECT 'auth.signin', $1, '{"type":"anonymous"}', now() - make_interval(days => d), jsonb_build_object('age', d)
         FROM unnest(ARRAY[6, 8, 89, 91]) AS d`,
      [user.id],
    );
    const ages = async () =>
      (
        await server.sql.query<{ age: number }>(
          `SELECT (details->>'age')::int AS age FROM basalt.audit_log WHERE user_id = $1 AND details ? 'age' ORDER BY 1`,
          [user.id],
        )
      ).rows.map((row) => row.age);
    // A worker prunes as it starts (then hourly), so an instance started now shows its setting.
    for (const [env, kept] of [
      [{}, [6, 8, 89]],
      [{ BASALT_AUDIT_RETENTION_DAYS: '7' }, [6]],
    ] as const) {
      const instance = await startTestApp(server.database, { BASALT_FUNCTIONS_DIR: server.functionsDir, ...env });
      try {
        await waitFor(`the events a ${JSON.stringify(env)} server keeps`, async () => {
          return JSON.stringify(await ages()) === JSON.stringify(kept);
        });
      } finally {
        await instance.close();
      }
    }
  });
});

describe('impersonation', () => {
  it('starts a short session without a refresh token whose token carries act, and audits it', async () => {
    const user = await signUp(server.url);
    const response = await request(server.url, 'POST', `/v1/admin/users/${user.id}/impersonate`, {
      token: server.serviceKey,
      body: { expires_in: 600 },
      headers: { 'x-forwarded-for': '198.51.100.9' },
    });
    expect(response.status).toBe(201);
    const body = response.body as {
      user: { id: string };
      session: { access_token: string; refresh_token: null; expires_in: number; expires_at: number };
      impersonated_by: string;
    };
    expect(body.user.id).toBe(user.id);
    expect(body.impersonated_by).toBe('service');
    expect(body.session.refresh_token).toBeNull();
    expect(body.session.expires_in).toBe(600);
    const claims = claimsOf(body.session.access_token);
    expect(claims.act).toEqual({ sub: 'service' });
    expect(claims.sub).toBe(user.id);
    expect((claims.exp as number) - (claims.iat as number)).toBe(600);

    // It acts as the user...
    const me = await request(server.url, 'GET', '/v1/auth/user', { token: body.session.access_token });
    expect(me.status).toBe(200);
    expect((me.body as { id: string }).id).toBe(user.id);
    // ...and the user sees it among their sessions.
    const sessions = (
      (await request(server.url, 'GET', '/v1/auth/sessions', { token: user.token })).body as {
        sessions: { id: string; impersonated_by: string | null }[];
      }
    ).sessions;
    expect(sessions.find((session) => session.id === claims.session_id)?.impersonated_by).toBe('service');

    const started = (await eventsOf(user.id, 'admin.users.impersonate'))[0];
    expect(started).toMatchObject({
      actor: { type: 'service' },
      ip: '198.51.100.9',
      details: { session_id: claims.session_id, expires_in: 600, expires_at: body.session.expires_at },
    });
  });

  it('defaults to 900 seconds and allows at most 3600', async () => {
    const user = await signUp(server.url);
    const path = `/v1/admin/users/${user.id}/impersonate`;
    const byDefault = await request(server.url, 'POST', path, { token: server.serviceKey });
    expect(byDefault.status).toBe(201);
    expect((byDefault.body as { session: { expires_in: number } }).session.expires_in).toBe(900);
    const longest = await request(server.url, 'POST', path, { token: server.serviceKey, body: { expires_in: 3600 } });
    expect(longest.status).toBe(201);
    const claims = claimsOf((longest.body as { session: { access_token: string } }).session.access_token);
    expect((claims.exp as number) - (claims.iat as number)).toBe(3600);
    for (const expires of [3601, 59, 0, -5, 1.5, '900']) {
      const refused = await request(server.url, 'POST', path, {
        token: server.serviceKey,
        body: { expires_in: expires },
      });
      expect(refused.status, String(expires)).toBe(400);
      expect(errorCode(refused.body)).toBe('INVALID_REQUEST');
    }
    expect(await eventsOf(user.id, 'admin.users.impersonate')).toHaveLength(2);
  });

  it('refuses sensitive account changes in an impersonated session, and records what it does as the impersonator', async () => {
    const user = await signUp(server.url);
    const started = await request(server.url, 'POST', `/v1/admin/users/${user.id}/impersonate`, {
      token: server.serviceKey,
    });
    const token = (started.body as { session: { access_token: string } }).session.access_token;
    for (const body of [{ password: 'impersonator passphrase 1' }, { email: uniqueEmail('hijack') }]) {
      const refused = await request(server.url, 'PATCH', '/v1/auth/user', { token, body });
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ error: { code: 'FORBIDDEN', details: { reason: 'impersonated' } } });
    }
    const everywhere = await request(server.url, 'POST', '/v1/auth/signout', { token, body: { scope: 'global' } });
    expect(everywhere.status).toBe(403);
    // The user's own session survived all of that.
    expect((await request(server.url, 'GET', '/v1/auth/user', { token: user.token })).status).toBe(200);
    // What the user could show anyone is fine.
    const data = await request(server.url, 'PATCH', '/v1/auth/user', { token, body: { data: { seen: true } } });
    expect(data.status).toBe(200);

    const ended = await request(server.url, 'POST', '/v1/auth/signout', { token });
    expect(ended.status).toBe(204);
    const signout = (await eventsOf(user.id, 'auth.signout'))[0];
    expect(signout?.actor).toEqual({ type: 'user', id: user.id, impersonator: 'service' });
    expect(await eventsOf(user.id, 'auth.password_changed')).toEqual([]);
    await waitFor(
      'the ended session to be refused',
      async () => (await request(server.url, 'GET', '/v1/auth/user', { token })).status === 401,
    );
  });

  it('refuses unknown and banned users', async () => {
    const unknown = await request(
      server.url,
      'POST',
      '/v1/admin/users/00000000-0000-4000-8000-000000000001/impersonate',
      {
        token: server.serviceKey,
      },
    );
    expect(unknown.status).toBe(404);
    const user = await signUp(server.url);
    await request(server.url, 'PATCH', `/v1/admin/users/${user.id}`, {
      token: server.serviceKey,
      body: { banned_until: new Date(Date.now() + 3_600_000).toISOString() },
    });
    const banned = await request(server.url, 'POST', `/v1/admin/users/${user.id}/impersonate`, {
      token: server.serviceKey,
    });
    expect(banned.status).toBe(403);
    expect(await eventsOf(user.id, 'admin.users.impersonate')).toEqual([]);
  });
});

describe('second-factor events', () => {
  const client = (ip: string) => ({ 'x-forwarded-for': ip, 'user-agent': 'mfa-audit/1.0' });

  it('records enrolment, verification, a challenge, a wrong code, a recovery code and a removal, with the client', async () => {
    const user = await signUp(server.url);
    const ip = nextIp();
    const enrolled = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', {
      token: user.token,
      body: {},
      headers: client(ip),
    });
    expect(enrolled.status, enrolled.text).toBe(200);
    const { factor_id: factorId, secret } = enrolled.body as { factor_id: string; secret: string };
    await freshStep();
    const verified = await request(server.url, 'POST', '/v1/auth/mfa/totp/verify', {
      token: user.token,
      body: { factor_id: factorId, code: totpCode(secret, -1) },
      headers: client(ip),
    });
    expect(verified.status, verified.text).toBe(200);
    const { recovery_codes: recoveryCodes } = verified.body as { recovery_codes: string[] };

    const aal1 = (await signIn(server.url, user.email)).session!.access_token;
    const wrong = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aal1,
      body: { factor_id: factorId, code: '000000' === totpCode(secret) ? '111111' : '000000' },
      headers: client(ip),
    });
    expect(errorCode(wrong.body)).toBe('INVALID_CREDENTIALS');
    const challenged = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aal1,
      body: { factor_id: factorId, code: totpCode(secret) },
      headers: client(ip),
    });
    expect(challenged.status, challenged.text).toBe(200);
    const aal1Again = (await signIn(server.url, user.email)).session!.access_token;
    const recovered = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aal1Again,
      body: { recovery_code: recoveryCodes[0] },
      headers: client(ip),
    });
    expect(recovered.status, recovered.text).toBe(200);
    const aal2 = (recovered.body as AuthBody).session!.access_token;
    const removed = await request(server.url, 'DELETE', `/v1/auth/mfa/factors/${factorId}`, {
      token: aal2,
      headers: client(ip),
    });
    expect(removed.status, removed.text).toBe(204);

    const recorded = await eventsOf(user.id, 'mfa.');
    const byType = (type: string) => recorded.filter((event) => event.type === type);
    for (const type of ['mfa.totp_enrolled', 'mfa.totp_verified', 'mfa.challenge_succeeded', 'mfa.factor_removed']) {
      expect(byType(type), type).toHaveLength(1);
      expect(byType(type)[0], type).toMatchObject({
        user_id: user.id,
        actor: { type: 'user', id: user.id },
        ip,
        user_agent: 'mfa-audit/1.0',
        details: { factor_id: factorId },
      });
    }
    expect(byType('mfa.challenge_failed')[0]).toMatchObject({
      actor: { type: 'user', id: user.id },
      ip,
      details: { kind: 'totp', reason: 'invalid_code' },
    });
    expect(byType('mfa.recovery_code_used')[0]).toMatchObject({ ip, details: { remaining: 9 } });
    // Neither the secret nor a recovery code reaches the log.
    const all = JSON.stringify(await eventsOf(user.id));
    expect(all).not.toContain(secret);
    expect(all).not.toContain(recoveryCodes[0]!);
    // Each step-up is a sign-in at aal2 of its own.
    const stepUps = (await eventsOf(user.id, 'auth.signin')).filter((event) => event.details.method === 'step_up');
    expect(stepUps).toHaveLength(3);
    expect(stepUps.every((event) => event.details.aal === 'aal2')).toBe(true);
  });

  it('writes each factor event in the transaction of its change: the event and the row it changed share a transaction id', async () => {
    /** The id of the transaction that last wrote the row (Postgres' xmin). */
    const writer = async (table: string, where: string, params: unknown[]): Promise<string> => {
      const rows = await server.sql.query<{ xmin: string }>(
        `SELECT xmin::text AS xmin FROM basalt.${table} WHERE ${where}`,
        params,
      );
      expect(rows.rows, `${table} where ${where}`).toHaveLength(1);
      return rows.rows[0]!.xmin;
    };
    const eventWriter = (userId: string, type: string) =>
      writer('audit_log', 'user_id = $1 AND type = $2', [userId, type]);
    const sessionWriter = (token: string) => writer('sessions', 'id = $1', [claimsOf(token).session_id as string]);

    const user = await signUp(server.url);
    const enrolled = await request(server.url, 'POST', '/v1/auth/mfa/totp/enroll', { token: user.token, body: {} });
    expect(enrolled.status, enrolled.text).toBe(200);
    const { factor_id: factorId, secret } = enrolled.body as { factor_id: string; secret: string };
    expect(await eventWriter(user.id, 'mfa.totp_enrolled')).toBe(await writer('auth_factors', 'id = $1', [factorId]));

    await freshStep();
    const verified = await request(server.url, 'POST', '/v1/auth/mfa/totp/verify', {
      token: user.token,
      body: { factor_id: factorId, code: totpCode(secret, -1) },
    });
    expect(verified.status, verified.text).toBe(200);
    const activated = verified.body as AuthBody & { recovery_codes: string[] };
    // Activation spends the code's step on the factor row: the same transaction as its event.
    expect(await eventWriter(user.id, 'mfa.totp_verified')).toBe(await writer('auth_factors', 'id = $1', [factorId]));

    const aal1 = (await signIn(server.url, user.email)).session!.access_token;
    const challenged = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aal1,
      body: { factor_id: factorId, code: totpCode(secret) },
    });
    expect(challenged.status, challenged.text).toBe(200);
    const aal2 = (challenged.body as AuthBody).session!.access_token;
    expect(await eventWriter(user.id, 'mfa.challenge_succeeded')).toBe(await sessionWriter(aal2));
    // The aal1 session it replaced ended in that transaction too.
    expect(await sessionWriter(aal1)).toBe(await sessionWriter(aal2));

    const aal1Again = (await signIn(server.url, user.email)).session!.access_token;
    const recovered = await request(server.url, 'POST', '/v1/auth/mfa/challenge', {
      token: aal1Again,
      body: { recovery_code: activated.recovery_codes[0] },
    });
    expect(recovered.status, recovered.text).toBe(200);
    const recoveredToken = (recovered.body as AuthBody).session!.access_token;
    expect(await eventWriter(user.id, 'mfa.recovery_code_used')).toBe(await sessionWriter(recoveredToken));

    // A passkey as registration stores it, then removed at aal2: the other session it ends
    // (recovered above) is revoked by the removal's transaction, with its event.
    const inserted = await server.sql.query<{ id: string }>(
      `INSERT INTO basalt.passkeys (user_id, credential_id, public_key, device_type, name)
       VALUES ($1, $2, '\\x00', 'singleDevice', 'Key') RETURNING id`,
      [user.id, `cred-${user.id}`],
    );
    const removedPasskey = await request(server.url, 'DELETE', `/v1/auth/passkeys/${inserted.rows[0]!.id}`, {
      token: aal2,
    });
    expect(removedPasskey.status, removedPasskey.text).toBe(204);
    expect(await eventWriter(user.id, 'passkey.removed')).toBe(await sessionWriter(recoveredToken));

    const otherSession = (await signIn(server.url, user.email)).session!.access_token;
    const removedFactor = await request(server.url, 'DELETE', `/v1/auth/mfa/factors/${factorId}`, { token: aal2 });
    expect(removedFactor.status, removedFactor.text).toBe(204);
    expect(await eventWriter(user.id, 'mfa.factor_removed')).toBe(await sessionWriter(otherSession));
  });

  it('records nothing for a refused change: its event is written in the change’s transaction', async () => {
    const user = await signUp(server.url);
    const { accessToken } = await enableTotp(server.url, user.token);
    const missing = await request(server.url, 'DELETE', '/v1/auth/mfa/factors/00000000-0000-4000-8000-000000000000', {
      token: accessToken,
    });
    expect(missing.status).toBe(404);
    expect(await eventsOf(user.id, 'mfa.factor_removed')).toEqual([]);
  });

  it('records an admin reset with the service as actor, and a failed passkey sign-in', async () => {
    const user = await signUp(server.url);
    await enableTotp(server.url, user.token);
    const ip = nextIp();
    const reset = await request(server.url, 'DELETE', `/v1/admin/users/${user.id}/factors`, {
      token: server.serviceKey,
      headers: client(ip),
    });
    expect(reset.status, reset.text).toBe(200);
    expect((await eventsOf(user.id, 'mfa.factors_reset_by_admin'))[0]).toMatchObject({
      actor: { type: 'service' },
      ip,
      details: { removed: 1 },
    });
    // One event for one change: the service records it, not the admin-route hook as well.
    expect(await eventsOf(user.id, 'admin.')).toEqual([]);

    const options = await request(server.url, 'POST', '/v1/auth/passkeys/signin/options', {
      body: {},
      headers: client(ip),
    });
    expect(options.status).toBe(200);
    const credential = forgedAssertion((options.body as { challenge: string }).challenge, server.url);
    const failed = await request(server.url, 'POST', '/v1/auth/passkeys/signin/verify', {
      body: { credential },
      headers: client(ip),
    });
    expect(errorCode(failed.body)).toBe('INVALID_CREDENTIALS');
    const recorded = await waitFor('the failed passkey sign-in', async () =>
      (await events(server, { type: 'passkey.signin_failed', limit: '500' })).find((event) => event.ip === ip),
    );
    expect(recorded).toMatchObject({
      user_id: null,
      actor: { type: 'anonymous' },
      user_agent: 'mfa-audit/1.0',
      details: { reason: 'unknown_credential' },
    });
  });

  it('gives an impersonated session both the actor claim and aal1, even for a user with a factor', async () => {
    const user = await signUp(server.url);
    await enableTotp(server.url, user.token);
    const started = await request(server.url, 'POST', `/v1/admin/users/${user.id}/impersonate`, {
      token: server.serviceKey,
      body: {},
    });
    expect(started.status).toBe(201);
    const claims = claimsOf((started.body as { session: { access_token: string } }).session.access_token);
    expect(claims).toMatchObject({ sub: user.id, act: { sub: 'service' }, aal: 'aal1' });
  });
});
