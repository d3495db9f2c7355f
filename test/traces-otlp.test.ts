import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCollection, request, useTestApp, waitFor } from './helpers.js';

/**
 * OTLP export (docs/tracing.md): with OTEL_EXPORTER_OTLP_ENDPOINT set, every run is a span
 * sent over OTLP/HTTP as JSON, child of its parent invocation's span (or of the caller's
 * span from a traceparent). The collector here is a stand-in that records what it gets;
 * while it is down, calls go on as fast as ever and the server keeps serving.
 */

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
  status?: { code?: number };
}

interface OtlpBody {
  resourceSpans: Array<{
    resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
    scopeSpans: Array<{ spans: OtlpSpan[] }>;
  }>;
}

const received: Array<{ contentType: string | undefined; body: OtlpBody }> = [];
let collector: Server;
let collectorPort = 0;

function startCollector(port = 0): Promise<void> {
  collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') {
        received.push({
          contentType: req.headers['content-type'],
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpBody,
        });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  return new Promise((resolve) =>
    collector.listen(port, '127.0.0.1', () => {
      collectorPort = (collector.address() as AddressInfo).port;
      resolve();
    }),
  );
}

function stopCollector(): Promise<void> {
  return new Promise((resolve) => {
    collector.closeAllConnections();
    collector.close(() => resolve());
  });
}

function spans(): OtlpSpan[] {
  return received.flatMap(({ body }) => body.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));
}

function attribute(span: OtlpSpan, key: string): unknown {
  const value = span.attributes.find((entry) => entry.key === key)?.value;
  return value ? Object.values(value)[0] : undefined;
}

const FILES: Record<string, string> = {
  'checkout.ts': `
    import { http } from 'basalt/functions';
    export default http(async (request, ctx) => {
      await ctx.db.collection('carts').add({ paid: true });
      return { trace_id: ctx.trace_id };
    });`,
  'onCart.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'carts', on: 'create' }, async () => {
      throw new Error('no stock');
    });`,
};

beforeAll(() => startCollector());
afterAll(() => stopCollector());

const app = useTestApp({
  functions: FILES,
  env: () => ({
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collectorPort}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_SERVICE_NAME: 'shop-backend',
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_EXPORTER_OTLP_TIMEOUT: '1000',
  }),
});
beforeAll(() => createCollection(app, { name: 'carts' }));

describe('OTLP export', () => {
  it('sends a span per run, linked to its parent, with the trace of the caller', async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const callerSpan = 'b7ad6b7169203331';
    const called = await request(app.url, 'POST', '/v1/functions/checkout', {
      token: app.serviceKey,
      body: {},
      headers: { traceparent: `00-${traceId}-${callerSpan}-01` },
    });
    expect(called.status).toBe(200);
    const [root, child] = await waitFor('both spans at the collector', () => {
      const mine = spans().filter((span) => span.traceId === traceId);
      const http = mine.find((span) => span.name === 'checkout');
      const trigger = mine.find((span) => span.name === 'onCart');
      return http && trigger ? [http, trigger] : undefined;
    });
    expect(received[0]?.contentType).toContain('application/json');
    expect(root?.parentSpanId).toBe(callerSpan);
    expect(child?.parentSpanId).toBe(root?.spanId);
    expect(root?.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(attribute(root as OtlpSpan, 'basalt.trigger')).toBe('http');
    expect(attribute(root as OtlpSpan, 'basalt.status')).toBe('succeeded');
    expect(attribute(child as OtlpSpan, 'basalt.function')).toBe('onCart');
    expect(attribute(child as OtlpSpan, 'basalt.trigger')).toBe('document.create');
    expect(attribute(child as OtlpSpan, 'basalt.status')).toMatch(/failed|dead/);
    expect(child?.status?.code).toBe(2); // ERROR
    const service = received[0]?.body.resourceSpans[0]?.resource.attributes.find(
      (entry) => entry.key === 'service.name',
    );
    expect(service?.value.stringValue).toBe('shop-backend');

    // The span ids are the invocations': the trace API and the collector agree.
    const tree = await request(app.url, 'GET', `/v1/admin/traces/${traceId}`, { token: app.serviceKey });
    const runs = (tree.body as { invocations: Array<{ id: string; function: string }> }).invocations;
    const checkoutRun = runs.find((run) => run.function === 'checkout');
    expect(attribute(root as OtlpSpan, 'basalt.invocation_id')).toBe(checkoutRun?.id);
  });

  it('keeps serving at full speed while the collector is down, and exports again once it is back', async () => {
    const port = collectorPort;
    await stopCollector();
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      const called = await request(app.url, 'POST', '/v1/functions/checkout', { token: app.serviceKey, body: {} });
      expect(called.status).toBe(200);
    }
    // Twenty calls, none waiting on an export (each export waits up to its 1 s timeout).
    expect(performance.now() - started).toBeLessThan(5_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const health = await request(app.url, 'GET', '/healthz');
    expect(health.status).toBe(200);

    await startCollector(port);
    const after = await request(app.url, 'POST', '/v1/functions/checkout', { token: app.serviceKey, body: {} });
    const { trace_id: traceId } = after.body as { trace_id: string };
    await waitFor('a span after the collector came back', () =>
      spans().find((span) => span.traceId === traceId && span.name === 'checkout'),
    );
  });
});
