import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const script = path.join(sdkDir, 'scripts', 'build.mjs');

function runBuild(env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [script], { cwd: sdkDir, env: { ...process.env, ...env }, encoding: 'utf8' });
}

describe('the SDK build', () => {
  it('emits one ESM bundle with declarations, within the size budget', { timeout: 120_000 }, async () => {
    const result = runBuild();
    expect(result.status, result.stderr).toBe(0);
    const size = JSON.parse(readFileSync(path.join(sdkDir, 'dist', 'size.json'), 'utf8')) as {
      gzipped: number;
      budget: number;
    };
    expect(size.budget).toBe(20 * 1024);
    expect(size.gzipped).toBeLessThanOrEqual(size.budget);
    const code = readFileSync(path.join(sdkDir, 'dist', 'index.js'), 'utf8');
    expect(code).not.toMatch(/from\s*["']node:/);
    expect(readFileSync(path.join(sdkDir, 'dist', 'index.d.ts'), 'utf8')).toContain('createClient');
    // The browser bundle also runs on Node 20.
    const sdk = (await import(pathToFileURL(path.join(sdkDir, 'dist', 'index.js')).href)) as Record<string, unknown>;
    expect(typeof sdk.createClient).toBe('function');
    expect(typeof sdk.BasaltError).toBe('function');
  });

  it('fails when the bundle is over budget', { timeout: 120_000 }, () => {
    const result = runBuild({ SDK_SIZE_BUDGET: '1024' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('over the size budget');
    // Leave a good build behind for whoever runs next.
    expect(runBuild().status).toBe(0);
  });
});
