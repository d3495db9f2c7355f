import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, request, startTestApp, type TestApp, type TestDatabase } from './helpers.js';

/** A cron schedule runs once per tick however many instances are up. */

let database: TestDatabase;
let first: TestApp;
let second: TestApp;
let functionsDir: string;

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

beforeAll(async () => {
  functionsDir = await mkdtemp(path.join(tmpdir(), 'basalt-schedule-'));
  await writeFile(
    path.join(functionsDir, 'everyMinute.ts'),
    `import { schedule } from 'basalt/functions';
     export default schedule({ cron: '* * * * *' }, async (event, ctx) => { ctx.log.info('tick ' + event.id); });`,
  );
  database = await createTestDatabase();
  first = await startTestApp(database, { BASALT_FUNCTIONS_DIR: functionsDir });
  second = await startTestApp(database, { BASALT_FUNCTIONS_DIR: functionsDir }, { serviceKey: first.serviceKey });
});

afterAll(async () => {
  await second?.close();
  await first?.close();
  await database?.drop();
  await rm(functionsDir, { recursive: true, force: true });
});

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
