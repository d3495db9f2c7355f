import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import LongWaitsFirstSequencer from './test/sequencer.js';

export default defineConfig({
  // Code written as an app would write it imports the SDK by its package name: this checkout's SDK.
  resolve: {
    alias: [
      {
        find: /^@basalt\/client\/offline$/,
        replacement: fileURLToPath(new URL('./client-sdk/src/offline/index.ts', import.meta.url)),
      },
      { find: /^@basalt\/client$/, replacement: fileURLToPath(new URL('./client-sdk/src/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'server/**/*.test.ts', 'client-sdk/test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default', './test/summary-reporter.ts'],
    pool: 'forks',
    sequence: { sequencer: LongWaitsFirstSequencer },
    // Test files mostly wait on Postgres, sockets and timers: more files than cores run at once.
    maxWorkers: 4,
    minWorkers: 1,
    testTimeout: 30_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
