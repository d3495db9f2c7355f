import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import { dashboardRoutes } from '../server/modules/dashboard/routes.js';
import { DASHBOARD_DIST, ensureDashboard } from '../scripts/dashboard-build.js';
import { signUp } from './auth-helpers.js';
import { createCollection } from './documents-support.js';
import { errorCode, request, useTestApp, waitFor } from './helpers.js';
import { TestSocket } from './realtime-client.js';

/**
 * The dashboard's server side: its static files at /_/ (types, caching, SPA fallback,
 * CSP) and the admin extensions it relies on (GET /v1/admin/realtime, function metrics).
 */

beforeAll(async () => {
  await ensureDashboard();
});

const app = useTestApp({
  functions: {
    'hello.ts': `import { http } from 'basalt/functions';
     export default http(async (request) => {
       if (request.query.fail) throw new Error('asked to fail');
       return { hello: 'world' };
     });`,
  },
});

interface ConnectionInfo {
  id: string;
  role: string;
  uid: string | null;
  connected_at: string;
  subscriptions: Array<{
    id: string;
    collection: string;
    doc_id: string | null;
    where: unknown;
    limit: number;
    documents: number;
  }>;
  channels: Array<{ channel: string; presence: boolean }>;
}

async function connections(): Promise<{ instance_id: string; connections: ConnectionInfo[] }> {
  const response = await request(app.url, 'GET', '/v1/admin/realtime', { token: app.serviceKey });
  expect(response.status).toBe(200);
  return response.body as { instance_id: string; connections: ConnectionInfo[] };
}

beforeAll(async () => {
  await createCollection(app, { name: 'notes', rules: { read: 'true' } });
});

describe('the dashboard files at /_/', () => {
  it('serves index.html under the CSP, revalidated on every load', async () => {
    const response = await fetch(`${app.url}/_/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    const html = await response.text();
    expect(html).toMatch(/<script type="module" crossorigin src="\/_\/assets\/[^"]+\.js"><\/script>/);
    // No inline script: the CSP would block it.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
  });

  it('answers client-side routes with the same page, and redirects /_ to /_/', async () => {
    const index = await (await fetch(`${app.url}/_/`)).text();
    for (const route of ['/_/users', '/_/collections/notes/docs/abc', '/_/storage/avatars?prefix=a%2F']) {
      const response = await fetch(`${app.url}${route}`);
      expect(response.status, route).toBe(200);
      expect(await response.text()).toBe(index);
    }
    const bare = await fetch(`${app.url}/_`, { redirect: 'manual' });
    expect(bare.status).toBe(301);
    expect(bare.headers.get('location')).toBe('/_/');
  });

  it('serves hashed assets with their type and a year of caching; a missing asset is 404', async () => {
    const assets = await readdir(path.join(DASHBOARD_DIST, 'assets'));
    const script = assets.find((name) => name.endsWith('.js'));
    const style = assets.find((name) => name.endsWith('.css'));
    expect(script).toBeDefined();
    const js = await fetch(`${app.url}/_/assets/${script}`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    const css = await fetch(`${app.url}/_/assets/${style}`);
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    const missing = await fetch(`${app.url}/_/assets/nope-123.js`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('content-type')).toContain('text/plain');
  });

  it('serves the build precompressed, with validators and ranges', async () => {
    const assets = await readdir(path.join(DASHBOARD_DIST, 'assets'));
    const script = assets.find((name) => name.endsWith('.js'))!;
    const plain = await readFile(path.join(DASHBOARD_DIST, 'assets', script));
    const url = `${app.url}/_/assets/${script}`;

    const brotli = await fetch(url, { headers: { 'accept-encoding': 'br' } });
    expect(brotli.headers.get('content-encoding')).toBe('br');
    expect(brotli.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(Buffer.from(await brotli.arrayBuffer()).equals(plain)).toBe(true);

    // fetch adds `cache-control: no-cache` to a conditional request, which disables 304s: inject sends it bare.
    const page = await app.app.inject({ method: 'GET', url: '/_/', headers: { 'accept-encoding': 'br' } });
    const etag = page.headers.etag;
    expect(typeof etag).toBe('string');
    const again = await app.app.inject({
      method: 'GET',
      url: '/_/',
      headers: { 'accept-encoding': 'br', 'if-none-match': String(etag) },
    });
    expect(again.statusCode).toBe(304);

    const range = await fetch(url, { headers: { range: 'bytes=0-9', 'accept-encoding': 'identity' } });
    expect(range.status).toBe(206);
    expect(range.headers.get('content-range')).toBe(`bytes 0-9/${plain.length}`);
    expect(Buffer.from(await range.arrayBuffer()).equals(plain.subarray(0, 10))).toBe(true);
  });

  it('never serves files outside the build', async () => {
    for (const probe of ['/_/../package.json', '/_/..%2F..%2Fpackage.json', '/_/%2e%2e/%2e%2e/package.json']) {
      const response = await fetch(`${app.url}${probe}`);
      const text = await response.text();
      expect(text, probe).not.toContain('"name": "basalt"');
    }
  });
});

describe('the dashboard routes on their own', () => {
  it('answer 503 with how to build when there is no build, and never read outside the build', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'basalt-dashboard-dir-'));
    const dir = path.join(root, 'dist');
    await writeFile(path.join(root, 'secret.txt'), 'outside the build');
    const server = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
    await server.register(dashboardRoutes, { dir });
    try {
      const missing = await server.inject({ method: 'GET', url: '/_/' });
      expect(missing.statusCode).toBe(503);
      expect(missing.body).toContain('npm run build:dashboard');

      await mkdir(path.join(dir, 'assets'), { recursive: true });
      await writeFile(path.join(dir, 'index.html'), '<!doctype html><title>t</title>');
      await writeFile(path.join(dir, 'assets', 'app-1a2b.js'), 'export {};');
      const page = await server.inject({ method: 'GET', url: '/_/users/abc' });
      expect(page.statusCode).toBe(200);
      expect(page.body).toBe('<!doctype html><title>t</title>');
      const asset = await server.inject({ method: 'GET', url: '/_/assets/app-1a2b.js' });
      expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable');
      for (const url of [
        '/_/../secret.txt',
        '/_/..%2fsecret.txt',
        '/_/%2e%2e%2fsecret.txt',
        '/_/assets/..%2f..%2fsecret.txt',
      ]) {
        const response = await server.inject({ method: 'GET', url });
        expect(response.body, url).not.toContain('outside the build');
      }
    } finally {
      await server.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('GET /v1/admin/realtime', () => {
  it('rejects unknown query parameters with INVALID_REQUEST', async () => {
    const response = await request(app.url, 'GET', '/v1/admin/realtime?instance=all', { token: app.serviceKey });
    expect(response.status).toBe(400);
    expect(errorCode(response.body)).toBe('INVALID_REQUEST');
  });

  it('lists open connections with their caller, live queries and channels, and drops closed ones', async () => {
    await request(app.url, 'PUT', '/v1/db/notes/n1', { token: app.serviceKey, body: { data: { open: true } } });
    await request(app.url, 'PUT', '/v1/db/notes/n2', { token: app.serviceKey, body: { data: { open: false } } });
    const user = await signUp(app.url);
    const service = await TestSocket.open(app.url);
    service.send({ type: 'auth', access_token: app.serviceKey });
    await service.nextOfType('authenticated');
    service.send({
      type: 'subscribe',
      id: 'open-notes',
      collection: 'notes',
      query: { where: [['open', '==', true]], limit: 10 },
    });
    await service.nextOfType('subscribed', { id: 'open-notes' });
    service.send({ type: 'join', channel: 'lobby', presence: { name: 'admin' } });
    await service.nextOfType('presence');
    const member = await TestSocket.open(app.url, { token: user.session?.access_token });
    await member.nextOfType('authenticated');
    member.send({ type: 'subscribe', id: 'one', collection: 'notes', doc_id: 'n2' });
    await member.nextOfType('subscribed', { id: 'one' });

    const listed = await connections();
    expect(listed.instance_id).toMatch(/^[0-9a-f-]{36}$/);
    const admin = listed.connections.find((c) => c.role === 'service');
    expect(admin?.subscriptions).toEqual([
      {
        id: 'open-notes',
        collection: 'notes',
        doc_id: null,
        where: [['open', '==', true]],
        order_by: null,
        limit: 10,
        documents: 1,
      },
    ]);
    expect(admin?.channels).toEqual([{ channel: 'lobby', presence: true }]);
    const userConnection = listed.connections.find((c) => c.uid === user.user.id);
    expect(userConnection?.role).toBe('authenticated');
    expect(userConnection?.subscriptions.map((s) => [s.collection, s.doc_id, s.documents])).toEqual([
      ['notes', 'n2', 1],
    ]);
    expect(userConnection?.channels).toEqual([]);
    expect(Date.parse(userConnection?.connected_at ?? '')).toBeGreaterThan(Date.now() - 60_000);

    member.close();
    await waitFor('the closed connection to leave the listing', async () => {
      const now = await connections();
      return !now.connections.some((c) => c.id === userConnection?.id);
    });
    service.close();
  });
});

describe('function metrics', () => {
  it('counts finished runs by function and status, with their durations', async () => {
    const ok = await request(app.url, 'GET', '/v1/functions/hello', {});
    expect(ok.status).toBe(200);
    const failed = await request(app.url, 'GET', '/v1/functions/hello?fail=1', {});
    expect(failed.status).toBe(500);
    const metrics = (await request(app.url, 'GET', '/metrics', { token: app.serviceKey })).text;
    expect(metrics).toContain('basalt_function_invocations_total{function="hello",status="succeeded"} 1');
    expect(metrics).toContain('basalt_function_invocations_total{function="hello",status="failed"} 1');
    expect(metrics).toMatch(/basalt_function_duration_seconds_count\{function="hello"\} 2/);
  });
});

describe('errors the dashboard shows inline', () => {
  it('a refused bucket rule carries the parser details (position, source), as a collection rule does', async () => {
    const bucket = await request(app.url, 'POST', '/v1/admin/buckets', {
      token: app.serviceKey,
      body: { name: 'ruled', rules: { write: 'object.size <' } },
    });
    expect(bucket.status).toBe(400);
    expect(bucket.body).toMatchObject({
      error: { code: 'INVALID_RULE', details: { position: 13, source: 'object.size <' } },
    });
    const collection = await request(app.url, 'PATCH', '/v1/admin/collections/notes', {
      token: app.serviceKey,
      body: { rules: { update: 'doc.owner ==' } },
    });
    expect(collection.status).toBe(400);
    expect(collection.body).toMatchObject({
      error: { code: 'INVALID_RULE', details: { rule: 'update', position: 12, source: 'doc.owner ==' } },
    });
  });
});
