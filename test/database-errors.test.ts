import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Database } from '../server/internal/db.js';
import { AppError, fromPostgresError, isConnectionError } from '../server/internal/errors.js';
import { toAppError } from '../server/internal/http/errors.js';
import { freePort } from '../server/internal/net.js';
import { createTestDatabase, silentLogger, type TestDatabase } from './helpers.js';

/**
 * The forms an unreachable database takes, each produced for real against Postgres, map
 * to 503 UNAVAILABLE with Retry-After in the one error mapping; statement errors do not.
 */

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase({ migrate: false });
});

afterAll(async () => {
  await database?.drop();
});

async function caught(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure');
}

function expectUnavailable(error: unknown): void {
  expect(isConnectionError(error)).toBe(true);
  for (const mapped of [fromPostgresError(error), toAppError(error)]) {
    expect(mapped.code).toBe('UNAVAILABLE');
    expect(mapped.status).toBe(503);
    expect(Number(mapped.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  }
}

describe('an unreachable database', () => {
  it('is UNAVAILABLE when the connection is refused', async () => {
    const db = new Database({ url: `postgres://postgres@127.0.0.1:${await freePort()}/none` }, silentLogger);
    try {
      expectUnavailable(await caught(() => db.query('SELECT 1')));
      expect(await db.ping()).toBe(false);
    } finally {
      await db.close();
    }
  });

  it('is UNAVAILABLE when Postgres ends the session (57P01)', async () => {
    const victim = new pg.Client({ connectionString: database.url });
    const killer = new pg.Client({ connectionString: database.url });
    await victim.connect();
    await killer.connect();
    victim.on('error', () => undefined);
    try {
      const { rows } = await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const sleeping = caught(() => victim.query('SELECT pg_sleep(10)'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await killer.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
      const error = await sleeping;
      expect((error as { code?: string }).code).toBe('57P01');
      expectUnavailable(error);
      // The client is unusable afterwards: that error is a connection error too.
      expectUnavailable(await caught(() => victim.query('SELECT 1')));
    } finally {
      await victim.end().catch(() => undefined);
      await killer.end();
    }
  });

  it('is UNAVAILABLE when the pool cannot hand out a connection in time', async () => {
    const pool = new pg.Pool({ connectionString: database.url, max: 1, connectionTimeoutMillis: 200 });
    const held = await pool.connect();
    try {
      expectUnavailable(await caught(() => pool.query('SELECT 1')));
    } finally {
      held.release();
      await pool.end();
    }
  });

  it('is UNAVAILABLE when a module wrapped it as INTERNAL', async () => {
    const db = new Database({ url: `postgres://postgres@127.0.0.1:${await freePort()}/none` }, silentLogger);
    try {
      const raw = await caught(() => db.query('SELECT 1'));
      const wrapped = toAppError(new AppError('INTERNAL', undefined, { cause: raw }));
      expect(wrapped.code).toBe('UNAVAILABLE');
    } finally {
      await db.close();
    }
  });
});

describe('a statement error', () => {
  it('keeps its own mapping', async () => {
    const db = new Database({ url: database.url }, silentLogger);
    try {
      const syntax = await caught(() => db.query('SELEC 1'));
      expect(isConnectionError(syntax)).toBe(false);
      expect(fromPostgresError(syntax).code).toBe('INTERNAL');
      await db.query('CREATE TABLE unique_things (id int PRIMARY KEY)');
      await db.query('INSERT INTO unique_things VALUES (1)');
      const duplicate = await caught(() => db.query('INSERT INTO unique_things VALUES (1)'));
      expect(fromPostgresError(duplicate, 'The thing').code).toBe('ALREADY_EXISTS');
    } finally {
      await db.close();
    }
  });
});
