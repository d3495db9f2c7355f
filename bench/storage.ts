/**
 * Storage benchmark: `node --import tsx bench/storage.ts`.
 *
 * Drives Basalt's storage (local-disk backend, the real server process) and the raw limit
 * (bench/storage-raw-server.ts: node:http + fs, no database) with the same closed-loop load:
 * uploads of BENCH_STORAGE_SIZE bytes (default 1 MiB) to fresh paths, downloads of those
 * objects, and downloads of a 4 KiB object. Prints one JSON line per benchmark on stdout.
 * Settings: BENCH_DATABASE_URL, BENCH_DURATION, BENCH_WARMUP (see README.md),
 * BENCH_STORAGE_CONNECTIONS (default 8), BENCH_STORAGE_SIZE.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, startServer, type ServerProcess } from './process.js';
import { machine } from './report.js';
import { BENCH_DIR, ROOT_DIR, readSettings } from './settings.js';
import { startTarget } from './targets.js';

interface Target {
  name: 'basalt' | 'raw';
  server: ServerProcess;
  headers: Record<string, string>;
  /** URL of object `name`. */
  objectUrl(name: string): string;
  close(): Promise<void>;
}

interface Figures {
  rps: number;
  mib_per_s: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  failed: number;
  cpu_pct: number;
}

const connections = Number(process.env.BENCH_STORAGE_CONNECTIONS ?? 8);
const objectSize = Number(process.env.BENCH_STORAGE_SIZE ?? 1024 * 1024);

function log(message: string): void {
  process.stderr.write(`[bench storage] ${message}\n`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

const round = (value: number, digits = 2): number => Math.round(value * 10 ** digits) / 10 ** digits;

/** N workers, each sending its next request when the previous one has been read completely. */
async function closedLoop(
  target: Target,
  seconds: number,
  send: (worker: number, sequence: number) => Promise<{ ok: boolean; bytes: number }>,
): Promise<Figures> {
  const latencies: number[] = [];
  let failed = 0;
  let bytes = 0;
  const cpuBefore = target.server.cpuSeconds();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async (_, worker) => {
      for (let sequence = 0; performance.now() < deadline; sequence++) {
        const t0 = performance.now();
        const result = await send(worker, sequence).catch(() => ({ ok: false, bytes: 0 }));
        latencies.push(performance.now() - t0);
        if (result.ok) bytes += result.bytes;
        else failed++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    rps: round((latencies.length - failed) / elapsed, 1),
    mib_per_s: round(bytes / elapsed / 2 ** 20, 1),
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
    requests: latencies.length,
    failed,
    cpu_pct: round(((target.server.cpuSeconds() - cpuBefore) / elapsed) * 100, 0),
  };
}

async function startBasalt(): Promise<Target> {
  const target = await startTarget('basalt', readSettings({ ...process.env, BENCH_TARGETS: 'basalt' }));
  const response = await fetch(`${target.url}/v1/admin/buckets`, {
    method: 'POST',
    headers: { ...target.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench' }),
  });
  if (response.status !== 201) throw new Error(`bucket: ${response.status} ${await response.text()}`);
  return {
    name: 'basalt',
    server: target.server,
    headers: target.headers,
    objectUrl: (name) => `${target.url}/v1/storage/bench/${name}`,
    close: () => target.close(),
  };
}

async function startRaw(): Promise<Target> {
  const dir = await mkdtemp(path.join(tmpdir(), 'basalt-raw-storage-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = await startServer({
    name: 'raw',
    command: process.execPath,
    args: ['--import', 'tsx', path.join(BENCH_DIR, 'storage-raw-server.ts')],
    cwd: ROOT_DIR,
    env: { PATH: process.env.PATH, PORT: String(port), RAW_STORAGE_DIR: dir },
    url,
    readyPath: '/healthz',
  });
  return {
    name: 'raw',
    server,
    headers: {},
    objectUrl: (name) => `${url}/files/${name}`,
    close: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function measure(target: Target, seconds: number, warmup: number): Promise<Record<string, Figures>> {
  const body = new Uint8Array(objectSize).fill(7);
  const uploaded: string[] = [];
  const put = async (name: string, payload: Uint8Array<ArrayBuffer>): Promise<{ ok: boolean; bytes: number }> => {
    const response = await fetch(target.objectUrl(name), {
      method: 'PUT',
      headers: { ...target.headers, 'content-type': 'application/octet-stream' },
      body: payload,
    });
    await response.arrayBuffer();
    return { ok: response.status === 201, bytes: payload.byteLength };
  };
  const get = async (name: string): Promise<{ ok: boolean; bytes: number }> => {
    const response = await fetch(target.objectUrl(name), { headers: target.headers });
    const received = (await response.arrayBuffer()).byteLength;
    return { ok: response.status === 200, bytes: received };
  };

  if (warmup > 0) await closedLoop(target, warmup, (w, s) => put(`warm-${w}-${s}.bin`, body));
  const upload = await closedLoop(target, seconds, async (w, s) => {
    const name = `up-${w}-${s}.bin`;
    const result = await put(name, body);
    if (result.ok && uploaded.length < 2000) uploaded.push(name);
    return result;
  });
  const download = await closedLoop(target, seconds, (w, s) => get(uploaded[(w * 7919 + s) % uploaded.length]!));
  const small = new Uint8Array(4096).fill(1);
  if (!(await put('small.bin', small)).ok) throw new Error('small upload failed');
  const smallGet = await closedLoop(target, seconds, () => get('small.bin'));
  return { 'storage.upload': upload, 'storage.download': download, 'storage.download_4k': smallGet };
}

async function main(): Promise<void> {
  const settings = readSettings();
  log(`${connections} connections, ${settings.durationSeconds} s per run, objects of ${objectSize} bytes`);
  const results: Record<string, Record<string, Figures>> = {};
  for (const start of [startBasalt, startRaw]) {
    const target = await start();
    try {
      log(`measuring ${target.name}`);
      for (const [bench, figures] of Object.entries(
        await measure(target, settings.durationSeconds, settings.warmupSeconds),
      )) {
        (results[bench] ??= {})[target.name] = figures;
      }
    } finally {
      await target.close();
    }
  }
  for (const [bench, byTarget] of Object.entries(results)) {
    const vsRaw = byTarget.basalt && byTarget.raw ? round(byTarget.basalt.rps / byTarget.raw.rps, 2) : null;
    process.stdout.write(
      JSON.stringify({
        bench,
        ...byTarget,
        vs_raw: vsRaw,
        connections,
        object_bytes: bench === 'storage.download_4k' ? 4096 : objectSize,
        duration_s: settings.durationSeconds,
        date: new Date().toISOString(),
        machine,
      }) + '\n',
    );
  }
}

await main();
