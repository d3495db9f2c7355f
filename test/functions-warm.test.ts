import { describe, expect, it } from 'vitest';
import { request, useTestApp, waitFor } from './helpers.js';

const FILES: Record<string, string> = {
  'warm.ts': `
    import { http } from 'basalt/functions';
    export default http({ min_warm: 2, concurrency: 4, idle_timeout_s: 1 }, async (request) => {
      const wait = Number((request.query as Record<string, string>).wait ?? 0);
      await new Promise((resolve) => setTimeout(resolve, wait));
      return { ok: true };
    });`,
  'lazy.ts': `
    import { http } from 'basalt/functions';
    export default http({ idle_timeout_s: 1 }, async () => ({ lazy: true }));`,
  'tooWarm.ts': `
    import { http } from 'basalt/functions';
    export default http({ min_warm: 3, concurrency: 2 }, async () => 1);`,
  'negativeWarm.ts': `
    import { http } from 'basalt/functions';
    export default http({ min_warm: -1 }, async () => 1);`,
  'zeroIdle.ts': `
    import { http } from 'basalt/functions';
    export default http({ idle_timeout_s: 0 }, async () => 1);`,
};

const app = useTestApp({ functions: FILES });

/** basalt_function_warm_workers of a function, from /metrics; 0 when the line is absent. */
async function warmWorkers(name: string): Promise<number> {
  const response = await request(app.url, 'GET', '/metrics', { token: app.serviceKey });
  expect(response.status).toBe(200);
  const line = response.text
    .split('\n')
    .find((text) => text.startsWith(`basalt_function_warm_workers{function="${name}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

async function coldStarts(name: string): Promise<boolean[]> {
  const response = await request(app.url, 'GET', `/v1/admin/functions/${name}/invocations`, {
    token: app.serviceKey,
  });
  expect(response.status).toBe(200);
  // Newest first: oldest first here.
  return (response.body as { invocations: Array<{ cold_start: boolean }> }).invocations
    .map((invocation) => invocation.cold_start)
    .reverse();
}

describe('warm capacity', () => {
  it('starts min_warm workers with no call, and the first call is warm', async () => {
    await waitFor('the provisioned workers', async () => (await warmWorkers('warm')) === 2);
    // Functions without min_warm have no worker until called.
    expect(await warmWorkers('lazy')).toBe(0);
    expect((await request(app.url, 'GET', '/v1/functions/warm')).status).toBe(200);
    expect(await coldStarts('warm')).toEqual([false]);
  });

  it('reaps the workers above min_warm after idle_timeout_s, never the provisioned ones', async () => {
    // Three at once: two provisioned workers and one started for the burst.
    const calls = await Promise.all([1, 2, 3].map(() => request(app.url, 'GET', '/v1/functions/warm?wait=300')));
    expect(calls.map((call) => call.status)).toEqual([200, 200, 200]);
    expect(await warmWorkers('warm')).toBe(3);
    await waitFor('the burst worker to end', async () => (await warmWorkers('warm')) === 2, 5000, 100);
    // Well past the idle timeout, the provisioned two are still there.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await warmWorkers('warm')).toBe(2);
  });

  it('scales a function without min_warm to zero, and a later call cold-starts and works', async () => {
    const first = await request(app.url, 'GET', '/v1/functions/lazy');
    expect(first.body).toEqual({ lazy: true });
    expect(await warmWorkers('lazy')).toBe(1);
    const started = Date.now();
    await waitFor('the idle worker to end', async () => (await warmWorkers('lazy')) === 0, 5000, 100);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    const again = await request(app.url, 'GET', '/v1/functions/lazy');
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ lazy: true });
    expect(await coldStarts('lazy')).toEqual([true, true]);
  });

  it('refuses out-of-range warm options at load, naming the file', async () => {
    const response = await request(app.url, 'GET', '/v1/admin/functions', { token: app.serviceKey });
    const { functions, errors } = response.body as {
      functions: Array<{ name: string }>;
      errors: Array<{ file: string; reason: string }>;
    };
    expect(functions.map((fn) => fn.name).sort()).toEqual(['lazy', 'warm']);
    const reason = (file: string) => errors.find((error) => error.file.endsWith(file))?.reason;
    expect(reason('tooWarm.ts')).toMatch(/min_warm.*must not exceed.*concurrency/);
    expect(reason('negativeWarm.ts')).toMatch(/min_warm.*from 0 to 32/);
    expect(reason('zeroIdle.ts')).toMatch(/idle_timeout_s.*from 1 to 86400/);
  });
});
