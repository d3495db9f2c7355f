import { describe, expect, it } from 'vitest';
import { request, useTestApp, type TestApp } from './helpers.js';

/** A cron schedule runs once per tick however many instances are up. */

const first = useTestApp({
  functions: {
    'everyMinute.ts': `import { schedule } from 'basalt/functions';
     export default schedule({ cron: '* * * * *' }, async (event, ctx) => { ctx.log.info('tick ' + event.id); });`,
  },
});
// A second instance on the same database: it must not run the ticks the first runs.
useTestApp({ sharing: first });

interface Invocation {
  status: string;
  trigger: string;
  event_id: string;
  started_at: string;
}

async function invocations(app: TestApp): Promise<Invocation[]> {
  const response = await request(app.url, 'GET', '/v1/admin/functions/everyMinute/invocations', {
    token: app.serviceKey,
  });
  return (response.body as { invocations: Invocation[] }).invocations;
}

describe('schedules', () => {
  it('runs each tick exactly once across two instances', { timeout: 150_000 }, async () => {
    const deadline = Date.now() + 130_000;
    let runs: Invocation[] = [];
    while (Date.now() < deadline) {
      runs = await invocations(first);
      if (runs.length > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(runs.length).toBeGreaterThan(0);
    // Both instances watch the schedule; give the other one time to (wrongly) run it too.
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    runs = await invocations(first);
    // One run per minute: a second instance running the same tick would add a run in that minute.
    const perMinute = new Map<string, number>();
    for (const run of runs) {
      const minute = run.started_at.slice(0, 16);
      perMinute.set(minute, (perMinute.get(minute) ?? 0) + 1);
    }
    expect([...perMinute.values()].every((count) => count === 1)).toBe(true);
    expect(new Set(runs.map((run) => run.event_id)).size).toBe(runs.length);
    expect(runs.every((run) => run.trigger === 'schedule' && run.status === 'succeeded')).toBe(true);
  });
});
