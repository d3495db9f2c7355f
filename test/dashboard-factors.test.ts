import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser, launchChromium } from '../client-sdk/test/browser-support.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { signUp, uniqueEmail } from './auth-helpers.js';
import { enableTotp } from './auth-mfa-support.js';
import { request, useTestApp } from './helpers.js';
import { signInToDashboard } from './dashboard-support.js';

/**
 * A user's second factors in the dashboard's user panel, in Debian's chromium against a real
 * server: listed (never a secret), "none" for a user without, and reset after a confirmation,
 * which refreshes the list and the user's timeline.
 */
describe.skipIf(!haveBrowser)('dashboard: second factors of a user', () => {
  const app = useTestApp({ env: { BASALT_AUTH_KEY_ENCRYPTION_KEY: 'k'.repeat(48) } });
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  const dialogs: string[] = [];
  let acceptDialogs = true;

  beforeAll(async () => {
    await ensureDashboard();
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void (acceptDialogs ? dialog.accept() : dialog.dismiss());
    });
    await signInToDashboard(page, app.url, app.serviceKey);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
  });

  async function openUser(email: string): Promise<void> {
    await page.click('a[data-nav=users]');
    await page.waitForSelector(`tr[data-user="${email}"]`);
    await page.click(`tr[data-user="${email}"] button:text("Edit")`);
  }

  it('says "none" for a user without a second factor, with nothing to reset', async () => {
    const email = uniqueEmail('plain');
    await signUp(app.url, email);
    await openUser(email);
    await page.waitForSelector('.factors p.empty');
    expect(await page.textContent('.factors')).toContain('None');
    expect(await page.textContent('#recovery-codes-left')).toContain('0');
    expect(await page.locator('#reset-factors').count()).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it('lists a TOTP factor, and resets it after a confirmation: list and timeline refresh', async () => {
    const email = uniqueEmail('guarded');
    const user = await signUp(app.url, email);
    const totp = await enableTotp(app.url, user.token);
    await openUser(email);
    await page.waitForSelector(`#factors tr[data-factor="${totp.factorId}"]`);
    const row = await page.textContent(`#factors tr[data-factor="${totp.factorId}"]`);
    expect(row).toContain('TOTP');
    expect(row).toContain('verified');
    expect(await page.textContent('#recovery-codes-left')).toContain('10');
    // The panel never shows a secret.
    expect(await page.textContent('.side-panel')).not.toContain(totp.secret);

    // Dismissing the confirmation changes nothing.
    acceptDialogs = false;
    await page.click('#reset-factors');
    await expect.poll(() => dialogs.length).toBe(1);
    expect(dialogs[0]).toContain(email);
    const kept = await request(app.url, 'GET', `/v1/admin/users/${user.id}/factors`, { token: app.serviceKey });
    expect((kept.body as { factors: unknown[] }).factors).toHaveLength(1);

    acceptDialogs = true;
    await page.click('#reset-factors');
    await page.waitForSelector('.factors p.empty');
    expect(await page.textContent('#recovery-codes-left')).toContain('0');
    await expect
      .poll(() =>
        page.$$eval('.timeline tr[data-event]', (rows) => (rows[0] as HTMLElement | undefined)?.dataset.event),
      )
      .toBe('mfa.factors_reset_by_admin');
    const after = await request(app.url, 'GET', `/v1/admin/users/${user.id}/factors`, { token: app.serviceKey });
    expect(after.body).toEqual({ factors: [], passkeys: [], recovery_codes_left: 0 });
    expect(pageErrors).toEqual([]);
  });
});
