import path from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Files that spend a minute or more waiting (cron minutes, Postgres and server restarts,
 * browsers), longest first. Without a results cache, as on a clean clone, vitest orders files
 * by size, which would start these small files last and leave them running alone at the end:
 * started first, their waits overlap the rest of the suite.
 */
const LONG_WAITING_FILES = [
  'test/postgres-restart-schedules.test.ts',
  'test/functions-schedule.test.ts',
  'test/storage-tus-instances.test.ts',
  'test/storage-tus-crash.test.ts',
  'client-sdk/test/offline-browser.test.ts',
  'test/postgres-restart.test.ts',
  'test/functions-topics.test.ts',
];

export default class LongWaitsFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification) => {
      const index = LONG_WAITING_FILES.indexOf(path.relative(file.project.config.root, file.moduleId));
      return index === -1 ? LONG_WAITING_FILES.length : index;
    };
    // Array.prototype.sort is stable: the other files keep the order vitest gave them.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}
