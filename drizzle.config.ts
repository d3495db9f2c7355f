import { defineConfig } from 'drizzle-kit';

// drizzle-kit reads the system tables' schema from server/db/schema.ts. The ordered SQL files
// in migrations/ are the source of truth: `npx drizzle-kit generate` writes a draft into
// .drizzle/ (not tracked), which is reviewed and copied into the next numbered migration.
// test/db-schema.test.ts checks that schema.ts and the migrated database agree.
export default defineConfig({
  dialect: 'postgresql',
  schema: './server/db/schema.ts',
  out: './.drizzle',
  schemaFilter: ['basalt'],
});
