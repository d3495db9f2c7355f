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
