import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { launchChromium } from '../client-sdk/test/browser-support.js';

/** Opens the dashboard served by `baseUrl` in `page` and signs in with the service key. */
export async function signInToDashboard(page: Page, baseUrl: string, serviceKey: string): Promise<void> {
  await page.goto(`${baseUrl}/_/`);
  await page.fill('#service-key', serviceKey);
  await page.click('form.signin-form button[type=submit]');
  await page.waitForSelector('nav.sidebar');
}

/**
 * A chromium page for the tests of one describe block, opened before them and closed after,
 * with the uncaught errors of the page collected in `errors`.
 */
export function useDashboardPage(): { readonly page: Page; errors: string[] } {
  let browser: Browser | undefined;
  let page: Page | undefined;
  const errors: string[] = [];
  beforeAll(async () => {
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    page.on('pageerror', (error) => errors.push(error.message));
  });
  afterAll(async () => {
    await browser?.close();
  });
  return {
    get page() {
      if (!page) throw new Error('the dashboard page opens in beforeAll');
      return page;
    },
    errors,
  };
}
