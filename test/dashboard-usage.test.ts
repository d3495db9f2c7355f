import { beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser } from '../client-sdk/test/browser-support.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { request, useTestApp } from './helpers.js';
import { useDashboardPage } from './dashboard-support.js';

/** The dashboard's Usage page in Debian's chromium, against usage made through the API. */
describe.skipIf(!haveBrowser)('the usage page in chromium', () => {
  beforeAll(async () => {
    await ensureDashboard();
  });
  const app = useTestApp({
    functions: {
      'hello.ts': `import { http } from 'basalt/functions';\nexport default http(async () => ({ hello: 'world' }));`,
      'oops.ts': `import { http } from 'basalt/functions';\nexport default http(async () => { throw new Error('oops'); });`,
    },
  });
  const dashboard = useDashboardPage();
  const pageErrors = dashboard.errors;

  it('shows totals, charts and a row per function, by the hour and by the day', async () => {
    const page = dashboard.page;
    for (let i = 0; i < 3; i++) expect((await request(app.url, 'GET', '/v1/functions/hello')).status).toBe(200);
    expect((await request(app.url, 'GET', '/v1/functions/oops')).status).toBe(500);

    await page.goto(`${app.url}/_/`);
    await page.fill('#service-key', app.serviceKey);
    await page.click('form.signin-form button[type=submit]');
    await page.waitForSelector('nav.sidebar');
    await page.click('a[data-nav=usage]');
    await page.waitForSelector('h1:text("Usage")');
    await expect.poll(() => page.textContent('#usage-status')).toContain('by the hour');
    expect(await page.textContent('[data-usage=invocations]')).toBe('4');
    const hello = page.locator('#usage-functions tr[data-function=hello] td');
    expect(await hello.allTextContents()).toEqual(expect.arrayContaining(['hello', '3', '0', '1']));
    const oops = page.locator('#usage-functions tr[data-function=oops] td');
    expect((await oops.allTextContents()).slice(0, 4)).toEqual(['oops', '1', '1', '1']);
    for (const title of ['Function invocations', 'Documents', 'Storage traffic', 'Realtime', 'Active users']) {
      expect(await page.locator(`[data-chart="${title}"] canvas`).count(), title).toBe(1);
    }

    await page.selectOption('#usage-range', '7d');
    await expect.poll(() => page.textContent('#usage-status')).toContain('by the day');
    expect(page.url()).toContain('range=7d');
    expect(await page.textContent('[data-usage=invocations]')).toBe('4');
    expect(await page.locator('#usage-functions tr[data-function]').count()).toBe(2);
    expect(pageErrors).toEqual([]);
  });
});
