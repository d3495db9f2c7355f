import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import * as schema from '../server/db/schema.js';
import { Database } from '../server/internal/db.js';
import { mapDatabaseErrors } from '../server/internal/repository.js';
import { createTestDatabase, waitFor, type TestDatabase } from './helpers.js';

interface ColumnShape {
  type: string;
  notNull: boolean;
  hasDefault: boolean;
}

function drizzleTables(): Map<string, Map<string, ColumnShape>> {
  const tables = new Map<string, Map<string, ColumnShape>>();
  for (const value of Object.values(schema)) {
    if (!(value instanceof PgTable)) continue;
    const config = getTableConfig(value);
    const columns = new Map<string, ColumnShape>();
    for (const column of config.columns) {
      // bigserial is bigint with a sequence default in the catalogue.
      const type = column.getSQLType() === 'bigserial' ? 'bigint' : column.getSQLType();
      columns.set(column.name, {
        type,
        notNull: column.notNull,
        hasDefault: column.hasDefault || column.getSQLType() === 'bigserial',
      });
    }
    tables.set(`${config.schema ?? 'public'}.${config.name}`, columns);
  }
  return tables;
}

describe('the drizzle schema (server/db/schema.ts)', () => {
  let database: TestDatabase;
  let actual: Map<string, Map<string, ColumnShape>>;

  beforeAll(async () => {
    database = await createTestDatabase();
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      const { rows } = await client.query<{
        table_name: string;
        column_name: string;
        type: string;
        not_null: boolean;
        has_default: boolean;
      }>(
        `SELECT c.relname AS table_name, a.attname AS column_name,
                format_type(a.atttypid, a.atttypmod) AS type,
                a.attnotnull AS not_null, a.atthasdef AS has_default
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'basalt' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY c.relname, a.attnum`,
      );
      actual = new Map();
      for (const row of rows) {
        const key = `basalt.${row.table_name}`;
        const columns = actual.get(key) ?? new Map<string, ColumnShape>();
        columns.set(row.column_name, {
          type: row.type,
          notNull: row.not_null,
          hasDefault: row.has_default,
        });
        actual.set(key, columns);
      }
    } finally {
      await client.end();
    }
  });

  afterAll(async () => {
    await database?.drop();
  });

  it('models every system table the migrations create, and no other', () => {
    expect([...drizzleTables().keys()].sort()).toEqual([...actual.keys()].sort());
  });

  it('agrees with the migrated database on every column: name, type, null and default', () => {
    const modelled = drizzleTables();
    for (const [table, columns] of actual) {
      const model = modelled.get(table);
      if (!model) continue;
      expect(Object.fromEntries(model), table).toEqual(Object.fromEntries(columns));
    }
  });

  it('tells the change feed of writes made through the query builder, and maps its errors to the catalogue', async () => {
    const db = new Database({ url: database.url, max: 2 });
    let writes = 0;
    db.onWrite(() => writes++);
    try {
      await db.drizzle.insert(schema.instanceInfo).values({ key: 'drizzle-write', value: 'one' });
      await waitFor('the insert reported', () => writes === 1);
      await db.drizzle.select().from(schema.instanceInfo).where(eq(schema.instanceInfo.key, 'drizzle-write'));
      await db.transaction((tx) =>
        db
          .builder(tx)
          .update(schema.instanceInfo)
          .set({ value: 'two' })
          .where(eq(schema.instanceInfo.key, 'drizzle-write')),
      );
      await waitFor('the transaction reported', () => writes === 2);
      const duplicate = await mapDatabaseErrors(() =>
        db.drizzle.insert(schema.instanceInfo).values({ key: 'drizzle-write', value: 'three' }),
      ).catch((error: unknown) => error);
      expect(duplicate).toMatchObject({ code: 'ALREADY_EXISTS', cause: { code: '23505' } });
      await db.drizzle.delete(schema.instanceInfo).where(eq(schema.instanceInfo.key, 'drizzle-write'));
      await waitFor('the delete reported', () => writes === 3);
    } finally {
      await db.close();
    }
  });
});
