import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import pg from 'pg';
import S3rver from 's3rver';
import type { StorageBackend } from '../server/modules/storage/backends/index.js';
import { createStorageBackend } from '../server/modules/storage/module.js';
import { createTestDatabase, startTestApp, type TestApp } from './helpers.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../server/internal/net.js';

export interface S3Server {
  endpoint: string;
  bucket: string;
  /** The S3_* environment that points Basalt at this server. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** A real S3 HTTP server (s3rver) on a free loopback port, with one bucket, in a temp directory. */
export async function startS3Server(bucket = 'basalt-test'): Promise<S3Server> {
  const directory = await mkdtemp(path.join(tmpdir(), 'basalt-s3rver-'));
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    configureBuckets: [{ name: bucket, configs: [] }],
  });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  return {
    endpoint,
    bucket,
    env: {
      STORAGE_BACKEND: 's3',
      S3_ENDPOINT: endpoint,
      S3_BUCKET: bucket,
      S3_REGION: 'us-east-1',
      S3_ACCESS_KEY_ID: 'S3RVER',
      S3_SECRET_ACCESS_KEY: 'S3RVER',
      S3_FORCE_PATH_STYLE: 'true',
    },
    async close() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * `total` bytes of a repeating pattern, produced lazily in `chunk`-sized pieces; with
 * `failAfter`, the stream fails with "client went away" once that many bytes are out.
 */
export function generatedBytes(total: number, options: { chunk?: number; failAfter?: number } = {}): Readable {
  const chunk = options.chunk ?? 64 * 1024;
  let sent = 0;
  return new Readable({
    read() {
      if (options.failAfter !== undefined && sent >= options.failAfter) {
        this.destroy(new Error('client went away'));
        return;
      }
      if (sent >= total) {
        this.push(null);
        return;
      }
      const size = Math.min(chunk, total - sent);
      const piece = Buffer.alloc(size, sent % 251);
      sent += size;
      this.push(piece);
    },
  });
}

/** A request whose path is sent exactly as written (fetch would resolve `..` and `%2e%2e`). */
export function rawRequest(
  baseUrl: string,
  method: string,
  rawPath: string,
  token: string,
  body?: string,
): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const target = new URL(baseUrl);
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        method,
        path: rawPath,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A Basalt server running as a real process (crash tests kill it with SIGKILL). */
export interface ServerProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
}

/** Starts `node --import tsx server/main.ts` as a real process and waits for /healthz. */
export async function startServerProcess(env: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited: ${output}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`server did not start: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { child, url, output: () => output };
}

/** A test server on the given backend (s3rver started for `s3`), with a SQL pool and the backend itself. */
export interface StorageTestServer {
  server: TestApp;
  sql: pg.Pool;
  backend: StorageBackend;
  close(): Promise<void>;
}

export async function startStorageTestServer(
  backendKind: 'fs' | 's3',
  env: Record<string, string> = {},
): Promise<StorageTestServer> {
  const database = await createTestDatabase();
  const s3 = backendKind === 's3' ? await startS3Server() : null;
  const server = await startTestApp(database, { ...(s3?.env ?? {}), ...env });
  const sql = new pg.Pool({ connectionString: database.url, max: 2 });
  const backend = createStorageBackend(server.config);
  return {
    server,
    sql,
    backend,
    async close() {
      await backend.close();
      await sql.end();
      await server.close();
      await s3?.close();
      await database.drop();
    },
  };
}
