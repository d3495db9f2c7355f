import { beforeAll, describe, expect, it } from 'vitest';
import { createClient, isBasaltError } from '../client-sdk/src/index.js';
import { signUp, STRONG_PASSWORD, uniqueEmail } from './auth-helpers.js';
import { allDocs, createCollection, errorCode, request, useTestApp, waitFor } from './helpers.js';

/**
 * Batch publishes (`POST /v1/events/:topic {events: [...]}`, ctx.events.publishMany,
 * `basalt.events.publishMany`): ids in order, all or none, the publish rule checked for each
 * event, the order of a key kept across and between batches, and batches sent at once.
 */

const FILES: Record<string, string> = {
  'seenBatch.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'batch.seen' }, async (event, ctx) => {
      await ctx.db.collection('seen').add({ event_id: event.id, n: event.payload.n, key: event.key, trace_id: event.trace_id });
    });`,
  'orderedBatch.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'batch.ordered', concurrency: 8 }, async (event, ctx) => {
      const start = Date.now();
      await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 30)));
      await ctx.db.collection('runs').add({ key: event.key, n: event.payload.n, start, end: Date.now() });
    });`,
  'fanOut.ts': `
    import { http } from 'basalt/functions';
    export default http({ access: { topics: ['batch.seen'] } }, async (request, ctx) => {
      const { ids } = await ctx.events.publishMany('batch.seen', [
        { payload: { n: 1000 } },
        { payload: { n: 1001 }, key: 'from-function' },
      ]);
      let refused = null;
      try {
        await ctx.events.publishMany('batch.seen', [{ payload: { n: 1002 } }, { payload: { n: 1003 }, key: '' }]);
      } catch (error) {
        refused = error.name;
      }
      return { ids, refused, trace_id: ctx.trace_id };
    });`,
};

const app = useTestApp({ functions: FILES });
beforeAll(async () => {
  for (const name of ['seen', 'runs']) await createCollection(app, { name });
  const set = await request(app.url, 'PUT', '/v1/admin/topics/batch.seen', {
    token: app.serviceKey,
    body: { rules: { publish: 'auth != null && payload.n < 100' } },
  });
  expect(set.status, set.text).toBe(200);
});

async function publishBatch(events: unknown[], token?: string, topic = 'batch.seen') {
  return request(app.url, 'POST', `/v1/events/${topic}`, { token: token ?? app.serviceKey, body: { events } });
}

const docs = <T>(collection: string): Promise<T[]> => allDocs<T>(app, collection);

interface Seen {
  event_id: string;
  n: number;
  key: string | null;
  trace_id: string;
}

/** Jobs queued for events whose payload has this `n`, whatever their state. */
async function jobsOf(ns: number[]): Promise<number> {
  const result = await app.sql.query<{ count: string }>(
    `SELECT count(*) FROM basalt_jobs.job WHERE (data->'event'->'payload'->>'n')::int = ANY($1::int[])`,
    [ns],
  );
  return Number(result.rows[0]?.count);
}

describe('batch publishes', () => {
  it('answers the ids in the order of the events, each delivered with its own payload and key', async () => {
    const events = Array.from({ length: 30 }, (_, n) => ({
      payload: { n },
      ...(n % 3 === 0 ? { key: `k${n % 2}` } : {}),
    }));
    const response = await publishBatch(events);
    expect(response.status, response.text).toBe(202);
    const { ids } = response.body as { ids: string[] };
    expect(ids).toHaveLength(30);
    expect(new Set(ids).size).toBe(30);
    expect(ids.every((id) => /^evt_/.test(id))).toBe(true);
    const seen = await waitFor('every event of the batch handled', async () => {
      const all = (await docs<Seen>('seen')).filter((doc) => doc.n < 30);
      return all.length >= 30 ? all : null;
    });
    expect(seen).toHaveLength(30);
    for (const doc of seen) {
      expect(doc.event_id).toBe(ids[doc.n]);
      expect(doc.key).toBe(doc.n % 3 === 0 ? `k${doc.n % 2}` : null);
    }
    // Published over HTTP without a trace: each event starts a trace of its own.
    expect(new Set(seen.map((doc) => doc.trace_id)).size).toBe(30);
  });

  it('runs the events of one key in list order, within a batch and after the batch before it', async () => {
    const keys = ['a', 'b'];
    const batch = (from: number) =>
      Array.from({ length: 12 }, (_, i) => ({ payload: { n: from + Math.floor(i / 2) }, key: keys[i % 2] }));
    for (const from of [0, 6]) {
      const response = await publishBatch(batch(from), undefined, 'batch.ordered');
      expect(response.status, response.text).toBe(202);
    }
    type Run = { key: string; n: number; start: number; end: number };
    const runs = await waitFor(
      'every ordered event to run',
      async () => {
        const all = await docs<Run>('runs');
        return all.length >= 24 ? all : null;
      },
      30_000,
    );
    for (const key of keys) {
      const ofKey = runs.filter((run) => run.key === key).sort((a, b) => a.start - b.start);
      expect(ofKey.map((run) => run.n)).toEqual(Array.from({ length: 12 }, (_, n) => n));
      for (let i = 1; i < ofKey.length; i++) expect(ofKey[i]!.start).toBeGreaterThanOrEqual(ofKey[i - 1]!.end);
    }
  });

  it('publishes none of a batch when one event is refused, naming its index', async () => {
    const user = await signUp(app.url);
    const denied = await publishBatch(
      [{ payload: { n: 50 } }, { payload: { n: 51 } }, { payload: { n: 500 } }, { payload: { n: 52 } }],
      user.token,
    );
    expect(denied.status).toBe(403);
    expect(errorCode(denied.body)).toBe('FORBIDDEN');
    expect((denied.body as { error: { details: { index: number } } }).error.details.index).toBe(2);

    const tooLarge = await publishBatch([{ payload: { n: 53 } }, { payload: { n: 54, pad: 'x'.repeat(262_200) } }]);
    expect(tooLarge.status).toBe(413);
    expect(errorCode(tooLarge.body)).toBe('PAYLOAD_TOO_LARGE');
    expect((tooLarge.body as { error: { details: { index: number } } }).error.details.index).toBe(1);

    const badKey = await publishBatch([{ payload: { n: 55 } }, { payload: { n: 56 }, key: 'k'.repeat(257) }]);
    expect(badKey.status).toBe(400);
    expect(errorCode(badKey.body)).toBe('INVALID_REQUEST');

    // A batch the rule allows whole goes through, with the user's token.
    const allowed = await publishBatch([{ payload: { n: 57 } }, { payload: { n: 58 } }], user.token);
    expect(allowed.status, allowed.text).toBe(202);
    await waitFor('the allowed batch handled', async () => {
      const ns = (await docs<Seen>('seen')).map((doc) => doc.n);
      return ns.includes(57) && ns.includes(58);
    });
    expect(await jobsOf([50, 51, 52, 53, 54, 55, 56])).toBe(0);
    expect(await jobsOf([57, 58])).toBe(2);
  });

  it('publishes batches from a function and from the SDK', async () => {
    const response = await request(app.url, 'POST', '/v1/functions/fanOut', { token: app.serviceKey, body: {} });
    expect(response.status, response.text).toBe(200);
    const answer = response.body as { ids: string[]; refused: string | null; trace_id: string };
    expect(answer.ids).toHaveLength(2);
    expect(answer.refused).toBe('INVALID_REQUEST');
    const seen = await waitFor('the function batch handled', async () => {
      const all = (await docs<Seen>('seen')).filter((doc) => doc.n >= 1000);
      return all.length >= 2 ? all : null;
    });
    expect(seen.map((doc) => doc.event_id).sort()).toEqual([...answer.ids].sort());
    // Published from a run: the events continue its trace.
    expect(seen.every((doc) => doc.trace_id === answer.trace_id)).toBe(true);
    expect(await jobsOf([1002, 1003])).toBe(0);

    const client = createClient(app.url, { persistSession: false, autoRefreshToken: false });
    await client.auth.signUp({ email: uniqueEmail('batch'), password: STRONG_PASSWORD });
    const sent = await client.events.publishMany('batch.seen', [
      { payload: { n: 60 } },
      { payload: { n: 61 }, key: 'sdk', delaySeconds: 0 },
    ]);
    expect(sent.ids).toHaveLength(2);
    const refused = await client.events
      .publishMany('batch.seen', [{ payload: { n: 62 } }, { payload: { n: 600 } }])
      .catch((error: unknown) => error);
    expect(isBasaltError(refused, 'FORBIDDEN')).toBe(true);
    expect(isBasaltError(refused, 'FORBIDDEN') && refused.details?.index).toBe(1);
    await waitFor('the SDK batch handled', async () => {
      const handled = (await docs<Seen>('seen')).filter((doc) => doc.n === 60 || doc.n === 61);
      return handled.length === 2;
    });
    expect(await jobsOf([62, 600])).toBe(0);
  });

  it('takes batches sent at once, each whole, every event handled once', async () => {
    const batches = Array.from({ length: 8 }, (_, b) =>
      Array.from({ length: 25 }, (_, i) => ({ payload: { n: 2000 + b * 25 + i }, key: `c${b}` })),
    );
    const responses = await Promise.all(batches.map((events) => publishBatch(events)));
    for (const response of responses) expect(response.status, response.text).toBe(202);
    const ids = responses.flatMap((response) => (response.body as { ids: string[] }).ids);
    expect(new Set(ids).size).toBe(200);
    const seen = await waitFor(
      'every concurrent batch handled',
      async () => {
        const all = (await docs<Seen>('seen')).filter((doc) => doc.n >= 2000);
        return all.length >= 200 ? all : null;
      },
      30_000,
    );
    expect(seen).toHaveLength(200);
    expect(new Set(seen.map((doc) => doc.event_id))).toEqual(new Set(ids));
  });

  it('takes publishes sent at once right after a subscriber is deployed, never a 500', async () => {
    const deployed = await request(app.url, 'PUT', '/v1/admin/functions/freshSubscriber', {
      token: app.serviceKey,
      body: {
        files: {
          'index.ts': `import { onEvent } from 'basalt/functions';
            export default onEvent({ topic: 'batch.fresh' }, async (event, ctx) => {
              await ctx.db.collection('seen').add({ event_id: event.id, n: event.payload.n, key: null, trace_id: event.trace_id });
            });`,
        },
        entry: 'index.ts',
      },
    });
    expect(deployed.status, deployed.text).toBeLessThan(300);
    // Its queue may not exist yet: every one of these finds it missing and sets it up at once.
    const responses = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        i % 2 === 0
          ? publishBatch([{ payload: { n: 3000 + i * 2 } }, { payload: { n: 3001 + i * 2 } }], undefined, 'batch.fresh')
          : request(app.url, 'POST', '/v1/events/batch.fresh', {
              token: app.serviceKey,
              body: { payload: { n: 3000 + i * 2 } },
            }),
      ),
    );
    for (const response of responses) expect(response.status, response.text).toBe(202);
    await waitFor('every event at the new subscriber', async () => {
      const handled = (await docs<Seen>('seen')).filter((doc) => doc.n >= 3000 && doc.n < 3100);
      return handled.length >= 24;
    });
  });
});
