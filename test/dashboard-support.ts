import type { Page } from 'playwright-core';

/** Opens the dashboard served by `baseUrl` in `page` and signs in with the service key. */
export async function signInToDashboard(page: Page, baseUrl: string, serviceKey: string): Promise<void> {
  await page.goto(`${baseUrl}/_/`);
  await page.fill('#service-key', serviceKey);
  await page.click('form.signin-form button[type=submit]');
  await page.waitForSelector('nav.sidebar');
}
