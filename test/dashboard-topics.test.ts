import { beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser } from '../client-sdk/test/browser-support.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { request, useTestApp, waitFor } from './helpers.js';
import { useDashboardPage } from './dashboard-support.js';

/** The dashboard's Topics page in Debian's chromium: topics, their subscribers, depth and dead letters. */
describe.skipIf(!haveBrowser)('the topics page in chromium', () => {
  beforeAll(async () => {
    await ensureDashboard();
  });
  const app = useTestApp({
    functions: {
      'audit.ts': `import { onEvent } from 'basalt/functions';\nexport default onEvent({ topic: 'orders.created', batch_size: 10 }, async () => {});`,
      'broken.ts': `import { onEvent } from 'basalt/functions';\nexport default onEvent({ topic: 'orders.created', retries: 0 }, async () => { throw new Error('no'); });`,
    },
  });
  const dashboard = useDashboardPage();
  const pageErrors = dashboard.errors;

  it('lists each topic with its rule, subscribers, depth and dead letters', async () => {
    const page = dashboard.page;
    const rule = await request(app.url, 'PUT', '/v1/admin/topics/orders.created', {
      token: app.serviceKey,
      body: { rules: { publish: 'auth != null' } },
    });
    expect(rule.status).toBe(200);
    const sent = await request(app.url, 'POST', '/v1/events/orders.created', {
      token: app.serviceKey,
      body: { payload: { order: 1 } },
    });
    expect(sent.status).toBe(202);
    // Delayed: waiting in both queues while the page is open.
    const later = await request(app.url, 'POST', '/v1/events/orders.created', {
      token: app.serviceKey,
      body: { payload: { order: 2 }, delay_seconds: 600 },
    });
    expect(later.status).toBe(202);
    await waitFor('the failing event dead-lettered', async () => {
      const listed = await request(app.url, 'GET', '/v1/admin/topics', { token: app.serviceKey });
      const topics = (listed.body as { topics: Array<{ name: string; dead_letters: number }> }).topics;
      return topics.find((topic) => topic.name === 'orders.created')?.dead_letters === 1;
    });

    await page.goto(`${app.url}/_/`);
    await page.fill('#service-key', app.serviceKey);
    await page.click('form.signin-form button[type=submit]');
    await page.waitForSelector('nav.sidebar');
    await page.click('a[data-nav=topics]');
    await page.waitForSelector('h1:text("Topics")');
    const row = page.locator('#topics tr[data-topic="orders.created"]');
    await row.waitFor();
    expect(await row.locator('td').nth(1).textContent()).toBe('auth != null');
    expect(await row.locator('li[data-subscriber]').count()).toBe(2);
    expect(await row.locator('li[data-subscriber=audit]').textContent()).toContain('batches of 10');
    expect(await row.locator('li[data-subscriber=broken]').textContent()).toContain('1 dead');
    expect(await row.locator('td.depth').textContent()).toBe('2');
    expect(await row.locator('td.dead-letters').textContent()).toBe('1');
    expect(pageErrors).toEqual([]);
  });
});
