import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser, launchChromium } from '../client-sdk/test/browser-support.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { createCollection } from './documents-support.js';
import { request, useTestApp, waitFor } from './helpers.js';
import { gradientPng } from './png.js';
import { TestSocket } from './realtime-client.js';

/**
 * The dashboard in Debian's chromium against a real server: sign-in, collections with
 * rules, documents, a live change, storage uploads with preview, and retrying a
 * dead-lettered invocation. Every step acts through the UI and is checked through the API.
 */

let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

/** Fails on its first run: it succeeds only once the switch document exists. */
const FLAKY = `
  import { onDocument } from 'basalt/functions';
  export default onDocument({ collection: 'jobs', on: 'create', retries: 0 }, async (event, ctx) => {
    ctx.log.info('job ' + event.after?.id);
    const ok = await ctx.db.collection('switches').doc('ok').get();
    if (!ok) throw new Error('the switch is off');
    ctx.log.info('done');
  });`;

describe.skipIf(!haveBrowser)('dashboard in chromium', () => {
  beforeAll(async () => {
    await ensureDashboard();
  });
  const app = useTestApp({ functions: { 'flaky.ts': FLAKY } });

  beforeAll(async () => {
    for (const name of ['jobs', 'switches']) await createCollection(app, { name });
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // A CSP violation is logged to the console, not thrown: collect those too.
    page.on('console', (message) => {
      if (message.type() === 'error' && /Content Security Policy/i.test(message.text()))
        pageErrors.push(message.text());
    });
    page.on('dialog', (dialog) => void dialog.accept());
  });

  afterEach(async (context) => {
    if (context.task.result?.state !== 'fail' || !page) return;
    const dir = path.resolve('test-results');
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `dashboard-${context.task.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => undefined);
    console.error(`screenshot of the failure: ${file}`);
  });

  afterAll(async () => {
    await browser?.close();
  });

  it('refuses a wrong service key and keeps nothing', async () => {
    await page.goto(`${app.url}/_/`);
    await page.fill('#service-key', 'bsk_not-the-right-key');
    await page.click('form.signin-form button[type=submit]');
    await expect.poll(() => page.textContent('#signin-error')).toContain('refused');
    expect(await page.evaluate(() => Object.keys(sessionStorage))).toEqual([]);
    expect(await page.locator('nav.sidebar').count()).toBe(0);
  });

  it('signs in with the service key, kept in session storage and never in the URL', async () => {
    await page.fill('#service-key', app.serviceKey);
    await page.click('form.signin-form button[type=submit]');
    await page.waitForSelector('nav.sidebar');
    await page.waitForSelector('h1:text("Overview")');
    expect(page.url()).not.toContain(app.serviceKey);
    expect(await page.evaluate(() => Object.values(sessionStorage))).toEqual([app.serviceKey]);
    // The overview's charts fill from /metrics.
    await expect.poll(() => page.textContent('#overview-status'), { timeout: 10_000 }).toContain('Updated');
    await expect
      .poll(() => page.locator('[data-chart=Requests] .chart-current').textContent(), { timeout: 10_000 })
      .toMatch(/req\/s$/);
  });

  it('rotates the signing key and sweeps storage from the overview', async () => {
    const keysBefore = await request(app.url, 'GET', '/.well-known/jwks.json');
    const before = (keysBefore.body as { keys: Array<{ kid: string }> }).keys.map((key) => key.kid);
    await page.click('#rotate-key');
    await page.waitForSelector('[data-notice=info]:has-text("Now signing with key")');
    const keysAfter = await request(app.url, 'GET', '/.well-known/jwks.json');
    const after = (keysAfter.body as { keys: Array<{ kid: string }> }).keys.map((key) => key.kid);
    expect(after.length).toBe(before.length + 1);
    expect(after).toEqual(expect.arrayContaining(before));
    await page.click('#sweep-storage');
    await page.waitForSelector('[data-notice=info]:has-text("Storage swept")');
  });

  it('creates a collection with a rule, showing the parser error inline first', async () => {
    await page.click('a[data-nav=collections]');
    await page.waitForSelector('#new-collection');
    await page.fill('input[name=collection-name]', 'tasks');
    await page.fill('textarea[data-rule=read]', 'auth != null && ');
    await page.fill('textarea[data-rule=create]', 'auth != null');
    await page.click('#new-collection button[type=submit]');
    const error = page.locator('[data-rule-error=read]');
    await error.waitFor({ state: 'visible' });
    expect(await error.textContent()).toContain('rules.read');
    expect(await error.locator('pre.caret').textContent()).toMatch(/\^$/);
    expect(await page.locator('[data-rule-error=create]').isVisible()).toBe(false);

    await page.fill('textarea[data-rule=read]', 'auth != null && doc.owner == auth.uid');
    await page.click('#new-collection button[type=submit]');
    await page.waitForURL(`${app.url}/_/collections/tasks`);
    const stored = await request(app.url, 'GET', '/v1/admin/collections/tasks', { token: app.serviceKey });
    expect(stored.status).toBe(200);
    expect((stored.body as { rules: Record<string, string> }).rules).toEqual({
      read: 'auth != null && doc.owner == auth.uid',
      create: 'auth != null',
    });
  });

  it('adds a document and edits it as JSON', async () => {
    await page.click('#new-document');
    await page.waitForSelector('#document-form');
    await page.fill('input[name=doc-id]', 'first');
    await page.fill('textarea[name=data]', '{"title": "hello", "done": false}');
    await page.click('#document-form button[type=submit]');
    await page.waitForURL(`${app.url}/_/collections/tasks/docs/first`);
    await expect.poll(() => page.textContent('[data-fact=version]')).toBe('1');
    expect(await page.textContent('[data-fact=owner]')).toBe('—');

    await page.fill('textarea[name=data]', '{"title": "hello again", "done": true}');
    await page.click('#document-form button[type=submit]');
    await expect.poll(() => page.textContent('[data-fact=version]')).toBe('2');
    const stored = await request(app.url, 'GET', '/v1/db/tasks/first', { token: app.serviceKey });
    expect(stored.body).toMatchObject({ version: 2, data: { title: 'hello again', done: true } });

    // A stale version is a conflict, reported instead of overwriting the newer write.
    await request(app.url, 'PATCH', '/v1/db/tasks/first', { token: app.serviceKey, body: { data: { done: false } } });
    await page.fill('textarea[name=data]', '{"title": "stale"}');
    await page.click('#document-form button[type=submit]');
    await expect.poll(() => page.textContent('#document-error')).toContain('changed since it was loaded');
    const after = await request(app.url, 'GET', '/v1/db/tasks/first', { token: app.serviceKey });
    expect(after.body).toMatchObject({ version: 3, data: { title: 'hello again', done: false } });
  });

  /** The tasks collection as the admin API reports it. */
  async function storedTasks(): Promise<{ indexes: unknown; schema: unknown }> {
    const stored = await request(app.url, 'GET', '/v1/admin/collections/tasks', { token: app.serviceKey });
    return stored.body as { indexes: unknown; schema: unknown };
  }

  it('edits indexes and the schema of the collection', async () => {
    await page.goto(`${app.url}/_/collections/tasks?tab=indexes`);
    await page.fill('textarea[name=indexes]', 'title\nowner, created_at');
    await page.click('#indexes-form button[type=submit]');
    await expect.poll(async () => (await storedTasks()).indexes).toEqual(['title', ['owner', 'created_at']]);

    await page.click('a[data-tab=schema]');
    await page.fill('textarea[name=schema]', '{"type": "object", "properties": {"title": {"type": "string"}}}');
    await page.click('#schema-form button[type=submit]');
    await expect
      .poll(async () => (await storedTasks()).schema)
      .toEqual({ type: 'object', properties: { title: { type: 'string' } } });
    // A write the schema refuses is refused for the dashboard too, with the server's message.
    await page.goto(`${app.url}/_/collections/tasks/docs/first`);
    await page.fill('textarea[name=data]', '{"title": 42}');
    await page.click('#document-form button[type=submit]');
    await expect.poll(() => page.textContent('#document-error')).toContain('INVALID_REQUEST');
    expect(await page.textContent('#document-error')).toContain('data/title: must be string');
    await page.goto(`${app.url}/_/collections/tasks?tab=schema`);
    await page.fill('textarea[name=schema]', '');
    await page.click('#schema-form button[type=submit]');
    await expect.poll(async () => (await storedTasks()).schema).toBeNull();
    await page.click('a[data-tab=documents]');
  });

  it('shows a change made elsewhere arriving live in the table', async () => {
    await page.waitForSelector('#documents tr[data-id=first]');
    await page.waitForSelector('#live-status[data-state=live]');
    const created = await request(app.url, 'PUT', '/v1/db/tasks/from-api', {
      token: app.serviceKey,
      body: { data: { title: 'written by another client' } },
    });
    expect(created.status).toBe(201);
    const row = page.locator('#documents tr[data-id=from-api]');
    await row.waitFor({ timeout: 10_000 });
    expect(await row.getAttribute('data-change')).toBe('added');
    expect(await row.locator('td[data-field=title]').textContent()).toBe('written by another client');

    await request(app.url, 'PATCH', '/v1/db/tasks/first', {
      token: app.serviceKey,
      body: { data: { title: 'renamed' } },
    });
    await expect
      .poll(() => page.locator('#documents tr[data-id=first] td[data-field=title]').textContent(), { timeout: 10_000 })
      .toBe('renamed');
    await request(app.url, 'DELETE', '/v1/db/tasks/from-api', { token: app.serviceKey });
    await page.locator('#documents tr[data-id=from-api]').waitFor({ state: 'detached', timeout: 10_000 });
  });

  it('creates a bucket, uploads an image under a prefix and previews it', async () => {
    await page.click('a[data-nav=storage]');
    await page.waitForSelector('#new-bucket');
    await page.fill('input[name=bucket-name]', 'pictures');
    await page.click('#new-bucket button[type=submit]');
    await page.waitForURL(`${app.url}/_/storage/pictures`);
    await page.fill('input[name=prefix]', 'holidays/');
    await page.press('input[name=prefix]', 'Enter');
    await page.setInputFiles('input[name=files]', {
      name: 'beach.png',
      mimeType: 'image/png',
      buffer: gradientPng(64, 48),
    });
    await page.click('#upload-form button[type=submit]');
    const row = page.locator('#objects tr[data-path="holidays/beach.png"]');
    await row.waitFor({ timeout: 10_000 });
    const listed = await request(app.url, 'GET', '/v1/storage/pictures?prefix=holidays/', { token: app.serviceKey });
    expect((listed.body as { objects: Array<{ path: string; content_type: string }> }).objects).toMatchObject([
      { path: 'holidays/beach.png', content_type: 'image/png' },
    ]);

    await row.click();
    const image = page.locator('#preview-image');
    await image.waitFor();
    await expect.poll(() => image.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth)).toBe(64);
    expect(await image.evaluate((img: HTMLImageElement) => img.naturalHeight)).toBe(48);
    expect(await image.getAttribute('src')).toMatch(/^blob:/);

    // Settings: a rule the parser refuses is shown under it; a valid one is saved.
    await page.click('#bucket-settings-toggle');
    await page.fill('textarea[data-rule=write]', 'object.size <');
    await page.click('#bucket-settings button[type=submit]');
    await page.locator('[data-rule-error=write]').waitFor({ state: 'visible' });
    expect(await page.locator('[data-rule-error=write] pre.caret').textContent()).toMatch(/\^$/);
    await page.fill('textarea[data-rule=write]', 'auth != null && object.size < 1000000');
    await page.fill('input[name=settings-allowed-mime-types]', 'image/png');
    await page.fill('input[name=settings-max-total-bytes]', '5000000');
    await page.fill('input[name=settings-max-bytes-per-user]', '1000000');
    await page.click('#bucket-settings button[type=submit]');
    await expect
      .poll(async () => {
        const stored = await request(app.url, 'GET', '/v1/admin/buckets/pictures', { token: app.serviceKey });
        return stored.body;
      })
      .toMatchObject({
        rules: { write: 'auth != null && object.size < 1000000' },
        allowed_mime_types: ['image/png'],
        max_total_bytes: 5_000_000,
        max_bytes_per_user: 1_000_000,
      });
    // The bucket page shows what the bucket holds against its quotas.
    await expect.poll(() => page.locator('#bucket-usage').textContent()).toMatch(/in 1 file\(s\), of .*per user/);

    // The bucket root shows the prefix as a folder.
    await page.click('nav.crumbs a:text("pictures")');
    await page.waitForSelector('#objects tr[data-folder="holidays/"]');
    await page.click('#objects tr[data-folder="holidays/"]');
    await page.click('#objects tr[data-path="holidays/beach.png"] button:text("Delete")');
    await row.waitFor({ state: 'detached' });
    const gone = await request(app.url, 'GET', '/v1/storage/pictures/holidays/beach.png', { token: app.serviceKey });
    expect(gone.status).toBe(404);
  });

  it('creates a user, finds them by email, sets app_metadata, bans and deletes them', async () => {
    await page.click('a[data-nav=users]');
    await page.waitForSelector('#create-user');
    await page.fill('input[name=new-email]', 'dashboard-user@example.com');
    await page.fill('input[name=new-password]', 'a long enough passphrase 7');
    await page.click('#create-user button[type=submit]');
    const row = page.locator('#users tr[data-user="dashboard-user@example.com"]');
    await row.waitFor();
    const listed = await request(app.url, 'GET', '/v1/admin/users?email=dashboard-user@example.com', {
      token: app.serviceKey,
    });
    const user = (listed.body as { users: Array<{ id: string; email_confirmed_at: string | null }> }).users[0];
    expect(user?.email_confirmed_at).not.toBeNull();

    await page.fill('input[name=email]', 'nobody-here@example.com');
    await page.click('form.search button');
    await page.waitForSelector('p.empty');
    await page.fill('input[name=email]', 'dashboard-user@example.com');
    await page.click('form.search button');
    await row.waitFor();
    expect(await page.locator('#users tbody tr').count()).toBe(1);

    await row.locator('button:text("Edit")').click();
    await page.fill('textarea[name=app_metadata]', '{"role": "editor"');
    await page.click('.side-panel button:text("Save")');
    await expect.poll(() => page.textContent('.side-panel .error-text')).toContain('not valid JSON');
    await page.fill('textarea[name=app_metadata]', '{"role": "editor"}');
    await page.click('.side-panel button:text("Save")');
    await page.locator('.side-panel').waitFor({ state: 'hidden' });
    const edited = await request(app.url, 'GET', `/v1/admin/users/${user?.id}`, { token: app.serviceKey });
    expect((edited.body as { app_metadata: unknown }).app_metadata).toEqual({ role: 'editor' });

    await row.locator('button:text("Ban")').click();
    await row.locator('button:text("Unban")').waitFor();
    const banned = await request(app.url, 'GET', `/v1/admin/users/${user?.id}`, { token: app.serviceKey });
    expect(Date.parse((banned.body as { banned_until: string }).banned_until)).toBeGreaterThan(Date.now());
    const signIn = await request(app.url, 'POST', '/v1/auth/signin', {
      body: { email: 'dashboard-user@example.com', password: 'a long enough passphrase 7' },
    });
    expect(signIn.status).toBeGreaterThanOrEqual(400);

    await row.locator('button:text("Delete")').click();
    await page.waitForSelector('p.empty');
    const deleted = await request(app.url, 'GET', `/v1/admin/users/${user?.id}`, { token: app.serviceKey });
    expect(deleted.status).toBe(404);
  });

  it('retries a dead-lettered invocation from the functions page', async () => {
    await request(app.url, 'POST', '/v1/db/jobs', { token: app.serviceKey, body: { id: 'job-1', data: {} } });
    await waitFor('the dead-lettered run', async () => {
      const runs = await request(app.url, 'GET', '/v1/admin/functions/flaky/invocations?status=dead', {
        token: app.serviceKey,
      });
      return (runs.body as { invocations: unknown[] }).invocations.length > 0;
    });
    await page.click('a[data-nav=functions]');
    await page.waitForSelector('#functions');
    const historyBefore = await page.evaluate(() => history.length);
    await page.click('#functions tr[data-function=flaky] a');
    await page.waitForURL(`${app.url}/_/functions/flaky`);
    // One click, one history entry: links inside clickable rows do not navigate twice.
    expect(await page.evaluate(() => history.length)).toBe(historyBefore + 1);
    const dead = page.locator('#invocations tr[data-status=dead]');
    await dead.waitFor({ timeout: 10_000 });
    await dead.click();
    await expect
      .poll(() => page.locator('#invocations tr.details:visible').textContent())
      .toContain('the switch is off');

    await request(app.url, 'PUT', '/v1/db/switches/ok', { token: app.serviceKey, body: { data: {} } });
    await dead.locator('button[data-retry]').click();
    await page.locator('#invocations tr[data-status=succeeded]').waitFor({ timeout: 20_000 });
    const runs = await request(app.url, 'GET', '/v1/admin/functions/flaky/invocations', { token: app.serviceKey });
    const statuses = (runs.body as { invocations: Array<{ status: string; event_id: string }> }).invocations;
    expect(statuses.map((run) => run.status)).toContain('succeeded');
    expect(new Set(statuses.map((run) => run.event_id)).size).toBe(1);
  });

  it('deploys a pasted function, shows its versions, rolls back, and lists secrets by name only', async () => {
    await request(app.url, 'PUT', '/v1/admin/secrets/PAGE_TOKEN', {
      token: app.serviceKey,
      body: { value: 'hidden-7731' },
    });
    await page.click('a[data-nav=functions]');
    await page.waitForSelector('#deploy-form');
    expect(await page.locator('#secrets tr[data-secret=PAGE_TOKEN]').count()).toBe(1);
    expect(await page.content()).not.toContain('hidden-7731');

    const source = (n: number) =>
      `import { http } from 'basalt/functions';\nexport default http(async () => ({ n: ${n} }));\n`;
    await page.fill('#deploy-form input[name=name]', 'pasted');
    await page.fill('#deploy-form textarea[name=source]', source(1));
    await page.click('#deploy-form button[type=submit]');
    await page.waitForURL(`${app.url}/_/functions/pasted`);
    await page.locator('#versions tr[data-version="1"]').waitFor();
    await page.fill('#deploy-form textarea[name=source]', source(2));
    await page.click('#deploy-form button[type=submit]');
    await page.locator('#versions tr[data-version="2"]').waitFor();
    expect((await request(app.url, 'POST', '/v1/functions/pasted', { body: {} })).body).toEqual({ n: 2 });

    // A broken paste is refused with the reason, and the live version stays.
    await page.fill('#deploy-form textarea[name=source]', 'export default http(');
    await page.click('#deploy-form button[type=submit]');
    await expect.poll(() => page.textContent('body')).toContain('does not build');
    await page.click('#versions tr[data-version="1"] button[data-rollback]');
    await expect
      .poll(async () => (await request(app.url, 'POST', '/v1/functions/pasted', { body: {} })).body)
      .toEqual({
        n: 1,
      });
    await expect.poll(() => page.locator('#versions tr[data-version="1"]').textContent()).toContain('live');
  });

  it('lists realtime connections, and signing out forgets the key', async () => {
    const client = await TestSocket.open(app.url);
    client.send({ type: 'auth', access_token: app.serviceKey });
    client.send({ type: 'subscribe', id: 'watch', collection: 'tasks', query: { where: [['done', '==', true]] } });
    await client.nextOfType('subscribed');
    await page.click('a[data-nav=realtime]');
    const row = page.locator('#connections tr', { hasText: 'tasks' });
    await row.waitFor({ timeout: 10_000 });
    expect(await row.textContent()).toContain('"done","==",true');
    client.close();
    await row.waitFor({ state: 'detached', timeout: 10_000 });
    await page.click('button.signout');
    await page.waitForSelector('#service-key');
    expect(await page.evaluate(() => Object.keys(sessionStorage))).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
