/**
 * Realtime fan-out: many websockets follow one live query while a writer inserts documents
 * at a fixed rate; each subscriber notes when each `added` frame arrives. Reported: the
 * delivery latency from the write's request to the frame (p50/p95/p99), frames delivered
 * per second, whether every frame arrived, and the server's CPU. The floor beside it is
 * Postgres itself: an INSERT whose trigger NOTIFYs one LISTENing client, no server between.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import WebSocket from 'ws';
import { round } from './load.js';
import { machine } from './report.js';
import type { Settings } from './settings.js';
import { call, settle, startTarget } from './targets.js';

function whole(name: string, fallback: number): number {
  const raw = process.env[name]?.trim();
  return raw && /^\d+$/.test(raw) && Number(raw) > 0 ? Number(raw) : fallback;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function summary(latencies: number[]): { p50_ms: number; p95_ms: number; p99_ms: number; max_ms: number } {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    p50_ms: round(percentile(sorted, 50)),
    p95_ms: round(percentile(sorted, 95)),
    p99_ms: round(percentile(sorted, 99)),
    max_ms: round(sorted.at(-1) ?? Number.NaN),
  };
}

/** Frames seen by all subscribers, by type (a `removed` or `error` here means something is off). */
const frameTypes = new Map<string, number>();

const log = (message: string) => process.stderr.write(`[bench realtime] ${message}\n`);

async function openSubscriber(
  url: string,
  serviceKey: string,
  onAdded: (id: string, at: number) => void,
): Promise<WebSocket> {
  const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/realtime?access_token=${serviceKey}`);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { type: string; change?: string; doc?: { id: string } };
      const kind = `${frame.type}${frame.change ? `:${frame.change}` : ''}`;
      frameTypes.set(kind, (frameTypes.get(kind) ?? 0) + 1);
      if (frame.type === 'subscribed') resolve();
      else if (frame.type === 'change' && frame.change === 'added' && frame.doc)
        onAdded(frame.doc.id, performance.now());
    });
    socket.once('open', () =>
      socket.send(
        JSON.stringify({
          type: 'subscribe',
          id: 'feed',
          collection: 'live',
          query: { where: [['room', '==', 1]], limit: 1000 },
        }),
      ),
    );
  });
  return socket;
}

/** Fan-out through Basalt: one writer, `subscribers` sockets on one query. */
async function basaltFanOut(settings: Settings, subscribers: number, rate: number): Promise<Record<string, unknown>> {
  const target = await startTarget('basalt', settings);
  const sockets: WebSocket[] = [];
  frameTypes.clear();
  try {
    const serviceKey = target.serviceKey as string;
    await call(target, 'POST', '/v1/admin/collections', { name: 'live', rules: { read: 'true' } });
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    let delivered = 0;
    const onAdded = (id: string, at: number) => {
      const sent = sentAt.get(id);
      if (sent === undefined) return;
      delivered++;
      latencies.push(at - sent);
    };
    for (let i = 0; i < subscribers; i++) sockets.push(await openSubscriber(target.url, serviceKey, onAdded));
    log(`${subscribers} subscribers ready; writing ${rate}/s for ${settings.durationSeconds} s`);
    await settle(target.server, 10);
    const cpuBefore = target.server.cpuSeconds();
    const started = performance.now();
    const writes = rate * settings.durationSeconds;
    const pending: Array<Promise<unknown>> = [];
    for (let i = 0; i < writes; i++) {
      const due = started + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const id = `w${i}`;
      sentAt.set(id, performance.now());
      pending.push(call(target, 'PUT', `/v1/db/live/${id}`, { data: { room: 1, i } }));
    }
    await Promise.all(pending);
    const expected = writes * subscribers;
    const deadline = performance.now() + 15_000;
    while (delivered < expected && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const elapsed = (performance.now() - started) / 1000;
    const cpu = target.server.cpuSeconds() - cpuBefore;
    return {
      subscribers,
      writes_per_s: rate,
      writes,
      frames_expected: expected,
      frames_delivered: delivered,
      frames_per_s: round(delivered / elapsed),
      ...summary(latencies),
      server_cpu_s: round(cpu),
      frames_by_type: Object.fromEntries(frameTypes),
    };
  } finally {
    for (const socket of sockets) socket.terminate();
    await target.close();
  }
}

/** The floor: INSERT → row trigger → NOTIFY → one LISTENing client, on a fresh database. */
async function postgresFloor(settings: Settings, rate: number): Promise<Record<string, unknown>> {
  const { createBenchDatabase } = await import('./database.js');
  const db = await createBenchDatabase(settings.adminDatabaseUrl, 'rtfloor');
  const listener = new pg.Client({ connectionString: db.url });
  const writer = new pg.Pool({ connectionString: db.url, max: 8 });
  try {
    await db.sql(`CREATE TABLE live (id text PRIMARY KEY, data jsonb NOT NULL)`);
    await db.sql(`CREATE FUNCTION live_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_notify('live', NEW.id); RETURN NULL; END $$`);
    await db.sql(`CREATE TRIGGER live_notify AFTER INSERT ON live FOR EACH ROW EXECUTE FUNCTION live_notify()`);
    await listener.connect();
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    listener.on('notification', (message) => {
      const sent = sentAt.get(message.payload ?? '');
      if (sent !== undefined) latencies.push(performance.now() - sent);
    });
    await listener.query('LISTEN live');
    const writes = rate * settings.durationSeconds;
    const started = performance.now();
    const pending: Array<Promise<unknown>> = [];
    for (let i = 0; i < writes; i++) {
      const wait = started + (i * 1000) / rate - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const id = `w${i}`;
      sentAt.set(id, performance.now());
      pending.push(writer.query('INSERT INTO live (id, data) VALUES ($1, $2)', [id, { room: 1, i }]));
    }
    await Promise.all(pending);
    const deadline = performance.now() + 5_000;
    while (latencies.length < writes && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return { writes_per_s: rate, writes, notifications: latencies.length, ...summary(latencies) };
  } finally {
    await listener.end().catch(() => undefined);
    await writer.end().catch(() => undefined);
    await db.drop();
  }
}

/** The realtime suite: one JSON line per subscriber count, plus the Postgres floor. */
export async function runRealtime(settings: Settings): Promise<string[]> {
  const rate = whole('BENCH_RT_RATE', 50);
  const counts = (process.env.BENCH_RT_SUBSCRIBERS ?? '1,100,500')
    .split(',')
    .map((value) => Number(value.trim()))
    .filter((value) => Number.isSafeInteger(value) && value > 0);
  const lines: string[] = [];
  const floor = await postgresFloor(settings, rate);
  log(`postgres floor: p50 ${String(floor.p50_ms)} ms`);
  for (const subscribers of counts) {
    let basalt: Record<string, unknown>;
    try {
      basalt = await basaltFanOut(settings, subscribers, rate);
    } catch (error) {
      basalt = { error: (error as Error).message };
    }
    log(`${subscribers} subscribers: ${JSON.stringify(basalt)}`);
    lines.push(
      JSON.stringify({
        bench: 'realtime.fanout',
        basalt,
        postgres_floor: floor,
        duration_s: settings.durationSeconds,
        date: new Date().toISOString(),
        machine,
      }),
    );
  }
  return lines;
}
