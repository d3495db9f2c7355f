import pg from 'pg';
import PgBoss from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueRunner, type FinishedJob } from '../server/modules/functions/runner.js';
import { createTestDatabase, silentLogger, waitFor, type TestDatabase } from './helpers.js';

/**
 * The queue runner that takes function jobs from pg-boss: every job runs once and is
 * settled once, never more than `limit` at once; slow runs get no jobs fetched ahead (a
 * held job's expiry runs from its fetch); stop lets running jobs finish and be settled.
 */

const SCHEMA = 'runner_jobs';
let database: TestDatabase;
let boss: PgBoss;
let sql: pg.Client;

interface Data {
  n: number;
}

beforeAll(async () => {
  database = await createTestDatabase({ migrate: false });
  boss = new PgBoss({ connectionString: database.url, schema: SCHEMA, supervise: false, schedule: false, max: 4 });
  boss.on('error', () => undefined);
  await boss.start();
  sql = new pg.Client({ connectionString: database.url });
  await sql.connect();
});

afterAll(async () => {
  await sql?.end();
  await boss?.stop({ graceful: false, wait: true });
  await database?.drop();
});

async function queueWith(name: string, count: number): Promise<string[]> {
  await boss.createQueue(name, { name, retryLimit: 0, expireInSeconds: 60 });
  const ids = Array.from({ length: count }, () => crypto.randomUUID());
  await boss.insert(ids.map((id, n) => ({ id, name, data: { n } })));
  return ids;
}

async function states(name: string): Promise<Record<string, number>> {
  const { rows } = await sql.query<{ state: string; n: number }>(
    `SELECT state::text, count(*)::int AS n FROM ${SCHEMA}.job WHERE name = $1 GROUP BY 1`,
    [name],
  );
  return Object.fromEntries(rows.map((row) => [row.state, row.n]));
}

/** A runner whose runs wait `runMs` (or what `runMsOf` says for the n-th run) and whose settle completes the jobs, counting both. */
function runner(
  name: string,
  limit: number,
  runMs: number,
  extra: { runMsOf?: (run: number) => number; maxHoldMs?: number; holdAhead?: boolean } = {},
) {
  const seen = { running: 0, maxRunning: 0, runs: new Map<string, number>(), settled: new Map<string, number>() };
  const instance = new QueueRunner<Data, { ok: boolean }>({
    boss,
    queue: name,
    limit,
    pollIntervalMs: 200,
    log: silentLogger,
    maxHoldMs: extra.maxHoldMs,
    holdAhead: extra.holdAhead,
    run: async ([job]) => {
      if (!job) throw new Error('a run without a job');
      const wait = extra.runMsOf?.(seen.runs.size) ?? runMs;
      seen.running++;
      seen.maxRunning = Math.max(seen.maxRunning, seen.running);
      seen.runs.set(job.id, (seen.runs.get(job.id) ?? 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, wait));
      seen.running--;
      return { ok: true };
    },
    settle: async (finished: Array<FinishedJob<Data, { ok: boolean }>>) => {
      for (const { job } of finished) seen.settled.set(job.id, (seen.settled.get(job.id) ?? 0) + 1);
      await boss.complete(
        name,
        finished.map(({ job }) => job.id),
      );
    },
  });
  return { instance, seen };
}

/** Runs `work` with the runner started, and stops it (waiting up to 5 s for its runs) after. */
async function whileStarted(instance: QueueRunner<Data, { ok: boolean }>, work: () => Promise<void>): Promise<void> {
  instance.start();
  try {
    await work();
  } finally {
    await instance.stop(5_000);
  }
}

describe('queue runner', () => {
  it('runs and settles every job once, never more than its limit at once', async () => {
    const ids = await queueWith('fast', 120);
    const { instance, seen } = runner('fast', 4, 2);
    await whileStarted(instance, async () => {
      await waitFor('every job settled', async () => seen.settled.size === ids.length);
      expect(seen.maxRunning).toBeLessThanOrEqual(4);
      expect(seen.maxRunning).toBeGreaterThan(1);
      expect([...seen.runs.values()].every((count) => count === 1)).toBe(true);
      expect([...seen.settled.values()].every((count) => count === 1)).toBe(true);
      await waitFor('every job completed', async () => (await states('fast')).completed === ids.length);
    });
  });

  it('fetches no jobs ahead of free slots while runs are slow', async () => {
    const ids = await queueWith('slow', 8);
    const { instance, seen } = runner('slow', 2, 150);
    await whileStarted(instance, async () => {
      let maxActive = 0;
      await waitFor('every job settled', async () => {
        maxActive = Math.max(maxActive, (await states('slow')).active ?? 0);
        return seen.settled.size === ids.length;
      });
      // A job is active from its fetch: with slow runs only the two running ones may be.
      expect(maxActive).toBeLessThanOrEqual(2);
      expect(seen.maxRunning).toBe(2);
    });
  });

  it('lets go unrun the jobs it fetched ahead when they wait too long for a slot', async () => {
    const ids = await queueWith('hanging', 150);
    // Fast runs make the runner fetch ahead; then one run hangs past the hold limit.
    const { instance, seen } = runner('hanging', 1, 1, {
      runMsOf: (run) => (run === 60 ? 800 : 1),
      maxHoldMs: 300,
    });
    await whileStarted(instance, async () => {
      const done = await waitFor('every job run or let go', async () => {
        const now = await states('hanging');
        const quiet = seen.running === 0 && seen.settled.size === seen.runs.size && (now.created ?? 0) === 0;
        return quiet && seen.settled.size + (now.active ?? 0) === ids.length && now;
      });
      // The jobs let go stay active (they expire and are delivered again), and none ran.
      expect(done.active).toBeGreaterThan(0);
      expect(seen.runs.size).toBe(ids.length - (done.active ?? 0));
      expect([...seen.runs.values()].every((count) => count === 1)).toBe(true);
    });
  });

  it('holds nothing ahead for a queue without retries, so no job is let go unrun', async () => {
    const ids = await queueWith('no-retries', 150);
    // The same hang as above: with nothing held, every job still runs, once.
    const { instance, seen } = runner('no-retries', 1, 1, {
      runMsOf: (run) => (run === 60 ? 800 : 1),
      maxHoldMs: 300,
      holdAhead: false,
    });
    await whileStarted(instance, async () => {
      const done = await waitFor('every job run', async () => {
        const now = await states('no-retries');
        return now.completed === ids.length && seen.running === 0 && now;
      });
      expect(done.active ?? 0).toBe(0);
      expect(seen.runs.size).toBe(ids.length);
      expect([...seen.runs.values()].every((count) => count === 1)).toBe(true);
    });
  });

  it('stops fetching on stop, and lets the running jobs finish and be settled first', async () => {
    const ids = await queueWith('stopping', 10);
    const { instance, seen } = runner('stopping', 3, 300);
    instance.start();
    await waitFor('runs under way', async () => seen.running === 3);
    await instance.stop(5_000);
    expect(seen.running).toBe(0);
    expect(seen.settled.size).toBe(seen.runs.size);
    expect(seen.runs.size).toBeLessThan(ids.length);
    const after = await states('stopping');
    expect(after.completed).toBe(seen.runs.size);
    expect(after.active ?? 0).toBe(0);
    // Nothing more is taken once stopped.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(seen.runs.size).toBe(after.completed);
  });
});
