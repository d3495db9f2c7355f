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
  'single.ts': `
    import { http } from 'basalt/functions';
    export default http({ concurrency: 1 }, async (request) => {
      const wait = Number((request.query as Record<string, string>).wait ?? 0);
      await new Promise((resolve) => setTimeout(resolve, wait));
      return { ok: true };
    });`,
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

  it('runs the calls of a function with concurrency 1 one at a time, on one worker, each after the one before', async () => {
    const started = performance.now();
    const calls = await Promise.all(
      Array.from({ length: 6 }, () => request(app.url, 'GET', '/v1/functions/single?wait=50')),
    );
    const elapsed = performance.now() - started;
    expect(calls.map((call) => call.status)).toEqual([200, 200, 200, 200, 200, 200]);
    // One after another: six waits of 50 ms end to end. Two at once would have started a second worker, cold.
    expect(elapsed).toBeGreaterThanOrEqual(6 * 50 - 5);
    expect(await coldStarts('single')).toEqual([true, false, false, false, false, false]);
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
    expect(functions.map((fn) => fn.name).sort()).toEqual(['lazy', 'single', 'warm']);
    const reason = (file: string) => errors.find((error) => error.file.endsWith(file))?.reason;
    expect(reason('tooWarm.ts')).toMatch(/min_warm.*must not exceed.*concurrency/);
    expect(reason('negativeWarm.ts')).toMatch(/min_warm.*from 0 to 32/);
    expect(reason('zeroIdle.ts')).toMatch(/idle_timeout_s.*from 1 to 86400/);
  });
});

describe('warm capacity across deploys', () => {
  const deployed = useTestApp({ env: { BASALT_USAGE_FLUSH_INTERVAL_MS: '200' } });

  const source = (answer: string) => `
    import { http } from 'basalt/functions';
    export default http({ min_warm: 2, concurrency: 4 }, async (request) => {
      const wait = Number((request.query as Record<string, string>).wait ?? 0);
      await new Promise((resolve) => setTimeout(resolve, wait));
      return { answer: ${JSON.stringify(answer)} };
    });`;

  async function deploy(answer: string): Promise<void> {
    const response = await request(deployed.url, 'PUT', '/v1/admin/functions/versioned', {
      token: deployed.serviceKey,
      body: { files: { 'index.ts': source(answer) }, entry: 'index.ts' },
    });
    expect(response.status, response.text).toBe(201);
  }

  async function gauge(): Promise<number> {
    const response = await request(deployed.url, 'GET', '/metrics', { token: deployed.serviceKey });
    const line = response.text
      .split('\n')
      .find((text) => text.startsWith('basalt_function_warm_workers{function="versioned"}'));
    return line ? Number(line.split(' ').at(-1)) : 0;
  }

  async function lastColdStart(): Promise<boolean | undefined> {
    const response = await request(deployed.url, 'GET', '/v1/admin/functions/versioned/invocations', {
      token: deployed.serviceKey,
    });
    return (response.body as { invocations: Array<{ cold_start: boolean }> }).invocations[0]?.cold_start;
  }

  it('keeps min_warm workers for the active version only, through a deploy and a rollback', async () => {
    await deploy('one');
    await waitFor('v1 provisioned', async () => (await gauge()) === 2);

    // A run of v1 is in flight while v2 is deployed: v1's idle worker ends at once, the
    // running one when its run ends; v2's two are provisioned.
    const inFlight = request(deployed.url, 'GET', '/v1/functions/versioned?wait=1500');
    await new Promise((resolve) => setTimeout(resolve, 300));
    await deploy('two');
    await waitFor('v2 provisioned beside the running v1 worker', async () => (await gauge()) === 3, 5000, 50);
    expect((await inFlight).body).toEqual({ answer: 'one' });
    await waitFor('only v2 workers left', async () => (await gauge()) === 2, 5000, 50);

    const second = await request(deployed.url, 'GET', '/v1/functions/versioned');
    expect(second.body).toEqual({ answer: 'two' });
    expect(await lastColdStart()).toBe(false);

    const rolled = await request(deployed.url, 'POST', '/v1/admin/functions/versioned/rollback', {
      token: deployed.serviceKey,
      body: { version: 1 },
    });
    expect(rolled.status, rolled.text).toBe(200);
    await waitFor('v1 provisioned again', async () => (await gauge()) === 2, 5000, 50);
    const back = await request(deployed.url, 'GET', '/v1/functions/versioned');
    expect(back.body).toEqual({ answer: 'one' });
    expect(await lastColdStart()).toBe(false);

    // The usage meter counts the deployed function's runs by its name, across versions.
    const hour = 3_600_000;
    const from = new Date(Math.floor(Date.now() / hour) * hour - hour).toISOString();
    const to = new Date(Math.floor(Date.now() / hour) * hour + 2 * hour).toISOString();
    await waitFor('the runs metered', async () => {
      const usage = await request(deployed.url, 'GET', `/v1/admin/usage?from=${from}&to=${to}&granularity=hour`, {
        token: deployed.serviceKey,
      });
      const buckets = (usage.body as { buckets: Array<{ functions: Record<string, { invocations: number }> }> })
        .buckets;
      return buckets.reduce((sum, bucket) => sum + (bucket.functions.versioned?.invocations ?? 0), 0) === 3;
    });
  });
});
