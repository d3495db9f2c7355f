import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser, launchChromium } from '../client-sdk/test/browser-support.js';
import { startExampleServer, type ExampleServer } from '../examples/server.js';
import { setupExample } from '../examples/setup.js';
import { freshStep, totpCode, VIRTUAL_AUTHENTICATOR } from './auth-mfa-support.js';
import { createTestDatabase, startTestApp, type TestApp, type TestDatabase } from './helpers.js';

// The example's security page in Debian's chromium, as a person uses it: sign up on the list,
// open Security, add an authenticator app from the QR code's secret, keep the recovery
// codes; sign out, sign in again and be sent to the code prompt, which lifts the session to aal2;
// then add a passkey (a CDP virtual authenticator) and sign in again with it alone.

const repo = fileURLToPath(new URL('..', import.meta.url));

describe.skipIf(!haveBrowser)('the example security page', () => {
  let database: TestDatabase;
  let basalt: TestApp;
  let pages: ExampleServer;
  let browser: Browser;
  /** The example as the browser opens it: on localhost, a host a passkey's relying party id can name. */
  let exampleUrl: string;

  beforeAll(async () => {
    // The example's port is chosen first: Basalt must name the page's origin for passkeys.
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    exampleUrl = `http://localhost:${port}`;
    database = await createTestDatabase();
    basalt = await startTestApp(database, { BASALT_PASSKEY_RP_ID: 'localhost', BASALT_PASSKEY_ORIGINS: exampleUrl });
    await setupExample(basalt.url, basalt.serviceKey);
    const bundle = await build({
      entryPoints: [path.join(repo, 'client-sdk', 'src', 'index.ts')],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: ['es2020'],
      write: false,
      logLevel: 'silent',
    });
    pages = await startExampleServer({
      root: path.join(repo, 'examples', 'todo'),
      basaltUrl: basalt.url,
      sdk: new Map([['index.js', bundle.outputFiles[0]?.text ?? '']]),
      port,
    });
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await pages?.close();
    await basalt?.close();
    await database?.drop();
  });

  it('adds an authenticator app, shows the recovery codes, and asks for a code at the next sign-in', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const email = `security-${Date.now()}@example.com`;
    const password = 'correct horse battery staple 42';
    await page.goto(exampleUrl);
    await page.fill('#name', 'Ada');
    await page.fill('#email', email);
    await page.fill('#password', password);
    await page.click('#sign-up');
    await page.waitForSelector('#board:not([hidden])');

    await page.click('a[href="/security.html"]');
    await page.waitForSelector('#level:not([hidden])');
    expect(await page.textContent('#aal')).toContain('aal1');

    await page.click('#enroll');
    await page.waitForSelector('#enrollment:not([hidden])');
    expect(await page.getAttribute('#qr', 'src')).toMatch(/^data:image\/svg\+xml;base64,/);
    const secret = (await page.textContent('#secret'))!.trim();
    await freshStep();
    await page.fill('#enroll-code', totpCode(secret));
    await page.click('#enrollment button[type="submit"]');
    await page.waitForSelector('#recovery:not([hidden])');
    const codes = (await page.textContent('#recovery-codes'))!.trim().split('\n');
    expect(codes).toHaveLength(10);
    await page.waitForFunction(() => document.querySelector('#aal')?.textContent?.includes('aal2'));
    expect(await page.locator('#factors li').count()).toBe(1);

    // Sign out and in again: the list sends the person to the code prompt.
    await page.goto(exampleUrl);
    await page.click('#sign-out');
    await page.waitForSelector('#auth:not([hidden])');
    await page.fill('#email', email);
    await page.fill('#password', password);
    await page.click('#sign-in');
    await page.waitForURL(/\/security\.html$/);
    await page.waitForSelector('#challenge:not([hidden])');
    expect(await page.textContent('#aal')).toContain('aal1');
    // The next step's code: the one of this step was spent activating the app.
    await page.fill('#challenge-code', totpCode(secret, 1));
    await page.click('#challenge button[type="submit"]');
    await page.waitForFunction(() => document.querySelector('#aal')?.textContent?.includes('aal2'));
    await page.waitForSelector('#challenge[hidden]', { state: 'attached' });
    expect(await page.isHidden('#error')).toBe(true);

    // Add a passkey: the browser's WebAuthn prompt answered by a virtual platform authenticator.
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: VIRTUAL_AUTHENTICATOR });
    expect(await page.locator('#passkey-list li').count()).toBe(0);
    await page.click('#add-passkey');
    // A ceremony and a step-up: give a loaded machine time.
    await expect.poll(() => page.locator('#passkey-list li').count(), { timeout: 20_000 }).toBe(1);
    expect(await page.textContent('#passkey-list')).toContain('This device');
    expect(await page.isHidden('#error')).toBe(true);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    expect(credentials).toHaveLength(1);

    // Signed out, the passkey alone signs the person in, at aal2.
    await page.goto(exampleUrl);
    await page.click('#sign-out');
    await page.waitForSelector('#auth:not([hidden])');
    await page.click('#passkey');
    await page.waitForSelector('#board:not([hidden])');
    await page.click('a[href="/security.html"]');
    await page.waitForFunction(() => document.querySelector('#aal')?.textContent?.includes('aal2'));
    await context.close();
  });
});
