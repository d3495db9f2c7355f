import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser, launchChromium } from '../client-sdk/test/browser-support.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { createCollection } from './documents-support.js';
import { request, useTestApp } from './helpers.js';
import { signInToDashboard } from './dashboard-support.js';

/** The collections page's search and references, in Debian's chromium against a real server. */
describe.skipIf(!haveBrowser)('dashboard: search and references', () => {
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  const app = useTestApp();

  beforeAll(async () => {
    await ensureDashboard();
    await createCollection(app, { name: 'authors', rules: { read: 'true' } });
    await createCollection(app, { name: 'books', rules: { read: 'true' } });
    await request(app.url, 'PUT', '/v1/db/authors/ursula', {
      token: app.serviceKey,
      body: { data: { name: 'Ursula' } },
    });
    for (const [id, title] of [
      ['b1', 'The <b>dispossessed</b> & the wind'],
      ['b2', 'A wizard of the sea'],
    ]) {
      await request(app.url, 'PUT', `/v1/db/books/${id}`, {
        token: app.serviceKey,
        body: { data: { title, author: 'ursula' } },
      });
    }
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await signInToDashboard(page, app.url, app.serviceKey);
  });

  afterAll(async () => {
    await browser?.close();
  });

  it('sets search fields and references, runs a search with highlights and shows expanded refs as links', async () => {
    await page.goto(`${app.url}/_/collections/books?tab=search`);
    await page.fill('input[name=search-fields]', 'title');
    await page.fill('input[name=search-language]', 'english');
    await page.fill('textarea[name=refs]', 'author: authors');
    await page.click('#search-form button[type=submit]');
    await expect
      .poll(async () => (await request(app.url, 'GET', '/v1/admin/collections/books', { token: app.serviceKey })).body)
      .toMatchObject({ search: { fields: ['title'], language: 'english' }, refs: { author: 'authors' } });

    await page.goto(`${app.url}/_/collections/books`);
    await page.uncheck('input[name=live]');
    await page.fill('input[name=search]', 'dispossessed');
    await page.fill('input[name=expand]', 'author');
    await page.click('#query-form button[type=submit]');
    const row = page.locator('#documents tr[data-id=b1]');
    // The page first lists the whole collection; the search's answer is the one with highlights.
    await row.locator('[data-highlight=title] mark').waitFor({ timeout: 10_000 });
    expect(await page.locator('#documents tr[data-id=b2]').count()).toBe(0);
    // The highlight: the match marked; the document's own markup never becomes markup.
    expect(await row.locator('[data-highlight=title] mark').textContent()).toBe('dispossessed');
    expect(await row.locator('[data-highlight=title]').textContent()).toContain('& the wind');
    expect(await row.locator('[data-highlight=title] b').count()).toBe(0);
    // The reference links to the author, labelled from the expanded document.
    const ref = row.locator('a.ref[data-ref=ursula]');
    expect(await ref.textContent()).toBe('ursula (Ursula)');
    await ref.click();
    await page.waitForURL(/collections\/authors\/docs\/ursula/);
    expect(pageErrors).toEqual([]);
  });
});
