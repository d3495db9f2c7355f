/**
 * `npm run bench -- offline`: the offline-first SDK in Debian's Chromium (playwright-core),
 * against the real Basalt server, which the suite stops and starts on the same port and database.
 *
 * - `offline.first_snapshot`: a page follows a 1,000-document query (its cache fills), the
 *   server is stopped, and the page reloads BENCH_OFFLINE_RELOADS times: from creating the
 *   client to the first snapshot (all 1,000 documents, `fromCache`), and from the navigation's
 *   start. Goal ≤ 100 ms.
 * - `offline.flush`: 500 writes queued with the server down; then the server starts: from its
 *   first ready answer to `waitForPendingWrites()` resolving (includes the SDK's wait before its
 *   next retry). Goal ≤ 5 s.
 * - `offline.sdk_size`: min+gzip of the whole SDK (offline included), and of what an app that
 *   never enables offline downloads (the SDK built with code splitting: the offline engine is a
 *   chunk of its own loaded by `import()`).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { build } from 'esbuild';
import { chromium, type Page } from 'playwright-core';
import { createBenchDatabase } from './database.js';
import { round } from './load.js';
import { freePort, type ServerProcess } from './process.js';
import { machine } from './report.js';
import { ROOT_DIR, type Settings } from './settings.js';
import { childEnv, startBasaltServer } from './targets.js';

const CHROMIUM = '/usr/bin/chromium';
const DOCUMENTS = 1_000;
const QUEUED_WRITES = 500;
const SDK_ENTRY = path.join(ROOT_DIR, 'client-sdk', 'src', 'index.ts');

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return round(sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN, 1);
}

const gzipped = (code: string | Uint8Array): number => gzipSync(code, { level: 9 }).length;

/** The SDK's size: whole (one file, as client-sdk/scripts/build.mjs makes it), and without the offline chunk. */
async function sdkSizes(): Promise<{ whole: number; without_offline: number; offline_chunks: number }> {
  const options = { bundle: true, format: 'esm', platform: 'browser', target: 'es2020', minify: true } as const;
  const whole = await build({ ...options, entryPoints: [SDK_ENTRY], write: false, logLevel: 'silent' });
  // An app that never passes `offline`: what it imports statically is what it downloads.
  const dir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-sdk-'));
  try {
    const split = await build({
      ...options,
      stdin: {
        contents:
          `import { createClient } from ${JSON.stringify(SDK_ENTRY)};\n` +
          'export const client = createClient("http://127.0.0.1:8080");\n',
        resolveDir: ROOT_DIR,
        loader: 'ts',
      },
      splitting: true,
      outdir: dir,
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const outputs = split.metafile.outputs;
    const entry = Object.keys(outputs).find((file) => outputs[file]?.entryPoint !== undefined) as string;
    const loaded = new Set([entry]);
    for (const file of loaded) {
      for (const imported of outputs[file]?.imports ?? [])
        if (imported.kind === 'import-statement') loaded.add(imported.path);
    }
    let withoutOffline = 0;
    let lazy = 0;
    for (const file of split.outputFiles) {
      const relative = path.relative(ROOT_DIR, file.path);
      if (loaded.has(relative)) withoutOffline += gzipped(file.contents);
      else lazy += gzipped(file.contents);
    }
    return {
      whole: gzipped(whole.outputFiles[0]?.contents ?? ''),
      without_offline: withoutOffline,
      offline_chunks: lazy,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface PageClient {
  auth: { ready: Promise<void>; signUp(input: { email: string; password: string }): Promise<unknown> };
  db: {
    collection(name: string): {
      add(data: unknown): Promise<unknown>;
      orderBy(path: string): {
        limit(n: number): { onSnapshot(callback: (s: { docs: unknown[]; fromCache: boolean }) => void): () => void };
      };
    };
    batch(): { create(collection: string, data: unknown): void; commit(): Promise<unknown> };
    waitForPendingWrites(): Promise<void>;
    pendingWrites(): number;
  };
}
type BenchWindow = {
  Basalt: { createClient(url: string, options: unknown): PageClient };
  basalt: PageClient;
  first: Promise<{ fromClient: number; fromNavigation: number; documents: number; fromCache: boolean }>;
};

/** Loads (or reloads) the page, creates the offline client and follows the 1,000 documents. */
async function follow(
  page: Page,
  url: string,
): Promise<{ fromClient: number; fromNavigation: number; documents: number; fromCache: boolean }> {
  return page.evaluate(
    ({ url, documents }) => {
      const w = window as unknown as BenchWindow;
      const started = performance.now();
      w.basalt = w.Basalt.createClient(url, { offline: { persistence: 'indexeddb' } });
      return new Promise((resolve) => {
        w.basalt.db
          .collection('bench_offline')
          .orderBy('created_at')
          .limit(documents)
          .onSnapshot((snapshot) => {
            if (snapshot.docs.length < documents) return;
            const now = performance.now();
            resolve({
              fromClient: now - started,
              fromNavigation: now,
              documents: snapshot.docs.length,
              fromCache: snapshot.fromCache,
            });
          });
      });
    },
    { url, documents: DOCUMENTS },
  );
}

export async function runOffline(settings: Settings): Promise<string[]> {
  const reloads = Number(process.env.BENCH_OFFLINE_RELOADS ?? '5');
  const sizes = await sdkSizes();
  const lines = [
    JSON.stringify({
      bench: 'offline.sdk_size',
      basalt: {
        whole_gzip_bytes: sizes.whole,
        without_offline_gzip_bytes: sizes.without_offline,
        offline_chunks_gzip_bytes: sizes.offline_chunks,
      },
      goal: { whole_gzip_bytes_at_most: 25 * 1024 },
      met: sizes.whole <= 25 * 1024,
      date: new Date().toISOString(),
      machine,
    }),
  ];
  log(`SDK: ${sizes.whole} B whole, ${sizes.without_offline} B without offline (min+gzip)`);

  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'offline');
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-offline-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  const env = childEnv({
    DATABASE_URL: db.url,
    PORT: String(port),
    BASALT_SERVICE_KEY: serviceKey,
    BASALT_DATA_DIR: dataDir,
    BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
    LOG_LEVEL: 'warn',
  });
  let server: ServerProcess | null = await startBasaltServer(url, env);
  const bundle = await build({
    entryPoints: [SDK_ENTRY],
    bundle: true,
    format: 'iife',
    globalName: 'Basalt',
    platform: 'browser',
    minify: true,
    write: false,
    logLevel: 'silent',
  });
  const sdk = bundle.outputFiles[0]?.text ?? '';
  const pages = http.createServer((incoming, response) => {
    if (incoming.url?.startsWith('/sdk.js')) response.writeHead(200, { 'content-type': 'text/javascript' }).end(sdk);
    else response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><script src="/sdk.js"></script>');
  });
  await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', resolve));
  const pageUrl = `http://127.0.0.1:${(pages.address() as AddressInfo).port}/app`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const created = await fetch(`${url}/v1/admin/collections`, {
      method: 'POST',
      headers: { authorization: `Bearer ${serviceKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'bench_offline',
        rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null' },
      }),
    });
    if (!created.ok) throw new Error(`creating the collection: ${created.status} ${await created.text()}`);
    const page = await (await browser.newContext()).newPage();
    await page.goto(pageUrl);
    // Signed in, 1,000 documents of the user's own (two batches of 500), followed once online.
    await page.evaluate(
      async ({ url, documents }) => {
        const w = window as unknown as BenchWindow;
        const basalt = w.Basalt.createClient(url, {});
        await basalt.auth.signUp({
          email: `bench-${Date.now()}@example.com`,
          password: 'correct horse battery staple 42',
        });
        for (let start = 0; start < documents; start += 500) {
          const batch = basalt.db.batch();
          for (let i = start; i < Math.min(documents, start + 500); i++) {
            batch.create('bench_offline', { title: `todo ${i}`, done: i % 3 === 0, notes: 'x'.repeat(100) });
          }
          await batch.commit();
        }
      },
      { url, documents: DOCUMENTS },
    );
    const online = await follow(page, url);
    log(`online: first snapshot of ${online.documents} documents in ${round(online.fromClient, 1)} ms`);
    // The cache is written a microtask batch after the snapshot: let it land.
    await new Promise((resolve) => setTimeout(resolve, 1_000));

    await server.stop();
    server = null;
    const fromClient: number[] = [];
    const fromNavigation: number[] = [];
    for (let i = 0; i < reloads; i++) {
      await page.reload();
      const first = await follow(page, url);
      if (!first.fromCache) throw new Error('a snapshot with the server down was not from the cache');
      fromClient.push(first.fromClient);
      fromNavigation.push(first.fromNavigation);
    }
    lines.push(
      JSON.stringify({
        bench: 'offline.first_snapshot',
        basalt: {
          documents: DOCUMENTS,
          reloads,
          p50_ms: median(fromClient),
          max_ms: round(Math.max(...fromClient), 1),
          since_navigation_p50_ms: median(fromNavigation),
        },
        goal: { p50_ms_at_most: 100 },
        met: median(fromClient) <= 100,
        date: new Date().toISOString(),
        machine,
      }),
    );
    log(`offline reload: first snapshot p50 ${median(fromClient)} ms`);

    const queuedMs = await page.evaluate(async (count) => {
      const w = window as unknown as BenchWindow;
      const todos = w.basalt.db.collection('bench_offline');
      const started = performance.now();
      for (let i = 0; i < count; i++) await todos.add({ title: `queued ${i}`, done: false });
      return performance.now() - started;
    }, QUEUED_WRITES);
    const serverStarted = performance.now();
    server = await startBasaltServer(url, env);
    const readyMs = performance.now() - serverStarted;
    const flushed = await page.evaluate(async () => {
      const w = window as unknown as BenchWindow;
      const started = performance.now();
      await w.basalt.db.waitForPendingWrites();
      return { ms: performance.now() - started, left: w.basalt.db.pendingWrites() };
    });
    const stored = await fetch(`${url}/v1/db/bench_offline/count`, {
      method: 'POST',
      headers: { authorization: `Bearer ${serviceKey}`, 'content-type': 'application/json' },
      body: '{}',
    }).then((answer) => answer.json() as Promise<{ count: number }>);
    lines.push(
      JSON.stringify({
        bench: 'offline.flush',
        basalt: {
          writes: QUEUED_WRITES,
          queue_ms: round(queuedMs, 1),
          flush_ms: round(flushed.ms, 1),
          writes_per_s: round((QUEUED_WRITES / flushed.ms) * 1000, 1),
          server_start_ms: round(readyMs, 1),
          stored: stored.count,
        },
        goal: { flush_ms_at_most: 5_000 },
        met: flushed.ms <= 5_000 && stored.count === DOCUMENTS + QUEUED_WRITES,
        date: new Date().toISOString(),
        machine,
      }),
    );
    log(`flush: ${QUEUED_WRITES} writes in ${round(flushed.ms, 1)} ms; the server holds ${stored.count}`);
  } finally {
    await browser.close();
    await new Promise((resolve) => pages.close(resolve));
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
    if (!process.env.BENCH_KEEP_DATABASES) await db.drop();
  }
  return lines;
}
