import { defineConfig } from 'drizzle-kit';

// drizzle-kit reads the system tables' schema from here; `npx drizzle-kit generate`
// writes SQL that is reviewed and renamed into the ordered files of migrations/.
export default defineConfig({
  dialect: 'postgresql',
  schema: './server/db/schema.ts',
  out: './migrations/drizzle',
  schemaFilter: ['basalt'],
});
