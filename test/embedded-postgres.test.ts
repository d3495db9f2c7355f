import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { useTempDir } from './helpers.js';

/** Runs a TypeScript module body in a Node process of its own, from the repository root. */
function runScript(script: string): SpawnSyncReturns<string> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  return spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root,
    env,
    encoding: 'utf8',
  });
}

/**
 * The embedded Postgres must not take over the process's exit: a process that started
 * and stopped it still ends with its own exit code (a test runner's failure code, say).
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const dataDir = useTempDir('basalt-embedded-');

describe('the embedded Postgres', () => {
  it('leaves the exit code of the process that used it alone', { timeout: 120_000 }, () => {
    const script = `
      import { startEmbeddedPostgres } from './server/internal/embedded-postgres.ts';
      import { createLogger } from './server/internal/log.ts';
      const handle = await startEmbeddedPostgres(${JSON.stringify(dataDir.path)}, createLogger('silent', { pretty: false }));
      await handle.stop();
      process.exitCode = 3;
    `;
    const result = runScript(script);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(3);
  });

  it('is stopped when the process that started it crashes', { timeout: 120_000 }, async () => {
    const script = `
      import { readFileSync } from 'node:fs';
      import { startEmbeddedPostgres } from './server/internal/embedded-postgres.ts';
      import { createLogger } from './server/internal/log.ts';
      await startEmbeddedPostgres(${JSON.stringify(dataDir.path)}, createLogger('silent', { pretty: false }));
      const pid = readFileSync(${JSON.stringify(path.join(dataDir.path, 'postgres', 'postmaster.pid'))}, 'utf8').split('\\n')[0];
      process.stdout.write(pid + '\\n');
      throw new Error('crash');
    `;
    const result = runScript(script);
    expect(result.status).toBe(1);
    const pid = Number(result.stdout.trim());
    expect(pid).toBeGreaterThan(0);
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const deadline = Date.now() + 10_000;
    while (alive() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(alive()).toBe(false);
  });
});
