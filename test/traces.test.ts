import { beforeAll, describe, expect, it } from 'vitest';
import { createBucket, createCollection, errorCode, request, useTestApp, waitFor, type TestApp } from './helpers.js';

/**
 * Traces across functions (docs/tracing.md): an HTTP function's writes (ctx.db, ctx.asCaller.db)
 * and uploads (ctx.storage) carry its trace through the change log and the job queue, so the
 * triggers they fire share the trace and name it as parent; a trigger's own writes go one
 * level deeper. GET /v1/admin/traces/:trace_id returns the tree.
 */
const FILES: Record<string, string> = {
  'placeOrder.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request, ctx) => {
      const order = await ctx.db.collection('orders').add({ item: 'lamp' });
      await ctx.asCaller.db.collection('audit').add({ order: order.id });
      await ctx.storage.from('receipts').upload(order.id + '.txt', 'receipt');
      return { trace_id: ctx.trace_id, order: order.id };
    });`,
  'onOrder.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'orders', on: 'create' }, async (event, ctx) => {
      await ctx.db.collection('shipments').add({ order: event.after.id, trace: ctx.trace_id });
    });`,
  'onShipment.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'shipments', on: 'create' }, async (event, ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      await ctx.db.collection('notices').add({ shipment: event.after.id, trace: ctx.trace_id });
    });`,
  'onAudit.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'audit', on: 'create' }, async () => {});`,
  'onReceipt.ts': `
    import { onObject } from 'basalt/functions';
    export default onObject({ bucket: 'receipts', on: 'upload' }, async () => {});`,
};

interface TraceRun {
  id: string;
  function: string;
  trigger: string;
  status: string;
  parent_invocation_id: string | null;
  started_at: string;
  duration_ms: number;
  depth: number;
}

async function trace(app: TestApp, traceId: string) {
  return request(app.url, 'GET', `/v1/admin/traces/${traceId}`, { token: app.serviceKey });
}

/** The trace once it holds `count` runs (triggers run after the HTTP call answered). */
async function traceOf(app: TestApp, traceId: string, count: number): Promise<TraceRun[]> {
  return waitFor(`${count} runs in trace ${traceId}`, async () => {
    const response = await trace(app, traceId);
    if (response.status !== 200) return undefined;
    const runs = (response.body as { invocations: TraceRun[] }).invocations;
    return runs.length >= count ? runs : undefined;
  });
}

const app = useTestApp({ functions: FILES });
beforeAll(async () => {
  for (const name of ['orders', 'audit', 'shipments', 'notices']) await createCollection(app, { name });
  await createBucket(app, { name: 'receipts' });
});

describe('traces', () => {
  it('follows an HTTP call through its writes and upload to the triggers they fire, and theirs', async () => {
    const called = await request(app.url, 'POST', '/v1/functions/placeOrder', { token: app.serviceKey, body: {} });
    expect(called.status).toBe(200);
    const { trace_id: traceId } = called.body as { trace_id: string };
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);

    const runs = await traceOf(app, traceId, 5);
    expect(runs).toHaveLength(5);
    const byName = new Map(runs.map((run) => [run.function, run]));
    const root = byName.get('placeOrder');
    expect(root).toMatchObject({ trigger: 'http', status: 'succeeded', parent_invocation_id: null, depth: 0 });
    expect(runs[0]?.id).toBe(root?.id);
    // ctx.db, ctx.asCaller.db and ctx.storage writes each carried the HTTP run as parent.
    for (const name of ['onOrder', 'onAudit', 'onReceipt']) {
      expect(byName.get(name)).toMatchObject({ parent_invocation_id: root?.id, depth: 1, status: 'succeeded' });
    }
    expect(byName.get('onReceipt')?.trigger).toBe('object.upload');
    // The trigger's own write: one level deeper, listed right after its parent (tree order).
    const onOrder = byName.get('onOrder');
    const onShipment = byName.get('onShipment');
    expect(onShipment).toMatchObject({ trigger: 'document.create', parent_invocation_id: onOrder?.id, depth: 2 });
    expect(runs.indexOf(onShipment as TraceRun)).toBe(runs.indexOf(onOrder as TraceRun) + 1);
    expect(onShipment?.duration_ms).toBeGreaterThanOrEqual(15);
    expect(Date.parse(onShipment?.started_at ?? '')).toBeGreaterThanOrEqual(Date.parse(root?.started_at ?? ''));

    // The handlers saw the same trace id as ctx.trace_id.
    const notices = await request(app.url, 'POST', '/v1/db/notices/query', { token: app.serviceKey, body: {} });
    const traces = (notices.body as { docs: Array<{ data: { trace: string } }> }).docs.map((doc) => doc.data.trace);
    expect(traces).toContain(traceId);

    // The invocation list shows the trace fields too.
    const listed = await request(app.url, 'GET', '/v1/admin/functions/onShipment/invocations', {
      token: app.serviceKey,
    });
    const mine = (listed.body as { invocations: Array<Record<string, unknown>> }).invocations.find(
      (run) => run.id === onShipment?.id,
    );
    expect(mine).toMatchObject({ trace_id: traceId, parent_invocation_id: onOrder?.id });
  });

  it('starts a new trace for a write made outside any function', async () => {
    const created = await request(app.url, 'POST', '/v1/db/shipments', {
      token: app.serviceKey,
      body: { data: { order: 'manual' } },
    });
    expect(created.status).toBe(201);
    const id = (created.body as { id: string }).id;
    const run = await waitFor('the trigger of the manual write', async () => {
      const listed = await request(app.url, 'GET', '/v1/admin/functions/onShipment/invocations', {
        token: app.serviceKey,
      });
      const runs = (listed.body as { invocations: Array<{ id: string; trace_id: string; event_id: string }> })
        .invocations;
      const notices = await request(app.url, 'POST', '/v1/db/notices/query', {
        token: app.serviceKey,
        body: { where: [['shipment', '==', id]] },
      });
      const notice = (notices.body as { docs: Array<{ data: { trace: string } }> }).docs[0];
      return notice ? runs.find((candidate) => candidate.trace_id === notice.data.trace) : undefined;
    });
    const runs = await traceOf(app, run.trace_id, 1);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ function: 'onShipment', parent_invocation_id: null, depth: 0 });
  });

  it('continues the trace of a W3C traceparent header', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const called = await request(app.url, 'POST', '/v1/functions/placeOrder', {
      token: app.serviceKey,
      body: {},
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect((called.body as { trace_id: string }).trace_id).toBe(traceId);
    const runs = await traceOf(app, traceId, 5);
    expect(runs[0]).toMatchObject({ function: 'placeOrder', parent_invocation_id: null });

    // A malformed header starts a trace of its own.
    const malformed = await request(app.url, 'POST', '/v1/functions/placeOrder', {
      token: app.serviceKey,
      body: {},
      headers: { traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` },
    });
    expect((malformed.body as { trace_id: string }).trace_id).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
  });

  it('answers 400 for a malformed trace id and 404 for an unknown one', async () => {
    for (const bad of ['xyz', '0'.repeat(32), 'A'.repeat(32), 'a'.repeat(31)]) {
      const response = await trace(app, bad);
      expect(response.status).toBe(400);
      expect(errorCode(response.body)).toBe('INVALID_REQUEST');
    }
    const unknown = await trace(app, 'a'.repeat(32));
    expect(unknown.status).toBe(404);
    expect(errorCode(unknown.body)).toBe('NOT_FOUND');
  });
});
