import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BasaltProcess } from './basalt-process.js';
import { request, waitFor } from './helpers.js';
import { PrivateCluster } from './private-postgres.js';
import { sleep } from './realtime-client.js';

/**
 * A cron schedule under a Postgres restart: a real server in a child process runs an
 * every-minute schedule on a cluster of the test's own; right after a tick has run, the
 * cluster is stopped with `-m immediate` and started 3 s later. The tick of the next minute
 * must run, and every tick exactly once, without restarting Basalt. (One minute after the
 * restart, not more: the queue checks its schedules every 30 s and a new schedule's first
 * tick can take a minute, so each further minute would add a minute to the test.)
 */

const TICK_FUNCTION = `
import { schedule } from 'basalt/functions';
export default schedule({ cron: '* * * * *' }, async (event, ctx) => {
  ctx.log.info('tick ' + event.id);
});
`;

/** The job queue sends each tick as one job of this queue, keyed by the schedule and the minute. */
const SEND_IT_QUEUE = '__pgboss__send-it';
const MINUTE_MS = 60_000;

interface Invocation {
  status: string;
  trigger: string;
  event_id: string;
  started_at: string | null;
}

let cluster: PrivateCluster;
let databaseUrl: string;
let basalt: BasaltProcess;

beforeAll(async () => {
  cluster = await PrivateCluster.create();
  await cluster.start();
  databaseUrl = await cluster.createDatabase('basalt');
  basalt = await BasaltProcess.spawn({ DATABASE_URL: databaseUrl }, { 'tick.ts': TICK_FUNCTION });
  await basalt.ready();
}, 90_000);

afterAll(async () => {
  await basalt?.stop();
  await cluster?.destroy();
});

async function invocations(): Promise<Invocation[]> {
  const response = await request(basalt.url, 'GET', '/v1/admin/functions/tick/invocations', {
    token: basalt.serviceKey,
  });
  if (response.status !== 200) return [];
  return (response.body as { invocations: Invocation[] }).invocations;
}

/**
 * The minutes whose tick the job queue sent, oldest first (each send is unique per minute:
 * that is how one tick runs once across instances). A run's own start time cannot tell its
 * minute: the send of a tick lags its minute by up to the queue's 30 s check, and its run
 * lags the send by the queue's polls.
 */
async function sentMinutes(): Promise<number[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ minute: string }>(
      `SELECT extract(epoch FROM singleton_on)::bigint * 1000 AS minute
         FROM basalt_jobs.job WHERE name = $1 AND singleton_key = 'fn-tick'
       ORDER BY singleton_on`,
      [SEND_IT_QUEUE],
    );
    return rows.map((row) => Number(row.minute));
  } finally {
    await client.end();
  }
}

/** Reads fail while Postgres restarts: a probe that fails counts as not yet. */
function orNull<T>(probe: () => Promise<T | null>): () => Promise<T | null> {
  return () => probe().catch(() => null);
}

describe('a Postgres restart under a running schedule', () => {
  it('runs the tick of the following minute, and each tick exactly once', { timeout: 240_000 }, async () => {
    // The first tick (up to a minute after the start), then the restart as soon as it has run.
    await waitFor(
      'the first tick ran',
      orNull(async () => ((await invocations()).length > 0 ? true : null)),
      90_000,
      250,
    );
    const [firstMinute] = await sentMinutes();
    expect(firstMinute).toBeDefined();
    await cluster.stop('immediate');
    await sleep(3_000);
    await cluster.start();

    // The tick of the next minute is sent, not skipped...
    const minutes = await waitFor(
      'the tick of the next minute was sent',
      orNull(async () => {
        const sent = await sentMinutes();
        return sent.length >= 2 ? sent : null;
      }),
      100_000,
      250,
    );
    expect(minutes).toEqual([firstMinute!, firstMinute! + MINUTE_MS]);
    // ...and each sent tick runs exactly once: never more runs than sent minutes (a tick run
    // twice, or sent twice, would add one), none of them with the event of another.
    const ran = await waitFor(
      'both ticks ran',
      orNull(async () => {
        const all = await invocations();
        return all.filter((run) => run.status === 'succeeded').length >= minutes.length ? all : null;
      }),
      30_000,
      250,
    );
    expect(ran.length).toBeLessThanOrEqual((await sentMinutes()).length);
    expect(new Set(ran.map((run) => run.event_id)).size).toBe(ran.length);
    expect(
      ran.every((run) => run.trigger === 'schedule' && ['queued', 'running', 'succeeded'].includes(run.status)),
    ).toBe(true);

    // The queue saw the outage, and the server never restarted.
    expect(basalt.child.exitCode).toBeNull();
    const messages = basalt.logLines().map((line) => line.msg ?? '');
    expect(messages.filter((msg) => msg.startsWith('Basalt is ready'))).toHaveLength(1);
    expect(messages.some((msg) => msg === 'job queue cannot reach Postgres; retrying')).toBe(true);
  });
});
