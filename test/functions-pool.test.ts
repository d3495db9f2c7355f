import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction, buildWorkerScript, releaseBuilder } from '../server/modules/functions/loader.js';
import { TRANSFER_MIN_BYTES, transferable } from '../server/modules/functions/http-response.js';
import { WorkerPool, type RunOutcome } from '../server/modules/functions/pool.js';
import { silentLogger, waitFor } from './helpers.js';

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
  it('moves the buffers a run is given to transfer: the worker reads them whole, the caller keeps none', async () => {
    const bundle = await bundleOf(
      `export default http(async (request: { bytes: Uint8Array; small: Uint8Array }) => ({ sum: request.bytes.reduce((a, b) => a + b, 0), length: request.bytes.byteLength, small: Array.from(request.small) }));`,
    );
    const bytes = new Uint8Array(64 * 1024).map((_, i) => i % 251);
    const expected = bytes.reduce((a, b) => a + b, 0);
    const small = new Uint8Array([1, 2, 3]);
    const outcome = await pool.run({
      invocationId: `run-${++calls}`,
      bundle,
      exportName: 'default',
      input: { bytes, small },
      env: {},
      timeoutMs: 5_000,
      memoryMb: 64,
      keepWarm: 2,
      transfer: [bytes.buffer],
      rpc: async () => null,
    });
    expect(outcome.status === 'succeeded' && outcome.value).toEqual({
      sum: expected,
      length: 64 * 1024,
      small: [1, 2, 3],
    });
    // Moved, not copied: detached here. What was not listed was copied and stays.
    expect(bytes.byteLength).toBe(0);
    expect(Array.from(small)).toEqual([1, 2, 3]);
  });

  it('moves only a body that owns its whole buffer and is large enough to be worth it', () => {
    const large = new Uint8Array(TRANSFER_MIN_BYTES);
    expect(transferable(large)).toBe(large.buffer);
    expect(transferable(new Uint8Array(TRANSFER_MIN_BYTES - 1))).toBeNull();
    // A view of a larger buffer (a pooled one): moving it would take the rest along, or away from its owner.
    const pooled = new ArrayBuffer(TRANSFER_MIN_BYTES * 4);
    expect(transferable(new Uint8Array(pooled, 8, TRANSFER_MIN_BYTES))).toBeNull();
    expect(transferable(new Uint8Array(pooled, 0, TRANSFER_MIN_BYTES))).toBeNull();
    expect(transferable(new Uint8Array(new SharedArrayBuffer(TRANSFER_MIN_BYTES)))).toBeNull();
  });

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

describe('the spare worker', () => {
  let spares: WorkerPool;
  let script: string;

  beforeAll(async () => {
    script = await buildWorkerScript(path.join(dir, 'build-spares'));
    spares = new WorkerPool(script, silentLogger, { idleMs: 800 });
  });

  afterAll(async () => {
    await spares?.close();
  });

  const threadOf = (bundle: string) =>
    spares.run({
      invocationId: `spare-${++calls}`,
      bundle,
      exportName: 'default',
      input: {},
      env: {},
      timeoutMs: 5_000,
      memoryMb: 64,
      keepWarm: 1,
      rpc: async () => null,
    });
  const threadFunction = () =>
    bundleOf(
      `import { threadId } from 'node:worker_threads';\nexport default http(async () => ({ thread: threadId }));`,
    );
  /** The thread of the pool's spare worker for 64 MB, if it has one. */
  const spareThread = () =>
    (spares['spares'] as Map<number, { worker: { threadId: number } }>).get(64)?.worker.threadId;

  it('is not started at rest, follows a cold start, and is taken by the next cold start of another function', async () => {
    const [first, second] = [await threadFunction(), await threadFunction()];
    spares.configure([
      { functionName: 'first', bundle: first, exportName: 'default', memoryMb: 64, minWarm: 0, idleMs: 800 },
      { functionName: 'second', bundle: second, exportName: 'default', memoryMb: 64, minWarm: 0, idleMs: 800 },
    ]);
    expect(spares.size).toEqual({ idle: 0, busy: 0, spare: 0 });
    const cold = await threadOf(first);
    expect(cold.cold).toBe(true);
    expect(spares.size.spare).toBe(1);
    const waiting = spareThread();
    const next = await threadOf(second);
    expect(next.cold).toBe(true);
    expect(next.status === 'succeeded' && next.value).toEqual({ thread: waiting });
    // Taken, and another started after the run for the next cold start.
    expect(spares.size.spare).toBe(1);
    expect(spareThread()).not.toBe(waiting);
  });

  it('ends after the idle timeout, so an idle instance keeps no thread', async () => {
    await waitFor('the spare and the idle workers ended', async () =>
      spares.size.spare === 0 && spares.size.idle === 0 ? true : null,
    );
  });

  it('is started when a new version goes live, for the call a deploy is followed by', async () => {
    const [first, replaced] = [await threadFunction(), await threadFunction()];
    const capacity = { functionName: 'deployed', exportName: 'default', memoryMb: 64, minWarm: 0, idleMs: 800 };
    // A function new to the instance goes live too.
    spares.configure([{ ...capacity, bundle: first }]);
    expect(spares.size.spare).toBe(1);
    await waitFor('the unused spare ended', () => spares.size.spare === 0);
    // The same set again (a periodic sync) starts nothing.
    spares.configure([{ ...capacity, bundle: first }]);
    expect(spares.size.spare).toBe(0);
    spares.configure([{ ...capacity, bundle: replaced }]);
    expect(spares.size.spare).toBe(1);
    const waiting = spareThread();
    const call = await threadOf(replaced);
    expect(call.cold).toBe(true);
    expect(call.status === 'succeeded' && call.value).toEqual({ thread: waiting });
  });
});
