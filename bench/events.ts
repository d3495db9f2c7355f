/**
 * `npm run bench -- events`: topics (pub/sub) against Basalt's own trigger path, in one run.
 *
 * One Basalt process on a fresh database, with two no-op subscribers of one topic and one
 * no-op onDocument trigger (Parse has no pub/sub: the comparison is Basalt's own
 * write → trigger path). Two measures each:
 *
 * - latency: BENCH_EVENTS_LATENCY (200) publishes (or document writes) one after another,
 *   10 ms apart; publish-to-handler is from sending the request to the run's start as its
 *   invocation records it (p50/p99, over both subscribers);
 * - throughput: BENCH_EVENTS (4000) publishes (or writes) sent 32 at a time; events/s per
 *   subscriber is the events over the time from the first send to the last run finished,
 *   read from `basalt_function_invocations_total` in /metrics; with the time the sends took,
 *   and the CPU per event of the server and of its Postgres backends (less noisy than rates
 *   on a busy machine);
 * - batched throughput: BENCH_EVENTS_BATCHED (20000) events to a second topic whose two
 *   subscribers take `batch_size` BENCH_EVENTS_BATCH (100) events per run, published
 *   BENCH_EVENTS_BATCH per request (`{events: [...]}`), 8 requests at a time: the way SQS and
 *   Kafka users get throughput. A run is many events here, so the end is read from the job
 *   queue (no job of the two subscribers left unfinished), polled on connections of their own
 *   that the CPU figures do not count.
 *
 * Goals (issue 19): p50 ≤ 20 ms and ≥ 2,000 events/s per subscriber.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createBenchDatabase, type BenchDatabase } from './database.js';
import { call, log, percentile } from './deploy.js';
import { round } from './load.js';
import { cpuSnapshot, cpuSpent, freePort, type ServerProcess } from './process.js';
import { machine } from './report.js';
import type { Settings } from './settings.js';
import { childEnv, startBasaltServer } from './targets.js';

const TOPIC = 'bench.events';
const SUBSCRIBERS = ['bench_sub_a', 'bench_sub_b'];
const TRIGGER = 'bench_trigger';
const BATCHED_TOPIC = 'bench.batched';
const BATCHED_SUBSCRIBERS = ['bench_batch_a', 'bench_batch_b'];
/** Batch requests in flight at once (each carries BENCH_EVENTS_BATCH events). */
const BATCHED_PARALLEL = 8;
const noOp = (definition: string) =>
  `import { onEvent, onDocument } from 'basalt/functions';\nexport default ${definition};\n`;

/** Finished runs of `name` so far, from /metrics. */
async function finishedRuns(url: string, token: string, name: string): Promise<number> {
  const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await response.text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('basalt_function_invocations_total{') && line.includes(`function="${name}"`)) {
      total += Number(line.split(' ').at(-1));
    }
  }
  return total;
}

interface Invocation {
  event_id: string | null;
  started_at: string | null;
}

async function invocations(url: string, token: string, name: string): Promise<Invocation[]> {
  const { invocations } = (await call(url, token, 'GET', `/v1/admin/functions/${name}/invocations?limit=1000`)) as {
    invocations: Invocation[];
  };
  return invocations;
}

async function waitForRuns(url: string, token: string, names: string[], count: number): Promise<number> {
  for (;;) {
    const done = await Promise.all(names.map((name) => finishedRuns(url, token, name)));
    if (done.every((n) => n >= count)) return performance.now();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until no job of `functions` is left unfinished (waiting, retrying or running). */
async function waitForQueues(db: BenchDatabase, functions: string[]): Promise<number> {
  const queues = functions.map((name) => `fn-${name}`);
  for (;;) {
    const { rows } = await db.sql(
      `SELECT EXISTS (SELECT 1 FROM basalt_jobs.job WHERE name = ANY($1::text[]) AND state < 'completed') AS busy`,
      [queues],
    );
    if (!(rows[0] as { busy: boolean }).busy) return performance.now();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Sends `total` requests, `parallel` at a time. */
async function inParallel(total: number, parallel: number, send: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < total) await send(next++);
    }),
  );
}

export async function runEvents(_settings: Settings): Promise<string[]> {
  const latencyRounds = Number(process.env.BENCH_EVENTS_LATENCY ?? '200');
  const events = Number(process.env.BENCH_EVENTS ?? '4000');
  const batchedEvents = Number(process.env.BENCH_EVENTS_BATCHED ?? '20000');
  const batch = Number(process.env.BENCH_EVENTS_BATCH ?? '100');
  const db = await createBenchDatabase(_settings.adminDatabaseUrl, 'events');
  const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-bench-events-'));
  let server: ServerProcess | null = null;
  try {
    const port = await freePort();
    server = await startBasaltServer(
      `http://127.0.0.1:${port}`,
      childEnv({
        DATABASE_URL: db.url,
        PORT: String(port),
        BASALT_SERVICE_KEY: serviceKey,
        BASALT_DATA_DIR: dataDir,
        BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
        LOG_LEVEL: 'warn',
      }),
    );
    const url = server.url;
    await call(url, serviceKey, 'POST', '/v1/admin/collections', { name: 'bench_docs' });
    for (const name of SUBSCRIBERS) {
      await call(url, serviceKey, 'PUT', `/v1/admin/functions/${name}`, {
        files: { 'index.ts': noOp(`onEvent({ topic: '${TOPIC}', concurrency: 32 }, async () => {})`) },
        entry: 'index.ts',
      });
    }
    for (const name of BATCHED_SUBSCRIBERS) {
      await call(url, serviceKey, 'PUT', `/v1/admin/functions/${name}`, {
        files: {
          'index.ts': noOp(
            `onEvent({ topic: '${BATCHED_TOPIC}', concurrency: 32, batch_size: ${batch} }, async () => {})`,
          ),
        },
        entry: 'index.ts',
      });
    }
    await call(url, serviceKey, 'PUT', `/v1/admin/functions/${TRIGGER}`, {
      files: {
        'index.ts': noOp(`onDocument({ collection: 'bench_docs', on: 'create', concurrency: 32 }, async () => {})`),
      },
      entry: 'index.ts',
    });

    // Latency: one at a time.
    const publishedAt = new Map<string, number>();
    for (let i = 0; i < latencyRounds; i++) {
      const sent = Date.now();
      const { id } = (await call(url, serviceKey, 'POST', `/v1/events/${TOPIC}`, { payload: { i } })) as { id: string };
      publishedAt.set(id, sent);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const writtenAt: number[] = [];
    for (let i = 0; i < latencyRounds; i++) {
      writtenAt.push(Date.now());
      await call(url, serviceKey, 'POST', '/v1/db/bench_docs', { data: { i } });
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await waitForRuns(url, serviceKey, SUBSCRIBERS, latencyRounds);
    await waitForRuns(url, serviceKey, [TRIGGER], latencyRounds);
    const eventLatency: number[] = [];
    for (const name of SUBSCRIBERS) {
      for (const run of await invocations(url, serviceKey, name)) {
        const sent = run.event_id ? publishedAt.get(run.event_id) : undefined;
        if (sent !== undefined && run.started_at) eventLatency.push(Date.parse(run.started_at) - sent);
      }
    }
    // Trigger runs in start order match the writes in order (one at a time, 10 ms apart).
    const triggerStarts = (await invocations(url, serviceKey, TRIGGER))
      .map((run) => Date.parse(run.started_at ?? ''))
      .sort((a, b) => a - b);
    const triggerLatency = triggerStarts.map((start, i) => start - (writtenAt[i] ?? start));
    log(`latency: events p50 ${percentile(eventLatency, 50)} ms, trigger p50 ${percentile(triggerLatency, 50)} ms`);

    // Throughput: many at once. CPU per event (the server's and its Postgres backends') tells
    // where the time goes, and varies less than the rates on a busy machine.
    const eventsBefore = latencyRounds;
    let cpuBefore = await cpuSnapshot(server, db);
    const started0 = performance.now();
    let started = started0;
    await inParallel(events, 32, async (i) => {
      await call(url, serviceKey, 'POST', `/v1/events/${TOPIC}`, { payload: { i } });
    });
    const published = performance.now();
    const eventsDone = await waitForRuns(url, serviceKey, SUBSCRIBERS, eventsBefore + events);
    const eventsPerSecond = events / ((eventsDone - started) / 1000);
    const eventsCpu = cpuSpent(cpuBefore, await cpuSnapshot(server, db));
    log(
      `throughput: ${round(eventsPerSecond, 0)} events/s per subscriber (published in ${round(published - started, 0)} ms)`,
    );
    cpuBefore = await cpuSnapshot(server, db);
    started = performance.now();
    await inParallel(events, 32, async (i) => {
      await call(url, serviceKey, 'POST', '/v1/db/bench_docs', { data: { i } });
    });
    const written = performance.now();
    const triggerDone = await waitForRuns(url, serviceKey, [TRIGGER], latencyRounds + events);
    const triggersPerSecond = events / ((triggerDone - started) / 1000);
    const triggerCpu = cpuSpent(cpuBefore, await cpuSnapshot(server, db));
    log(`throughput: ${round(triggersPerSecond, 0)} trigger runs/s (written in ${round(written - started, 0)} ms)`);

    // Batched: a warm-up batch first (the subscribers' first runs start their workers).
    await call(url, serviceKey, 'POST', `/v1/events/${BATCHED_TOPIC}`, {
      events: Array.from({ length: batch }, (_, i) => ({ payload: { i } })),
    });
    await waitForQueues(db, BATCHED_SUBSCRIBERS);
    cpuBefore = await cpuSnapshot(server, db);
    const batchedStarted = performance.now();
    const requests = Math.ceil(batchedEvents / batch);
    await inParallel(requests, BATCHED_PARALLEL, async (r) => {
      const size = Math.min(batch, batchedEvents - r * batch);
      await call(url, serviceKey, 'POST', `/v1/events/${BATCHED_TOPIC}`, {
        events: Array.from({ length: size }, (_, i) => ({ payload: { i: r * batch + i } })),
      });
    });
    const batchPublished = performance.now();
    const batchedDone = await waitForQueues(db, BATCHED_SUBSCRIBERS);
    const batchedPerSecond = batchedEvents / ((batchedDone - batchedStarted) / 1000);
    const batchedCpu = cpuSpent(cpuBefore, await cpuSnapshot(server, db));
    log(
      `throughput: ${round(batchedPerSecond, 0)} events/s per subscriber batched ` +
        `(${batch} per request and per run; published in ${round(batchPublished - batchedStarted, 0)} ms)`,
    );

    const perEvent = (seconds: number, count = events) => round((seconds * 1000) / count, 3);
    log(
      `CPU ms per event: topic server ${perEvent(eventsCpu.server)} + Postgres ${perEvent(eventsCpu.postgres)}; ` +
        `batched server ${perEvent(batchedCpu.server, batchedEvents)} + Postgres ${perEvent(batchedCpu.postgres, batchedEvents)}; ` +
        `trigger server ${perEvent(triggerCpu.server)} + Postgres ${perEvent(triggerCpu.postgres)}`,
    );

    const p50 = percentile(eventLatency, 50);
    return [
      JSON.stringify({
        bench: 'functions.events',
        basalt: {
          topic: {
            subscribers: SUBSCRIBERS.length,
            publish_to_handler: { p50_ms: p50, p99_ms: percentile(eventLatency, 99) },
            events_per_second_per_subscriber: round(eventsPerSecond, 0),
            publish_ms: round(published - started0, 0),
            cpu_ms_per_event: { server: perEvent(eventsCpu.server), postgres: perEvent(eventsCpu.postgres) },
          },
          topic_batched: {
            subscribers: BATCHED_SUBSCRIBERS.length,
            events_per_request: batch,
            batch_size: batch,
            events: batchedEvents,
            events_per_second_per_subscriber: round(batchedPerSecond, 0),
            publish_ms: round(batchPublished - batchedStarted, 0),
            cpu_ms_per_event: {
              server: perEvent(batchedCpu.server, batchedEvents),
              postgres: perEvent(batchedCpu.postgres, batchedEvents),
            },
          },
          document_trigger: {
            write_to_handler: { p50_ms: percentile(triggerLatency, 50), p99_ms: percentile(triggerLatency, 99) },
            runs_per_second: round(triggersPerSecond, 0),
            write_ms: round(written - started, 0),
            cpu_ms_per_write: { server: perEvent(triggerCpu.server), postgres: perEvent(triggerCpu.postgres) },
          },
          latency_rounds: latencyRounds,
          events,
        },
        goal: { p50_ms_at_most: 20, events_per_second_per_subscriber_at_least: 2_000 },
        // `met` as before: one publish per event. `met_batched`: the same goal, sent in batches.
        met: p50 <= 20 && eventsPerSecond >= 2_000,
        met_batched: p50 <= 20 && batchedPerSecond >= 2_000,
        date: new Date().toISOString(),
        machine,
      }),
    ];
  } finally {
    await server?.stop();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
