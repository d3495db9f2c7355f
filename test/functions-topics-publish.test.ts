import { beforeAll, describe, expect, it } from 'vitest';
import { createCollection, request, useTestApp, waitFor } from './helpers.js';

/**
 * A publish is one statement checked against the live subscribers: a subscriber deployed or
 * undeployed after the last publish is seen by the next one. And a dead batch, retried, goes
 * back to its queue whole.
 */

const handled = (fn: string) => `
    await ctx.db.collection('handled').add({ fn: '${fn}', event_id: event.id, n: event.payload.n });`;

const subscriber = (fn: string) => `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'late.topic' }, async (event, ctx) => {${handled(fn)}
    });`;

const FILES: Record<string, string> = {
  'early.ts': subscriber('early'),
  // Fails while the switch is off; with no retry, its batch goes straight to the dead letters.
  'batchDies.ts': `
    import { onEvent } from 'basalt/functions';
    export default onEvent({ topic: 'batch.dies', batch_size: 10, retries: 0 }, async (events, ctx) => {
      const on = await ctx.db.collection('switch').doc('on').get();
      if (!on) throw new Error('switched off');
      for (const event of events) {${handled('batchDies')}
      }
    });`,
};

const app = useTestApp({ functions: FILES });
beforeAll(async () => {
  for (const name of ['handled', 'switch']) await createCollection(app, { name });
});

async function published(topic: string, body: Record<string, unknown>): Promise<string> {
  const response = await request(app.url, 'POST', `/v1/events/${topic}`, { token: app.serviceKey, body });
  expect(response.status, response.text).toBe(202);
  return (response.body as { id: string }).id;
}

async function handledBy(fn: string): Promise<Array<{ event_id: string; n: number }>> {
  const response = await request(app.url, 'POST', '/v1/db/handled/query', {
    token: app.serviceKey,
    body: { where: [['fn', '==', fn]], limit: 1000 },
  });
  expect(response.status).toBe(200);
  return (response.body as { docs: Array<{ data: { event_id: string; n: number } }> }).docs.map((doc) => doc.data);
}

interface Invocation {
  id: string;
  status: string;
  event_id: string;
}

async function invocationsOf(name: string): Promise<Invocation[]> {
  const response = await request(app.url, 'GET', `/v1/admin/functions/${name}/invocations?limit=1000`, {
    token: app.serviceKey,
  });
  expect(response.status).toBe(200);
  return (response.body as { invocations: Invocation[] }).invocations;
}

async function deploy(name: string, source: string): Promise<void> {
  const response = await request(app.url, 'PUT', `/v1/admin/functions/${name}`, {
    token: app.serviceKey,
    body: { files: { 'index.ts': source }, entry: 'index.ts' },
  });
  expect(response.status, response.text).toBeLessThan(300);
}

describe('publishing to the live subscribers', () => {
  it('reaches a subscriber deployed after the last publish, and no longer one undeployed', async () => {
    const first = await published('late.topic', { payload: { n: 1 } });
    await waitFor('the first event handled', async () => ((await handledBy('early')).length >= 1 ? true : null));

    await deploy('late', subscriber('late'));
    const second = await published('late.topic', { payload: { n: 2 } });
    const late = await waitFor('the second event at the new subscriber', async () => {
      const all = await handledBy('late');
      return all.length >= 1 ? all : null;
    });
    await waitFor('the second event at the first subscriber', async () =>
      (await handledBy('early')).length >= 2 ? true : null,
    );
    // The new subscriber gets what is published after it is live, not what was before.
    expect(late.map((each) => each.event_id)).toEqual([second]);
    expect((await handledBy('early')).map((each) => each.event_id).sort()).toEqual([first, second].sort());

    const undeployed = await request(app.url, 'DELETE', '/v1/admin/functions/late', { token: app.serviceKey });
    expect(undeployed.status, undeployed.text).toBeLessThan(300);
    const third = await published('late.topic', { payload: { n: 3 } });
    await waitFor('the third event handled', async () => ((await handledBy('early')).length >= 3 ? true : null));
    expect((await handledBy('late')).map((each) => each.event_id)).toEqual([second]);
    expect((await invocationsOf('late')).some((run) => run.event_id === third)).toBe(false);
  });

  it('retries every event of a dead batch, not only its first', async () => {
    // Delayed by a second, so all of them come due together and are taken as one batch.
    const ids = await Promise.all(
      Array.from({ length: 4 }, (_, n) => published('batch.dies', { payload: { n }, delay_seconds: 1 })),
    );
    const dead = await waitFor('the batch dead-lettered', async () => {
      const all = await invocationsOf('batchDies');
      const deadRuns = all.filter((run) => run.status === 'dead');
      // Each event is in exactly one dead run: all dead runs together cover the four.
      return deadRuns.length > 0 && all.length === deadRuns.length && deadRuns.length < 4 ? deadRuns : null;
    });
    // Give any other batch time to die too, then retry every dead run.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const allDead = (await invocationsOf('batchDies')).filter((run) => run.status === 'dead');
    expect(allDead.length).toBeGreaterThanOrEqual(dead.length);
    expect(allDead.length).toBeLessThan(ids.length);

    const switched = await request(app.url, 'PUT', '/v1/db/switch/on', { token: app.serviceKey, body: { data: {} } });
    expect(switched.status, switched.text).toBeLessThan(300);
    for (const run of allDead) {
      const retried = await request(app.url, 'POST', `/v1/admin/invocations/${run.id}/retry`, {
        token: app.serviceKey,
      });
      expect(retried.status, retried.text).toBe(200);
    }
    const done = await waitFor('every event of the batch handled', async () => {
      const all = await handledBy('batchDies');
      return all.length >= ids.length ? all : null;
    });
    expect(done.map((each) => each.event_id).sort()).toEqual([...ids].sort());
  });
});
