import { describe, expect, it } from 'vitest';
import { wakePayloads } from '../server/modules/functions/queue-wake.js';
import { request, useTestApp, waitFor } from './helpers.js';

/**
 * A job sent on one instance wakes the queue runners of the others at once (pg_notify), so
 * an event published through an API-only instance does not wait for the worker's poll,
 * which an idle queue stretches to 15 s.
 */

const api = useTestApp({
  functions: {
    'woken.ts': `import { onEvent } from 'basalt/functions';
     export default onEvent({ topic: 'wake.me' }, async () => {});`,
  },
  env: { BASALT_ROLES: 'api' },
});
const worker = useTestApp({ sharing: api, env: { BASALT_ROLES: 'worker' } });

async function ranEventIds(): Promise<string[]> {
  const response = await request(api.url, 'GET', '/v1/admin/functions/woken/invocations', { token: api.serviceKey });
  expect(response.status).toBe(200);
  return (response.body as { invocations: Array<{ event_id: string | null }> }).invocations.flatMap((run) =>
    run.event_id ? [run.event_id] : [],
  );
}

describe('waking other instances', () => {
  it('runs an event published through an API-only instance on the idle worker without waiting for its poll', async () => {
    expect((await fetch(`${worker.url}/readyz`)).status).toBe(200);
    // The worker's empty queue is polled at 2 s, then 4, 8 and 15 s apart: after this, its
    // next poll is seconds away, and each publish below would wait for it.
    await new Promise((resolve) => setTimeout(resolve, 7_000));
    const delays: number[] = [];
    for (let round = 0; round < 3; round++) {
      const sent = performance.now();
      const published = await request(api.url, 'POST', '/v1/events/wake.me', {
        token: api.serviceKey,
        body: { payload: { round } },
      });
      expect(published.status).toBe(202);
      const id = (published.body as { id: string }).id;
      await waitFor(`event ${round} to run`, async () => (await ranEventIds()).includes(id), 20_000, 25);
      delays.push(performance.now() - sent);
      await new Promise((resolve) => setTimeout(resolve, 2_500));
    }
    // Without the wake-up the three would have waited for polls seconds apart.
    expect(Math.max(...delays)).toBeLessThan(1_500);
  });
});

describe('wakePayloads', () => {
  it('splits many queues into notifications under the pg_notify limit, losing none', () => {
    const queues = Array.from({ length: 400 }, (_, i) => `fn_${'x'.repeat(40)}_${i}`);
    const payloads = wakePayloads('instance-1', queues);
    expect(payloads.length).toBeGreaterThan(1);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8_000);
    const carried = payloads.flatMap((payload) => (JSON.parse(payload) as { queues: string[] }).queues);
    expect(carried).toEqual(queues);
    expect(payloads.every((payload) => (JSON.parse(payload) as { from: string }).from === 'instance-1')).toBe(true);
  });
});
