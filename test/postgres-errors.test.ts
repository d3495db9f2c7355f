/**
 * fromPostgresError against the errors a real Postgres raises for values a request can carry:
 * the backstop that keeps bad input at 400 where an edge check is missing.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromPostgresError } from '../server/internal/errors.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';

let database: TestDatabase;
let client: pg.Client;

beforeAll(async () => {
  database = await createTestDatabase({ migrate: false });
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
  await database?.drop();
});

async function postgresError(sql: string, params: unknown[] = []): Promise<unknown> {
  try {
    await client.query(sql, params);
  } catch (error) {
    return error;
  }
  throw new Error(`expected ${sql} to fail`);
}

describe('fromPostgresError maps data errors a request can cause to 400', () => {
  it.each([
    ['22P05', 'NUL in jsonb', `SELECT $1::jsonb`, ['{"a": "x\\u0000y"}']],
    ['22P02', 'an unpaired surrogate in jsonb', `SELECT $1::jsonb`, ['{"a": "\\ud800"}']],
    ['22021', 'NUL in text', `SELECT $1::text`, ['a\u0000b']],
    ['22008', 'a year out of range', `SELECT $1::timestamptz`, ['0000-01-01T00:00:00Z']],
    ['22009', 'an offset beyond ±15:59', `SELECT $1::timestamptz`, ['2024-01-01T00:00:00+16:00']],
    ['22007', 'a malformed time', `SELECT $1::timestamptz`, ['not a time']],
    [
      '54001',
      'jsonb nested past the stack limit',
      `SELECT $1::jsonb`,
      [`${'['.repeat(200_000)}${']'.repeat(200_000)}`],
    ],
  ])('%s (%s) is INVALID_REQUEST and keeps the raw error as its cause', async (sqlState, _what, sql, params) => {
    const raw = await postgresError(sql, params);
    expect((raw as { code?: string }).code).toBe(sqlState);
    const mapped = fromPostgresError(raw);
    expect(mapped.code).toBe('INVALID_REQUEST');
    expect(mapped.status).toBe(400);
    expect(mapped.cause).toBe(raw);
    expect(JSON.stringify(mapped.toBody())).not.toContain('jsonb');
  });
});
