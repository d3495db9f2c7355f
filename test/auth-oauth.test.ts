import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, ConfigError } from '../server/config.js';
import { githubProfile, oidcProfile } from '../server/modules/auth/oauth/providers.js';
import { codeChallenge } from '../server/modules/auth/oauth/flow.js';
import { createClient } from '../client-sdk/src/index.js';
import { createTestDatabase, errorCode, request, startTestApp, type TestApp, type TestDatabase } from './helpers.js';

/**
 * OAuth / OpenID Connect sign-in, end to end against a real OpenID provider
 * (oidc-provider) on loopback. The "browser" is fetch with a cookie jar that follows
 * redirects by hand, so each hop (Basalt → provider → Basalt → app) can be inspected.
 */

const APP = 'http://app.example.test/auth/done';
const OTHER_APP = 'myapp://signed-in';
const CLIENT_ID = 'basalt-test';
const CLIENT_SECRET = 'a-client-secret-for-tests-only-0123456789';

interface TestAccount {
  email: string;
  email_verified: boolean;
  name: string;
}

/** The accounts of the test provider, and who the next interaction signs in as. */
const accounts = new Map<string, TestAccount>();
let signInAs = 'alice';

let database: TestDatabase;
let server: TestApp;
let providerServer: Server;
let issuer: string;
let db: pg.Client;

/** A listening HTTP server whose handler is set later (the provider needs Basalt's URL first). */
async function listenLater(): Promise<{
  server: Server;
  url: string;
  handle(h: Parameters<typeof createServer>[1]): void;
}> {
  let handler: Parameters<typeof createServer>[1] | undefined;
  const httpServer = createServer((req, res) => {
    if (handler) handler(req, res);
    else res.writeHead(503).end();
  });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address() as AddressInfo;
  return { server: httpServer, url: `http://127.0.0.1:${port}`, handle: (h) => (handler = h) };
}

function startProvider(issuerUrl: string, callbackUrl: string): Provider {
  const provider = new Provider(issuerUrl, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [callbackUrl],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    // PKCE for this confidential client too, as Basalt always sends it.
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    cookies: { keys: ['oidc-test-cookie-key-0123456789'] },
    ttl: { AuthorizationCode: 60, AccessToken: 600, IdToken: 600, Grant: 600, Interaction: 600, Session: 600 },
    async findAccount(_ctx: unknown, id: string) {
      const account = accounts.get(id);
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...account }) };
    },
  });
  // The login and consent pages of a real provider, answered at once for `signInAs`.
  provider.use(async (ctx, next) => {
    if (!/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    let result: Record<string, unknown>;
    if (details.prompt.name === 'login') {
      result = { login: { accountId: signInAs } };
    } else {
      const accountId = details.session?.accountId ?? signInAs;
      const grant = details.grantId
        ? ((await provider.Grant.find(details.grantId)) ?? new provider.Grant({ accountId, clientId: CLIENT_ID }))
        : new provider.Grant({ accountId, clientId: CLIENT_ID });
      grant.addOIDCScope(String(details.params.scope));
      result = { consent: { grantId: await grant.save() } };
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(returnTo);
  });
  return provider;
}

/** Cookies per origin, as a browser would keep them (paths are not needed here). */
class CookieJar {
  private readonly jars = new Map<string, Map<string, string>>();

  store(url: string, response: Response): void {
    const origin = new URL(url).origin;
    const jar = this.jars.get(origin) ?? new Map<string, string>();
    this.jars.set(origin, jar);
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const index = pair.indexOf('=');
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '';
      if (expired) jar.delete(name);
      else jar.set(name, value);
    }
  }

  header(url: string): string {
    const jar = this.jars.get(new URL(url).origin);
    return jar ? [...jar].map(([name, value]) => `${name}=${value}`).join('; ') : '';
  }

  forget(url: string): void {
    this.jars.delete(new URL(url).origin);
  }
}

interface Hop {
  /** Where the last redirect pointed. */
  location: string;
  status: number;
}

/** Follows redirects by hand, carrying cookies, until one points at `stopAt` (or there is no redirect). */
async function browse(jar: CookieJar, start: string, stopAt: string): Promise<Hop> {
  let url = start;
  for (let hop = 0; hop < 20; hop++) {
    const cookie = jar.header(url);
    const response = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
    jar.store(url, response);
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || !location) {
      const body = await response.text();
      throw new Error(`no redirect from ${url}: ${response.status} ${body.slice(0, 500)}`);
    }
    await response.arrayBuffer().catch(() => undefined);
    const next = new URL(location, url).toString();
    if (next.startsWith(stopAt)) return { location: next, status: response.status };
    url = next;
  }
  throw new Error('too many redirects');
}

function authorizeUrl(redirectTo: string = APP, provider = 'idp'): string {
  return `${server.url}/v1/auth/authorize?provider=${provider}&redirect_to=${encodeURIComponent(redirectTo)}`;
}

function callbackPrefix(): string {
  return `${server.url}/v1/auth/callback`;
}

function fragmentOf(location: string): Record<string, string> {
  const url = new URL(location);
  return Object.fromEntries(new URLSearchParams(url.hash.slice(1)));
}

/** A whole sign-in as `account`, returning the app URL Basalt redirects to. */
async function signIn(account: string, redirectTo: string = APP): Promise<string> {
  signInAs = account;
  const jar = new CookieJar();
  const hop = await browse(jar, authorizeUrl(redirectTo), redirectTo);
  return hop.location;
}

/** A sign-in up to the moment the provider sends the browser to Basalt's callback. */
async function untilCallback(account: string): Promise<{ jar: CookieJar; callback: string }> {
  signInAs = account;
  const jar = new CookieJar();
  const hop = await browse(jar, authorizeUrl(), callbackPrefix());
  return { jar, callback: hop.location };
}

async function currentUser(accessToken: string): Promise<{ id: string; email: string | null }> {
  const response = await request(server.url, 'GET', '/v1/auth/user', { token: accessToken });
  expect(response.status).toBe(200);
  return response.body as { id: string; email: string | null };
}

beforeAll(async () => {
  database = await createTestDatabase();
  const op = await listenLater();
  providerServer = op.server;
  issuer = op.url;
  server = await startTestApp(database, {
    BASALT_AUTH_REDIRECT_URLS: `${APP}, ${OTHER_APP}`,
    BASALT_OAUTH_IDP_ISSUER: issuer,
    BASALT_OAUTH_IDP_CLIENT_ID: CLIENT_ID,
    BASALT_OAUTH_IDP_CLIENT_SECRET: CLIENT_SECRET,
    LOG_LEVEL: 'silent',
  });
  // The app listened on a free port only now; the callback URL registered at the provider is built on it.
  server.config.publicUrl = server.url;
  const provider = startProvider(issuer, `${server.url}/v1/auth/callback`);
  op.handle(provider.callback());
  db = new pg.Client({ connectionString: database.url });
  await db.connect();
  accounts.set('alice', { email: 'alice@example.com', email_verified: true, name: 'Alice' });
  accounts.set('mallory', { email: 'bob@example.com', email_verified: false, name: 'Not Bob' });
  accounts.set('bob-verified', { email: 'Bob@Example.com', email_verified: true, name: 'Bob' });
});

afterAll(async () => {
  await db?.end();
  await server?.close();
  await new Promise((resolve) => providerServer?.close(resolve));
  await database?.drop();
});

describe('GET /v1/auth/authorize', () => {
  it('redirects to the provider with PKCE S256, state and nonce, and stores the state', async () => {
    const response = await fetch(authorizeUrl(), { redirect: 'manual' });
    expect(response.status).toBe(302);
    const location = new URL(response.headers.get('location') ?? '');
    expect(location.origin).toBe(issuer);
    const params = location.searchParams;
    expect(params.get('response_type')).toBe('code');
    expect(params.get('client_id')).toBe(CLIENT_ID);
    expect(params.get('redirect_uri')).toBe(`${server.url}/v1/auth/callback`);
    expect(params.get('code_challenge_method')).toBe('S256');
    expect(params.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(params.get('state')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(params.get('nonce')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(params.get('scope')?.split(' ')).toEqual(expect.arrayContaining(['openid', 'email']));
    const cookie = response.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(
      /^basalt_oauth_\w+=[A-Za-z0-9_-]{43}; Path=\/v1\/auth\/callback; Max-Age=600; HttpOnly; SameSite=Lax/,
    );
    const { rows } = await db.query<{ code_verifier: string; redirect_to: string; ttl: number }>(
      `SELECT code_verifier, redirect_to, extract(epoch FROM expires_at - created_at)::int AS ttl
         FROM basalt.oauth_states ORDER BY created_at DESC LIMIT 1`,
    );
    expect(rows[0]?.redirect_to).toBe(APP);
    expect(rows[0]?.ttl).toBe(600);
    expect(codeChallenge(rows[0]?.code_verifier ?? '')).toBe(params.get('code_challenge'));
  });

  it('rejects a redirect_to outside the allowlist with 400 before redirecting anywhere', async () => {
    for (const redirectTo of [
      'https://evil.example.net/',
      `${APP}/../steal`,
      `${APP}?x=1`,
      `${APP}#frag`,
      `${APP}/`,
      APP.toUpperCase(),
      'javascript:alert(1)',
    ]) {
      const response = await fetch(authorizeUrl(redirectTo), { redirect: 'manual' });
      expect(response.status, redirectTo).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      expect(response.headers.get('set-cookie')).toBeNull();
      expect(errorCode(await response.json())).toBe('INVALID_REQUEST');
    }
  });

  it('answers bad input with catalogue codes', async () => {
    const cases: Array<[string, number, string]> = [
      ['/v1/auth/authorize', 400, 'INVALID_REQUEST'],
      [`/v1/auth/authorize?provider=nope&redirect_to=${encodeURIComponent(APP)}`, 400, 'INVALID_REQUEST'],
      [`/v1/auth/authorize?provider=idp&provider=idp&redirect_to=${encodeURIComponent(APP)}`, 400, 'INVALID_REQUEST'],
      [`/v1/auth/authorize?provider=&redirect_to=${encodeURIComponent(APP)}`, 400, 'INVALID_REQUEST'],
      [`/v1/auth/authorize?provider=idp&redirect_to=${'x'.repeat(3000)}`, 400, 'INVALID_REQUEST'],
      [`/v1/auth/authorize?provider=idp&redirect_to=%E0%A4%A`, 400, 'INVALID_REQUEST'],
    ];
    for (const [path, status, code] of cases) {
      const response = await request(server.url, 'GET', path);
      expect(response.status, path).toBe(status);
      expect(errorCode(response.body), path).toBe(code);
    }
  });

  it('is described in the OpenAPI document', async () => {
    const spec = await request(server.url, 'GET', '/docs/json');
    const paths = (spec.body as { paths: Record<string, unknown> }).paths;
    expect(Object.keys(paths)).toEqual(expect.arrayContaining(['/v1/auth/authorize', '/v1/auth/callback']));
  });

  it('defaults redirect_to to the first allowed URL', async () => {
    const response = await fetch(`${server.url}/v1/auth/authorize?provider=idp`, { redirect: 'manual' });
    expect(response.status).toBe(302);
    const { rows } = await db.query<{ redirect_to: string }>(
      `SELECT redirect_to FROM basalt.oauth_states ORDER BY created_at DESC LIMIT 1`,
    );
    expect(rows[0]?.redirect_to).toBe(APP);
  });
});

describe('sign-in against a real OpenID provider', () => {
  let aliceId = '';

  it('creates the user and returns a working session in the fragment', async () => {
    const location = await signIn('alice');
    expect(location.startsWith(`${APP}#`)).toBe(true);
    const session = fragmentOf(location);
    expect(session.token_type).toBe('bearer');
    expect(Number(session.expires_in)).toBeGreaterThan(0);
    expect(Number(session.expires_at)).toBeGreaterThan(Date.now() / 1000);
    expect(session.refresh_token).toBeTruthy();
    const user = await currentUser(session.access_token ?? '');
    expect(user.email).toBe('alice@example.com');
    aliceId = user.id;
    const { rows } = await db.query<{ user_id: string; subject: string }>(
      `SELECT user_id, subject FROM basalt.identities WHERE provider = 'idp'`,
    );
    expect(rows).toEqual([{ user_id: aliceId, subject: 'alice' }]);
    // The refresh token works too.
    const refreshed = await request(server.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: session.refresh_token },
    });
    expect(refreshed.status).toBe(200);
  });

  it('signs the same identity in again as the same user', async () => {
    const session = fragmentOf(await signIn('alice'));
    expect((await currentUser(session.access_token ?? '')).id).toBe(aliceId);
    const { rows } = await db.query(`SELECT 1 FROM basalt.identities WHERE provider = 'idp' AND subject = 'alice'`);
    expect(rows).toHaveLength(1);
    const users = await db.query(`SELECT 1 FROM basalt.users WHERE lower(email) = 'alice@example.com'`);
    expect(users.rows).toHaveLength(1);
  });

  it('redirects to any allowed URL, also a custom scheme', async () => {
    const location = await signIn('alice', OTHER_APP);
    expect(location.startsWith(`${OTHER_APP}#access_token=`)).toBe(true);
  });

  it('clears the browser-binding cookie on the callback', async () => {
    const { jar, callback } = await untilCallback('alice');
    const response = await fetch(callback, { redirect: 'manual', headers: { cookie: jar.header(callback) } });
    expect(response.status).toBe(302);
    expect(response.headers.get('set-cookie')).toMatch(/^basalt_oauth_\w+=; Path=\/v1\/auth\/callback; Max-Age=0/);
    expect(response.headers.get('cache-control')).toBe('no-store');
  });
});

describe('with the client SDK', () => {
  it('starts at the URL signInWithOAuth gives and adopts the session from the fragment', async () => {
    const client = createClient(server.url, { persistSession: false, autoRefreshToken: false });
    try {
      const { url } = await client.auth.signInWithOAuth({ provider: 'idp', redirectTo: APP });
      expect(url.startsWith(`${server.url}/v1/auth/authorize?`)).toBe(true);
      signInAs = 'alice';
      const hop = await browse(new CookieJar(), url, APP);
      const session = await client.auth.getSessionFromUrl(hop.location);
      expect(session?.token_type).toBe('bearer');
      expect(client.auth.session?.access_token).toBe(session?.access_token);
      expect((await client.auth.getUser()).email).toBe('alice@example.com');
    } finally {
      client.auth.stopAutoRefresh();
    }
  });
});

describe('linking by email', () => {
  let bobId = '';

  beforeAll(async () => {
    const signup = await request(server.url, 'POST', '/v1/auth/signup', {
      body: { email: 'bob@example.com', password: 'correct horse battery staple' },
    });
    expect(signup.status).toBe(201);
    bobId = (signup.body as { user: { id: string } }).user.id;
  });

  it('does not let an unverified email take over an existing password account', async () => {
    // The unverified address proves nothing: the identity gets an account of its own,
    // without an email, and Bob's account is untouched.
    const result = fragmentOf(await signIn('mallory'));
    expect(result.access_token).toBeTruthy();
    const response = await request(server.url, 'GET', '/v1/auth/user', { token: result.access_token ?? '' });
    expect(response.body).toMatchObject({
      email: null,
      email_confirmed_at: null,
      user_metadata: { email: 'bob@example.com', email_verified: false },
    });
    expect((response.body as { id: string }).id).not.toBe(bobId);
    const { rows } = await db.query(`SELECT 1 FROM basalt.identities WHERE user_id = $1`, [bobId]);
    expect(rows).toHaveLength(0);
    const signin = await request(server.url, 'POST', '/v1/auth/signin', {
      body: { email: 'bob@example.com', password: 'correct horse battery staple' },
    });
    expect(signin.status).toBe(200);
  });

  it('links a verified email to the existing account', async () => {
    const session = fragmentOf(await signIn('bob-verified'));
    expect(session.access_token).toBeTruthy();
    expect((await currentUser(session.access_token ?? '')).id).toBe(bobId);
    const { rows } = await db.query<{ subject: string }>(`SELECT subject FROM basalt.identities WHERE user_id = $1`, [
      bobId,
    ]);
    expect(rows.map((row) => row.subject)).toEqual(['bob-verified']);
  });
});

describe('pre-account takeover', () => {
  it('does not let an identity with an unverified email keep access once the owner proves the email', async () => {
    accounts.set('squatter', { email: 'carol@example.com', email_verified: false, name: 'Not Carol' });
    accounts.set('carol', { email: 'carol@example.com', email_verified: true, name: 'Carol' });
    const squatted = fragmentOf(await signIn('squatter'));
    const owner = fragmentOf(await signIn('carol'));
    expect(owner.access_token).toBeTruthy();
    const carolId = (await currentUser(owner.access_token ?? '')).id;
    const again = fragmentOf(await signIn('squatter'));
    expect(again.access_token).toBeTruthy();
    expect((await currentUser(again.access_token ?? '')).id).not.toBe(carolId);
    expect((await currentUser(squatted.access_token ?? '')).id).not.toBe(carolId);
    expect((await currentUser(owner.access_token ?? '')).email).toBe('carol@example.com');
  });
});

describe('the callback refuses what it must', () => {
  it('answers a missing, unknown or repeated state with 400 and no redirect', async () => {
    const cases: Array<[string, string]> = [
      ['/v1/auth/callback', 'INVALID_REQUEST'],
      ['/v1/auth/callback?code=abc', 'INVALID_REQUEST'],
      ['/v1/auth/callback?code=abc&state=not-a-state-we-issued', 'INVALID_TOKEN'],
      ['/v1/auth/callback?code=abc&state=a&state=b', 'INVALID_REQUEST'],
      [`/v1/auth/callback?code=abc&state=${'s'.repeat(9000)}`, 'INVALID_REQUEST'],
      ['/v1/auth/callback?error=access_denied', 'INVALID_REQUEST'],
      ['/v1/auth/callback?state=%ZZ%00&code=%E0%A4%A', 'INVALID_TOKEN'],
      ['/v1/auth/callback?state[]=x', 'INVALID_REQUEST'],
    ];
    for (const [path, code] of cases) {
      const response = await fetch(`${server.url}${path}`, { redirect: 'manual' });
      expect(response.status, path).toBe(400);
      expect(response.headers.get('location'), path).toBeNull();
      expect(errorCode(await response.json()), path).toBe(code);
    }
  });

  it('spends a state once: the same callback again is 400', async () => {
    const { jar, callback } = await untilCallback('alice');
    const first = await fetch(callback, { redirect: 'manual', headers: { cookie: jar.header(callback) } });
    expect(fragmentOf(first.headers.get('location') ?? '').access_token).toBeTruthy();
    const again = await fetch(callback, { redirect: 'manual', headers: { cookie: jar.header(callback) } });
    expect(again.status).toBe(400);
    expect(errorCode(await again.json())).toBe('INVALID_TOKEN');
  });

  it('lets only one of two concurrent callbacks with the same state through', async () => {
    const { jar, callback } = await untilCallback('alice');
    const headers = { cookie: jar.header(callback) };
    const [a, b] = await Promise.all([
      fetch(callback, { redirect: 'manual', headers }),
      fetch(callback, { redirect: 'manual', headers }),
    ]);
    const statuses = [a.status, b.status].sort();
    expect(statuses).toEqual([302, 400]);
    const winner = a.status === 302 ? a : b;
    expect(fragmentOf(winner.headers.get('location') ?? '').access_token).toBeTruthy();
  });

  it('refuses an expired state', async () => {
    const { jar, callback } = await untilCallback('alice');
    await db.query(`UPDATE basalt.oauth_states SET expires_at = now() - interval '1 second'`);
    const response = await fetch(callback, { redirect: 'manual', headers: { cookie: jar.header(callback) } });
    expect(response.status).toBe(400);
    expect(errorCode(await response.json())).toBe('INVALID_TOKEN');
  });

  it('fails when the code_verifier is wrong or missing: the provider refuses the code', async () => {
    for (const verifier of ['W'.repeat(43), '']) {
      const { jar, callback } = await untilCallback('alice');
      const updated = await db.query(`UPDATE basalt.oauth_states SET code_verifier = $1`, [verifier]);
      expect(updated.rowCount).toBe(1);
      const hop = await browse(jar, callback, APP);
      const result = fragmentOf(hop.location);
      expect(result.access_token).toBeUndefined();
      expect(result.error).toMatch(/^invalid_(grant|request)$/);
      expect(result.error_code).toBe('INVALID_CREDENTIALS');
      expect(result.error_description).toBeTruthy();
    }
  });

  it('fails when the ID token does not carry the nonce of this sign-in', async () => {
    const { jar, callback } = await untilCallback('alice');
    await db.query(`UPDATE basalt.oauth_states SET nonce = 'some-other-nonce'`);
    const result = fragmentOf((await browse(jar, callback, APP)).location);
    expect(result.access_token).toBeUndefined();
    expect(result.error).toBe('invalid_grant');
    expect(result.error_description).toContain('nonce');
  });

  it('fails on a replayed authorization code and issues no session', async () => {
    const first = await untilCallback('alice');
    const { rows } = await db.query<{ code_verifier: string }>(`SELECT code_verifier FROM basalt.oauth_states`);
    expect(rows).toHaveLength(1);
    const firstVerifier = rows[0]?.code_verifier ?? '';
    const firstCode = new URL(first.callback).searchParams.get('code') ?? '';
    const used = fragmentOf((await browse(first.jar, first.callback, APP)).location);
    expect(used.access_token).toBeTruthy();

    // A second sign-in whose callback carries the first, spent code (with the verifier that
    // matched it), so only the provider's single-use rule can stop it.
    const second = await untilCallback('alice');
    await db.query(`UPDATE basalt.oauth_states SET code_verifier = $1`, [firstVerifier]);
    const replay = new URL(second.callback);
    replay.searchParams.set('code', firstCode);
    const sessionsBefore = await db.query(`SELECT count(*)::int AS n FROM basalt.sessions`);
    const result = fragmentOf((await browse(second.jar, replay.toString(), APP)).location);
    expect(result.access_token).toBeUndefined();
    expect(result.error).toBe('invalid_grant');
    expect(result.error_code).toBe('INVALID_CREDENTIALS');
    const sessionsAfter = await db.query(`SELECT count(*)::int AS n FROM basalt.sessions`);
    expect(sessionsAfter.rows[0]).toEqual(sessionsBefore.rows[0]);
  });

  it('reports an error sent by the provider to the app', async () => {
    const response = await fetch(authorizeUrl(), { redirect: 'manual' });
    const state = new URL(response.headers.get('location') ?? '').searchParams.get('state') ?? '';
    const jar = new CookieJar();
    jar.store(authorizeUrl(), response);
    const callback = `${callbackPrefix()}?error=access_denied&error_description=${encodeURIComponent('User said no')}&state=${state}`;
    const result = fragmentOf((await browse(jar, callback, APP)).location);
    expect(result).toEqual({ error: 'access_denied', error_code: 'FORBIDDEN', error_description: 'User said no' });
  });

  it('refuses a callback from a browser that did not start the sign-in', async () => {
    const { callback } = await untilCallback('alice');
    const response = await fetch(callback, { redirect: 'manual' });
    expect(response.status).toBe(302);
    const result = fragmentOf(response.headers.get('location') ?? '');
    expect(result.access_token).toBeUndefined();
    expect(result.error).toBe('access_denied');
  });

  it.each([
    [
      'that names another issuer (mix-up)',
      (callback: URL) => {
        expect(callback.searchParams.get('iss')).toBe(issuer);
        callback.searchParams.set('iss', 'https://evil.example.net');
      },
    ],
    ['without iss from a provider that always sends it', (callback: URL) => callback.searchParams.delete('iss')],
  ])('refuses a response %s', async (_case, tamper) => {
    const { jar, callback } = await untilCallback('alice');
    const tampered = new URL(callback);
    tamper(tampered);
    const result = fragmentOf((await browse(jar, tampered.toString(), APP)).location);
    expect(result.access_token).toBeUndefined();
    expect(result.error_code).toBe('INVALID_CREDENTIALS');
  });

  it('reports a callback without a code to the app', async () => {
    const { jar, callback } = await untilCallback('alice');
    const noCode = new URL(callback);
    noCode.searchParams.delete('code');
    const result = fragmentOf((await browse(jar, noCode.toString(), APP)).location);
    expect(result.error).toBe('invalid_request');
    expect(result.error_code).toBe('INVALID_REQUEST');
  });
});

describe('rate limit', () => {
  it('counts sign-ins started per client IP like password sign-ins', async () => {
    const limited = await startTestApp(database, {
      BASALT_AUTH_REDIRECT_URLS: APP,
      BASALT_OAUTH_IDP_ISSUER: issuer,
      BASALT_OAUTH_IDP_CLIENT_ID: CLIENT_ID,
      BASALT_AUTH_RATE_SIGNIN_IP: '2',
    });
    try {
      await db.query(`DELETE FROM basalt.rate_limits WHERE key LIKE 'oauth:%'`);
      const path = `/v1/auth/authorize?provider=idp`;
      expect((await fetch(`${limited.url}${path}`, { redirect: 'manual' })).status).toBe(302);
      expect((await fetch(`${limited.url}${path}`, { redirect: 'manual' })).status).toBe(302);
      const third = await request(limited.url, 'GET', path);
      expect(third.status).toBe(429);
      expect(errorCode(third.body)).toBe('RATE_LIMITED');
      expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      await limited.close();
      await db.query(`DELETE FROM basalt.rate_limits WHERE key LIKE 'oauth:%'`);
    }
  });
});

describe('provider unavailable', () => {
  it('answers 503 UNAVAILABLE when discovery fails, and never 500', async () => {
    const other = await startTestApp(database, {
      BASALT_AUTH_REDIRECT_URLS: APP,
      BASALT_OAUTH_DOWN_ISSUER: 'http://127.0.0.1:9/',
      BASALT_OAUTH_DOWN_CLIENT_ID: 'x',
    });
    try {
      const response = await request(other.url, 'GET', `/v1/auth/authorize?provider=down`);
      expect(response.status).toBe(503);
      expect(errorCode(response.body)).toBe('UNAVAILABLE');
    } finally {
      await other.close();
    }
  });
});

describe('GitHub (OAuth 2 without OpenID) against a stand-in GitHub on loopback', () => {
  const GH_ID = 'Iv1.test-client';
  const GH_SECRET = 'github-test-secret';
  /** Issued codes: single use, bound to the PKCE challenge and redirect URI, as GitHub does. */
  const codes = new Map<string, { challenge: string; redirectUri: string }>();
  let github: Awaited<ReturnType<typeof listenLater>>;
  let app: TestApp;
  let userAgents: string[] = [];

  beforeAll(async () => {
    github = await listenLater();
    github.handle((req, res) => {
      const url = new URL(req.url ?? '/', github.url);
      const json = (status: number, body: unknown) =>
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
        const params = url.searchParams;
        const code = `code-${codes.size + 1}`;
        codes.set(code, {
          challenge: params.get('code_challenge') ?? '',
          redirectUri: params.get('redirect_uri') ?? '',
        });
        const back = new URL(params.get('redirect_uri') ?? '');
        back.searchParams.set('code', code);
        back.searchParams.set('state', params.get('state') ?? '');
        res.writeHead(302, { location: back.toString() }).end();
        return;
      }
      if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
        let raw = '';
        req.on('data', (chunk: Buffer) => (raw += chunk.toString()));
        req.on('end', () => {
          const form = new URLSearchParams(raw);
          const issued = codes.get(form.get('code') ?? '');
          codes.delete(form.get('code') ?? '');
          const ok =
            issued !== undefined &&
            form.get('client_id') === GH_ID &&
            form.get('client_secret') === GH_SECRET &&
            form.get('redirect_uri') === issued.redirectUri &&
            codeChallenge(form.get('code_verifier') ?? '') === issued.challenge;
          // GitHub answers a refused code with 200 and an error field.
          if (!ok)
            json(200, {
              error: 'bad_verification_code',
              error_description: 'The code passed is incorrect or expired.',
            });
          else json(200, { access_token: 'gho_testtoken', token_type: 'bearer', scope: 'read:user,user:email' });
        });
        return;
      }
      userAgents.push(String(req.headers['user-agent']));
      if (req.headers.authorization !== 'Bearer gho_testtoken') return json(401, { message: 'Bad credentials' });
      if (url.pathname === '/api/user') {
        return json(200, {
          id: 583231,
          login: 'octocat',
          name: 'The Octocat',
          email: null,
          avatar_url: 'https://a/o.png',
        });
      }
      if (url.pathname === '/api/user/emails') {
        return json(200, [
          { email: 'octocat@users.noreply.github.com', primary: false, verified: true, visibility: null },
          { email: 'octo@example.com', primary: true, verified: true, visibility: 'public' },
        ]);
      }
      json(404, { message: 'Not Found' });
    });
    app = await startTestApp(database, {
      BASALT_AUTH_REDIRECT_URLS: APP,
      BASALT_OAUTH_GITHUB_CLIENT_ID: GH_ID,
      BASALT_OAUTH_GITHUB_CLIENT_SECRET: GH_SECRET,
      BASALT_OAUTH_GITHUB_WEB_URL: github.url,
      BASALT_OAUTH_GITHUB_API_URL: `${github.url}/api`,
    });
    app.config.publicUrl = app.url;
  });

  afterAll(async () => {
    await app?.close();
    await new Promise((resolve) => github?.server.close(resolve));
  });

  it('signs in with the code exchange, /user and /user/emails', async () => {
    userAgents = [];
    const jar = new CookieJar();
    const hop = await browse(
      jar,
      `${app.url}/v1/auth/authorize?provider=github&redirect_to=${encodeURIComponent(APP)}`,
      APP,
    );
    const session = fragmentOf(hop.location);
    expect(session.access_token).toBeTruthy();
    const user = await request(app.url, 'GET', '/v1/auth/user', { token: session.access_token ?? '' });
    expect(user.status).toBe(200);
    expect(user.body).toMatchObject({
      email: 'octo@example.com',
      user_metadata: { user_name: 'octocat', name: 'The Octocat', avatar_url: 'https://a/o.png' },
    });
    // GitHub's API refuses requests without a User-Agent.
    expect(userAgents.length).toBeGreaterThan(0);
    expect(userAgents.every((agent) => agent === 'Basalt')).toBe(true);
    const { rows } = await db.query(`SELECT subject FROM basalt.identities WHERE provider = 'github'`);
    expect(rows).toEqual([{ subject: '583231' }]);
  });

  it('reports a code GitHub refuses (wrong verifier) to the app', async () => {
    const jar = new CookieJar();
    const hop = await browse(
      jar,
      `${app.url}/v1/auth/authorize?provider=github&redirect_to=${encodeURIComponent(APP)}`,
      `${app.url}/v1/auth/callback`,
    );
    await db.query(`UPDATE basalt.oauth_states SET code_verifier = $1`, ['V'.repeat(43)]);
    const result = fragmentOf((await browse(jar, hop.location, APP)).location);
    expect(result.access_token).toBeUndefined();
    expect(result.error).toBe('bad_verification_code');
    expect(result.error_code).toBe('INVALID_CREDENTIALS');
  });
});

describe('configuration', () => {
  it('reads providers from BASALT_OAUTH_<NAME>_* variables, with GitHub and Google presets', () => {
    const config = loadConfig({
      BASALT_OAUTH_GITHUB_CLIENT_ID: 'gh-id',
      BASALT_OAUTH_GITHUB_CLIENT_SECRET: 'gh-secret',
      BASALT_OAUTH_GOOGLE_CLIENT_ID: 'g-id',
      BASALT_OAUTH_GOOGLE_CLIENT_SECRET: 'g-secret',
      BASALT_OAUTH_MY_IDP_CLIENT_ID: 'm-id',
      BASALT_OAUTH_MY_IDP_ISSUER: 'https://login.example.com/realms/x/',
      BASALT_OAUTH_MY_IDP_SCOPES: 'email profile',
      BASALT_AUTH_REDIRECT_URLS: 'https://app.example.com/cb, com.example.app://auth',
    });
    expect(config.auth.redirectUrls).toEqual(['https://app.example.com/cb', 'com.example.app://auth']);
    expect(config.auth.oauthProviders).toEqual([
      {
        name: 'github',
        type: 'github',
        issuer: null,
        clientId: 'gh-id',
        clientSecret: 'gh-secret',
        scopes: ['read:user', 'user:email'],
        webUrl: 'https://github.com',
        apiUrl: 'https://api.github.com',
      },
      {
        name: 'google',
        type: 'oidc',
        issuer: 'https://accounts.google.com',
        clientId: 'g-id',
        clientSecret: 'g-secret',
        scopes: ['openid', 'email', 'profile'],
        webUrl: null,
        apiUrl: null,
      },
      {
        name: 'my_idp',
        type: 'oidc',
        issuer: 'https://login.example.com/realms/x/',
        clientId: 'm-id',
        clientSecret: null,
        scopes: ['openid', 'email', 'profile'],
        webUrl: null,
        apiUrl: null,
      },
    ]);
    expect(loadConfig({}).auth).toMatchObject({ redirectUrls: [], oauthProviders: [] });
  });

  it('names the variable of a bad setting', () => {
    const bad: Array<[Record<string, string>, string]> = [
      [{ BASALT_OAUTH_ACME_CLIENT_ID: 'x' }, 'BASALT_OAUTH_ACME_ISSUER'],
      [{ BASALT_OAUTH_ACME_CLIENT_ID: 'x', BASALT_OAUTH_ACME_ISSUER: 'not a url' }, 'BASALT_OAUTH_ACME_ISSUER'],
      [{ BASALT_OAUTH_GITHUB_CLIENT_ID: 'x' }, 'BASALT_OAUTH_GITHUB_CLIENT_SECRET'],
      [{ BASALT_OAUTH_ACME_CLIENT_ID: 'x', BASALT_OAUTH_ACME_TYPE: 'saml' }, 'BASALT_OAUTH_ACME_TYPE'],
      [{ BASALT_AUTH_REDIRECT_URLS: 'not-a-url' }, 'BASALT_AUTH_REDIRECT_URLS'],
      [{ BASALT_AUTH_REDIRECT_URLS: 'https://a.example/#x' }, 'BASALT_AUTH_REDIRECT_URLS'],
      [{ BASALT_AUTH_REDIRECT_URLS: 'javascript:alert(1)' }, 'BASALT_AUTH_REDIRECT_URLS'],
    ];
    for (const [env, variable] of bad) {
      let thrown: unknown;
      try {
        loadConfig(env);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, variable).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).variable).toBe(variable);
    }
  });
});

describe('profile mapping', () => {
  it('maps GitHub /user and /user/emails, trusting only emails GitHub marks verified', () => {
    const user = {
      id: 583231,
      login: 'octocat',
      name: 'The Octocat',
      email: 'public@example.com',
      avatar_url: 'https://a/x.png',
    };
    expect(
      githubProfile(user, [
        { email: 'other@example.com', primary: false, verified: true },
        { email: 'octo@example.com', primary: true, verified: true },
      ]),
    ).toEqual({
      subject: '583231',
      email: 'octo@example.com',
      emailVerified: true,
      userMetadata: { provider_id: '583231', user_name: 'octocat', name: 'The Octocat', avatar_url: 'https://a/x.png' },
    });
    // The primary is unverified: another verified address wins.
    expect(
      githubProfile(user, [
        { email: 'octo@example.com', primary: true, verified: false },
        { email: 'work@example.com', primary: false, verified: true },
      ]),
    ).toMatchObject({ email: 'work@example.com', emailVerified: true });
    // Nothing verified: the primary is passed on, as unverified.
    expect(githubProfile(user, [{ email: 'octo@example.com', primary: true, verified: false }])).toMatchObject({
      email: 'octo@example.com',
      emailVerified: false,
    });
    // Junk entries are skipped.
    expect(
      githubProfile(user, [
        null,
        'x',
        { email: 42, verified: true },
        { email: 'ok@example.com', verified: true },
      ] as never),
    ).toMatchObject({ email: 'ok@example.com', emailVerified: true });
    // No /user/emails (scope missing): the public profile email, never verified.
    expect(githubProfile(user, [])).toMatchObject({ email: 'public@example.com', emailVerified: false });
    expect(githubProfile({ id: 1, login: 'ghost', email: null }, [])).toEqual({
      subject: '1',
      email: null,
      emailVerified: false,
      userMetadata: { provider_id: '1', user_name: 'ghost', name: 'ghost' },
    });
  });

  it('refuses a GitHub user without a numeric id', () => {
    for (const id of [undefined, null, 'abc', 1.5, -1, {}]) {
      expect(() => githubProfile({ id, login: 'x' }, [])).toThrowError(/GitHub/);
    }
  });

  it('maps OpenID claims, with email_verified as a boolean or the string "true"', () => {
    expect(
      oidcProfile('https://issuer', {
        sub: 'abc',
        email: 'a@example.com',
        email_verified: 'true',
        name: 'A',
        picture: 'https://p',
        preferred_username: 'a',
      }),
    ).toEqual({
      subject: 'abc',
      email: 'a@example.com',
      emailVerified: true,
      userMetadata: { iss: 'https://issuer', sub: 'abc', name: 'A', avatar_url: 'https://p', preferred_username: 'a' },
    });
    expect(oidcProfile('i', { sub: 'abc', email: 'a@example.com' })).toMatchObject({ emailVerified: false });
    expect(oidcProfile('i', { sub: 'abc', email_verified: true })).toMatchObject({ email: null, emailVerified: false });
    expect(() => oidcProfile('i', { email: 'a@example.com' })).toThrowError();
  });
});
