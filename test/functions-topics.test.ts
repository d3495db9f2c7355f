import { beforeAll, describe, expect, it } from 'vitest';
import { createClient, isBasaltError } from '../client-sdk/src/index.js';
import { signUp, STRONG_PASSWORD, uniqueEmail } from './auth-helpers.js';
import { allDocs, createCollection, errorCode, request, useTestApp, waitFor, type TestApp } from './helpers.js';

/**
 * Topics end to end, with real workers and Postgres: fan-out to every subscriber, batches,
 * per-key order under concurrency, publishes from functions (with `access.topics`), publish
 * rules, delays and dead letters.
 */

/** Each handler writes what it saw into `seen`: one document per (function, event). */
const record = (fn: string) => `
    await ctx.db.collection('seen').doc('${fn}_' + event.id.replace(/[^A-Za-z0-9_-]/g, '_')).set({
      fn: '${fn}', event_id: event.id, topic: event.topic, payload: event.payload, key: event.key,
      trace_id: event.trace_id, published_at: event.published_at, at: Date.now(),
    });`;

const FILES: Record<string, string> = {
  'fanA.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'orders.created' }, async (event, ctx) => {${record('fanA')}
    });`,
  'fanB.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'orders.created' }, async (event, ctx) => {${record('fanB')}
    });`,
  'batcher.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'batch.topic', batch_size: 5 }, async (events, ctx) => {
      await ctx.db.collection('batches').add({ ids: events.map((event) => event.id), ns: events.map((event) => event.payload.n) });
    });`,
  'ordered.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'ordered', concurrency: 8 }, async (event, ctx) => {
      const start = Date.now();
      await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 40)));
      await ctx.db.collection('runs').add({ key: event.key, n: event.payload.n, start, end: Date.now() });
    });`,
  'relay.ts': `
    import { http } from 'basalt/functions';
    export default http({ access: { topics: ['relay.out'] } }, async (request, ctx) => {
      const published = await ctx.events.publish('relay.out', { from: 'relay' }, { key: 'k1' });
      let refused = null;
      try { await ctx.events.publish('orders.created', {}); } catch (error) { refused = error.name; }
      return { id: published.id, refused };
    });`,
  'relayed.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'relay.out' }, async (event, ctx) => {${record('relayed')}
    });`,
  'later.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'later' }, async (event, ctx) => {${record('later')}
    });`,
  'failing.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'fails', retries: 1 }, async (event) => {
      throw new Error('cannot handle ' + event.id);
    });`,
};

const app = useTestApp({ functions: FILES });
beforeAll(async () => {
  for (const name of ['seen', 'batches', 'runs']) await createCollection(app, { name });
});

async function publish(server: TestApp, topic: string, body: Record<string, unknown>, token?: string) {
  return request(server.url, 'POST', `/v1/events/${topic}`, { token: token ?? server.serviceKey, body });
}

async function published(topic: string, body: Record<string, unknown>): Promise<string> {
  const response = await publish(app, topic, body);
  expect(response.status, response.text).toBe(202);
  return (response.body as { id: string }).id;
}

const docs = <T>(collection: string): Promise<T[]> => allDocs<T>(app, collection);

interface Seen {
  fn: string;
  event_id: string;
  topic: string;
  payload: Record<string, unknown>;
  key: string | null;
  trace_id: string;
  published_at: string;
  at: number;
}

async function invocationsOf(name: string): Promise<Array<{ status: string; event_id: string }>> {
  const response = await request(app.url, 'GET', `/v1/admin/functions/${name}/invocations?limit=1000`, {
    token: app.serviceKey,
  });
  expect(response.status).toBe(200);
  return (response.body as { invocations: Array<{ status: string; event_id: string }> }).invocations;
}

describe('topics', () => {
  it('fans every event out to each subscriber, once each', async () => {
    const ids = await Promise.all(
      Array.from({ length: 20 }, (_, n) => published('orders.created', { payload: { n } })),
    );
    expect(new Set(ids).size).toBe(20);
    const seen = await waitFor('both subscribers to see 20 events', async () => {
      const all = (await docs<Seen>('seen')).filter((doc) => doc.topic === 'orders.created');
      return all.length >= 40 ? all : null;
    });
    for (const fn of ['fanA', 'fanB']) {
      expect(new Set(seen.filter((doc) => doc.fn === fn).map((doc) => doc.event_id))).toEqual(new Set(ids));
    }
    const sample = seen[0] as Seen;
    expect(sample.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(sample.key).toBeNull();
    // Exactly once under normal operation: one successful run per event and subscriber.
    for (const fn of ['fanA', 'fanB']) {
      const runs = await waitFor(`${fn}'s runs recorded`, async () => {
        const all = await invocationsOf(fn);
        return all.length >= 20 ? all : null;
      });
      expect(runs).toHaveLength(20);
      expect(runs.every((run) => run.status === 'succeeded')).toBe(true);
      expect(new Set(runs.map((run) => run.event_id))).toEqual(new Set(ids));
    }
  });

  it('hands a batch subscriber up to batch_size events per run', async () => {
    // Delayed by a second, so all twelve come due together and are taken in batches.
    const ids = await Promise.all(
      Array.from({ length: 12 }, (_, n) => published('batch.topic', { payload: { n }, delay_seconds: 1 })),
    );
    const batches = await waitFor('every event in a batch', async () => {
      const all = await docs<{ ids: string[] }>('batches');
      return all.flatMap((batch) => batch.ids).length >= 12 ? all : null;
    });
    expect(new Set(batches.flatMap((batch) => batch.ids))).toEqual(new Set(ids));
    expect(batches.every((batch) => batch.ids.length >= 1 && batch.ids.length <= 5)).toBe(true);
    expect(batches.length).toBeLessThan(12);
  });

  it('runs the events of one key in publish order, one at a time, under concurrency', async () => {
    const keys = ['a', 'b', 'c'];
    const perKey = 8;
    for (let n = 0; n < perKey; n++) {
      for (const key of keys) await published('ordered', { payload: { n }, key });
      await published('ordered', { payload: { n: -1 } });
    }
    type Run = { key: string | null; n: number; start: number; end: number };
    const runs = await waitFor(
      'every ordered event to run',
      async () => {
        const all = await docs<Run>('runs');
        return all.length >= keys.length * perKey + perKey ? all : null;
      },
      30_000,
    );
    for (const key of keys) {
      const ofKey = runs.filter((run) => run.key === key).sort((a, b) => a.start - b.start);
      expect(ofKey.map((run) => run.n)).toEqual(Array.from({ length: perKey }, (_, n) => n));
      for (let i = 1; i < ofKey.length; i++) {
        expect(ofKey[i]!.start).toBeGreaterThanOrEqual(ofKey[i - 1]!.end);
      }
    }
    // Keys do run at once with each other: the function's concurrency applies across keys.
    const sorted = runs.slice().sort((a, b) => a.start - b.start);
    const overlapping = sorted.some((run, i) => i > 0 && run.start < sorted[i - 1]!.end);
    expect(overlapping).toBe(true);
  });

  it('publishes from a function with ctx.events, within access.topics', async () => {
    const response = await request(app.url, 'POST', '/v1/functions/relay', { token: app.serviceKey, body: {} });
    expect(response.status, response.text).toBe(200);
    const answer = response.body as { id: string; refused: string | null };
    expect(answer.refused).toBe('FORBIDDEN');
    const seen = await waitFor('the relayed event', async () =>
      (await docs<Seen>('seen')).find((doc) => doc.fn === 'relayed' && doc.event_id === answer.id),
    );
    expect(seen.payload).toEqual({ from: 'relay' });
    expect(seen.key).toBe('k1');
  });

  it('lets a user publish only where the topic rule allows, with auth and payload', async () => {
    const user = await signUp(app.url);
    // No rule: only the service key publishes.
    expect(errorCode((await publish(app, 'orders.created', { payload: {} }, user.token)).body)).toBe('FORBIDDEN');
    const anonymous = await request(app.url, 'POST', '/v1/events/orders.created', { body: { payload: {} } });
    expect(anonymous.status).toBe(401);
    const bad = await request(app.url, 'PUT', '/v1/admin/topics/orders.created', {
      token: app.serviceKey,
      body: { rules: { publish: 'doc.id == "x"' } },
    });
    expect(errorCode(bad.body)).toBe('INVALID_RULE');
    const set = await request(app.url, 'PUT', '/v1/admin/topics/orders.created', {
      token: app.serviceKey,
      body: { rules: { publish: 'auth != null && payload.amount < 100' } },
    });
    expect(set.status, set.text).toBe(200);
    expect((set.body as { subscribers: Array<{ function: string }> }).subscribers.map((s) => s.function)).toEqual([
      'fanA',
      'fanB',
    ]);
    const allowed = await publish(app, 'orders.created', { payload: { amount: 5 } }, user.token);
    expect(allowed.status, allowed.text).toBe(202);
    const denied = await publish(app, 'orders.created', { payload: { amount: 500 } }, user.token);
    expect(denied.status).toBe(403);
    expect(errorCode(denied.body)).toBe('FORBIDDEN');
    const id = (allowed.body as { id: string }).id;
    await waitFor('the user event at both subscribers', async () => {
      const seen = (await docs<Seen>('seen')).filter((doc) => doc.event_id === id);
      return seen.length === 2;
    });
    // The SDK publishes with the session's token, under the same rule.
    const client = createClient(app.url, { persistSession: false, autoRefreshToken: false });
    await client.auth.signUp({ email: uniqueEmail('topics'), password: STRONG_PASSWORD });
    const sent = await client.events.publish('orders.created', { amount: 1 }, { key: 'sdk' });
    expect(sent.id).toMatch(/^evt_/);
    const refused = await client.events.publish('orders.created', { amount: 1000 }).catch((error: unknown) => error);
    expect(isBasaltError(refused, 'FORBIDDEN')).toBe(true);
  });

  it('delivers a delayed event no sooner than its delay', async () => {
    const before = Date.now();
    const id = await published('later', { payload: {}, delay_seconds: 2 });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await docs<Seen>('seen')).some((doc) => doc.event_id === id)).toBe(false);
    const seen = await waitFor('the delayed event', async () =>
      (await docs<Seen>('seen')).find((doc) => doc.event_id === id),
    );
    expect(seen.at - before).toBeGreaterThanOrEqual(2_000);
  });

  it('retries a failing subscriber and dead-letters the event, counted on the topic', async () => {
    const id = await published('fails', { payload: {} });
    const runs = await waitFor('the event dead-lettered', async () => {
      const all = await invocationsOf('failing');
      return all.some((run) => run.status === 'dead') ? all : null;
    });
    expect(runs.map((run) => run.status).sort()).toEqual(['dead', 'failed']);
    expect(runs.every((run) => run.event_id === id)).toBe(true);
    const listed = await request(app.url, 'GET', '/v1/admin/topics', { token: app.serviceKey });
    expect(listed.status).toBe(200);
    const topic = (listed.body as { topics: Array<{ name: string; dead_letters: number; depth: number }> }).topics.find(
      (each) => each.name === 'fails',
    );
    expect(topic).toMatchObject({ dead_letters: 1, depth: 0 });
  });
});
