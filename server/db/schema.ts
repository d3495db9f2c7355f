import { pgSchema, text, timestamp } from 'drizzle-orm/pg-core';

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
