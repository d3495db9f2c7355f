import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction, buildWorkerScript, releaseBuilder } from '../server/modules/functions/loader.js';
import { WorkerPool } from '../server/modules/functions/pool.js';
import { silentLogger } from './helpers.js';

/**
 * Function bundles are CommonJS when the code allows it (a worker that loads no ES module
 * starts faster) and ES modules when the code needs them: each kind must load and run.
 */

let dir: string;
let pool: WorkerPool;
let generation = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'basalt-bundles-'));
  pool = new WorkerPool(await buildWorkerScript(path.join(dir, 'build')), silentLogger);
});

afterAll(async () => {
  await pool?.close();
  await releaseBuilder();
  await rm(dir, { recursive: true, force: true });
});

async function bundleOf(name: string, source: string): Promise<string> {
  const file = path.join(dir, `${name}.ts`);
  await writeFile(file, source);
  return bundleFunction(file, path.join(dir, 'bundles'), ++generation);
}

async function run(bundle: string): Promise<unknown> {
  const outcome = await pool.run({
    invocationId: `bundle-${generation}`,
    bundle,
    exportName: 'default',
    input: {},
    env: {},
    timeoutMs: 10_000,
    memoryMb: 64,
    rpc: async () => null,
  });
  if (outcome.status !== 'succeeded') throw new Error(`${outcome.status}: ${outcome.error}`);
  return outcome.value;
}

describe('function bundles', () => {
  it('bundles plain code as CommonJS, with an ES-module npm package in it, and runs it', async () => {
    const bundle = await bundleOf(
      'plain',
      `import { http } from 'basalt/functions';
       import { base64url } from 'jose';
       export default http(async () => ({ encoded: base64url.encode('Ada'), dirname: typeof __dirname }));`,
    );
    expect(path.extname(bundle)).toBe('.cjs');
    expect(await run(bundle)).toEqual({ encoded: 'QWRh', dirname: 'string' });
  });

  it('bundles code with top-level await as an ES module and runs it', async () => {
    const bundle = await bundleOf(
      'awaits',
      `import { http } from 'basalt/functions';
       const answer = await Promise.resolve(42);
       export default http(async () => ({ answer }));`,
    );
    expect(path.extname(bundle)).toBe('.mjs');
    expect(await run(bundle)).toEqual({ answer: 42 });
  });

  it('bundles code that reads import.meta as an ES module, where import.meta.url is its own file', async () => {
    const bundle = await bundleOf(
      'meta',
      `import { http } from 'basalt/functions';
       export default http(async () => ({ url: import.meta.url }));`,
    );
    expect(path.extname(bundle)).toBe('.mjs');
    expect(await run(bundle)).toEqual({ url: `file://${bundle}` });
  });

  it('reports a syntax error with the line, whichever format was tried first', async () => {
    const error = await bundleOf('broken', 'export default {{;').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(Error);
    expect(String((error as Error).message)).toMatch(/broken\.ts:1/);
  });
});
