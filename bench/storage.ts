/**
 * Storage benchmark: `npm run bench -- storage`.
 *
 * For each backend (the local disk, then S3), one large object (BENCH_STORAGE_SIZE, 256 MiB by
 * default) is uploaded and downloaded through Basalt and *directly* to the same backend, in the
 * same run, BENCH_STORAGE_ROUNDS (3) rounds alternating which goes first; `vs_direct` is the
 * median of the rounds' Basalt/direct throughput ratios. Each request carries the whole object
 * on a fresh connection; the harness sends the same incompressible 1 MiB pattern to both sides.
 *
 * - disk: direct is bench/storage-raw-server.ts, node:http streaming the body to a temporary file,
 *   fsync, rename — the same disk work as Basalt's backend, without database, rules or checksum;
 *   downloads stream the file back. Both servers are processes of their own, on the same disk.
 * - S3: direct is the AWS SDK in the harness talking straight to the S3 server: the S3 client
 *   Basalt's backend builds (createS3Client), lib-storage `Upload` with the part size and
 *   concurrency Basalt uses, `GetObject` streamed. The S3 server (s3rver) runs in a process of
 *   its own (bench/s3rver-server.ts), the same one for both. Downloads have a third side,
 *   `relay`: bench/storage-s3-relay.ts, node:http with the same S3 client piping `GetObject` to
 *   the response and nothing else, reading the direct side's object. Basalt's downloads cross
 *   one process more than the SDK's; the relay crosses it too, with no features, so each run
 *   shows how much of the gap to direct is the hop itself (`relay_vs_direct`) and how much is
 *   Basalt's (`vs_relay`).
 *
 * Then a BENCH_STORAGE_RSS_SIZE (1 GiB) upload through Basalt while the harness samples the
 * server's resident memory from /proc/<pid>/status (VmRSS every 20 ms, and VmHWM, the kernel's
 * peak, reset just before the upload): the growth is the peak minus the RSS just before.
 *
 * The reading side's CPU (this process: the SDK or node:http reading the bytes) is reported per
 * transfer too: a reader short of CPU slows both sides alike and pulls the ratio towards 1.
 * Every Node process of the run starts with the heap floor Basalt starts with
 * (`--initial-old-space-size`, see docs/operations.md), so that none of them, reader included,
 * spends a transfer in a loop of full collections (which made single rounds swing by ±0.2).
 *
 * Prints one JSON line per figure on stdout; progress goes to stderr. BENCH_STORAGE_BACKENDS
 * (`fs,s3`) picks the backends; a short run: BENCH_STORAGE_SIZE=67108864 BENCH_STORAGE_ROUNDS=1
 * BENCH_STORAGE_RSS_SIZE=0 (0 skips the memory check).
 */
import { Upload } from '@aws-sdk/lib-storage';
import { DeleteObjectCommand, GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createS3Client, S3_UPLOAD_QUEUE_SIZE } from '../server/modules/storage/backends/s3.js';
import { createBenchDatabase } from './database.js';
import { freePort, startServer, type ServerProcess } from './process.js';
import { machine } from './report.js';
import { BENCH_DIR, NODE_HEAP_FLOOR, ROOT_DIR, type Settings } from './settings.js';
import { childEnv, startBasaltServer } from './targets.js';

const MIB = 2 ** 20;
const GOAL_RATIO = 0.8;
const GOAL_RSS_GROWTH_MIB = 64;
export const S3_BUCKET = 'bench';
/** Basalt's default S3_PART_SIZE, given to both sides. */
const S3_PART_SIZE = 5 * MIB;

type Backend = 'fs' | 's3';

interface StorageSettings {
  size: number;
  rssSize: number;
  rounds: number;
  backends: Backend[];
}

function whole(name: string, fallback: number, min: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min) throw new Error(`${name}: expected a whole number >= ${min}`);
  return Number(raw);
}

function storageSettings(): StorageSettings {
  const backends = (process.env.BENCH_STORAGE_BACKENDS ?? 'fs,s3').split(',').map((name) => name.trim());
  for (const name of backends) {
    if (name !== 'fs' && name !== 's3') throw new Error(`BENCH_STORAGE_BACKENDS: unknown backend "${name}"`);
  }
  return {
    size: whole('BENCH_STORAGE_SIZE', 256 * MIB, 1),
    rssSize: whole('BENCH_STORAGE_RSS_SIZE', 1024 * MIB, 0),
    rounds: whole('BENCH_STORAGE_ROUNDS', 3, 1),
    backends: backends as Backend[],
  };
}

function log(message: string): void {
  process.stderr.write(`[bench storage] ${message}\n`);
}

const round = (value: number, digits = 2): number => Math.round(value * 10 ** digits) / 10 ** digits;
const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

/** Incompressible bytes, sent again and again: the harness spends no time producing data. */
const PATTERN = randomBytes(MIB);

/** `total` bytes as a stream of 1 MiB buffers (the last one shorter). */
function body(total: number): Readable {
  return Readable.from(
    (function* () {
      for (let sent = 0; sent < total; sent += MIB)
        yield sent + MIB <= total ? PATTERN : PATTERN.subarray(0, total - sent);
    })(),
    { objectMode: false },
  );
}

interface Transfer {
  seconds: number;
  status: number;
  bytes: number;
}

/** PUT of `total` bytes over a fresh connection; the time runs until the whole answer is read. */
async function put(url: string, headers: Record<string, string>, total: number): Promise<Transfer> {
  const started = performance.now();
  const request = http.request(url, {
    method: 'PUT',
    agent: false,
    headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(total) },
  });
  const answered = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once('response', resolve);
    request.once('error', reject);
  });
  const sending = pipeline(body(total), request).catch(() => undefined);
  const response = await answered;
  let text = '';
  for await (const chunk of response) text += String(chunk);
  await sending;
  if (response.statusCode !== 201) throw new Error(`PUT ${url}: ${response.statusCode} ${text}`);
  return { seconds: (performance.now() - started) / 1000, status: response.statusCode, bytes: total };
}

/** GET, reading (and dropping) every byte; the time runs until the last one. */
async function get(url: string, headers: Record<string, string>): Promise<Transfer> {
  const started = performance.now();
  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get(url, { agent: false, headers }, resolve).once('error', reject);
  });
  let bytes = 0;
  for await (const chunk of response) bytes += (chunk as Buffer).length;
  if (response.statusCode !== 200) throw new Error(`GET ${url}: ${response.statusCode}`);
  return { seconds: (performance.now() - started) / 1000, status: response.statusCode, bytes };
}

async function remove(url: string, headers: Record<string, string>): Promise<void> {
  const response = await fetch(url, { method: 'DELETE', headers });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`DELETE ${url}: ${response.status}`);
}

/** A side that only downloads: the relay, reading the direct side's objects. */
interface DownloadSide {
  name: 'basalt' | 'direct' | 'relay';
  /** The process whose CPU is reported for this side (null: the harness itself). */
  process: ServerProcess | null;
  download(name: string): Promise<Transfer>;
}

/** One side of the comparison: uploads and downloads object `name`, then removes it. */
interface Side extends DownloadSide {
  name: 'basalt' | 'direct';
  upload(name: string, size: number): Promise<Transfer>;
  remove(name: string): Promise<void>;
}

interface Started {
  basalt: Side;
  direct: Side;
  /** S3 only: the bare hop in front of S3 (bench/storage-s3-relay.ts). */
  relay: DownloadSide | null;
  basaltProcess: ServerProcess;
  close(): Promise<void>;
}

/**
 * One of the benchmark's own servers (`bench/<script>`) on a free port, in a process of its own
 * with the run's heap floor; stopped by the run's cleanups.
 */
async function startBenchServer(
  cleanups: Array<() => Promise<void>>,
  name: string,
  script: string,
  env: Record<string, string>,
  readyPath = '/healthz',
): Promise<ServerProcess> {
  const port = await freePort();
  const server = await startServer({
    name,
    command: process.execPath,
    args: [...NODE_HEAP_FLOOR, '--import', 'tsx', path.join(BENCH_DIR, script)],
    cwd: ROOT_DIR,
    env: childEnv({ ...env, PORT: String(port) }),
    url: `http://127.0.0.1:${port}`,
    readyPath,
  });
  cleanups.push(() => server.stop());
  return server;
}

export async function startS3rver(
  cleanups: Array<() => Promise<void>>,
): Promise<{ endpoint: string; server: ServerProcess }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-s3rver-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  // An anonymous ListObjects of the bucket answers 200 once the server is up.
  const server = await startBenchServer(
    cleanups,
    's3rver',
    's3rver-server.ts',
    { S3RVER_DIR: dir, S3RVER_BUCKET: S3_BUCKET },
    `/${S3_BUCKET}`,
  );
  return { endpoint: server.url, server };
}

async function start(backend: Backend, settings: Settings): Promise<Started> {
  const cleanups: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };
  try {
    let s3Env: Record<string, string> = {};
    let s3: S3Client | null = null;
    let relay: DownloadSide | null = null;
    if (backend === 's3') {
      const { endpoint } = await startS3rver(cleanups);
      const relayProcess = await startBenchServer(cleanups, 's3-relay', 'storage-s3-relay.ts', {
        S3_ENDPOINT: endpoint,
        S3_BUCKET,
      });
      relay = {
        name: 'relay',
        process: relayProcess,
        download: (name) => get(`${relayProcess.url}/direct/${name}`, {}),
      };
      s3Env = {
        STORAGE_BACKEND: 's3',
        S3_ENDPOINT: endpoint,
        S3_BUCKET,
        S3_REGION: 'us-east-1',
        S3_ACCESS_KEY_ID: 'S3RVER',
        S3_SECRET_ACCESS_KEY: 'S3RVER',
        S3_FORCE_PATH_STYLE: 'true',
        S3_PART_SIZE: String(S3_PART_SIZE),
      };
      // The client Basalt's backend builds, with the same settings.
      s3 = createS3Client({
        region: 'us-east-1',
        endpoint,
        forcePathStyle: true,
        accessKeyId: 'S3RVER',
        secretAccessKey: 'S3RVER',
      });
      const client = s3;
      cleanups.push(async () => client.destroy());
    }

    // Basalt: the real server process, its own database, its data directory on the same disk as the raw server's.
    const db = await createBenchDatabase(settings.adminDatabaseUrl, 'basalt');
    cleanups.push(async () => {
      if (!settings.keepDatabases) await db.drop();
    });
    const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-storage-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    await mkdir(path.join(dataDir, 'functions'));
    const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const basaltProcess = await startBasaltServer(
      url,
      childEnv({
        DATABASE_URL: db.url,
        PORT: String(port),
        HOST: '127.0.0.1',
        BASALT_SERVICE_KEY: serviceKey,
        BASALT_DATA_DIR: dataDir,
        BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
        BASALT_STORAGE_SWEEP_INTERVAL: '0',
        LOG_LEVEL: 'warn',
        ...s3Env,
      }),
    );
    cleanups.push(() => basaltProcess.stop());
    const auth = { authorization: `Bearer ${serviceKey}` };
    const created = await fetch(`${url}/v1/admin/buckets`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench' }),
    });
    if (created.status !== 201) throw new Error(`bucket: ${created.status} ${await created.text()}`);
    const objectUrl = (name: string): string => `${url}/v1/storage/bench/${name}`;
    const basalt: Side = {
      name: 'basalt',
      process: basaltProcess,
      upload: (name, size) => put(objectUrl(name), auth, size),
      download: (name) => get(objectUrl(name), auth),
      remove: (name) => remove(objectUrl(name), auth),
    };

    let direct: Side;
    if (s3) {
      const client = s3;
      direct = {
        name: 'direct',
        process: null,
        async upload(name, size) {
          const started = performance.now();
          await new Upload({
            client,
            params: { Bucket: S3_BUCKET, Key: `direct/${name}`, Body: body(size) },
            partSize: S3_PART_SIZE,
            queueSize: S3_UPLOAD_QUEUE_SIZE,
          }).done();
          return { seconds: (performance.now() - started) / 1000, status: 200, bytes: size };
        },
        async download(name) {
          const started = performance.now();
          const response = await client.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: `direct/${name}` }));
          let bytes = 0;
          for await (const chunk of response.Body as Readable) bytes += (chunk as Buffer).length;
          return { seconds: (performance.now() - started) / 1000, status: 200, bytes };
        },
        async remove(name) {
          await client.send(new DeleteObjectCommand({ Bucket: S3_BUCKET, Key: `direct/${name}` }));
        },
      };
    } else {
      const rawDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-raw-storage-'));
      cleanups.push(() => rm(rawDir, { recursive: true, force: true }));
      const raw = await startBenchServer(cleanups, 'raw-storage', 'storage-raw-server.ts', {
        RAW_STORAGE_DIR: rawDir,
      });
      const rawUrl = raw.url;
      direct = {
        name: 'direct',
        process: raw,
        upload: (name, size) => put(`${rawUrl}/files/${name}`, {}, size),
        download: (name) => get(`${rawUrl}/files/${name}`, {}),
        remove: (name) => remove(`${rawUrl}/files/${name}`, {}),
      };
    }
    return { basalt, direct, relay, basaltProcess, close };
  } catch (error) {
    await close();
    throw error;
  }
}

interface SideFigures {
  mib_per_s: number;
  /** Every round's MiB/s, in order. */
  rounds_mib_per_s: number[];
  /** CPU seconds of the side's server process per transfer (median); null for the SDK in the harness. */
  cpu_s: number | null;
  /** CPU seconds of the harness per transfer (median): the client sending or reading the bytes. */
  client_cpu_s: number;
}

interface Timed {
  rate: number;
  cpu: number;
  clientCpu: number;
}

/** Per side: each round's MiB/s and CPU seconds (server, harness). */
class Samples {
  readonly rates: number[] = [];
  readonly cpus: number[] = [];
  readonly clientCpus: number[] = [];
  add(result: Timed): void {
    this.rates.push(result.rate);
    this.cpus.push(result.cpu);
    this.clientCpus.push(result.clientCpu);
  }
  figures(): SideFigures {
    const cpu = median(this.cpus);
    return {
      mib_per_s: round(median(this.rates), 1),
      rounds_mib_per_s: this.rates.map((rate) => round(rate, 1)),
      cpu_s: Number.isNaN(cpu) ? null : round(cpu, 2),
      client_cpu_s: round(median(this.clientCpus), 2),
    };
  }
  /** The median of the per-round ratios of this side's throughput to `other`'s, and each round's. */
  ratioTo(other: Samples): { median: number; rounds: number[] } {
    const perRound = this.rates.map((rate, index) => rate / other.rates[index]!);
    return { median: round(median(perRound), 2), rounds: perRound.map((value) => round(value, 2)) };
  }
}

/**
 * Writes back the page cache before a measured transfer, so neither side pays for the disk
 * writes the previous transfer left dirty (a 256 MiB upload is still being flushed for
 * seconds after it was answered).
 */
function flushDirtyPages(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

const harnessCpuSeconds = (): number => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
};

async function timed(side: DownloadSide, action: () => Promise<Transfer>, size: number): Promise<Timed> {
  flushDirtyPages();
  const cpuBefore = side.process?.cpuSeconds() ?? Number.NaN;
  const clientCpuBefore = harnessCpuSeconds();
  const transfer = await action();
  const clientCpu = harnessCpuSeconds() - clientCpuBefore;
  if (transfer.bytes !== size) throw new Error(`${side.name}: moved ${transfer.bytes} bytes, expected ${size}`);
  return {
    rate: size / MIB / transfer.seconds,
    cpu: (side.process?.cpuSeconds() ?? Number.NaN) - cpuBefore,
    clientCpu,
  };
}

/** Resident memory of a process, from /proc/<pid>/status, in bytes. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

async function measureRss(backend: Backend, side: Side, pid: number, size: number): Promise<string> {
  flushDirtyPages();
  // Resetting VmHWM (clear_refs 5) makes the kernel's own peak cover this upload alone.
  let hwmReset = true;
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    hwmReset = false;
  }
  const before = memoryOf(pid).rss;
  let sampled = before;
  const timer = setInterval(() => {
    try {
      sampled = Math.max(sampled, memoryOf(pid).rss);
    } catch {
      // the process ended; the upload fails on its own
    }
  }, 20);
  let transfer: Transfer;
  try {
    transfer = await side.upload('rss.bin', size);
  } finally {
    clearInterval(timer);
  }
  const after = memoryOf(pid);
  const peak = Math.max(sampled, hwmReset ? after.hwm : 0);
  await side.remove('rss.bin');
  const growth = (peak - before) / MIB;
  log(`${backend}: ${size / MIB} MiB upload, RSS ${round(before / MIB, 1)} -> peak ${round(peak / MIB, 1)} MiB`);
  return JSON.stringify({
    bench: 'storage.upload_rss',
    backend,
    upload_bytes: size,
    upload_mib_per_s: round(size / MIB / transfer.seconds, 1),
    rss_before_mib: round(before / MIB, 1),
    rss_peak_mib: round(peak / MIB, 1),
    rss_after_mib: round(after.rss / MIB, 1),
    rss_growth_mib: round(growth, 1),
    peak_from: hwmReset ? 'VmHWM (reset before the upload) and VmRSS every 20 ms' : 'VmRSS every 20 ms',
    goal: { rss_growth_mib_below: GOAL_RSS_GROWTH_MIB },
    met: growth < GOAL_RSS_GROWTH_MIB,
    date: new Date().toISOString(),
    machine,
  });
}

async function measureBackend(backend: Backend, settings: Settings, options: StorageSettings): Promise<string[]> {
  const started = await start(backend, settings);
  const lines: string[] = [];
  try {
    const sides = [started.basalt, started.direct];
    const readers: DownloadSide[] = started.relay ? [...sides, started.relay] : sides;
    const up = { basalt: new Samples(), direct: new Samples() };
    const down = { basalt: new Samples(), direct: new Samples(), relay: new Samples() };
    // A small warm-up on every side: JIT, connections, directories.
    for (const side of sides) {
      await side.upload('warm.bin', 4 * MIB);
      await side.download('warm.bin');
    }
    await started.relay?.download('warm.bin');
    for (const side of sides) await side.remove('warm.bin');
    for (let index = 0; index < options.rounds; index++) {
      // Each round starts with another side, so that none always follows the same transfer.
      const order = index % 2 === 0 ? sides : [...sides].reverse();
      const readOrder = readers.map((_, offset) => readers[(index + offset) % readers.length]!);
      const name = `round-${index}.bin`;
      for (const side of order)
        up[side.name].add(await timed(side, () => side.upload(name, options.size), options.size));
      for (const side of readOrder) {
        down[side.name].add(await timed(side, () => side.download(name), options.size));
      }
      for (const side of sides) await side.remove(name);
      const relayed = started.relay ? ` / relay ${round(down.relay.rates.at(-1)!, 1)}` : '';
      log(
        `${backend} round ${index + 1}: upload basalt ${round(up.basalt.rates.at(-1)!, 1)} / direct ${round(up.direct.rates.at(-1)!, 1)} MiB/s, ` +
          `download basalt ${round(down.basalt.rates.at(-1)!, 1)} / direct ${round(down.direct.rates.at(-1)!, 1)}${relayed} MiB/s`,
      );
    }
    for (const [bench, samples] of [
      ['storage.upload', up],
      ['storage.download', down],
    ] as const) {
      // Each round runs the sides seconds apart, so the per-round ratio cancels most of the
      // machine's other load; the median of those is the figure judged against the goal.
      const ratio = samples.basalt.ratioTo(samples.direct);
      const relay =
        'relay' in samples && samples.relay.rates.length > 0
          ? {
              relay: samples.relay.figures(),
              relay_is: 'node:http piping GetObject to the response, same S3 client (bench/storage-s3-relay.ts)',
              relay_vs_direct: samples.relay.ratioTo(samples.direct).median,
              relay_vs_direct_rounds: samples.relay.ratioTo(samples.direct).rounds,
              vs_relay: samples.basalt.ratioTo(samples.relay).median,
            }
          : {};
      const basalt = samples.basalt.figures();
      const direct = samples.direct.figures();
      lines.push(
        JSON.stringify({
          bench,
          backend,
          object_bytes: options.size,
          rounds: options.rounds,
          basalt,
          direct,
          vs_direct: ratio.median,
          vs_direct_rounds: ratio.rounds,
          vs_direct_of_medians: round(basalt.mib_per_s / direct.mib_per_s, 2),
          direct_is:
            backend === 'fs'
              ? 'node:http streaming to a temporary file, fsync, rename (bench/storage-raw-server.ts)'
              : `AWS SDK straight to the S3 server (lib-storage Upload, ${S3_PART_SIZE / MIB} MiB parts, ${S3_UPLOAD_QUEUE_SIZE} at a time; GetObject)`,
          ...relay,
          goal: { vs_direct: GOAL_RATIO },
          met: ratio.median >= GOAL_RATIO,
          date: new Date().toISOString(),
          machine,
        }),
      );
    }
    if (options.rssSize > 0) {
      const pid = started.basaltProcess.child.pid;
      if (pid === undefined) throw new Error('basalt has no pid');
      lines.push(await measureRss(backend, started.basalt, pid, options.rssSize));
    }
  } finally {
    await started.close();
  }
  return lines;
}

/** Every line of the storage suite (run.ts prints them). */
export async function runStorage(settings: Settings): Promise<string[]> {
  const options = storageSettings();
  log(
    `backends ${options.backends.join(', ')}: ${options.size / MIB} MiB object, ${options.rounds} rounds; ` +
      `RSS check with ${options.rssSize / MIB} MiB`,
  );
  const lines: string[] = [];
  for (const backend of options.backends) lines.push(...(await measureBackend(backend, settings, options)));
  return lines;
}
