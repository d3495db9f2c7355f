import { bigint, jsonb, pgSchema, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Drizzle view of Basalt's system tables, which live in the `basalt` schema. The SQL
 * files in migrations/ are the source of truth for the database; this file mirrors
 * them for typed queries. Each module adds its tables here next to its migration.
 */
export const basalt = pgSchema('basalt');

export const migrations = basalt.table('migrations', {
  name: text('name').primaryKey(),
  checksum: text('checksum').notNull(),
  appliedAt: timestamp('applied_at', { withTimezone: true }).notNull().defaultNow(),
});

export const instanceInfo = basalt.table('instance', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** Collections (migrations/0005_documents.sql); each one's documents live in basalt_data."<name>". */
export const collections = basalt.table('collections', {
  name: text('name').primaryKey(),
  rules: jsonb('rules').notNull().default({}),
  schema: jsonb('schema'),
  indexes: jsonb('indexes').notNull().default([]),
  revision: bigint('revision', { mode: 'number' }).notNull().default(1),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
