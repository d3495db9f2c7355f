/**
 * Admin, metrics and logs: /metrics and every admin endpoint without, with the wrong and
 * with the right credential; hostile admin parameters; credentials in logged URLs. One row
 * per attack; see harness.ts.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import { buildApp } from '../../server/app.js';
import { createLogger } from '../../server/internal/log.js';
import { STRONG_PASSWORD, signUp } from '../auth-helpers.js';
import { errorCode, request } from '../helpers.js';
import { TestSocket } from '../realtime-client.js';
import { securitySuite, type Attack } from './harness.js';

const METRICS_TOKEN = `mt_${randomBytes(32).toString('base64url')}`;

// One HTTP function, so that invocation listings reach the database.
const functionsDir = mkdtempSync(path.join(tmpdir(), 'basalt-security-admin-'));
writeFileSync(
  path.join(functionsDir, 'hello.ts'),
  `import { http } from 'basalt/functions';\nexport default http(async () => ({ hello: 'world' }));\n`,
);
afterAll(() => rmSync(functionsDir, { recursive: true, force: true }));

interface Fixture {
  user: string;
  userId: string;
  userEmail: string;
  anonymous: string;
  nearServiceKey: string;
}

/** Admin endpoints, each with a body or query that would fail validation, so auth must come first. */
const ADMIN_ENDPOINTS: Array<{ method: string; path: string; body?: unknown }> = [
  { method: 'GET', path: '/v1/admin/buckets' },
  { method: 'POST', path: '/v1/admin/buckets', body: { name: 'Not A Name!', max_file_size: -1 } },
  { method: 'PATCH', path: '/v1/admin/buckets/none', body: { public: 'yes' } },
  { method: 'GET', path: '/v1/admin/buckets/none' },
  { method: 'DELETE', path: '/v1/admin/buckets/none?force=maybe' },
  { method: 'POST', path: '/v1/admin/storage/sweep', body: { grace_seconds: -1 } },
  { method: 'GET', path: '/v1/admin/collections' },
  { method: 'POST', path: '/v1/admin/collections', body: { name: 42, rules: 'all' } },
  { method: 'GET', path: '/v1/admin/collections/none' },
  { method: 'PATCH', path: '/v1/admin/collections/none', body: { rules: 'all' } },
  { method: 'DELETE', path: '/v1/admin/collections/none' },
  { method: 'GET', path: '/v1/admin/users' },
  { method: 'POST', path: '/v1/admin/users', body: { email: 5 } },
  { method: 'GET', path: '/v1/admin/users/not-a-uuid' },
  { method: 'PATCH', path: '/v1/admin/users/not-a-uuid', body: { banned_until: 'soon' } },
  { method: 'DELETE', path: '/v1/admin/users/not-a-uuid' },
  { method: 'GET', path: '/v1/admin/users/not-a-uuid/factors' },
  { method: 'GET', path: '/v1/admin/realtime' },
  { method: 'GET', path: '/v1/admin/functions' },
  { method: 'GET', path: '/v1/admin/functions/hello/invocations?before=0000-01-01T00:00:00Z' },
  { method: 'POST', path: '/v1/admin/invocations/not-a-uuid/retry' },
  { method: 'GET', path: '/v1/admin/traces/not-a-trace-id' },
  { method: 'POST', path: '/v1/admin/auth/keys/rotate' },
  { method: 'GET', path: '/v1/admin/audit?limit=0&type=%25' },
  { method: 'POST', path: '/v1/admin/users/not-a-uuid/impersonate', body: { expires_in: 99_999 } },
  { method: 'GET', path: '/v1/admin/usage?granularity=week&from=yesterday' },
];

/** Starts a "view as" session for the fixture's user and returns its access token. */
async function impersonate(server: { url: string; serviceKey: string }, userId: string): Promise<string> {
  const started = await request(server.url, 'POST', `/v1/admin/users/${userId}/impersonate`, {
    token: server.serviceKey,
    body: { expires_in: 120 },
  });
  expect(started.status, started.text).toBe(201);
  return (started.body as { session: { access_token: string } }).session.access_token;
}

const adminRows: Array<Attack<Fixture>> = ADMIN_ENDPOINTS.flatMap((endpoint) => [
  {
    name: `${endpoint.method} ${endpoint.path} without a token`,
    request: () => ({ ...endpoint }),
    status: 401,
    code: 'UNAUTHENTICATED',
  },
  {
    name: `${endpoint.method} ${endpoint.path} with the service key and a character more`,
    request: () => ({ ...endpoint, as: 'near-service-key' }),
    status: 401,
    code: 'UNAUTHENTICATED',
  },
  {
    name: `${endpoint.method} ${endpoint.path} with a user's token`,
    request: () => ({ ...endpoint, as: 'user' }),
    status: 403,
    code: 'FORBIDDEN',
  },
  {
    name: `${endpoint.method} ${endpoint.path} with an anonymous user's token`,
    request: () => ({ ...endpoint, as: 'anonymous-user' }),
    status: 403,
    code: 'FORBIDDEN',
  },
]);

const METRICS_SECRETS = () => ['basalt_http_requests_total', '/v1/admin', 'hello'];

securitySuite<Fixture>({
  surface: 'admin',
  env: { BASALT_FUNCTIONS_DIR: functionsDir, BASALT_METRICS_TOKEN: METRICS_TOKEN },
  async setup(server) {
    const signedUp = await signUp(server.url);
    const user = signedUp.token;
    const anonymous = await request(server.url, 'POST', '/v1/auth/anonymous');
    expect(anonymous.status, anonymous.text).toBe(201);
    const bucket = await request(server.url, 'POST', '/v1/admin/buckets', {
      token: server.serviceKey,
      body: { name: 'logged' },
    });
    expect(bucket.status, bucket.text).toBe(201);
    // One invocation, so that listings have a row to page over.
    expect((await request(server.url, 'POST', '/v1/functions/hello', { body: {} })).status).toBe(200);
    return {
      user,
      userId: signedUp.id,
      userEmail: signedUp.email,
      anonymous: (anonymous.body as { session: { access_token: string } }).session.access_token,
      nearServiceKey: `${server.serviceKey}x`,
    };
  },
  tokenOf: (fixture, actor) => {
    if (actor === 'user') return fixture.user;
    if (actor === 'anonymous-user') return fixture.anonymous;
    if (actor === 'near-service-key') return fixture.nearServiceKey;
    if (actor === 'metrics') return METRICS_TOKEN;
    if (actor === 'garbage') return randomBytes(32).toString('base64url');
    return undefined;
  },
  attacks: [
    // ---- /metrics ----------------------------------------------------------------------------
    {
      name: '/metrics without a token',
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/metrics' }),
      status: 401,
      code: 'UNAUTHENTICATED',
      mustNotContain: METRICS_SECRETS,
    },
    {
      name: 'HEAD /metrics without a token',
      source: 'review #12',
      request: () => ({ method: 'HEAD', path: '/metrics' }),
      status: 401,
    },
    {
      name: '/metrics with a wrong token',
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/metrics', as: 'garbage' }),
      status: 401,
      code: 'UNAUTHENTICATED',
      mustNotContain: METRICS_SECRETS,
    },
    {
      name: "/metrics with a user's token",
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/metrics', as: 'user' }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: METRICS_SECRETS,
    },
    {
      name: "/metrics with an anonymous user's token",
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/metrics', as: 'anonymous-user' }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: METRICS_SECRETS,
    },
    {
      name: '/metrics with the metrics token in the query instead of the header',
      source: 'review #12',
      request: () => ({ method: 'GET', path: `/metrics?access_token=${METRICS_TOKEN}` }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: '/metrics with the metrics token',
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/metrics', as: 'metrics' }),
      status: 200,
      check: (result) => {
        expect(result.headers.get('content-type')).toContain('text/plain');
        expect(result.text).toContain('basalt_http_requests_total');
      },
    },
    {
      name: '/metrics with the service key',
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/metrics', as: 'service' }),
      status: 200,
      check: (result) => expect(result.text).toContain('basalt_http_requests_total'),
    },
    {
      name: 'the metrics token used on an admin endpoint',
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/v1/admin/buckets', as: 'metrics' }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'the metrics token used as a user on a public endpoint',
      source: 'review #12',
      request: () => ({ method: 'GET', path: '/v1/auth/user', as: 'metrics' }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },

    {
      name: "an unknown route with a user's token",
      request: () => ({ method: 'GET', path: '/v1/nowhere', as: 'user' }),
      status: 404,
      code: 'NOT_FOUND',
    },

    // ---- admin endpoints without the key -----------------------------------------------------
    ...adminRows,

    // ---- hostile admin parameters ------------------------------------------------------------
    ...[
      'granularity=week',
      'granularity=hour&granularity=day',
      'from=yesterday',
      'to=2026-02-30T25:61:00Z',
      'from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z',
      'from=1970-01-01T00:00:00Z&to=2026-01-01T00:00:00Z',
      `from=${'9'.repeat(10_000)}`,
      'limit=5',
    ].map((query): Attack<Fixture> => ({
      name: `usage with ${query.slice(0, 60)}`,
      request: () => ({ method: 'GET', path: `/v1/admin/usage?${query}`, as: 'service' }),
      status: 400,
      code: 'INVALID_REQUEST',
    })),
    ...[
      'not-a-trace-id',
      '0'.repeat(32),
      '4BF92F3577B34DA6A3CE929D0E0E4736',
      '4bf92f3577b34da6a3ce929d0e0e473',
      `4bf92f3577b34da6a3ce929d0e0e4736${encodeURIComponent("' OR '1'='1")}`,
      encodeURIComponent('../functions'),
      'a'.repeat(10_000),
    ].map((traceId): Attack<Fixture> => ({
      name: `a trace with a malformed id ${traceId.slice(0, 40)}`,
      request: () => ({ method: 'GET', path: `/v1/admin/traces/${traceId}`, as: 'service' }),
      status: 400,
      code: 'INVALID_REQUEST',
    })),
    {
      name: 'a trace nobody recorded',
      request: () => ({ method: 'GET', path: `/v1/admin/traces/${'ab'.repeat(16)}`, as: 'service' }),
      status: 404,
      code: 'NOT_FOUND',
    },
    {
      name: 'an invocation listing before year 0',
      source: 'review #9',
      request: () => ({
        method: 'GET',
        path: '/v1/admin/functions/hello/invocations?before=0000-01-01T00:00:00Z',
        as: 'service',
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      // Postgres refuses offsets beyond ±15:59 (22009); the instant is compared in UTC instead.
      name: 'an invocation listing before an instant with an offset Postgres refuses',
      source: 'review #9',
      request: () => ({
        method: 'GET',
        path: `/v1/admin/functions/hello/invocations?before=${encodeURIComponent('2024-01-01T00:00:00+23:59')}`,
        as: 'service',
      }),
      status: 200,
      check: (result) => expect((result.body as { invocations: unknown[] }).invocations).toEqual([]),
    },
    {
      name: 'an invocation listing before something that is not a date',
      request: () => ({ method: 'GET', path: '/v1/admin/functions/hello/invocations?before=yesterday', as: 'service' }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an invocation listing pages by a created_at with microseconds (control)',
      run: async (_fixture, server) => {
        const all = await request(server.url, 'GET', '/v1/admin/functions/hello/invocations', {
          token: server.serviceKey,
        });
        expect(all.status, all.text).toBe(200);
        const invocations = (all.body as { invocations: Array<{ created_at: string }> }).invocations;
        expect(invocations.length).toBeGreaterThan(0);
        const latest = invocations[0]!.created_at;
        const later = new Date(Date.parse(latest) + 1).toISOString();
        for (const [before, count] of [
          [latest, invocations.length - 1],
          [later, invocations.length],
          ['9999-12-31T23:59:59.999999Z', invocations.length],
        ] as const) {
          const page = await request(
            server.url,
            'GET',
            `/v1/admin/functions/hello/invocations?before=${encodeURIComponent(before)}`,
            { token: server.serviceKey },
          );
          expect(page.status, page.text).toBe(200);
          expect((page.body as { invocations: unknown[] }).invocations, before).toHaveLength(count);
        }
      },
    },

    // ---- audit log ---------------------------------------------------------------------------
    {
      name: 'an audit type filter carrying LIKE wildcards',
      request: () => ({ method: 'GET', path: '/v1/admin/audit?type=auth.%25', as: 'service' }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an audit user filter carrying SQL',
      request: () => ({
        method: 'GET',
        path: `/v1/admin/audit?user_id=${encodeURIComponent("' OR 1=1 --")}`,
        as: 'service',
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an audit page larger than the largest',
      request: () => ({ method: 'GET', path: '/v1/admin/audit?limit=501', as: 'service' }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an audit cursor past bigint',
      request: () => ({ method: 'GET', path: '/v1/admin/audit?before=99999999999999999999', as: 'service' }),
      status: 400,
      code: 'INVALID_REQUEST',
    },

    // ---- impersonation -----------------------------------------------------------------------
    {
      name: 'impersonation for longer than an hour',
      request: (fixture) => ({
        method: 'POST',
        path: `/v1/admin/users/${fixture.userId}/impersonate`,
        as: 'service',
        body: { expires_in: 3601 },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'impersonation for no time at all',
      request: (fixture) => ({
        method: 'POST',
        path: `/v1/admin/users/${fixture.userId}/impersonate`,
        as: 'service',
        body: { expires_in: 0 },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'impersonation with extra fields (a longer-lived refresh token asked for)',
      request: (fixture) => ({
        method: 'POST',
        path: `/v1/admin/users/${fixture.userId}/impersonate`,
        as: 'service',
        body: { refresh: true },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'impersonating a user that does not exist',
      request: () => ({
        method: 'POST',
        path: '/v1/admin/users/00000000-0000-4000-8000-00000000beef/impersonate',
        as: 'service',
      }),
      status: 404,
      code: 'NOT_FOUND',
    },
    {
      name: 'a user impersonating another user with their own token',
      request: (fixture) => ({ method: 'POST', path: `/v1/admin/users/${fixture.userId}/impersonate`, as: 'user' }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'an impersonated session changes the password, the email, or signs the user out everywhere',
      run: async (fixture, server) => {
        const token = await impersonate(server, fixture.userId);
        const attempts = [
          { method: 'PATCH', path: '/v1/auth/user', body: { password: 'taken over passphrase 1' } },
          { method: 'PATCH', path: '/v1/auth/user', body: { email: 'attacker@example.com' } },
          { method: 'POST', path: '/v1/auth/signout', body: { scope: 'global' } },
          { method: 'POST', path: '/v1/auth/signout', body: { scope: 'others' } },
        ];
        for (const attempt of attempts) {
          const refused = await request(server.url, attempt.method, attempt.path, { token, body: attempt.body });
          expect(refused.status, `${attempt.method} ${JSON.stringify(attempt.body)}`).toBe(403);
          expect(errorCode(refused.body)).toBe('FORBIDDEN');
        }
        // Nothing changed: the user still signs in with their own password, as themselves.
        const own = await request(server.url, 'POST', '/v1/auth/signin', {
          body: { email: fixture.userEmail, password: STRONG_PASSWORD },
        });
        expect(own.status, own.text).toBe(200);
        expect((own.body as { user: { email: string } }).user.email).toBe(fixture.userEmail);
        expect((await request(server.url, 'GET', '/v1/auth/user', { token: fixture.user })).status).toBe(200);
      },
    },
    {
      name: "an impersonated session ends another of the user's sessions",
      run: async (fixture, server) => {
        const token = await impersonate(server, fixture.userId);
        const own = await request(server.url, 'GET', '/v1/auth/sessions', { token: fixture.user });
        const mine = (own.body as { sessions: { id: string; current: boolean }[] }).sessions.find((s) => s.current);
        const refused = await request(server.url, 'DELETE', `/v1/auth/sessions/${mine?.id}`, { token });
        expect(refused.status).toBe(403);
        expect(errorCode(refused.body)).toBe('FORBIDDEN');
      },
    },
    {
      name: 'an impersonated session calls the admin API or reads the audit log',
      run: async (fixture, server) => {
        const token = await impersonate(server, fixture.userId);
        for (const [method, path] of [
          ['GET', '/v1/admin/audit'],
          ['POST', `/v1/admin/users/${fixture.userId}/impersonate`],
          ['GET', '/v1/admin/users'],
        ] as const) {
          const refused = await request(server.url, method, path, { token });
          expect(refused.status, path).toBe(403);
          expect(errorCode(refused.body)).toBe('FORBIDDEN');
        }
      },
    },

    // ---- logs --------------------------------------------------------------------------------
    {
      name: 'credentials in request URLs reach the log',
      source: 'review #8',
      run: async (fixture, server) => {
        const lines: string[] = [];
        const logger = createLogger('trace', { destination: { write: (line: string) => void lines.push(line) } });
        const app = await buildApp(server.config, { logger });
        try {
          const url = await app.listen({ port: 0, host: '127.0.0.1' });
          const secrets = {
            verifyToken: `verify${randomBytes(16).toString('hex')}`,
            encodedToken: `encoded${randomBytes(16).toString('hex')}`,
            code: `code${randomBytes(16).toString('hex')}`,
            apikey: `apikey${randomBytes(16).toString('hex')}`,
            refresh: `refresh${randomBytes(16).toString('hex')}`,
          };

          // A websocket authenticated by ?access_token=, as browsers must.
          const socket = await TestSocket.open(url, { token: fixture.user });
          socket.send({ type: 'ping' });
          await socket.nextOfType('pong');
          socket.close();

          // A signed download URL.
          const put = await request(url, 'PUT', '/v1/storage/logged/file.txt', {
            token: server.serviceKey,
            headers: { 'content-type': 'text/plain' },
            rawBody: new TextEncoder().encode('x'),
          });
          expect(put.status, put.text).toBe(201);
          const signed = await request(url, 'POST', '/v1/sign/logged/file.txt', {
            token: server.serviceKey,
            body: { expires_in: 60 },
          });
          const signedUrl = new URL((signed.body as { url: string }).url);
          const sig = signedUrl.searchParams.get('sig') ?? '';
          expect(sig).not.toBe('');
          expect((await request(url, 'GET', `${signedUrl.pathname}${signedUrl.search}`)).status).toBe(200);

          // Mailed links, an OAuth callback, an unknown route, a parameter name written encoded.
          await request(url, 'GET', `/v1/auth/verify?type=signup&token=${secrets.verifyToken}`);
          await request(url, 'GET', `/v1/auth/verify?type=signup&%74oken=${secrets.encodedToken}`);
          await request(url, 'GET', `/v1/auth/callback?code=${secrets.code}&state=abc`);
          await request(url, 'GET', `/v1/nowhere?apikey=${secrets.apikey}&refresh_token=${secrets.refresh}`);
          // The service key travels in a header, which request lines do not keep.
          await request(url, 'GET', '/v1/admin/buckets', { token: server.serviceKey });

          const log = lines.join('');
          expect(log).toContain('incoming request');
          for (const secret of [fixture.user, sig, server.serviceKey, ...Object.values(secrets)]) {
            expect(log).not.toContain(secret);
          }
          expect(log).toContain('/v1/realtime?access_token=[redacted]');
          expect(log).toContain(`/v1/storage/logged/file.txt?expires=${signedUrl.searchParams.get('expires')}`);
          expect(log).toContain('sig=[redacted]');
          expect(log).toContain('type=signup&token=[redacted]');
          expect(log).toContain('%74oken=[redacted]');
          expect(log).toContain('code=[redacted]&state=abc');
        } finally {
          await app.close();
        }
      },
    },
  ],
});
