import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import PgBoss from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Database } from '../server/internal/db.js';
import { RevocationRepository } from '../server/modules/auth/repository/revocations.js';
import { RevocationCache } from '../server/modules/auth/revocations.js';
import { QueueRunner } from '../server/modules/functions/runner.js';
import { ContentDigest, hashingWorkerForTests } from '../server/modules/storage/backends/digest.js';
import { TestSocket } from './realtime-client.js';
import {
  createTestDatabase,
  request,
  silentLogger,
  startTestApp,
  waitFor,
  type TestApp,
  type TestDatabase,
} from './helpers.js';

/**
 * At rest, Basalt's periodic work slows down and its function workers end; in use, it is as
 * prompt as before. Observed through what each mechanism does: the queries a poll makes, the
 * fetches a queue runner makes, and whether a run starts a new worker (a cold start).
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let database: TestDatabase;
let sql: pg.Client;

beforeAll(async () => {
  database = await createTestDatabase();
  sql = new pg.Client({ connectionString: database.url });
  await sql.connect();
});

afterAll(async () => {
  await sql?.end();
  await database?.drop();
});

/** The real repository, counting the polls of the revocation table. */
class CountingRevocationRepository extends RevocationRepository {
  polls = 0;
  override async since(...args: Parameters<RevocationRepository['since']>) {
    this.polls++;
    return super.since(...args);
  }
}

describe('the revocation poll', () => {
  it('backs off while no token is verified, and a verification finds a revocation made meanwhile', async () => {
    const db = new Database({ url: database.url, max: 2 }, silentLogger);
    const repo = new CountingRevocationRepository(db);
    const cache = new RevocationCache({ revocations: repo }, { pollMs: 50, horizonSeconds: 900, log: silentLogger });
    try {
      await cache.poll();
      cache.start();
      await sleep(2_000);
      const before = repo.polls;
      await sleep(1_500);
      // Every 50 ms this would be 30 polls; backed off, it is one or two.
      expect(repo.polls - before).toBeLessThanOrEqual(2);

      // Another instance revokes a session (no notification reaches this cache: it has no listener).
      const sessionId = crypto.randomUUID();
      await sql.query('INSERT INTO basalt.session_revocations (session_id) VALUES ($1)', [sessionId]);
      // Verifications see it within the cache's 3 s staleness bound, however long it idled.
      await waitFor('the revocation', () => cache.isRevoked(sessionId), 5_000);

      // While tokens are being verified (every 100 ms here), the poll is back to every 50 ms.
      const resumed = repo.polls;
      for (let i = 0; i < 6; i++) {
        await cache.isRevoked(crypto.randomUUID());
        await sleep(100);
      }
      expect(repo.polls - resumed).toBeGreaterThanOrEqual(6);
    } finally {
      await cache.stop();
      await db.close();
    }
  }, 20_000);
});

describe('a function queue runner', () => {
  it('polls an empty queue less and less often, yet runs a job sent from elsewhere within its longest wait', async () => {
    const boss = new PgBoss({ connectionString: database.url, schema: 'idle_jobs', supervise: false, schedule: false });
    boss.on('error', () => undefined);
    await boss.start();
    const queue = 'idle-queue';
    await boss.createQueue(queue, { name: queue, retryLimit: 0, expireInSeconds: 60 });
    let fetches = 0;
    const counting = new Proxy(boss, {
      get(target, property, receiver) {
        if (property === 'fetch') {
          return (...args: Parameters<PgBoss['fetch']>) => {
            fetches++;
            return target.fetch(...args);
          };
        }
        const value = Reflect.get(target, property, receiver) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    const ran: string[] = [];
    const runner = new QueueRunner<{ n: number }, boolean>({
      boss: counting,
      queue,
      limit: 2,
      pollIntervalMs: 50,
      maxPollIntervalMs: 800,
      log: silentLogger,
      run: async (jobs) => {
        ran.push(...jobs.map((job) => job.id));
        return true;
      },
      settle: async (finished) => {
        await boss.complete(
          queue,
          finished.map(({ job }) => job.id),
        );
      },
    });
    try {
      runner.start();
      await sleep(2_500);
      const before = fetches;
      await sleep(1_600);
      // Every 50 ms this would be 32 fetches; backed off to 800 ms, two or three.
      expect(fetches - before).toBeLessThanOrEqual(3);

      // Sent by another instance: nothing notifies this runner, its next poll finds the job.
      const sentAt = Date.now();
      const [id] = await boss.insert([{ name: queue, data: { n: 1 } }]).then(async () => {
        const { rows } = await sql.query<{ id: string }>(`SELECT id FROM idle_jobs.job WHERE name = $1`, [queue]);
        return rows.map((row) => row.id);
      });
      await waitFor('the job to run', async () => ran.includes(id ?? ''), 5_000);
      expect(Date.now() - sentAt).toBeLessThan(800 + 1_000);
    } finally {
      await runner.stop(2_000);
      await boss.stop({ graceful: false, wait: true });
    }
  }, 30_000);
});

describe('function workers', () => {
  let server: TestApp;
  let functionsDir: string;

  beforeAll(async () => {
    functionsDir = await mkdtemp(path.join(tmpdir(), 'basalt-idle-fn-'));
    await writeFile(
      path.join(functionsDir, 'ping.ts'),
      `import { http } from 'basalt/functions';
       export default http(async () => 'pong');`,
    );
    server = await startTestApp(database, {
      BASALT_FUNCTIONS_DIR: functionsDir,
      BASALT_FUNCTIONS_IDLE_TIMEOUT_MS: '400',
    });
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await rm(functionsDir, { recursive: true, force: true });
  });

  const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);

  async function coldStarts(count: number): Promise<boolean[]> {
    const invocations = await waitFor(
      `${count} recorded runs`,
      async () => {
        const response = await request(server.url, 'GET', '/v1/admin/functions/ping/invocations', {
          token: server.serviceKey,
        });
        const list = (response.body as { invocations: Array<{ cold_start: boolean; started_at: string }> }).invocations;
        return list.length >= count ? list : null;
      },
      10_000,
    );
    return invocations
      .sort((a, b) => a.started_at.localeCompare(b.started_at))
      .map((invocation) => invocation.cold_start);
  }

  it('end after the idle timeout, and the next run starts a new one', async () => {
    const run = () => request(server.url, 'POST', '/v1/functions/ping', { token: server.serviceKey });
    expect((await run()).status).toBe(200);
    expect((await run()).status).toBe(200);
    const warm = threads();
    await sleep(1_200);
    // The warm worker's thread is gone.
    expect(threads()).toBeLessThan(warm);
    expect((await run()).status).toBe(200);
    // First run: a new worker; second: the same, warm; third, after the idle timeout: a new one.
    expect(await coldStarts(3)).toEqual([true, false, true]);
  }, 30_000);
});

describe('the upload hashing worker', () => {
  it('ends once no upload has been hashed for its idle time, and the next upload starts it again', async () => {
    hashingWorkerForTests.setIdleMs(300);
    const hash = async (content: Buffer) => {
      const digest = new ContentDigest();
      for (let offset = 0; offset < content.length; offset += 256 * 1024) {
        await digest.update(content.subarray(offset, offset + 256 * 1024));
      }
      return digest.digest();
    };
    try {
      // Over a slice (1 MiB): hashed on the worker.
      const first = randomBytes(3 * 1024 * 1024 + 5);
      expect(await hash(first)).toBe(createHash('sha256').update(first).digest('hex'));
      expect(hashingWorkerForTests.isRunning()).toBe(true);
      await waitFor('the hashing worker to end', async () => !hashingWorkerForTests.isRunning(), 5_000);
      const second = randomBytes(2 * 1024 * 1024 + 3);
      expect(await hash(second)).toBe(createHash('sha256').update(second).digest('hex'));
    } finally {
      hashingWorkerForTests.setIdleMs(30_000);
    }
  });
});

describe('the presence heartbeat', () => {
  it('makes no query while no connection is in a channel, and beats while one is', async () => {
    const server = await startTestApp(database, { BASALT_REALTIME_PRESENCE_HEARTBEAT_MS: '100' });
    const beats = async () => {
      const { rows } = await sql.query<{ at: string }>(
        'SELECT heartbeat_at::text AS at FROM basalt.realtime_instances ORDER BY heartbeat_at DESC LIMIT 1',
      );
      return rows[0]?.at ?? null;
    };
    let socket: TestSocket | null = null;
    try {
      const atRest = await beats();
      await sleep(600);
      // Six heartbeats at 100 ms before; none now.
      expect(await beats()).toBe(atRest);

      socket = await TestSocket.open(server.url, { token: server.serviceKey });
      socket.send({ type: 'join', channel: 'lobby', presence: { name: 'a' } });
      await socket.nextOfType('joined');
      const joined = await beats();
      expect(joined).not.toBe(atRest);
      await waitFor('a heartbeat while a member is in a channel', async () => (await beats()) !== joined, 2_000);
    } finally {
      socket?.close();
      await server.close();
    }
  }, 30_000);
});
