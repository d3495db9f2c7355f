import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser, launchChromium } from '../client-sdk/test/browser-support.js';
import { startExampleServer, type ExampleServer } from '../examples/server.js';
import { setupExample } from '../examples/setup.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { signUp, uniqueEmail } from './auth-helpers.js';
import { request, useTestApp } from './helpers.js';
import { signInToDashboard } from './dashboard-support.js';

/**
 * The dashboard's audit views in Debian's chromium against a real server: the Audit page
 * (filters, paging by cursor), a user's timeline, and "View as this user" opening the todo
 * example signed in as that user for that tab only.
 */

const repo = fileURLToPath(new URL('..', import.meta.url));

interface AuditEventBody {
  id: string;
  type: string;
  user_id: string | null;
  details: Record<string, unknown>;
}

describe.skipIf(!haveBrowser)('dashboard: audit and view as', () => {
  const app = useTestApp();
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let example: ExampleServer;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    await ensureDashboard();
    const sdk = await build({
      entryPoints: [path.join(repo, 'client-sdk', 'src', 'index.ts')],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: ['es2020'],
      write: false,
      logLevel: 'silent',
    });
    await setupExample(app.url, app.serviceKey);
    example = await startExampleServer({
      root: path.join(repo, 'examples', 'todo'),
      basaltUrl: app.url,
      sdk: new Map([['index.js', sdk.outputFiles[0]?.text ?? '']]),
    });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await signInToDashboard(page, app.url, app.serviceKey);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await example?.close();
  });

  it('lists events newest first, filters by type and user, and pages older and newer', async () => {
    const user = await signUp(app.url);
    // 55 failed sign-ins for one address: more than a page of 50.
    for (let i = 0; i < 55; i++) {
      const failed = await request(app.url, 'POST', '/v1/auth/signin', {
        body: { email: uniqueEmail('stranger'), password: `guess number ${i}` },
      });
      expect(failed.status).toBe(400);
    }
    await page.click('a[data-nav=audit]');
    await page.waitForSelector('h1:text("Audit")');
    await page.waitForSelector('table.audit-events tr[data-event]');
    const firstType = await page.getAttribute('table.audit-events tbody tr:first-child', 'data-event');
    expect(firstType).toBe('auth.signin_failed');

    // A filter in the page's address applies from the first load.
    await page.goto(`${app.url}/_/audit?type=auth.signin_failed`);
    await page.waitForSelector('table.audit-events tr[data-event]');
    expect(await page.inputValue('input[name=type]')).toBe('auth.signin_failed');
    await expect.poll(() => page.locator('table.audit-events tbody tr').count()).toBe(50);
    const firstPage = await page.$$eval('table.audit-events tbody tr', (rows) =>
      rows.map((row) => (row as HTMLElement).dataset.id ?? ''),
    );
    expect(
      new Set(
        await page.$$eval('table.audit-events tbody tr', (rows) => rows.map((r) => (r as HTMLElement).dataset.event)),
      ),
    ).toEqual(new Set(['auth.signin_failed']));
    const all = await request(app.url, 'GET', '/v1/admin/audit?type=auth.signin_failed&limit=500', {
      token: app.serviceKey,
    });
    const total = (all.body as { events: unknown[] }).events.length;
    expect(total).toBeGreaterThan(50);
    expect(total).toBeLessThan(100);
    await page.click('#audit-older');
    await expect.poll(() => page.locator('table.audit-events tbody tr').count()).toBe(total - 50);
    const secondPage = await page.$$eval('table.audit-events tbody tr', (rows) =>
      rows.map((row) => (row as HTMLElement).dataset.id ?? ''),
    );
    expect(BigInt(secondPage[0] ?? '0')).toBeLessThan(BigInt(firstPage.at(-1) ?? '0'));
    expect(await page.isDisabled('#audit-older')).toBe(true);
    await page.click('#audit-newer');
    await expect.poll(() => page.getAttribute('table.audit-events tbody tr:first-child', 'data-id')).toBe(firstPage[0]);

    await page.fill('input[name=type]', 'auth.');
    await page.fill('input[name=user_id]', user.id);
    await page.click('#audit-filters button[type=submit]');
    await expect
      .poll(() =>
        page.$$eval('table.audit-events tbody tr', (rows) => rows.map((r) => (r as HTMLElement).dataset.event)),
      )
      .toEqual(['auth.signin', 'auth.signup']);
    expect(pageErrors).toEqual([]);
  });

  it("shows a user's timeline and opens the example app as that user, audited", async () => {
    const email = uniqueEmail('viewed');
    const user = await signUp(app.url, email);
    await page.click('a[data-nav=users]');
    await page.waitForSelector(`tr[data-user="${email}"]`);
    await page.click(`tr[data-user="${email}"] button:text("Edit")`);
    await expect
      .poll(() => page.$$eval('.timeline tr[data-event]', (rows) => rows.map((r) => (r as HTMLElement).dataset.event)))
      .toEqual(['auth.signin', 'auth.signup']);

    await page.fill('input[name=app-url]', `${example.url}/`);
    await page.fill('input[name=view-as-minutes]', '5');
    const [viewer] = await Promise.all([context.waitForEvent('page'), page.click('#view-as')]);
    viewer.on('pageerror', (error) => pageErrors.push(`example: ${error.message}`));
    await viewer.waitForLoadState('domcontentloaded');
    await viewer.locator('#board').waitFor({ state: 'visible', timeout: 30_000 });
    await expect.poll(() => viewer.textContent('#me-name')).toContain('viewed by an admin');
    // Signed in as that user: the example names them (by their address's local part).
    expect(await viewer.textContent('#me-name')).toContain(email.split('@')[0]);
    expect(await viewer.evaluate(() => document.body.dataset.viewAs)).toBe('true');
    // The session left the address bar, and was never stored where the app keeps its own.
    expect(viewer.url()).not.toContain('access_token');
    expect(await viewer.evaluate(() => JSON.stringify(localStorage))).not.toContain('access_token');

    // The timeline now shows the impersonation, and the audit API has its session.
    await expect
      .poll(() =>
        page.$$eval('.timeline tr[data-event]', (rows) => (rows[0] as HTMLElement | undefined)?.dataset.event),
      )
      .toBe('admin.users.impersonate');
    const recorded = await request(app.url, 'GET', `/v1/admin/audit?user_id=${user.id}&type=admin.users.impersonate`, {
      token: app.serviceKey,
    });
    const events = (recorded.body as { events: AuditEventBody[] }).events;
    expect(events).toHaveLength(1);
    expect(events[0]?.details.expires_in).toBe(300);
    await viewer.close();
    expect(pageErrors).toEqual([]);
  });
});
