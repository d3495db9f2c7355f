import { beforeAll, describe, expect, it } from 'vitest';
import { createCollection, request, useTestApp, waitFor, type TestApp } from './helpers.js';

/**
 * A trace through a publish (docs/tracing.md): an HTTP function publishes with ctx.events,
 * and each subscriber's run joins the HTTP run's trace with it as parent; the event carries
 * the trace id too. A publish from outside any function starts a trace of its own, which the
 * subscribers share.
 */
const subscriber = (name: string) => `
  import { onEvent } from 'basalt/functions';
  export default onEvent({ topic: 'orders.placed' }, async (event, ctx) => {
    await ctx.db.collection('seen').add({ fn: '${name}', ctx_trace: ctx.trace_id, event_trace: event.trace_id });
  });`;

const FILES: Record<string, string> = {
  'announce.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request, ctx) => {
      await ctx.events.publish('orders.placed', { item: 'lamp' });
      return { trace_id: ctx.trace_id };
    });`,
  'packer.ts': subscriber('packer'),
  'mailer.ts': subscriber('mailer'),
};

interface TraceRun {
  id: string;
  function: string;
  trigger: string;
  status: string;
  parent_invocation_id: string | null;
  depth: number;
}

async function traceOf(app: TestApp, traceId: string, count: number): Promise<TraceRun[]> {
  return waitFor(`${count} runs in trace ${traceId}`, async () => {
    const response = await request(app.url, 'GET', `/v1/admin/traces/${traceId}`, { token: app.serviceKey });
    if (response.status !== 200) return undefined;
    const runs = (response.body as { invocations: TraceRun[] }).invocations;
    return runs.length >= count ? runs : undefined;
  });
}

async function seen(app: TestApp): Promise<Array<{ fn: string; ctx_trace: string; event_trace: string }>> {
  const response = await request(app.url, 'POST', '/v1/db/seen/query', { token: app.serviceKey, body: {} });
  return (response.body as { docs: Array<{ data: { fn: string; ctx_trace: string; event_trace: string } }> }).docs.map(
    (doc) => doc.data,
  );
}

const app = useTestApp({ functions: FILES });
beforeAll(() => createCollection(app, { name: 'seen' }));

describe('a trace through a publish', () => {
  it('runs from an HTTP function through a publish to two subscribers, each naming it as parent', async () => {
    const called = await request(app.url, 'POST', '/v1/functions/announce', { token: app.serviceKey, body: {} });
    expect(called.status, called.text).toBe(200);
    const { trace_id: traceId } = called.body as { trace_id: string };

    const runs = await traceOf(app, traceId, 3);
    expect(runs).toHaveLength(3);
    const [root, ...subscribers] = runs;
    expect(root).toMatchObject({ function: 'announce', trigger: 'http', parent_invocation_id: null, depth: 0 });
    expect(subscribers.map((run) => run.function).sort()).toEqual(['mailer', 'packer']);
    for (const run of subscribers) {
      expect(run).toMatchObject({ parent_invocation_id: root?.id, depth: 1, status: 'succeeded' });
    }
    // The handlers saw the trace as ctx.trace_id and on the event.
    const mine = (await seen(app)).filter((doc) => doc.ctx_trace === traceId);
    expect(mine.map((doc) => doc.fn).sort()).toEqual(['mailer', 'packer']);
    for (const doc of mine) expect(doc.event_trace).toBe(traceId);
  });

  it('starts a trace for a publish made outside any function, shared by its subscribers', async () => {
    const before = new Set((await seen(app)).map((doc) => doc.ctx_trace));
    const published = await request(app.url, 'POST', '/v1/events/orders.placed', {
      token: app.serviceKey,
      body: { payload: { item: 'desk' } },
    });
    expect(published.status, published.text).toBe(202);
    const traceId = await waitFor('both subscribers of the outside publish', async () => {
      const fresh = (await seen(app)).filter((doc) => !before.has(doc.ctx_trace));
      return fresh.length === 2 && fresh[0]?.ctx_trace === fresh[1]?.ctx_trace ? fresh[0]?.event_trace : undefined;
    });
    const runs = await traceOf(app, traceId, 2);
    expect(runs.map((run) => [run.parent_invocation_id, run.depth])).toEqual([
      [null, 0],
      [null, 0],
    ]);
  });
});
