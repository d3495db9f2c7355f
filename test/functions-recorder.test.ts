import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Database } from '../server/internal/db.js';
import { InvocationRecorder } from '../server/modules/functions/recorder.js';
import { InvocationRepository, type InvocationRun } from '../server/modules/functions/repository.js';
import { createTestDatabase, silentLogger, waitFor, type TestDatabase } from './helpers.js';

let database: TestDatabase;
let db: Database;
let repository: InvocationRepository;

beforeAll(async () => {
  database = await createTestDatabase();
  db = new Database({ url: database.url }, silentLogger);
  repository = new InvocationRepository(db);
});

afterAll(async () => {
  await db?.close();
  await database?.drop();
});

function run(functionName: string): InvocationRun {
  return {
    id: randomUUID(),
    functionName,
    trigger: 'http',
    eventId: null,
    attempt: 1,
    status: 'succeeded',
    startedAt: new Date(),
    durationMs: 1,
    error: null,
    logs: [{ level: 'info', message: 'hi', at: new Date().toISOString() }],
    cold: false,
  };
}

async function stored(functionName: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM basalt.function_invocations WHERE function_name = $1`,
    [functionName],
  );
  return rows[0]?.n ?? 0;
}

describe('invocation recorder', () => {
  it('writes the runs of one turn in one statement, and the rest in the next ones', async () => {
    const statements: number[] = [];
    const recorder = new InvocationRecorder(
      async (runs) => {
        statements.push(runs.length);
        await repository.record(runs);
      },
      silentLogger,
      { maxBatch: 40 },
    );
    for (let i = 0; i < 100; i++) expect(recorder.add(run('batched'))).toBeNull();
    await recorder.flush();
    expect(await stored('batched')).toBe(100);
    expect(statements).toEqual([40, 40, 20]);
    await recorder.close();
  });

  it('writes a run after a quiet spell on the next turn, and spaces the writes of a busy spell', async () => {
    const writes: Array<{ at: number; runs: number }> = [];
    const recorder = new InvocationRecorder(
      async (runs) => {
        writes.push({ at: performance.now(), runs: runs.length });
        await repository.record(runs);
      },
      silentLogger,
      { minIntervalMs: 100 },
    );
    const quietAt = performance.now();
    recorder.add(run('spaced'));
    await waitFor('the first row', async () => (await stored('spaced')) === 1, 5_000);
    // Nothing was written for a while: no wait beyond the next turn (and the INSERT itself).
    expect((writes[0]?.at ?? Infinity) - quietAt).toBeLessThan(50);
    // A busy spell right after: a run every few milliseconds, for longer than the spacing.
    const busyFrom = performance.now();
    let added = 1;
    while (performance.now() < busyFrom + 250 || added < 40) {
      recorder.add(run('spaced'));
      added++;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const busyMs = performance.now() - busyFrom;
    await waitFor('every row', async () => (await stored('spaced')) === added, 5_000);
    // Each statement starts at least the spacing after the one before it, so the spell took
    // a statement per 100 ms (and one for its last runs), not one per run.
    const gaps = writes.slice(1).map((write, index) => write.at - (writes[index]?.at ?? 0));
    // (Less a millisecond: the event loop's timer clock reads whole milliseconds.)
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(99);
    expect(writes.length).toBeLessThanOrEqual(Math.ceil(busyMs / 100) + 2);
    expect(writes.length).toBeLessThan(added / 4);
    await recorder.close();
  });

  it('writes at once what flush asks for, whatever the spacing', async () => {
    const recorder = new InvocationRecorder((runs) => repository.record(runs), silentLogger, {
      minIntervalMs: 60_000,
    });
    recorder.add(run('flushed'));
    await recorder.flush();
    recorder.add(run('flushed'));
    // Written a moment ago: the next write would wait a minute, but a flush does not.
    await recorder.flush();
    expect(await stored('flushed')).toBe(2);
    await recorder.close();
  });

  it('keeps the runs of a failed write and writes them on the retry', async () => {
    let failures = 1;
    const recorder = new InvocationRecorder(
      async (runs) => {
        // The first write is one Postgres refuses.
        if (failures-- > 0) await db.pool.query(`INSERT INTO basalt.no_such_table VALUES (1)`);
        await repository.record(runs);
      },
      silentLogger,
      { retryMs: 50 },
    );
    for (let i = 0; i < 5; i++) recorder.add(run('retried'));
    await waitFor('the retried rows', async () => (await stored('retried')) === 5, 5_000);
    await recorder.close();
  });

  it('makes callers wait while the backlog is full, then lets them go', async () => {
    let unblock: () => void = () => {};
    const blocked = new Promise<void>((resolve) => (unblock = resolve));
    const recorder = new InvocationRecorder(
      async (runs) => {
        await blocked;
        await repository.record(runs);
      },
      silentLogger,
      { maxPending: 3, maxBatch: 2 },
    );
    for (let i = 0; i < 3; i++) expect(recorder.add(run('backlog'))).toBeNull();
    await new Promise((resolve) => setImmediate(resolve));
    // Two are being written, three wait: one more is over the limit.
    for (let i = 0; i < 2; i++) expect(recorder.add(run('backlog'))).toBeNull();
    const waiting = recorder.add(run('backlog'));
    expect(waiting).not.toBeNull();
    let released = false;
    void waiting?.then(() => (released = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(released).toBe(false);
    unblock();
    await waiting;
    await recorder.close();
    expect(await stored('backlog')).toBe(6);
  });

  it('writes what is queued when closed', async () => {
    const recorder = new InvocationRecorder((runs) => repository.record(runs), silentLogger);
    for (let i = 0; i < 7; i++) recorder.add(run('closing'));
    await recorder.close();
    expect(await stored('closing')).toBe(7);
  });
});
