/**
 * Takes the 1280×800 screenshots of docs/dashboard.md: starts a Basalt server on a
 * throwaway database (TEST_DATABASE_URL / DATABASE_URL if set, else an embedded Postgres),
 * fills it with sample data, and photographs each dashboard page in Debian's chromium.
 *
 *   npm run screenshots            writes docs/img/dashboard-*.png
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { launchChromium } from '../client-sdk/test/browser-support.js';
import WebSocket from 'ws';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../server/internal/embedded-postgres.js';
import { createLogger } from '../server/internal/log.js';
import { migrate } from '../server/internal/migrations.js';
import { gradientPng } from '../test/png.js';
import { ensureDashboard } from './dashboard-build.js';

const OUT = fileURLToPath(new URL('../docs/img/', import.meta.url));
const log = createLogger('warn', { pretty: false });

const FUNCTIONS: Record<string, string> = {
  'welcome.ts': `
    import { onAuth } from 'basalt/functions';
    export default onAuth({ on: 'user.created' }, async (event, ctx) => {
      ctx.log.info('welcome ' + event.user?.email);
    });`,
  'charge.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'orders', on: 'create', retries: 0 }, async (event, ctx) => {
      ctx.log.info('charging order ' + event.after?.id);
      if (event.after?.data.card === 'declined') throw new Error('card declined by the payment provider');
      ctx.log.info('charged ' + event.after?.data.total);
    });`,
  'hello.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request) => ({ hello: request.query.name ?? 'world' }));`,
  'nightly.ts': `
    import { schedule } from 'basalt/functions';
    export default schedule({ cron: '0 3 * * *' }, async (_event, ctx) => { ctx.log.info('nightly report'); });`,
};

async function database(): Promise<{ url: string; drop(): Promise<void> }> {
  // eslint-disable-next-line no-restricted-properties -- a developer script, like the tests: it picks its Postgres
  const admin = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (!admin) {
    const dir = await mkdtemp(path.join(tmpdir(), 'basalt-screens-pg-'));
    const embedded: EmbeddedPostgresHandle = await startEmbeddedPostgres(dir, log);
    return {
      url: embedded.url,
      async drop() {
        await embedded.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `basalt_screens_${randomBytes(5).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const dropper = new pg.Client({ connectionString: admin });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}

async function main(): Promise<void> {
  await ensureDashboard();
  const db = await database();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-screens-'));
  const functionsDir = path.join(dataDir, 'functions');
  await mkdir(functionsDir);
  for (const [file, source] of Object.entries(FUNCTIONS)) await writeFile(path.join(functionsDir, file), source);
  await migrate(db.url, log);
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  const config = {
    ...loadConfig({
      BASALT_DATA_DIR: dataDir,
      BASALT_FUNCTIONS_DIR: functionsDir,
      BASALT_FUNCTIONS_WATCH: 'false',
      PORT: '0',
      LOG_LEVEL: 'warn',
    }),
    databaseUrl: db.url,
    serviceKey,
  };
  const app = await buildApp(config, { logger: log });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  const sockets: WebSocket[] = [];
  let traffic: NodeJS.Timeout | null = null;

  const call = async (method: string, url: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${base}${url}`, {
      method,
      headers: {
        authorization: `Bearer ${serviceKey}`,
        ...(body !== undefined && !(body instanceof Uint8Array) ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? null : body instanceof Uint8Array ? Buffer.from(body) : JSON.stringify(body),
    });
    if (!response.ok && response.status !== 409)
      throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
    return response.status === 204 ? null : ((await response.json()) as unknown);
  };

  try {
    // ---- sample data ------------------------------------------------------------------
    const people = ['ada', 'grace', 'linus', 'margaret', 'ken', 'barbara', 'dennis', 'frances'];
    for (const [i, name] of people.entries()) {
      await call('POST', '/v1/admin/users', {
        email: `${name}@example.com`,
        password: 'correct horse battery staple',
        email_confirm: i !== 3,
        ...(i === 0 ? { app_metadata: { role: 'admin', plan: 'team' } } : {}),
        ...(i === 5 ? { banned_until: '9999-12-31T23:59:59Z' } : {}),
      });
    }
    await call('POST', '/v1/admin/collections', {
      name: 'tasks',
      rules: {
        read: 'auth != null && (doc.owner == auth.uid || auth.claims.role == "admin")',
        create: 'auth != null && size(incoming.data.title) <= 200',
        update: 'doc.owner == auth.uid',
      },
      indexes: ['status', ['owner', 'created_at']],
      schema: {
        type: 'object',
        required: ['title'],
        properties: {
          title: { type: 'string' },
          status: { enum: ['open', 'doing', 'done'] },
          priority: { type: 'integer' },
        },
      },
    });
    await call('POST', '/v1/admin/collections', { name: 'orders', rules: { read: 'doc.owner == auth.uid' } });
    await call('POST', '/v1/admin/collections', { name: 'events' });
    await call('POST', '/v1/admin/collections', {
      name: 'profiles',
      rules: { read: 'true', update: 'doc.owner == auth.uid' },
    });
    const titles = [
      ['write the launch post', 'doing', 1],
      ['fix login redirect on Safari', 'open', 1],
      ['review storage quotas', 'open', 2],
      ['migrate billing webhooks', 'done', 2],
      ['rotate signing keys', 'done', 3],
      ['add dark mode', 'open', 3],
      ['invite beta testers', 'doing', 2],
    ] as const;
    for (const [i, [title, status, priority]] of titles.entries()) {
      await call('PUT', `/v1/db/tasks/task-${i + 1}`, {
        data: { title, status, priority, tags: i % 2 ? ['web'] : ['api', 'ops'] },
      });
    }
    await call('POST', '/v1/admin/buckets', {
      name: 'avatars',
      public: true,
      allowed_mime_types: ['image/png', 'image/jpeg', 'text/plain'],
    });
    await call('POST', '/v1/admin/buckets', { name: 'invoices' });
    const images: Array<[string, number, number]> = [
      ['team/ada.png', 160, 160],
      ['team/grace.png', 200, 140],
      ['team/linus.png', 120, 160],
      ['banner.png', 480, 160],
    ];
    for (const [file, width, height] of images) {
      await call('PUT', `/v1/storage/avatars/${file}`, new Uint8Array(gradientPng(width, height)), {
        'content-type': 'image/png',
      });
    }
    await call('PUT', '/v1/storage/avatars/readme.txt', new TextEncoder().encode('Profile pictures, 160×160.\n'), {
      'content-type': 'text/plain',
    });
    for (const [i, total] of [42, 18.5, 99].entries()) {
      await call('POST', '/v1/db/orders', {
        id: `order-${i + 1}`,
        data: { total, card: i === 1 ? 'declined' : 'visa' },
      });
    }
    await call('GET', '/v1/functions/hello?name=basalt');
    // Account events for the audit log: sign-ins, a mistyped password, an unknown address.
    const signIn = (email: string, password: string, agent: string) =>
      fetch(`${base}/v1/auth/signin`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': agent },
        body: JSON.stringify({ email, password }),
      });
    const browserAgent = 'Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0';
    await signIn('grace@example.com', 'correct horse battery staple', browserAgent);
    await signIn('linus@example.com', 'correct horse battery stable', browserAgent);
    await signIn('linus@example.com', 'correct horse battery staple', browserAgent);
    await signIn('mallory@example.com', 'password123!', 'python-requests/2.32');
    await signIn('barbara@example.com', 'correct horse battery staple', browserAgent);

    // Realtime clients, so the realtime page has something to show.
    const open = async (messages: unknown[]) => {
      const socket = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/realtime`);
      await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
      for (const message of messages) socket.send(JSON.stringify(message));
      sockets.push(socket);
    };
    await open([
      { type: 'auth', access_token: serviceKey },
      {
        type: 'subscribe',
        id: 'open-tasks',
        collection: 'tasks',
        query: { where: [['status', '==', 'open']], limit: 50 },
      },
      { type: 'join', channel: 'ops-room', presence: { name: 'on-call' } },
    ]);
    await open([
      { type: 'auth', access_token: serviceKey },
      { type: 'subscribe', id: 'task-1', collection: 'tasks', doc_id: 'task-1' },
      {
        type: 'subscribe',
        id: 'orders',
        collection: 'orders',
        query: { order_by: [['created_at', 'desc']], limit: 20 },
      },
    ]);
    await open([{ type: 'join', channel: 'lobby' }]);

    // Background traffic for the overview's charts.
    let n = 0;
    traffic = setInterval(() => {
      n++;
      void call('POST', '/v1/db/tasks/query', { where: [['status', '==', 'open']] }).catch(() => undefined);
      void call('GET', `/v1/db/tasks/task-${(n % 7) + 1}`).catch(() => undefined);
      if (n % 5 === 0) void call('GET', '/v1/functions/hello').catch(() => undefined);
      // Writes keep the change log moving (with none, its lag saw-tooths up to the heartbeat).
      if (n % 2 === 0) void call('POST', '/v1/db/events', { data: { n, kind: 'page_view' } }).catch(() => undefined);
    }, 40);
    await new Promise((resolve) => setTimeout(resolve, 2000));

    // ---- screenshots --------------------------------------------------------------------
    await mkdir(OUT, { recursive: true });
    const browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (error) => console.error('page error:', error.message));
    page.on('dialog', (dialog) => void dialog.accept());
    const shot = async (name: string) => {
      await page.mouse.move(0, 0);
      await page.screenshot({ path: path.join(OUT, `dashboard-${name}.png`) });
      process.stdout.write(`docs/img/dashboard-${name}.png\n`);
    };
    const visit = async (route: string, ready: string) => {
      await page.goto(`${base}/_/${route}`);
      await page.waitForSelector(ready);
    };

    await page.goto(`${base}/_/`);
    await page.waitForSelector('#service-key');
    await page.fill('#service-key', 'bsk_a-key-that-is-wrong');
    await page.click('form.signin-form button[type=submit]');
    await page.waitForFunction(() => (document.getElementById('signin-error')?.textContent ?? '') !== '');
    await shot('signin');
    await page.fill('#service-key', serviceKey);
    await page.click('form.signin-form button[type=submit]');
    await page.waitForSelector('h1:text("Overview")');
    await page.waitForTimeout(40_000);
    await shot('overview');

    await visit('users', '#users');
    await page.click('#users tr[data-user="ada@example.com"] button:text("Edit")');
    await shot('users');

    await visit('collections/tasks', '#documents');
    await page.waitForSelector('#live-status[data-state=live]');
    await call('PATCH', '/v1/db/tasks/task-2', { data: { status: 'doing' } });
    await page.waitForSelector('#documents tr[data-change=modified]');
    await shot('collections');

    await visit('collections/tasks?tab=rules', '#rules-form');
    await page.fill('textarea[data-rule=delete]', 'doc.owner == auth.uid &&');
    await page.click('#rules-form button[type=submit]');
    await page.waitForSelector('[data-rule-error=delete]:visible');
    await shot('rules');

    await visit('collections/tasks/docs/task-1', '#document-form');
    await shot('document');

    await visit('storage/avatars?prefix=team%2F', '#objects');
    await page.click('#objects tr[data-path="team/grace.png"]');
    await page.waitForFunction(() => {
      const img = document.getElementById('preview-image') as HTMLImageElement | null;
      return img !== null && img.complete && img.naturalWidth > 0;
    });
    await shot('storage');

    await visit('functions/charge', '#invocations');
    await page.click('#invocations tr[data-status=dead]');
    await shot('functions');

    await visit('realtime', '#connections');
    await shot('realtime');

    await visit('audit', 'table.audit-events');
    await shot('audit');
    await browser.close();
  } finally {
    if (traffic) clearInterval(traffic);
    for (const socket of sockets) socket.close();
    await app.close();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

await main();
