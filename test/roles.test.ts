import { beforeAll, describe, expect, it } from 'vitest';
import { createCollection } from './documents-support.js';
import { request, useTestApp, waitFor } from './helpers.js';

/**
 * BASALT_ROLES splits a deployment into fleets (docs/deployment.md#roles): an `api` process
 * serves the API and runs no background function work; a `worker` process runs that work
 * and serves nothing but health, readiness and metrics.
 */

async function scheduleCount(): Promise<number> {
  const exists = await api.sql.query(`SELECT to_regclass('basalt_jobs.schedule') AS name`);
  if (!(exists.rows[0] as { name: string | null }).name) return 0;
  const { rows } = await api.sql.query<{ count: string }>('SELECT count(*) FROM basalt_jobs.schedule');
  return Number(rows[0]?.count ?? 0);
}

const api = useTestApp({
  functions: {
    'hello.ts': `import { http } from 'basalt/functions';
     export default http(async () => ({ hello: true }));`,
    'markSeen.ts': `import { onDocument } from 'basalt/functions';
     export default onDocument({ collection: 'posts', on: 'create' }, async (event, ctx) => {
       await ctx.db.collection('seen').doc(event.after.id).set({ by: 'worker' });
     });`,
    'nightly.ts': `import { schedule } from 'basalt/functions';
     export default schedule({ cron: '0 3 * * *' }, async () => {});`,
  },
  env: { BASALT_ROLES: 'api' },
});

beforeAll(async () => {
  for (const name of ['posts', 'seen']) await createCollection(api, { name });
});

describe('BASALT_ROLES=api', () => {
  it('serves the API, HTTP functions included', async () => {
    const created = await request(api.url, 'POST', '/v1/db/posts', {
      token: api.serviceKey,
      body: { id: 'before-worker', data: { title: 'queued' } },
    });
    expect(created.status).toBe(201);
    const hello = await request(api.url, 'POST', '/v1/functions/hello', { body: {} });
    expect(hello.status).toBe(200);
    expect(hello.body).toEqual({ hello: true });
  });

  it('neither runs event functions nor registers schedules', async () => {
    // Long enough for a dispatching instance to have run the function several times over.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    const seen = await request(api.url, 'GET', '/v1/db/seen/before-worker', { token: api.serviceKey });
    expect(seen.status).toBe(404);
    const invocations = await request(api.url, 'GET', '/v1/admin/functions/markSeen/invocations', {
      token: api.serviceKey,
    });
    expect((invocations.body as { invocations: unknown[] }).invocations).toEqual([]);
    expect(await scheduleCount()).toBe(0);
  });
});

describe('BASALT_ROLES=worker', () => {
  const worker = useTestApp({ sharing: api, env: { BASALT_ROLES: 'worker' } });

  it('serves health, readiness and metrics', async () => {
    const url = worker.url;
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    const metrics = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${api?.serviceKey}` } });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('basalt_');
  });

  it('serves no API route', async () => {
    const url = worker.url;
    const token = api.serviceKey;
    const attempts: Array<[string, string, unknown?]> = [
      ['GET', '/v1/db/posts'],
      ['POST', '/v1/db/posts', { data: {} }],
      ['GET', '/v1/admin/collections'],
      ['GET', '/v1/admin/functions'],
      ['POST', '/v1/functions/hello', {}],
      ['POST', '/v1/auth/signup', { email: 'worker@example.com', password: 'a long password 1' }],
      ['GET', '/v1/auth/.well-known/jwks.json'],
      ['GET', '/v1/storage/buckets'],
      ['GET', '/v1/realtime'],
      ['GET', '/docs'],
      ['GET', '/_/'],
    ];
    for (const [method, route, body] of attempts) {
      const response = await request(url, method, route, { token, body });
      expect([route, response.status, (response.body as { error?: { code?: string } }).error?.code]).toEqual([
        route,
        404,
        'NOT_FOUND',
      ]);
    }
  });

  it('runs the event functions of writes made through the API instance, and registers the schedules', async () => {
    // Dispatch starts where the change log is when a worker first leads (docs/functions.md).
    const created = await request(api.url, 'POST', '/v1/db/posts', {
      token: api.serviceKey,
      body: { id: 'with-worker', data: { title: 'dispatched' } },
    });
    expect(created.status).toBe(201);
    await waitFor('the worker to run markSeen', async () => {
      const seen = await request(api.url, 'GET', '/v1/db/seen/with-worker', { token: api.serviceKey });
      return seen.status === 200 ? seen.body : null;
    });
    expect(await scheduleCount()).toBe(1);
  });
});
