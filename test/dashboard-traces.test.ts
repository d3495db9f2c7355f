import { beforeAll, describe, expect, it } from 'vitest';
import { haveBrowser } from '../client-sdk/test/browser-support.js';
import { ensureDashboard } from '../scripts/dashboard-build.js';
import { signInToDashboard, useDashboardPage } from './dashboard-support.js';
import { createCollection, request, useTestApp, waitFor } from './helpers.js';

/**
 * The trace view in Debian's chromium: from a run in a function's invocation log to its
 * trace, drawn as a tree (HTTP call → the trigger of its write → the trigger of that one's
 * write) with a duration and a timeline bar per run.
 */
describe.skipIf(!haveBrowser)('the trace view in chromium', () => {
  beforeAll(async () => {
    await ensureDashboard();
  });
  const app = useTestApp({
    functions: {
      'order.ts': `import { http } from 'basalt/functions';
        export default http(async (request, ctx) => {
          await ctx.db.collection('orders').add({ item: 'lamp' });
          return { trace_id: ctx.trace_id };
        });`,
      'ship.ts': `import { onDocument } from 'basalt/functions';
        export default onDocument({ collection: 'orders', on: 'create' }, async (event, ctx) => {
          await new Promise((resolve) => setTimeout(resolve, 30));
          await ctx.db.collection('shipments').add({ order: event.after.id });
        });`,
      'notify.ts': `import { onDocument } from 'basalt/functions';
        export default onDocument({ collection: 'shipments', on: 'create' }, async () => {});`,
    },
  });
  beforeAll(async () => {
    await createCollection(app, { name: 'orders' });
    await createCollection(app, { name: 'shipments' });
  });
  const browser = useDashboardPage();

  it('links a run of the invocation log to its trace, drawn as a tree with durations', async () => {
    const { page, errors: pageErrors } = browser;
    const called = await request(app.url, 'POST', '/v1/functions/order', { token: app.serviceKey, body: {} });
    expect(called.status).toBe(200);
    const { trace_id: traceId } = called.body as { trace_id: string };
    await waitFor('the whole trace', async () => {
      const trace = await request(app.url, 'GET', `/v1/admin/traces/${traceId}`, { token: app.serviceKey });
      return trace.status === 200 && (trace.body as { invocations: unknown[] }).invocations.length === 3;
    });

    await signInToDashboard(page, app.url, app.serviceKey);
    await page.click('a[data-nav=functions]');
    await page.click('a:text-is("order")');
    await page.waitForSelector(`#invocations a[data-trace="${traceId}"]`);
    await page.click(`#invocations a[data-trace="${traceId}"]`);
    await page.waitForSelector('#trace tr[data-trace-run]');
    expect(page.url()).toContain(`/_/traces/${traceId}`);
    expect(await page.textContent('#trace-id')).toBe(traceId);

    const rows = page.locator('#trace tr[data-trace-run]');
    expect(await rows.count()).toBe(3);
    // Tree order and depth: the HTTP call, the trigger of its write, and the trigger of that one's.
    const drawn = await rows.evaluateAll((trs) =>
      trs.map((tr) => ({
        fn: tr.querySelector('[data-function]')?.textContent,
        depth: tr.getAttribute('data-depth'),
        duration: Number(tr.querySelector('[data-duration]')?.getAttribute('data-duration')),
        bar: (tr.querySelector('.trace-bar') as HTMLElement | null)?.getBoundingClientRect().width ?? 0,
      })),
    );
    expect(drawn.map(({ fn, depth }) => [fn, depth])).toEqual([
      ['order', '0'],
      ['ship', '1'],
      ['notify', '2'],
    ]);
    expect(await rows.nth(1).textContent()).toContain('document.create');
    expect(drawn[1]?.duration).toBeGreaterThanOrEqual(25);
    // The slow trigger's bar is wider than the quick one's.
    expect(drawn[1]?.bar ?? 0).toBeGreaterThan(drawn[2]?.bar ?? 0);

    // A function's name leads back to its page.
    await rows.nth(2).locator('a[data-function]').click();
    await page.waitForSelector('h2:text("Invocations of notify")');
    expect(pageErrors).toEqual([]);
  });
});
