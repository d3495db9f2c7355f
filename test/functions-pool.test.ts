import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction, buildWorkerScript, releaseBuilder } from '../server/modules/functions/loader.js';
import { WorkerPool, type RunOutcome } from '../server/modules/functions/pool.js';
import { silentLogger } from './helpers.js';

/**
 * The worker pool's hot path (docs/functions.md#performance): results cross as JSON text,
 * workers keep their listeners for life, and ctx's stateless parts are shared by the runs of
 * a worker. Each must keep what it replaced.
 */

let dir: string;
let pool: WorkerPool;
let generation = 0;
let calls = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'basalt-pool-'));
  pool = new WorkerPool(await buildWorkerScript(path.join(dir, 'build')), silentLogger);
});

afterAll(async () => {
  await pool?.close();
  await releaseBuilder();
  await rm(dir, { recursive: true, force: true });
});

async function bundleOf(source: string): Promise<string> {
  const file = path.join(dir, `fn${++generation}.ts`);
  await writeFile(file, `import { http } from 'basalt/functions';\n${source}`);
  return bundleFunction(file, path.join(dir, 'bundles'), generation);
}

function run(bundle: string, input: unknown = {}, timeoutMs = 5_000): Promise<RunOutcome> {
  return pool.run({
    invocationId: `run-${++calls}`,
    bundle,
    exportName: 'default',
    input,
    env: {},
    timeoutMs,
    memoryMb: 64,
    keepWarm: 2,
    rpc: async () => null,
  });
}

describe('function worker pool', () => {
  it('hands back a result as the JSON text the handler returned, parsed on demand', async () => {
    const bundle = await bundleOf(
      `export default http(async (request: { body: unknown }) => request.body === 'nothing' ? undefined : ({ when: new Date(0), list: [1, 'two', null], nested: { skip: undefined } }));`,
    );
    const outcome = await run(bundle, { body: 'value' });
    expect(outcome.status).toBe('succeeded');
    if (outcome.status !== 'succeeded') return;
    expect(outcome.json).toBe('{"when":"1970-01-01T00:00:00.000Z","list":[1,"two",null],"nested":{}}');
    expect(outcome.value).toEqual({ when: '1970-01-01T00:00:00.000Z', list: [1, 'two', null], nested: {} });
    const nothing = await run(bundle, { body: 'nothing' });
    expect(nothing.status === 'succeeded' && nothing.json).toBe('null');
  });

  it('fails a run whose result is not JSON', async () => {
    const bundle = await bundleOf(`export default http(async () => (() => 1) as unknown as object);`);
    const outcome = await run(bundle);
    expect(outcome.status).toBe('failed');
    expect(outcome.status === 'failed' && outcome.error).toMatch(/not JSON/);
  });

  it('drops a worker that ends while idle, so the next run starts a new one instead of timing out', async () => {
    const bundle = await bundleOf(
      `export default http(async () => { setTimeout(() => process.exit(0), 20); return { pid: 1 }; });`,
    );
    const first = await run(bundle);
    expect(first.status).toBe('succeeded');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = await run(bundle, {}, 3_000);
    expect(second.status).toBe('succeeded');
    expect(second.cold).toBe(true);
  });

  it('gives each run its own ctx.log, and shares ctx.db frozen', async () => {
    const bundle = await bundleOf(
      `export default http(async (_request: unknown, ctx: any) => {
         const seen = 'mark' in ctx.log || 'mark' in ctx.db;
         ctx.log.mark = true;
         try { ctx.db.mark = true; } catch {}
         return { seen, dbChanged: 'mark' in ctx.db };
       });`,
    );
    const first = await run(bundle);
    const second = await run(bundle);
    expect(second.cold).toBe(false);
    expect(first.status === 'succeeded' && first.value).toEqual({ seen: false, dbChanged: false });
    expect(second.status === 'succeeded' && second.value).toEqual({ seen: false, dbChanged: false });
  });
});
