/**
 * `npm run bench -- realtime`: Basalt's live queries side by side with Parse Server LiveQuery.
 *
 * Both servers run at once, each in its own process on its own database; the websocket
 * clients run in separate processes (bench/realtime-clients.ts), so the CPU read from
 * /proc/<pid>/stat is the server's alone. Every client is an anonymous user of its own
 * (one per subscriber), connected with its own token / session token.
 *
 * - idle: opens `BENCH_RT_IDLE` (10,000) authenticated sockets that subscribe to nothing,
 *   measures the server's RSS growth per socket (each reading after a full garbage
 *   collection, run through the server's inspector), holds them `BENCH_RT_HOLD` seconds
 *   (with the server's CPU while they sit idle) and checks that every one is still open;
 * - latency: `BENCH_RT_SUBSCRIBERS` (1,000) sockets on one live query; documents are created
 *   at `BENCH_RT_RATE` per second for `BENCH_DURATION` seconds, each carrying its send time;
 *   every subscriber notes each arrival: p50/p95/p99 over all deliveries, and whether every
 *   event reached every subscriber;
 * - burst: `BENCH_RT_BURST` creates as fast as 16 writers go, to the same subscribers:
 *   deliveries per second (first write to last arrival) and the server's CPU time per
 *   delivery (plus that of the Postgres backends serving its database).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { round } from './load.js';
import { cpuSecondsOf, type ServerProcess } from './process.js';
import type { ClientCommand, OpenCommand, OpenReply, PhaseReport, Protocol } from './realtime-clients.js';
import { machine } from './report.js';
import { BENCH_DIR, NODE_HEAP_FLOOR, ROOT_DIR, type Settings, type TargetName } from './settings.js';
import { call, childEnv, settle, startTarget, type RunningTarget } from './targets.js';

const log = (message: string) => process.stderr.write(`[bench realtime] ${message}\n`);

function whole(name: string, fallback: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new Error(`${name}: expected a whole number >= 1, got "${raw}"`);
  return Number(raw);
}

/** The goals of the realtime criterion (2-core machine). */
export const REALTIME_GOALS = {
  p50_ms_at_most: 20,
  p99_ms_at_most: 100,
  every_event_delivered: true,
  cpu_per_delivery_vs_parse_at_most: 0.2,
  memory_per_connection_vs_parse_at_most: 1,
  idle_connections_held: 10_000,
};

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

/** Resident memory of a process, from /proc (bytes). */
function rssBytesOf(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * The server's inspector, opened on demand (SIGUSR1; both servers start with
 * --inspect-port=0 so two can listen at once): used only to run a full garbage collection
 * before reading memory, so that garbage left by setting up connections (more on one
 * server than the other, and collected whenever V8 pleases) is not counted as held by them.
 */
interface Inspector {
  call(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  close(): void;
}

async function openInspector(server: ServerProcess): Promise<Inspector> {
  process.kill(server.child.pid as number, 'SIGUSR1');
  const deadline = Date.now() + 15_000;
  let match: RegExpExecArray | null = null;
  while (!(match = /Debugger listening on (ws:\/\/\S+)/.exec(server.output()))) {
    if (Date.now() > deadline) throw new Error(`${server.name}: the inspector did not open`);
    await sleep(100);
  }
  const socket = new WebSocket(match[1] as string);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  const pending = new Map<number, (result: Record<string, unknown>) => void>();
  let next = 0;
  socket.on('message', (raw) => {
    const message = JSON.parse(String(raw)) as { id?: number; result?: Record<string, unknown> };
    if (message.id !== undefined) pending.get(message.id)?.(message.result ?? {});
  });
  return {
    call(method, params = {}) {
      const id = ++next;
      return new Promise((resolve) => {
        pending.set(id, resolve);
        socket.send(JSON.stringify({ id, method, params }));
      });
    },
    close: () => socket.close(),
  };
}

interface MemoryReading {
  /** Resident memory (bytes), read from /proc after a full collection. */
  rss: number;
  /** V8 heap in use plus memory held outside it for JS objects (Buffers), after a full collection. */
  heap: number;
}

async function memoryAfterGc(side: Side): Promise<MemoryReading> {
  side.inspector ??= await openInspector(side.target.server);
  await side.inspector.call('HeapProfiler.collectGarbage');
  await sleep(500);
  const answer = await side.inspector.call('Runtime.evaluate', {
    expression: 'JSON.stringify(process.memoryUsage())',
    returnByValue: true,
  });
  const usage = JSON.parse(String((answer.result as { value?: unknown } | undefined)?.value)) as {
    heapUsed: number;
    external: number;
  };
  return { rss: rssBytesOf(side.target.server.child.pid as number), heap: usage.heapUsed + usage.external };
}

// ---- client processes ------------------------------------------------------------------

interface ClientProcess {
  child: ChildProcess;
  ask<T>(command: ClientCommand): Promise<T>;
}

async function forkClient(): Promise<ClientProcess> {
  const child = fork(path.join(BENCH_DIR, 'realtime-clients.ts'), [], {
    cwd: ROOT_DIR,
    execArgv: [...NODE_HEAP_FLOOR, '--import', 'tsx'],
    env: childEnv({}),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiting: Array<(message: unknown) => void> = [];
  let ready: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (ready = resolve));
  child.on('message', (message: { op?: string }) => {
    if (message.op === 'ready') ready();
    else waiting.shift()?.(message);
  });
  child.once('exit', (code) => {
    if (waiting.length > 0) log(`a client process exited (${String(code)}) with a command pending`);
  });
  await started;
  return {
    child,
    // One command at a time per process, so replies come back in order.
    ask<T>(command: ClientCommand): Promise<T> {
      return new Promise<T>((resolve) => {
        waiting.push(resolve as (message: unknown) => void);
        child.send(command);
      });
    },
  };
}

// ---- the two servers ---------------------------------------------------------------------

interface Side {
  name: TargetName;
  protocol: Protocol;
  target: RunningTarget;
  wsUrl: string;
  tokens: string[];
  /** Creates one event document; resolves when the server answered. */
  write(data: Record<string, unknown>): Promise<unknown>;
  inspector?: Inspector;
}

async function inParallel<T>(count: number, concurrency: number, work: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const index = next++;
        results[index] = await work(index);
      }
    }),
  );
  return results;
}

async function startBasalt(settings: Settings, users: number): Promise<Side> {
  const target = await startTarget('basalt', settings, {
    // Every bench user signs in from one address; real users come from many.
    BASALT_AUTH_RATE_ANONYMOUS_IP: '1000000000',
    NODE_OPTIONS: '--inspect-port=0',
  });
  // A rule that depends on the caller, checked per subscriber per event.
  await call(target, 'POST', '/v1/admin/collections', { name: 'live', rules: { read: 'auth != null' } });
  const tokens = await inParallel(users, 8, async () => {
    const body = (await call(target, 'POST', '/v1/auth/anonymous', {}, {})) as { session: { access_token: string } };
    return body.session.access_token;
  });
  let n = 0;
  return {
    name: 'basalt',
    protocol: 'basalt',
    target,
    wsUrl: `${target.url.replace(/^http/, 'ws')}/v1/realtime`,
    tokens,
    write: (data) => call(target, 'PUT', `/v1/db/live/e${n++}`, { data }),
  };
}

async function startParse(settings: Settings, users: number): Promise<Side> {
  const target = await startTarget('parse', settings, { PARSE_LIVE_QUERY: 'Live', NODE_OPTIONS: '--inspect-port=0' });
  // The class and its `room` column exist before anyone subscribes; no CLP, no ACLs: Parse's
  // cheapest path (public read), while Basalt's rule is checked per subscriber.
  await call(target, 'POST', '/parse/classes/Live', { room: 0, phase: 'setup', i: 0, t: 0 });
  const appOnly = { 'x-parse-application-id': 'bench' };
  const tokens = await inParallel(users, 8, async () => {
    const body = (await call(
      target,
      'POST',
      '/parse/users',
      { authData: { anonymous: { id: randomUUID() } } },
      appOnly,
    )) as {
      sessionToken: string;
    };
    return body.sessionToken;
  });
  return {
    name: 'parse',
    protocol: 'parse',
    target,
    wsUrl: `${target.url.replace(/^http/, 'ws')}/parse`,
    tokens,
    write: (data) => call(target, 'POST', '/parse/classes/Live', data),
  };
}

// ---- phases ------------------------------------------------------------------------------

/** Opens `count` sockets for one side, spread over the client processes. */
async function openSockets(
  clients: ClientProcess[],
  side: Side,
  count: number,
  subscribe: boolean,
): Promise<OpenReply> {
  const share = Math.ceil(count / clients.length);
  const replies = await Promise.all(
    clients.map((client, k) => {
      const offset = k * share;
      const command: OpenCommand = {
        op: 'open',
        protocol: side.protocol,
        url: side.wsUrl,
        tokens: side.tokens,
        offset,
        count: Math.max(0, Math.min(share, count - offset)),
        subscribe,
        appId: 'bench',
        concurrency: 32,
      };
      return client.ask<OpenReply>(command);
    }),
  );
  return {
    op: 'opened',
    open: replies.reduce((sum, reply) => sum + reply.open, 0),
    failed: replies.reduce((sum, reply) => sum + reply.failed, 0),
    errors: replies.flatMap((reply) => reply.errors).slice(0, 5),
    ms: Math.max(...replies.map((reply) => reply.ms)),
  };
}

async function closeSockets(clients: ClientProcess[]): Promise<void> {
  await Promise.all(clients.map((client) => client.ask({ op: 'close' })));
}

interface PhaseTotals {
  delivered: number;
  duplicates: number;
  latencies: number[];
  /** Per event, the latency of its earliest delivery: the server's path without the fan-out. */
  firsts: number[];
  first: number;
  last: number;
  open: number;
  closedByServer: number;
  other: Record<string, number>;
}

function earliest(reports: PhaseReport[]): number[] {
  const byEvent = new Map<string, number>();
  for (const report of reports) {
    for (const [i, latency] of Object.entries(report.firsts)) {
      const known = byEvent.get(i);
      if (known === undefined || latency < known) byEvent.set(i, latency);
    }
  }
  return [...byEvent.values()];
}

async function phaseTotals(clients: ClientProcess[], phase: string, latencies: boolean): Promise<PhaseTotals> {
  const reports = await Promise.all(
    clients.map((client) => client.ask<PhaseReport>({ op: 'report', phase, latencies })),
  );
  const other: Record<string, number> = {};
  for (const report of reports)
    for (const [kind, n] of Object.entries(report.other)) other[kind] = (other[kind] ?? 0) + n;
  return {
    delivered: reports.reduce((sum, r) => sum + r.delivered, 0),
    duplicates: reports.reduce((sum, r) => sum + r.duplicates, 0),
    latencies: reports.flatMap((r) => r.latencies),
    firsts: earliest(reports),
    first: Math.min(...reports.map((r) => (r.first > 0 ? r.first : Infinity))),
    last: Math.max(...reports.map((r) => r.last)),
    open: reports.reduce((sum, r) => sum + r.open, 0),
    closedByServer: reports.reduce((sum, r) => sum + r.closedByServer, 0),
    other,
  };
}

/** Waits until `expected` deliveries of `phase` arrived, or nothing new arrived for `quietMs`. */
async function awaitDeliveries(
  clients: ClientProcess[],
  phase: string,
  expected: number,
  quietMs: number,
): Promise<PhaseTotals> {
  let lastCount = -1;
  let lastChange = Date.now();
  for (;;) {
    const totals = await phaseTotals(clients, phase, false);
    if (totals.delivered >= expected) return phaseTotals(clients, phase, true);
    if (totals.delivered !== lastCount) {
      lastCount = totals.delivered;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > quietMs) return phaseTotals(clients, phase, true);
    await sleep(100);
  }
}

/** CPU seconds of the Postgres backends serving the side's database, by pid. */
async function backendCpu(side: Side): Promise<Map<number, number>> {
  const cpu = new Map<number, number>();
  try {
    for (const pid of await side.target.db.backendPids()) {
      const seconds = cpuSecondsOf(pid);
      if (Number.isFinite(seconds)) cpu.set(pid, seconds);
    }
  } catch {
    // not on this machine: the figure is left out
  }
  return cpu;
}

function backendDelta(before: Map<number, number>, after: Map<number, number>): number | null {
  if (after.size === 0) return null;
  let total = 0;
  for (const [pid, seconds] of after) total += seconds - (before.get(pid) ?? 0);
  return total;
}

async function idlePhase(
  clients: ClientProcess[],
  side: Side,
  count: number,
  holdSeconds: number,
): Promise<Record<string, unknown>> {
  await settle(side.target.server, 10);
  const before = await memoryAfterGc(side);
  const opened = await openSockets(clients, side, count, false);
  log(`${side.name}: ${opened.open} idle sockets open in ${opened.ms} ms (${opened.failed} failed)`);
  await settle(side.target.server, 10);
  const cpuBefore = side.target.server.cpuSeconds();
  await sleep(holdSeconds * 1000);
  const cpu = side.target.server.cpuSeconds() - cpuBefore;
  const after = await memoryAfterGc(side);
  const totals = await phaseTotals(clients, 'none', false);
  await closeSockets(clients);
  const perConnection = (bytes: number) => (opened.open > 0 ? round(bytes / 1024 / opened.open, 2) : null);
  return {
    connections: count,
    opened: opened.open,
    failed: opened.failed,
    ...(opened.errors.length > 0 ? { errors: opened.errors } : {}),
    open_after_hold: totals.open,
    closed_by_server: totals.closedByServer,
    hold_s: holdSeconds,
    rss_before_mib: round(before.rss / 2 ** 20, 1),
    rss_after_mib: round(after.rss / 2 ** 20, 1),
    kib_per_connection: perConnection(after.rss - before.rss),
    heap_kib_per_connection: perConnection(after.heap - before.heap),
    idle_cpu_pct: round((cpu / holdSeconds) * 100, 1),
    open_ms: opened.ms,
  };
}

async function latencyPhase(
  clients: ClientProcess[],
  side: Side,
  subscribers: number,
  rate: number,
  seconds: number,
): Promise<Record<string, unknown>> {
  await settle(side.target.server, 10);
  const writes = rate * seconds;
  const started = now();
  const cpuBefore = side.target.server.cpuSeconds();
  const pending: Array<Promise<unknown>> = [];
  let failedWrites = 0;
  const writeTimes: number[] = [];
  for (let i = 0; i < writes; i++) {
    const wait = started + (i * 1000) / rate - now();
    if (wait > 0) await sleep(wait);
    const sent = now();
    pending.push(
      side
        .write({ room: 1, phase: `${side.name}.latency`, i, t: sent })
        .then(() => writeTimes.push(now() - sent))
        .catch(() => failedWrites++),
    );
  }
  await Promise.all(pending);
  const expected = writes * subscribers;
  const totals = await awaitDeliveries(clients, `${side.name}.latency`, expected, 10_000);
  const cpu = side.target.server.cpuSeconds() - cpuBefore;
  const sorted = totals.latencies.sort((a, b) => a - b);
  return {
    subscribers,
    writes,
    writes_per_s: rate,
    failed_writes: failedWrites,
    expected,
    delivered: totals.delivered,
    duplicates: totals.duplicates,
    all_delivered: totals.delivered === expected && totals.duplicates === 0,
    p50_ms: round(percentile(sorted, 50), 1),
    p95_ms: round(percentile(sorted, 95), 1),
    p99_ms: round(percentile(sorted, 99), 1),
    max_ms: round(sorted.at(-1) ?? Number.NaN, 1),
    // Each event's first delivery, and the write's own round trip: parts of every delivery's latency.
    first_delivery_p50_ms: round(
      percentile(
        totals.firsts.sort((a, b) => a - b),
        50,
      ),
      1,
    ),
    write_p50_ms: round(
      percentile(
        writeTimes.sort((a, b) => a - b),
        50,
      ),
      1,
    ),
    server_cpu_pct: round((cpu / ((now() - started) / 1000)) * 100, 1),
    // Of both servers' subscribers together.
    sockets_open_all: totals.open,
    closed_by_server_all: totals.closedByServer,
    ...(Object.keys(totals.other).length > 0 ? { other_frames: totals.other } : {}),
  };
}

async function burstPhase(
  clients: ClientProcess[],
  side: Side,
  subscribers: number,
  writes: number,
): Promise<Record<string, unknown>> {
  await settle(side.target.server, 10);
  const dbBefore = await backendCpu(side);
  const cpuBefore = side.target.server.cpuSeconds();
  const started = now();
  let next = 0;
  let failedWrites = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < writes) {
        const i = next++;
        await side.write({ room: 1, phase: `${side.name}.burst`, i, t: now() }).catch(() => failedWrites++);
      }
    }),
  );
  const wroteMs = now() - started;
  const expected = writes * subscribers;
  const totals = await awaitDeliveries(clients, `${side.name}.burst`, expected, 10_000);
  const cpu = side.target.server.cpuSeconds() - cpuBefore;
  const db = backendDelta(dbBefore, await backendCpu(side));
  const seconds = (totals.last - started) / 1000;
  const sorted = totals.latencies.sort((a, b) => a - b);
  return {
    subscribers,
    writes,
    failed_writes: failedWrites,
    writes_ms: round(wroteMs, 0),
    expected,
    delivered: totals.delivered,
    duplicates: totals.duplicates,
    all_delivered: totals.delivered === expected && totals.duplicates === 0,
    seconds: round(seconds, 2),
    deliveries_per_s: round(totals.delivered / seconds, 0),
    server_cpu_s: round(cpu, 2),
    server_cpu_us_per_delivery: totals.delivered > 0 ? round((cpu * 1e6) / totals.delivered, 2) : null,
    db_cpu_s: db === null ? null : round(db, 2),
    db_cpu_us_per_delivery: db === null || totals.delivered === 0 ? null : round((db * 1e6) / totals.delivered, 2),
    p50_ms: round(percentile(sorted, 50), 1),
    p99_ms: round(percentile(sorted, 99), 1),
  };
}

// ---- the suite ---------------------------------------------------------------------------

function line(bench: string, figures: Record<string, unknown>): string {
  return JSON.stringify({
    bench,
    ...figures,
    date: new Date().toISOString(),
    load_1m: round(os.loadavg()[0] ?? 0, 2),
    machine,
  });
}

type Figures = Record<string, unknown> | null;

function num(figures: Figures, key: string): number | null {
  const value = figures?.[key];
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

export async function runRealtime(settings: Settings): Promise<string[]> {
  const subscribers = whole('BENCH_RT_SUBSCRIBERS', 1_000);
  const idle = whole('BENCH_RT_IDLE', 10_000);
  const rate = whole('BENCH_RT_RATE', 5);
  const burst = whole('BENCH_RT_BURST', 200);
  const hold = whole('BENCH_RT_HOLD', 10);
  const processes = whole('BENCH_RT_CLIENT_PROCESSES', 4);
  const seconds = settings.durationSeconds;
  // A live query's window holds at most 1000 documents: every event of the run must fit it.
  if (rate * seconds + burst > 1000) {
    throw new Error(`BENCH_RT_RATE × BENCH_DURATION + BENCH_RT_BURST must be ≤ 1000 (one live query's window)`);
  }
  const names = settings.targets.filter((name): name is 'basalt' | 'parse' => name === 'basalt' || name === 'parse');
  const users = subscribers;

  const clients = await Promise.all(Array.from({ length: processes }, () => forkClient()));
  const sides: Side[] = [];
  const results: Record<string, { idle: Figures; latency: Figures; burst: Figures }> = {};
  try {
    for (const name of names) {
      log(`starting ${name} and signing up ${users} anonymous users`);
      sides.push(name === 'basalt' ? await startBasalt(settings, users) : await startParse(settings, users));
      results[name] = { idle: null, latency: null, burst: null };
    }
    const guard = async (side: Side, phase: string, work: () => Promise<Record<string, unknown>>) => {
      try {
        const figures = await work();
        log(`${side.name} ${phase}: ${JSON.stringify(figures)}`);
        return figures;
      } catch (error) {
        log(`${side.name} ${phase} failed: ${(error as Error).stack ?? String(error)}`);
        await closeSockets(clients).catch(() => undefined);
        return { error: (error as Error).message };
      }
    };
    // Idle connections, one server at a time (the other has no clients meanwhile).
    for (const side of sides) {
      (results[side.name] as { idle: Figures }).idle = await guard(side, 'idle', () =>
        idlePhase(clients, side, idle, hold),
      );
    }
    // Subscribers of both servers stay open together; each phase runs on one server, then the other.
    const subscribed = new Map<string, Record<string, unknown>>();
    for (const side of sides) {
      await settle(side.target.server, 10);
      const before = await memoryAfterGc(side);
      const opened = await openSockets(clients, side, subscribers, true);
      await settle(side.target.server, 10);
      const after = await memoryAfterGc(side);
      const perSubscriber = round((after.rss - before.rss) / 1024 / Math.max(1, opened.open), 2);
      const heapPerSubscriber = round((after.heap - before.heap) / 1024 / Math.max(1, opened.open), 2);
      log(
        `${side.name}: ${opened.open} subscribers in ${opened.ms} ms (${opened.failed} failed), ${perSubscriber} KiB each`,
      );
      subscribed.set(side.name, {
        subscribed: opened.open,
        failed: opened.failed,
        kib_per_subscriber: perSubscriber,
        heap_kib_per_subscriber: heapPerSubscriber,
        ...(opened.errors.length > 0 ? { errors: opened.errors } : {}),
      });
    }
    for (const side of sides) {
      (results[side.name] as { latency: Figures }).latency = await guard(side, 'latency', async () => ({
        ...(await latencyPhase(clients, side, subscribers, rate, seconds)),
        ...subscribed.get(side.name),
      }));
    }
    for (const side of sides) {
      (results[side.name] as { burst: Figures }).burst = await guard(side, 'burst', () =>
        burstPhase(clients, side, subscribers, burst),
      );
    }
    await closeSockets(clients);
  } finally {
    for (const client of clients) client.child.kill();
    for (const side of sides) {
      side.inspector?.close();
      await side.target.close();
    }
  }

  const basalt = results.basalt;
  const parse = results.parse;
  const lines: string[] = [];
  const latency = basalt?.latency ?? null;
  const p50 = num(latency, 'p50_ms');
  const p99 = num(latency, 'p99_ms');
  lines.push(
    line('realtime.latency', {
      basalt: latency,
      parse: parse?.latency ?? null,
      goal: { p50_ms_at_most: REALTIME_GOALS.p50_ms_at_most, p99_ms_at_most: REALTIME_GOALS.p99_ms_at_most },
      met:
        p50 === null || p99 === null
          ? null
          : p50 <= REALTIME_GOALS.p50_ms_at_most &&
            p99 <= REALTIME_GOALS.p99_ms_at_most &&
            latency?.all_delivered === true,
    }),
  );
  const mine = num(basalt?.burst ?? null, 'server_cpu_us_per_delivery');
  const theirs = num(parse?.burst ?? null, 'server_cpu_us_per_delivery');
  const cpuRatio = mine !== null && theirs ? round(mine / theirs, 3) : null;
  lines.push(
    line('realtime.burst', {
      basalt: basalt?.burst ?? null,
      parse: parse?.burst ?? null,
      cpu_per_delivery_vs_parse: cpuRatio,
      goal: {
        cpu_per_delivery_vs_parse_at_most: REALTIME_GOALS.cpu_per_delivery_vs_parse_at_most,
        every_event_delivered: true,
      },
      met:
        cpuRatio === null
          ? null
          : cpuRatio <= REALTIME_GOALS.cpu_per_delivery_vs_parse_at_most && basalt?.burst?.all_delivered === true,
    }),
  );
  const myMemory = num(basalt?.idle ?? null, 'kib_per_connection');
  const theirMemory = num(parse?.idle ?? null, 'kib_per_connection');
  const held = num(basalt?.idle ?? null, 'open_after_hold');
  lines.push(
    line('realtime.idle', {
      basalt: basalt?.idle ?? null,
      parse: parse?.idle ?? null,
      memory_vs_parse: myMemory !== null && theirMemory ? round(myMemory / theirMemory, 2) : null,
      goal: {
        connections_held: REALTIME_GOALS.idle_connections_held,
        memory_per_connection_vs_parse_at_most: REALTIME_GOALS.memory_per_connection_vs_parse_at_most,
      },
      met:
        myMemory === null || theirMemory === null || held === null
          ? null
          : held >= REALTIME_GOALS.idle_connections_held && myMemory <= theirMemory,
    }),
  );
  return lines;
}
