/**
 * Benchmarks of resumable uploads and image transforms: `npm run bench -- storage-tus` and
 * `npm run bench -- storage-transform`.
 *
 * - storage-tus: one BENCH_TUS_SIZE (256 MiB) object through Basalt as a plain PUT and as a tus
 *   upload (POST, then PATCHes of BENCH_TUS_CHUNK, 64 MiB), BENCH_STORAGE_ROUNDS (3) rounds
 *   alternating which goes first, per backend of BENCH_STORAGE_BACKENDS (`fs,s3`). Reports
 *   MiB/s of each and `tus_vs_put`, the median ratio of the rounds. tus pays for its
 *   resumability: a lease and a fresh request per PATCH, an offset recorded in Postgres per
 *   8 MiB on disk (an fsync each) or per S3 part, and on S3 the tail of each PATCH short of a
 *   part kept in Postgres. The SHA-256 is hashed as the bytes arrive (all PATCHes reach the
 *   one server here); an upload resumed on another instance reads its bytes back instead
 *   (docs/storage.md). BENCH_CPU_PROFILE_DIR profiles the server.
 * - storage-transform: a 12-megapixel JPEG (4000 × 3000) uploaded once, then
 *   `?width=400&format=webp`: the first request of BENCH_TRANSFORM_VARIANTS (20) distinct
 *   variants (each a new quality, so each is computed: decode, resize, encode, cache) and
 *   BENCH_TRANSFORM_REQUESTS (200) requests of a cached one; p50 and p95 of each, one request
 *   at a time (latency, not throughput).
 *
 * One JSON line per figure on stdout, progress on stderr, as the other suites.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import sharp from 'sharp';
import { createBenchDatabase } from './database.js';
import { freePort } from './process.js';
import { machine } from './report.js';
import type { Settings } from './settings.js';
import { S3_BUCKET, startS3rver } from './storage.js';
import { childEnv, startBasaltServer } from './targets.js';

const MIB = 2 ** 20;
type Backend = 'fs' | 's3';

function whole(name: string, fallback: number, min: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min) throw new Error(`${name}: expected a whole number >= ${min}`);
  return Number(raw);
}

function log(message: string): void {
  process.stderr.write(`[bench storage-v1.1] ${message}\n`);
}

const round = (value: number, digits = 2): number => Math.round(value * 10 ** digits) / 10 ** digits;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const PATTERN = randomBytes(MIB);

function pattern(total: number): Readable {
  return Readable.from(
    (function* () {
      for (let sent = 0; sent < total; sent += MIB)
        yield sent + MIB <= total ? PATTERN : PATTERN.subarray(0, total - sent);
    })(),
  );
}

/** A request of `total` pattern bytes over a fresh connection; resolves to the status, headers and body text. */
async function send(
  url: string,
  method: string,
  headers: Record<string, string>,
  total: number,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  const request = http.request(url, {
    method,
    agent: false,
    headers: { ...headers, 'content-length': String(total) },
  });
  const answered = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once('response', resolve);
    request.once('error', reject);
  });
  const sending =
    total > 0 ? pipeline(pattern(total), request).catch(() => undefined) : (request.end(), Promise.resolve());
  const response = await answered;
  let text = '';
  for await (const chunk of response) text += String(chunk);
  await sending;
  return { status: response.statusCode ?? 0, headers: response.headers, text };
}

interface Basalt {
  url: string;
  auth: Record<string, string>;
  close(): Promise<void>;
}

async function startBasalt(settings: Settings, backend: Backend): Promise<Basalt> {
  const cleanups: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };
  try {
    let s3Env: Record<string, string> = {};
    if (backend === 's3') {
      const { endpoint } = await startS3rver(cleanups);
      s3Env = {
        STORAGE_BACKEND: 's3',
        S3_ENDPOINT: endpoint,
        S3_BUCKET,
        S3_REGION: 'us-east-1',
        S3_ACCESS_KEY_ID: 'S3RVER',
        S3_SECRET_ACCESS_KEY: 'S3RVER',
        S3_FORCE_PATH_STYLE: 'true',
      };
    }
    const db = await createBenchDatabase(settings.adminDatabaseUrl, 'basalt');
    cleanups.push(async () => {
      if (!settings.keepDatabases) await db.drop();
    });
    const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-storage-v11-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    await mkdir(path.join(dataDir, 'functions'));
    const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
    const url = `http://127.0.0.1:${await freePort()}`;
    const server = await startBasaltServer(
      url,
      childEnv({
        DATABASE_URL: db.url,
        PORT: new URL(url).port,
        HOST: '127.0.0.1',
        BASALT_SERVICE_KEY: serviceKey,
        BASALT_DATA_DIR: dataDir,
        BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
        BASALT_STORAGE_SWEEP_INTERVAL: '0',
        LOG_LEVEL: 'warn',
        ...s3Env,
      }),
    );
    cleanups.push(() => server.stop());
    const auth = { authorization: `Bearer ${serviceKey}` };
    const created = await fetch(`${url}/v1/admin/buckets`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench' }),
    });
    if (created.status !== 201) throw new Error(`bucket: ${created.status} ${await created.text()}`);
    return { url, auth, close };
  } catch (error) {
    await close();
    throw error;
  }
}

async function timedPut(basalt: Basalt, name: string, size: number): Promise<number> {
  const started = performance.now();
  const res = await send(
    `${basalt.url}/v1/storage/bench/${name}`,
    'PUT',
    { ...basalt.auth, 'content-type': 'application/octet-stream' },
    size,
  );
  if (res.status !== 201) throw new Error(`PUT: ${res.status} ${res.text}`);
  return (performance.now() - started) / 1000;
}

async function timedTus(basalt: Basalt, name: string, size: number, chunk: number): Promise<number> {
  const tus = { ...basalt.auth, 'tus-resumable': '1.0.0' };
  const started = performance.now();
  const metadata = `bucket ${Buffer.from('bench').toString('base64')},path ${Buffer.from(name).toString('base64')}`;
  const created = await send(
    `${basalt.url}/v1/storage/uploads`,
    'POST',
    { ...tus, 'upload-length': String(size), 'upload-metadata': metadata },
    0,
  );
  if (created.status !== 201) throw new Error(`tus POST: ${created.status} ${created.text}`);
  const location = `${basalt.url}${String(created.headers.location)}`;
  for (let offset = 0; offset < size; offset += chunk) {
    const length = Math.min(chunk, size - offset);
    const res = await send(
      location,
      'PATCH',
      { ...tus, 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
      length,
    );
    if (res.status !== 204 && res.status !== 200) throw new Error(`tus PATCH: ${res.status} ${res.text}`);
  }
  return (performance.now() - started) / 1000;
}

export async function runResumableUploads(settings: Settings): Promise<string[]> {
  const size = whole('BENCH_TUS_SIZE', 256 * MIB, 1);
  const chunk = whole('BENCH_TUS_CHUNK', 64 * MIB, 1);
  const rounds = whole('BENCH_STORAGE_ROUNDS', 3, 1);
  const backends = (process.env.BENCH_STORAGE_BACKENDS ?? 'fs,s3').split(',').map((b) => b.trim()) as Backend[];
  const lines: string[] = [];
  for (const backend of backends) {
    log(`${backend}: ${size / MIB} MiB, PUT vs tus (${chunk / MIB} MiB PATCHes), ${rounds} rounds`);
    const basalt = await startBasalt(settings, backend);
    try {
      const put: number[] = [];
      const tus: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const order = i % 2 === 0 ? (['put', 'tus'] as const) : (['tus', 'put'] as const);
        for (const side of order) {
          if (side === 'put') put.push(size / MIB / (await timedPut(basalt, `put-${i}`, size)));
          else tus.push(size / MIB / (await timedTus(basalt, `tus-${i}`, size, chunk)));
        }
      }
      const ratios = put.map((p, i) => (tus[i] ?? 0) / p);
      lines.push(
        JSON.stringify({
          bench: `storage.tus.${backend}`,
          size_mib: size / MIB,
          chunk_mib: chunk / MIB,
          put_mib_s: put.map((v) => round(v)),
          tus_mib_s: tus.map((v) => round(v)),
          tus_vs_put: round(percentile(ratios, 50)),
          rounds,
          machine,
        }),
      );
    } finally {
      await basalt.close();
    }
  }
  return lines;
}

export async function runTransforms(settings: Settings): Promise<string[]> {
  const variants = whole('BENCH_TRANSFORM_VARIANTS', 20, 1);
  const requests = whole('BENCH_TRANSFORM_REQUESTS', 200, 1);
  log(`12-MP JPEG → 400 px WebP: ${variants} first requests, ${requests} cached`);
  const width = 4000;
  const height = 3000;
  // A photo-like image (noise over a gradient): encoders find work in it, as in a real photo.
  const raw = Buffer.alloc(width * height * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (((i / 3) % width) * 255) / width + ((i * 2654435761) >>> 27);
  const jpeg = await sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
  const basalt = await startBasalt(settings, 'fs');
  try {
    const put = await fetch(`${basalt.url}/v1/storage/bench/photo.jpg`, {
      method: 'PUT',
      headers: { ...basalt.auth, 'content-type': 'image/jpeg' },
      body: jpeg,
    });
    if (put.status !== 201) throw new Error(`PUT: ${put.status} ${await put.text()}`);
    const timedGet = async (query: string): Promise<number> => {
      const started = performance.now();
      const res = await fetch(`${basalt.url}/v1/storage/bench/photo.jpg?${query}`, { headers: basalt.auth });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`GET ?${query}: ${res.status}`);
      return performance.now() - started;
    };
    const first: number[] = [];
    for (let i = 0; i < variants; i++) first.push(await timedGet(`width=400&format=webp&quality=${60 + i}`));
    const cached: number[] = [];
    for (let i = 0; i < requests; i++) cached.push(await timedGet('width=400&format=webp&quality=60'));
    return [
      JSON.stringify({
        bench: 'storage.transform',
        input: { width, height, bytes: jpeg.length, format: 'jpeg' },
        output: { width: 400, format: 'webp' },
        first_p50_ms: round(percentile(first, 50)),
        first_p95_ms: round(percentile(first, 95)),
        cached_p50_ms: round(percentile(cached, 50)),
        cached_p95_ms: round(percentile(cached, 95)),
        variants,
        requests,
        machine,
      }),
    ];
  } finally {
    await basalt.close();
  }
}
