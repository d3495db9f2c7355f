import { describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { createCollection, errorCode, request, startTestApp, useTestApp, waitFor, type TestApp } from './helpers.js';

/**
 * Deploys through the admin API on two instances of one database, as behind a load
 * balancer: what one instance deploys, rolls back or undeploys, the other serves within
 * 5 s, with no restart; events are handled once each, by the version live at their commit.
 */
const a = useTestApp();
const b = useTestApp({ sharing: a });

type Server = Pick<TestApp, 'url' | 'serviceKey'>;

async function deploy(server: Server, name: string, source: string, files: Record<string, string> = {}) {
  return request(server.url, 'PUT', `/v1/admin/functions/${name}`, {
    token: server.serviceKey,
    body: { files: { 'index.ts': source, ...files }, entry: 'index.ts' },
  });
}

async function call(server: Server, name: string, token?: string): Promise<{ status: number; body: unknown }> {
  return request(server.url, 'POST', `/v1/functions/${name}`, { body: {}, ...(token ? { token } : {}) });
}

/** Waits until `server` answers `name` with `expected`; returns how long that took. */
async function servedWithin(server: Server, name: string, expected: unknown, timeoutMs = 5_000): Promise<number> {
  const started = Date.now();
  await waitFor(
    `${name} to answer ${JSON.stringify(expected)}`,
    async () => JSON.stringify((await call(server, name)).body) === JSON.stringify(expected),
    timeoutMs,
    50,
  );
  return Date.now() - started;
}

const answering = (value: unknown) =>
  `import { http } from 'basalt/functions';\nexport default http(async () => (${JSON.stringify(value)}));\n`;

describe('deploying through the admin API', () => {
  it('serves a deploy made through one instance on the other within 5 s, and on an instance started later', async () => {
    const deployed = await deploy(a, 'greeter', answering({ v: 1 }));
    expect(deployed.status).toBe(201);
    expect(deployed.body).toMatchObject({ name: 'greeter', version: 1, kind: 'http', trigger: {} });
    // The deploying instance has it live before the deploy call answers: its first call runs it.
    expect((await call(a, 'greeter')).body).toEqual({ v: 1 });
    expect(await servedWithin(b, 'greeter', { v: 1 })).toBeLessThan(5_000);

    const second = await deploy(b, 'greeter', answering({ v: 2 }));
    expect(second.body).toMatchObject({ version: 2 });
    expect(await servedWithin(a, 'greeter', { v: 2 })).toBeLessThan(5_000);

    const later = await startTestApp(a.database, {}, { serviceKey: a.serviceKey });
    try {
      expect((await call(later, 'greeter')).body).toEqual({ v: 2 });
    } finally {
      await later.close();
    }
    const listed = await request(b.url, 'GET', '/v1/admin/functions', { token: b.serviceKey });
    expect(listed.body).toMatchObject({
      functions: expect.arrayContaining([
        expect.objectContaining({ name: 'greeter', version: 2, source: 'api', kind: 'http', file: 'index.ts' }),
      ]),
    });
  });

  it('builds several files, and refuses imports outside them', async () => {
    const deployed = await deploy(
      a,
      'multi',
      `import { http } from 'basalt/functions';\nimport { greet } from './lib/greet.js';\nexport default http(async () => greet('Ada'));\n`,
      { 'lib/greet.ts': `export const greet = (name: string) => ({ hello: name });\n` },
    );
    expect(deployed.status).toBe(201);
    expect(await servedWithin(b, 'multi', { hello: 'Ada' })).toBeLessThan(5_000);

    const escaping = await deploy(
      a,
      'escaper',
      `import { http } from 'basalt/functions';\nimport { loadConfig } from '../../../server/config.js';\nexport default http(async () => typeof loadConfig);\n`,
    );
    expect(escaping.status).toBe(422);
    expect(errorCode(escaping.body)).toBe('FUNCTION_BUILD_FAILED');
    expect((escaping.body as { error: { details: { reason: string } } }).error.details.reason).toContain(
      'outside the deployed files',
    );
  });

  it('refuses a broken deploy with 422 and the file and reason, and changes nothing', async () => {
    expect((await deploy(a, 'steady', answering({ ok: 1 }))).status).toBe(201);
    await servedWithin(b, 'steady', { ok: 1 });

    const syntax = await deploy(
      a,
      'steady',
      `import { http } from 'basalt/functions';\nexport default http(async () => {\n`,
    );
    expect(syntax.status).toBe(422);
    expect(syntax.body).toMatchObject({
      error: { code: 'FUNCTION_BUILD_FAILED', details: { file: 'index.ts', reason: expect.any(String) } },
    });
    const throwsAtLoad = await deploy(a, 'steady', `throw new Error('boom at load');\n`);
    expect(throwsAtLoad.status).toBe(422);
    expect(throwsAtLoad.body).toMatchObject({
      error: { code: 'FUNCTION_BUILD_FAILED', details: { reason: expect.stringContaining('boom at load') } },
    });
    const nothing = await deploy(a, 'steady', `export const notAFunction = 1;\n`);
    expect(errorCode(nothing.body)).toBe('FUNCTION_BUILD_FAILED');
    const badOption = await deploy(
      a,
      'steady',
      `import { http } from 'basalt/functions';\nexport default http({ timeout_ms: 1 }, async () => 1);\n`,
    );
    expect(errorCode(badOption.body)).toBe('FUNCTION_BUILD_FAILED');

    const versions = await request(a.url, 'GET', '/v1/admin/functions/steady/versions', { token: a.serviceKey });
    expect(versions.body).toMatchObject({ versions: [{ version: 1, active: true, source: 'api' }] });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await call(a, 'steady')).body).toEqual({ ok: 1 });
    expect((await call(b, 'steady')).body).toEqual({ ok: 1 });
  });

  it('rolls back to an earlier version on every instance, and lists the versions', async () => {
    await deploy(a, 'flip', answering('one'));
    await deploy(a, 'flip', answering('two'));
    await servedWithin(b, 'flip', 'two');
    const rolled = await request(b.url, 'POST', '/v1/admin/functions/flip/rollback', {
      token: b.serviceKey,
      body: { version: 1 },
    });
    expect(rolled.status).toBe(200);
    expect(rolled.body).toMatchObject({ name: 'flip', version: 1 });
    expect(await servedWithin(a, 'flip', 'one')).toBeLessThan(5_000);
    const versions = await request(a.url, 'GET', '/v1/admin/functions/flip/versions', { token: a.serviceKey });
    expect(versions.body).toMatchObject({
      versions: [
        { version: 2, active: false, source: 'api' },
        { version: 1, active: true, source: 'api' },
      ],
    });
    const missing = await request(a.url, 'POST', '/v1/admin/functions/flip/rollback', {
      token: a.serviceKey,
      body: { version: 9 },
    });
    expect(missing.status).toBe(404);
    const unknown = await request(a.url, 'GET', '/v1/admin/functions/nope/versions', { token: a.serviceKey });
    expect(unknown.status).toBe(404);
  });

  it('numbers concurrent deploys of one name 1, 2, 3 … across both instances, each built in full', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => deploy(i % 2 === 0 ? a : b, 'racer', answering({ i }))),
    );
    expect(results.map((result) => result.status)).toEqual([201, 201, 201, 201, 201, 201]);
    const numbers = results.map((result) => (result.body as { version: number }).version).sort((x, y) => x - y);
    expect(numbers).toEqual([1, 2, 3, 4, 5, 6]);
    // The live version is the one numbered last, on both instances.
    const last = results.find((result) => (result.body as { version: number }).version === 6);
    const index = results.indexOf(last!);
    await servedWithin(a, 'racer', { i: index });
    await servedWithin(b, 'racer', { i: index });
  });

  it('undeploys on every instance within 5 s', async () => {
    await deploy(a, 'leaving', answering('here'));
    await servedWithin(b, 'leaving', 'here');
    const removed = await request(a.url, 'DELETE', '/v1/admin/functions/leaving', { token: a.serviceKey });
    expect(removed.status).toBe(204);
    await waitFor('b to stop serving it', async () => (await call(b, 'leaving')).status === 404, 5_000, 50);
    const again = await request(a.url, 'DELETE', '/v1/admin/functions/leaving', { token: a.serviceKey });
    expect(again.status).toBe(404);
    const listed = await request(b.url, 'GET', '/v1/admin/functions', { token: b.serviceKey });
    expect((listed.body as { functions: Array<{ name: string }> }).functions.map((fn) => fn.name)).not.toContain(
      'leaving',
    );
  });
});

describe('events across a deploy', () => {
  const recorder = (version: number, extra = '') =>
    `import { onDocument } from 'basalt/functions';
export default onDocument({ collection: 'items', on: 'create' ${extra} }, async (event, ctx) => {
  await ctx.db.collection('handled').add({ event: event.id, item: event.after?.id, version: ${version} });
});
`;

  async function handled(): Promise<Array<{ event: string; item: string; version: number }>> {
    const { rows } = await a.sql.query<{ data: { event: string; item: string; version: number } }>(
      'SELECT data FROM basalt_data.handled',
    );
    return rows.map((row) => row.data);
  }

  /**
   * Commits 50 events, then more while `change` (a deploy or a rollback) is in flight, then
   * 60 after it, and waits until each is handled: returns the versions that handled each.
   */
  async function eventsAround(prefix: string, change: () => Promise<void>) {
    const before: string[] = [];
    const during: string[] = [];
    const after: string[] = [];
    const insert = async (id: string) => {
      await a.sql.query(`INSERT INTO basalt_data.items (id, data) VALUES ($1, '{}')`, [id]);
    };
    for (let i = 0; i < 50; i++) {
      before.push(`${prefix}b${i}`);
      await insert(`${prefix}b${i}`);
    }
    // Writes keep committing while the change is in flight: they may land on either side.
    let changing = true;
    const concurrent = (async () => {
      for (let i = 0; changing; i++) {
        during.push(`${prefix}d${i}`);
        await insert(`${prefix}d${i}`);
      }
    })();
    try {
      await change();
    } finally {
      changing = false;
      await concurrent;
    }
    for (let i = 0; i < 60; i++) {
      after.push(`${prefix}a${i}`);
      await insert(`${prefix}a${i}`);
    }
    const ids = [...before, ...during, ...after];
    expect(ids.length).toBeGreaterThanOrEqual(110);
    const mine = async () => (await handled()).filter((row) => row.item.startsWith(prefix));
    await waitFor(`all ${ids.length} events handled`, async () => (await mine()).length >= ids.length, 60_000, 200);
    // Given time to (wrongly) run some twice.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const final = await mine();
    expect(final.length).toBe(ids.length);
    expect(new Set(final.map((row) => row.event)).size).toBe(ids.length);
    const byItem = new Map<string, number[]>();
    for (const row of final) byItem.set(row.item, [...(byItem.get(row.item) ?? []), row.version]);
    for (const id of ids) expect(byItem.get(id)?.length, id).toBe(1);
    return { before, during, after, versionOf: (id: string) => byItem.get(id)?.[0] };
  }

  it('handles each event once, by the version live when it committed, while 100+ commit around a deploy', async () => {
    await createCollection(a, { name: 'items' });
    await createCollection(a, { name: 'handled' });
    expect((await deploy(a, 'recorder', recorder(1))).status).toBe(201);
    // Both instances run the function's jobs.
    await new Promise((resolve) => setTimeout(resolve, 1_000));

    const deployed = await eventsAround('x', async () => {
      expect((await deploy(b, 'recorder', recorder(2))).body).toMatchObject({ version: 2 });
    });
    for (const id of deployed.before) expect(deployed.versionOf(id), id).toBe(1);
    for (const id of deployed.after) expect(deployed.versionOf(id), id).toBe(2);

    // A rollback is a deploy of an old version: the same guarantees, the other way round.
    const rolledBack = await eventsAround('y', async () => {
      const rolled = await request(a.url, 'POST', '/v1/admin/functions/recorder/rollback', {
        token: a.serviceKey,
        body: { version: 1 },
      });
      expect(rolled.status).toBe(200);
    });
    for (const id of rolledBack.before) expect(rolledBack.versionOf(id), id).toBe(2);
    for (const id of rolledBack.after) expect(rolledBack.versionOf(id), id).toBe(1);
  }, 240_000);

  it('dead-letters the queued events of an undeployed function, and a redeploy can retry them', async () => {
    await createCollection(a, { name: 'slow_items' });
    await createCollection(a, { name: 'slow_handled' });
    const slow = (version: number) =>
      `import { onDocument } from 'basalt/functions';
export default onDocument({ collection: 'slow_items', on: 'create', concurrency: 1, retries: 0 }, async (event, ctx) => {
  await new Promise((resolve) => setTimeout(resolve, 150));
  await ctx.db.collection('slow_handled').add({ event: event.id, item: event.after?.id, version: ${version} });
});
`;
    expect((await deploy(a, 'slowpoke', slow(1))).status).toBe(201);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const ids = Array.from({ length: 30 }, (_, i) => `s${i}`);
    for (const id of ids) await a.sql.query(`INSERT INTO basalt_data.slow_items (id, data) VALUES ($1, '{}')`, [id]);
    await waitFor(
      'a first run',
      async () => (await a.sql.query('SELECT 1 FROM basalt_data.slow_handled')).rowCount,
      10_000,
      20,
    );
    expect((await request(a.url, 'DELETE', '/v1/admin/functions/slowpoke', { token: a.serviceKey })).status).toBe(204);
    type Invocation = { id: string; status: string; event_id: string | null };
    const dead = await waitFor(
      'the rest dead-lettered',
      async () => {
        const [ran, listed] = await Promise.all([
          a.sql.query('SELECT count(*)::int AS n FROM basalt_data.slow_handled'),
          request(a.url, 'GET', '/v1/admin/functions/slowpoke/invocations?status=dead&limit=100', {
            token: a.serviceKey,
          }),
        ]);
        const deadOnes = (listed.body as { invocations: Invocation[] }).invocations;
        return (ran.rows[0] as { n: number }).n + deadOnes.length === ids.length ? deadOnes : null;
      },
      20_000,
      200,
    );
    expect(dead.length).toBeGreaterThan(0);
    // Nothing runs once undeployed, and no event is both run and dead-lettered.
    const ranBefore = (await a.sql.query('SELECT count(*)::int AS n FROM basalt_data.slow_handled')).rows[0] as {
      n: number;
    };
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const ran = await a.sql.query<{ event: string }>("SELECT data->>'event' AS event FROM basalt_data.slow_handled");
    expect(ran.rowCount).toBe(ranBefore.n);
    const deadAfter = await request(a.url, 'GET', '/v1/admin/functions/slowpoke/invocations?status=dead&limit=100', {
      token: a.serviceKey,
    });
    const deadEvents = (deadAfter.body as { invocations: Invocation[] }).invocations.map((run) => run.event_id);
    expect(deadEvents).toHaveLength(dead.length);
    const ranEvents = ran.rows.map((row) => row.event);
    expect(ranEvents.length + deadEvents.length).toBe(ids.length);
    expect(new Set([...ranEvents, ...deadEvents]).size).toBe(ids.length);

    // Retried before a redeploy: refused; after it: run by the new version.
    const early = await request(a.url, 'POST', `/v1/admin/invocations/${dead[0]!.id}/retry`, { token: a.serviceKey });
    expect(early.status).toBe(503);
    expect((await deploy(a, 'slowpoke', slow(2))).status).toBe(201);
    await waitFor(
      'the dead invocation to be retryable',
      async () =>
        (await request(a.url, 'POST', `/v1/admin/invocations/${dead[0]!.id}/retry`, { token: a.serviceKey })).status ===
        200,
      5_000,
      200,
    );
    await waitFor(
      'the retried event handled by version 2',
      async () =>
        (await a.sql.query(`SELECT 1 FROM basalt_data.slow_handled WHERE (data->>'version')::int = 2`)).rowCount,
      20_000,
      200,
    );
  }, 120_000);
});

describe('secrets', () => {
  const reader = `import { http } from 'basalt/functions';
export default http({ secrets: ['API_TOKEN'] }, async (_request, ctx) => {
  console.log('using', ctx.secrets.API_TOKEN);
  return { token: ctx.secrets.API_TOKEN ?? null, other: ctx.secrets.OTHER_TOKEN ?? null, env: process.env.API_TOKEN ?? null };
});
`;
  const snoop = `import { http } from 'basalt/functions';
export default http(async (_request, ctx) => ({
  secrets: ctx.secrets,
  env: process.env.API_TOKEN ?? null,
  keys: Object.keys(process.env).filter((key) => key.startsWith('BASALT') || key.includes('TOKEN') || key === 'DATABASE_URL'),
}));
`;

  it('gives a function only the secrets it declares, rotated on warm workers within 5 s, never in logs or listings', async () => {
    expect(
      (
        await request(a.url, 'PUT', '/v1/admin/secrets/API_TOKEN', {
          token: a.serviceKey,
          body: { value: 'tok-first-1234' },
        })
      ).status,
    ).toBe(204);
    await request(a.url, 'PUT', '/v1/admin/secrets/OTHER_TOKEN', {
      token: a.serviceKey,
      body: { value: 'other-5678' },
    });
    expect((await deploy(a, 'reader', reader)).status).toBe(201);
    expect((await deploy(a, 'snoop', snoop)).status).toBe(201);
    await servedWithin(b, 'reader', { token: 'tok-first-1234', other: null, env: null });

    // Rotated through A: B's warm worker sees the new value within 5 s.
    await request(a.url, 'PUT', '/v1/admin/secrets/API_TOKEN', {
      token: a.serviceKey,
      body: { value: 'tok-second-9876' },
    });
    expect(await servedWithin(b, 'reader', { token: 'tok-second-9876', other: null, env: null })).toBeLessThan(5_000);
    // Reached a warm worker: the run that saw the new value did not start a new one.
    const latest = await request(b.url, 'GET', '/v1/admin/functions/reader/invocations?limit=1', {
      token: b.serviceKey,
    });
    expect(latest.body).toMatchObject({ invocations: [{ cold_start: false, status: 'succeeded' }] });

    // Undeclared: not in ctx.secrets, not in process.env (nor the server's own keys).
    await servedWithin(b, 'snoop', { secrets: {}, env: null, keys: [] });

    const listed = await request(b.url, 'GET', '/v1/admin/secrets', { token: b.serviceKey });
    expect(listed.body).toEqual({
      secrets: [
        { name: 'API_TOKEN', updated_at: expect.any(String) },
        { name: 'OTHER_TOKEN', updated_at: expect.any(String) },
      ],
    });
    expect(listed.text).not.toContain('tok-');
    const stored = await a.sql.query<{ ciphertext: Buffer }>('SELECT ciphertext FROM basalt.secrets');
    for (const row of stored.rows) expect(row.ciphertext.toString('utf8')).not.toContain('tok-');

    const invocations = await waitFor('the logged invocations', async () => {
      const response = await request(b.url, 'GET', '/v1/admin/functions/reader/invocations', { token: b.serviceKey });
      const list = (response.body as { invocations: Array<{ logs: Array<{ message: string }> }> }).invocations;
      return list.length > 0 ? response : null;
    });
    expect(invocations.text).not.toContain('tok-first');
    expect(invocations.text).not.toContain('tok-second');
    expect(invocations.text).toContain('using [secret]');

    expect((await request(a.url, 'DELETE', '/v1/admin/secrets/OTHER_TOKEN', { token: a.serviceKey })).status).toBe(204);
    expect((await request(a.url, 'DELETE', '/v1/admin/secrets/OTHER_TOKEN', { token: a.serviceKey })).status).toBe(404);
  });
});

describe('least privilege', () => {
  it('limits ctx.db to the collections a function declares in access', async () => {
    await createCollection(a, { name: 'allowed_things' });
    await createCollection(a, { name: 'off_limits' });
    const limited = `import { http } from 'basalt/functions';
export default http({ access: { collections: ['allowed_things'] } }, async (_request, ctx) => {
  const ok = await ctx.db.collection('allowed_things').add({ n: 1 });
  let denied = null;
  try { await ctx.db.collection('off_limits').add({ n: 1 }); } catch (error) { denied = error.name; }
  let bucket = null;
  try { await ctx.storage.from('anything').list(); } catch (error) { bucket = error.name; }
  return { ok: typeof ok.id, denied, bucket };
});
`;
    expect((await deploy(a, 'limited', limited)).status).toBe(201);
    expect((await call(a, 'limited')).body).toEqual({ ok: 'string', denied: 'FORBIDDEN', bucket: 'FORBIDDEN' });
    const { rows } = await a.sql.query('SELECT 1 FROM basalt_data.off_limits');
    expect(rows).toHaveLength(0);
  });

  it('acts as the verified caller through ctx.asCaller, with the rules applied', async () => {
    await createCollection(a, { name: 'owned_notes', rules: { create: 'auth != null && incoming.owner == auth.uid' } });
    const asCaller = `import { http } from 'basalt/functions';
export default http(async (_request, ctx) => {
  try {
    const doc = await ctx.asCaller.db.collection('owned_notes').add({ text: 'mine' });
    return { created: doc.owner };
  } catch (error) {
    return { denied: error.name };
  }
});
`;
    expect((await deploy(a, 'noter', asCaller)).status).toBe(201);
    expect((await call(a, 'noter')).body).toEqual({ denied: 'FORBIDDEN' });
    const user = await signUp(a.url);
    expect((await call(a, 'noter', user.session!.access_token)).body).toEqual({ created: user.user.id });
  });
});
