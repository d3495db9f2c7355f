import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { haveBrowser, startBrowserHarness, type BrowserHarness } from '../client-sdk/test/browser-support.js';
import { claimsOf, VIRTUAL_AUTHENTICATOR as AUTHENTICATOR } from './auth-mfa-support.js';
import { createTestDatabase, errorCode, request, startTestApp, type TestApp, type TestDatabase } from './helpers.js';

// Passkeys end to end in Debian's chromium, through the SDK, with a CDP virtual authenticator
// (CTAP2, internal, resident keys, user verification): register, sign out, sign in with the
// passkey. The page is served from http://localhost (a secure context, and a domain the
// relying party id can name); Basalt listens elsewhere and is told the page's origin.

const PASSWORD = 'correct horse battery staple 42';

interface PageClient {
  auth: {
    ready: Promise<void>;
    aal: string | null;
    user: { id: string } | null;
    session: { access_token: string; refresh_token: string } | null;
    signUp(input: { email: string; password: string }): Promise<{ user: { id: string } }>;
    signIn(input: { email: string; password: string }): Promise<{ mfa_required?: boolean }>;
    signOut(): Promise<void>;
    signInWithPasskey(input?: { email?: string }): Promise<{ user: { id: string } }>;
    passkeys: {
      register(input?: { name?: string }): Promise<{ passkey: { id: string; name: string | null } }>;
      list(): Promise<Array<{ id: string; name: string | null; device_type: string }>>;
      remove(id: string): Promise<void>;
    };
  };
}

interface PageGlobal {
  Basalt: { createClient(url: string, options?: { storage?: null }): PageClient };
  client: PageClient;
}

describe.skipIf(!haveBrowser)('passkeys in chromium with a virtual authenticator', () => {
  let database: TestDatabase;
  let server: TestApp;
  let harness: BrowserHarness;
  let pageUrl: string;
  let browser: Browser;

  beforeAll(async () => {
    harness = await startBrowserHarness({ pageHost: 'localhost' });
    browser = harness.browser;
    pageUrl = harness.pageUrl;
    database = await createTestDatabase();
    server = await startTestApp(database, {
      // A public URL on another host: the defaults it would give (RP id basalt.invalid, its
      // origin) fail every ceremony, so passing ones show the two settings below are used.
      BASALT_PUBLIC_URL: 'https://basalt.invalid',
      BASALT_PASSKEY_RP_ID: 'localhost',
      BASALT_PASSKEY_ORIGINS: new URL(pageUrl).origin,
      BASALT_AUTH_APP_NAME: 'Basalt passkey test',
    });
  }, 120_000);

  afterAll(async () => {
    await harness?.close();
    await server?.close();
    await database?.drop();
  });

  async function withAuthenticator(context: BrowserContext): Promise<{ page: Page; cdp: CDPSession; id: string }> {
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: AUTHENTICATOR,
    });
    await page.goto(pageUrl);
    await page.evaluate((url) => {
      const g = window as unknown as PageGlobal;
      g.client = g.Basalt.createClient(url);
    }, server.url);
    return { page, cdp, id: authenticatorId };
  }

  it('registers a passkey, signs out and signs in with it (discoverable and by email), at aal2', async () => {
    const context = await browser.newContext();
    const { page, cdp, id: authenticatorId } = await withAuthenticator(context);
    const email = `passkey-${Date.now()}@example.com`;

    // Another session of the same user (another device): a new passkey ends it.
    const signedUp = await page.evaluate(
      async ({ email, password }) => {
        const { client } = window as unknown as PageGlobal;
        const { user } = await client.auth.signUp({ email, password });
        return { id: user.id, aal: client.auth.aal };
      },
      { email, password: PASSWORD },
    );
    expect(signedUp.aal).toBe('aal1');
    const elsewhere = await request(server.url, 'POST', '/v1/auth/signin', { body: { email, password: PASSWORD } });
    const elsewhereSession = (elsewhere.body as { session: { refresh_token: string } }).session;

    const registered = await page.evaluate(async () => {
      const { client } = window as unknown as PageGlobal;
      const { passkey } = await client.auth.passkeys.register({ name: 'laptop' });
      return { passkey, aal: client.auth.aal, list: await client.auth.passkeys.list() };
    });
    expect(registered.aal).toBe('aal2');
    expect(registered.passkey.name).toBe('laptop');
    expect(registered.list.map((passkey) => passkey.id)).toEqual([registered.passkey.id]);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    expect(credentials).toHaveLength(1);
    expect(credentials[0]!.isResidentCredential).toBe(true);
    const refresh = await request(server.url, 'POST', '/v1/auth/refresh', {
      body: { refresh_token: elsewhereSession.refresh_token },
    });
    expect(errorCode(refresh.body)).toBe('UNAUTHENTICATED');
    // The passkey and its audit event were written by one transaction (the same xmin).
    const sql = new pg.Client({ connectionString: database.url });
    await sql.connect();
    try {
      const writers = await sql.query<{ passkey: string; event: string }>(
        `SELECT (SELECT xmin::text FROM basalt.passkeys WHERE id = $1) AS passkey,
                (SELECT xmin::text FROM basalt.audit_log WHERE type = 'passkey.registered' AND user_id = $2) AS event`,
        [registered.passkey.id, signedUp.id],
      );
      expect(writers.rows[0]!.passkey).toMatch(/^\d+$/);
      expect(writers.rows[0]!.event).toBe(writers.rows[0]!.passkey);
    } finally {
      await sql.end();
    }

    // A password sign-in now needs the second factor.
    const password = await page.evaluate(
      async ({ email, password }) => {
        const { client } = window as unknown as PageGlobal;
        await client.auth.signOut();
        const result = await client.auth.signIn({ email, password });
        const aal = client.auth.aal;
        await client.auth.signOut();
        return { mfaRequired: result.mfa_required, aal, after: client.auth.session };
      },
      { email, password: PASSWORD },
    );
    expect(password).toEqual({ mfaRequired: true, aal: 'aal1', after: null });

    // Capture what the SDK sends, to replay it below.
    const sent: string[] = [];
    page.on('request', (outgoing) => {
      if (outgoing.url().endsWith('/v1/auth/passkeys/signin/verify')) sent.push(outgoing.postData() ?? '');
    });
    const discoverable = await page.evaluate(async () => {
      const { client } = window as unknown as PageGlobal;
      const { user } = await client.auth.signInWithPasskey();
      return { id: user.id, aal: client.auth.aal, token: client.auth.session!.access_token };
    });
    expect(discoverable.id).toBe(signedUp.id);
    expect(discoverable.aal).toBe('aal2');
    expect(claimsOf(discoverable.token)).toMatchObject({ sub: signedUp.id, aal: 'aal2' });

    const byEmail = await page.evaluate(async (email) => {
      const { client } = window as unknown as PageGlobal;
      await client.auth.signOut();
      const { user } = await client.auth.signInWithPasskey({ email });
      return { id: user.id, aal: client.auth.aal };
    }, email);
    expect(byEmail).toEqual({ id: signedUp.id, aal: 'aal2' });

    // The audit log has the registration and both sign-ins, each with its passkey and client.
    const audited = await request(server.url, 'GET', `/v1/admin/audit?user_id=${signedUp.id}&type=passkey.`, {
      token: server.serviceKey,
    });
    const passkeyEvents = (audited.body as { events: Array<{ type: string; actor: unknown; details: unknown }> })
      .events;
    expect(passkeyEvents.map((event) => event.type).toSorted()).toEqual([
      'passkey.registered',
      'passkey.signin_succeeded',
      'passkey.signin_succeeded',
    ]);
    for (const event of passkeyEvents) {
      expect(event).toMatchObject({
        actor: { type: 'user', id: signedUp.id },
        details: { passkey_id: registered.passkey.id },
      });
    }

    // The assertion the browser sent, sent again: its challenge is spent.
    expect(sent.length).toBe(2);
    const replay = await request(server.url, 'POST', '/v1/auth/passkeys/signin/verify', {
      rawBody: sent[0]!,
      headers: { 'content-type': 'application/json' },
    });
    expect(replay.status).toBe(400);
    expect(errorCode(replay.body)).toBe('INVALID_TOKEN');

    // Another account's email binds the challenge to that account: this passkey is refused.
    const other = await request(server.url, 'POST', '/v1/auth/signup', {
      body: { email: `other-${Date.now()}@example.com`, password: PASSWORD },
    });
    const otherEmail = (other.body as { user: { email: string } }).user.email;
    const refused = await page.evaluate(async (otherEmail) => {
      const { client } = window as unknown as PageGlobal;
      await client.auth.signOut();
      try {
        await client.auth.signInWithPasskey({ email: otherEmail });
        return 'signed in';
      } catch (error) {
        return (error as { code?: string }).code;
      }
    }, otherEmail);
    expect(refused).toBe('INVALID_CREDENTIALS');
    // An address without an account is refused the same way: the answer tells nobody which
    // addresses have accounts.
    const unknown = await page.evaluate(async (email) => {
      const { client } = window as unknown as PageGlobal;
      try {
        await client.auth.signInWithPasskey({ email });
        return { code: 'signed in', reason: '' };
      } catch (error) {
        const failure = error as { code?: string; details?: { reason?: string } };
        return { code: failure.code, reason: failure.details?.reason };
      }
    }, `nobody-${Date.now()}@example.com`);
    expect(unknown).toEqual({ code: 'INVALID_CREDENTIALS', reason: 'other_account' });
    await context.close();
  });

  it('refuses a ceremony run on a page whose origin is not among BASALT_PASSKEY_ORIGINS (a phishing copy)', async () => {
    // The same page and SDK, copied to another origin on the same host (another port): the
    // relying party id (localhost) lets the browser run the ceremony there, so only Basalt's
    // origin check stands between the copy and the passkey.
    const real = new URL(pageUrl);
    const copy = http.createServer((incoming, response) => {
      void fetch(new URL(incoming.url ?? '/', real.origin)).then(async (answer) => {
        response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'text/plain' });
        response.end(Buffer.from(await answer.arrayBuffer()));
      });
    });
    await new Promise<void>((resolve) => copy.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => new Promise<void>((resolve) => copy.close(() => resolve())));
    const phishing = new URL(`http://localhost:${(copy.address() as AddressInfo).port}`);
    const context = await browser.newContext();
    const { page } = await withAuthenticator(context);
    const email = `phished-${Date.now()}@example.com`;
    // A passkey registered on the real page…
    const registered = await page.evaluate(
      async ({ email, password }) => {
        const { client } = window as unknown as PageGlobal;
        const { user } = await client.auth.signUp({ email, password });
        await client.auth.passkeys.register({ name: 'real' });
        await client.auth.signOut();
        return user.id;
      },
      { email, password: PASSWORD },
    );
    // …is refused from the copy, and so is a registration made there (by an account without
    // a factor, which may add its first at aal1).
    await page.goto(`${phishing.origin}${real.pathname}`);
    const outcome = await page.evaluate(
      async ({ url, email, password }) => {
        const g = window as unknown as PageGlobal;
        const client = g.Basalt.createClient(url);
        const failure = async (run: () => Promise<unknown>) => {
          try {
            await run();
            return { code: 'succeeded', reason: '' };
          } catch (error) {
            const refused = error as { code?: string; details?: { reason?: string } };
            return { code: refused.code, reason: refused.details?.reason ?? '' };
          }
        };
        const signIn = await failure(() => client.auth.signInWithPasskey());
        const { user } = await client.auth.signUp({ email, password });
        const register = await failure(() => client.auth.passkeys.register({ name: 'phished' }));
        return { signIn, register, aal: client.auth.aal, origin: location.origin, newcomer: user.id };
      },
      { url: server.url, email: `newcomer-${Date.now()}@example.com`, password: PASSWORD },
    );
    expect(outcome.origin).toBe(phishing.origin);
    expect(outcome.signIn.code).toBe('INVALID_CREDENTIALS');
    expect(outcome.signIn.reason).toMatch(/origin/i);
    expect(outcome.register.code).toBe('INVALID_CREDENTIALS');
    expect(outcome.register.reason).toMatch(/origin/i);
    expect(outcome.aal).toBe('aal1');
    const listed = await request(server.url, 'GET', `/v1/admin/users/${registered}/factors`, {
      token: server.serviceKey,
    });
    expect((listed.body as { passkeys: Array<{ name: string }> }).passkeys.map((passkey) => passkey.name)).toEqual([
      'real',
    ]);
    const newcomer = await request(server.url, 'GET', `/v1/admin/users/${outcome.newcomer}/factors`, {
      token: server.serviceKey,
    });
    expect((newcomer.body as { passkeys: unknown[] }).passkeys).toEqual([]);
    await context.close();
  });

  it('refuses a cloned authenticator whose signature counter lags behind', async () => {
    const context = await browser.newContext();
    const { page, cdp, id: original } = await withAuthenticator(context);
    const email = `clone-${Date.now()}@example.com`;
    await page.evaluate(
      async ({ email, password }) => {
        const { client } = window as unknown as PageGlobal;
        await client.auth.signUp({ email, password });
        await client.auth.passkeys.register();
        await client.auth.signOut();
        await client.auth.signInWithPasskey();
        await client.auth.signOut();
      },
      { email, password: PASSWORD },
    );
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: original });
    const credential = credentials[0]!;
    expect(credential.signCount).toBeGreaterThanOrEqual(2);

    // The same key in another authenticator, its counter back at 1: a copy of the key.
    await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: original });
    const { authenticatorId: clone } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: AUTHENTICATOR,
    });
    await cdp.send('WebAuthn.addCredential', { authenticatorId: clone, credential: { ...credential, signCount: 0 } });
    const outcome = await page.evaluate(async () => {
      const { client } = window as unknown as PageGlobal;
      try {
        await client.auth.signInWithPasskey();
        return { code: 'signed in', reason: '' };
      } catch (error) {
        const failure = error as { code?: string; details?: { reason?: string } };
        return { code: failure.code, reason: failure.details?.reason ?? '' };
      }
    });
    expect(outcome.code).toBe('INVALID_CREDENTIALS');
    expect(outcome.reason).toMatch(/counter/i);
    await context.close();
  });
});
