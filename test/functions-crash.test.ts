import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, request, waitFor, type TestDatabase } from './helpers.js';
import { freePort } from '../server/internal/net.js';

/**
 * At-least-once delivery across a crash: a server process is killed with SIGKILL while a
 * function runs; another process picks the event up again, with the same event id, and
 * the handler's idempotent effect happens once.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
let database: TestDatabase;
let functionsDir: string;
let dataDir: string;
const children: ChildProcess[] = [];

const HANDLER = `
  import { onDocument } from 'basalt/functions';
  export default onDocument({ collection: 'jobs', on: 'create', timeout_ms: 4000, retries: 5 }, async (event, ctx) => {
    const key = event.id.replace(/[^A-Za-z0-9_-]/g, '_');
    await ctx.db.collection('attempts').add({ event: event.id });
    await new Promise((resolve) => setTimeout(resolve, 2500));
    // Idempotent by event id: a second delivery writes the same document again.
    await ctx.db.collection('effects').doc(key).set({ event: event.id, job: event.after?.id });
  });`;

async function startServer(): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: database.url,
      PORT: String(port),
      BASALT_SERVICE_KEY: serviceKey,
      BASALT_FUNCTIONS_DIR: functionsDir,
      BASALT_FUNCTIONS_WATCH: 'false',
      BASALT_DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
    },
    stdio: 'ignore',
  });
  children.push(child);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const ready = await fetch(`${url}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
    if (ready) return { child, url };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error('the server did not start');
}

async function docs(url: string, collection: string): Promise<Array<{ id: string; data: Record<string, unknown> }>> {
  const response = await request(url, 'POST', `/v1/db/${collection}/query`, {
    token: serviceKey,
    body: { limit: 100 },
  });
  return (response.body as { docs?: Array<{ id: string; data: Record<string, unknown> }> }).docs ?? [];
}

beforeAll(async () => {
  functionsDir = await mkdtemp(path.join(tmpdir(), 'basalt-crash-fn-'));
  dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-crash-data-'));
  await writeFile(path.join(functionsDir, 'slowEffect.ts'), HANDLER);
  database = await createTestDatabase();
});

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await database?.drop();
  await rm(functionsDir, { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
});

describe('a crash during a function run', () => {
  it('delivers the event again and the idempotent effect happens once', { timeout: 120_000 }, async () => {
    const first = await startServer();
    for (const name of ['jobs', 'attempts', 'effects']) {
      const created = await request(first.url, 'POST', '/v1/admin/collections', { token: serviceKey, body: { name } });
      expect(created.status).toBe(201);
    }
    // A moment for the dispatcher to take its cursor before the change commits.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const job = await request(first.url, 'POST', '/v1/db/jobs', { token: serviceKey, body: { id: 'job-1', data: {} } });
    expect(job.status).toBe(201);

    const [attempt] = await waitFor(
      'the first attempt',
      async () => {
        const found = await docs(first.url, 'attempts');
        return found.length > 0 ? found : null;
      },
      20_000,
    );
    first.child.kill('SIGKILL');
    await new Promise((resolve) => first.child.once('exit', resolve));

    const second = await startServer();
    const effects = await waitFor(
      'the effect after the restart',
      async () => {
        const found = await docs(second.url, 'effects');
        return found.length > 0 ? found : null;
      },
      60_000,
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const attempts = await docs(second.url, 'attempts');
    expect(effects).toHaveLength(1);
    expect(effects[0]?.data).toEqual({ event: attempt?.data.event, job: 'job-1' });
    expect(attempts.length).toBeGreaterThanOrEqual(2);
    expect(new Set(attempts.map((doc) => doc.data.event))).toEqual(new Set([attempt?.data.event]));
    second.child.kill('SIGTERM');
    await new Promise((resolve) => second.child.once('exit', resolve));
  });
});
