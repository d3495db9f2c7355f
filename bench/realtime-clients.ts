/**
 * Websocket clients for the realtime suite, in a process of their own (the harness forks
 * several), so the server's CPU read from /proc is the server's alone. Speaks Basalt's
 * protocol (`/v1/realtime`, live queries) or Parse LiveQuery's (`connect`, `subscribe`).
 *
 * Driven over IPC by bench/realtime.ts:
 *   open    — open `count` sockets, each authenticated with one of `tokens`, optionally subscribed
 *   phase   — name the phase whose events are counted next (events carry their phase too)
 *   report  — per phase: deliveries, duplicates, latencies (latency phase), last receive time
 *   close   — close every socket
 */
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

export type Protocol = 'basalt' | 'parse';

export interface OpenCommand {
  op: 'open';
  protocol: Protocol;
  /** ws:// URL of the server's websocket endpoint (Basalt: without the query string). */
  url: string;
  tokens: string[];
  /** Index of this process's first socket, so tokens spread evenly over all processes. */
  offset: number;
  count: number;
  subscribe: boolean;
  /** Parse's application id. */
  appId: string;
  /** Sockets opening at the same time. */
  concurrency: number;
}

export type ClientCommand =
  OpenCommand | { op: 'report'; phase: string; latencies: boolean } | { op: 'close' } | { op: 'exit' };

export interface OpenReply {
  op: 'opened';
  /** Sockets this command opened. */
  open: number;
  failed: number;
  errors: string[];
  ms: number;
}

export interface PhaseReport {
  op: 'report';
  phase: string;
  /** Distinct (socket, event) pairs received. */
  delivered: number;
  duplicates: number;
  /** Sockets that received at least one event of the phase. */
  sockets: number;
  /** Milliseconds from the write's send time (in the event) to its arrival, one per delivery. */
  latencies: number[];
  /** Per event (by its `i`), the earliest arrival's latency at this process. */
  firsts: Record<number, number>;
  /** Epoch ms of the phase's first and last arrival. */
  first: number;
  last: number;
  /** Sockets open now, and closed by the server since they opened. */
  open: number;
  closedByServer: number;
  /** Frames that were not events of a phase, by kind (errors would show here). */
  other: Record<string, number>;
}

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes. */
export const now = (): number => performance.timeOrigin + performance.now();

interface PhaseState {
  seen: Map<number, Set<number>>;
  delivered: number;
  duplicates: number;
  latencies: number[];
  firsts: Map<number, number>;
  first: number;
  last: number;
}

const phases = new Map<string, PhaseState>();
const other = new Map<string, number>();
const sockets = new Set<WebSocket>();
let closedByServer = 0;
let closing = false;

function phaseState(name: string): PhaseState {
  let state = phases.get(name);
  if (!state) {
    state = {
      seen: new Map(),
      delivered: 0,
      duplicates: 0,
      latencies: [],
      firsts: new Map(),
      first: Infinity,
      last: 0,
    };
    phases.set(name, state);
  }
  return state;
}

function count(kind: string): void {
  other.set(kind, (other.get(kind) ?? 0) + 1);
}

/** One event (a created document) as both protocols carry it: `{phase, i, t}` in its data. */
function record(socketIndex: number, data: { phase?: unknown; i?: unknown; t?: unknown }, at: number): void {
  if (typeof data.phase !== 'string' || typeof data.i !== 'number' || typeof data.t !== 'number') {
    count('event without phase');
    return;
  }
  const state = phaseState(data.phase);
  let seen = state.seen.get(socketIndex);
  if (!seen) {
    seen = new Set();
    state.seen.set(socketIndex, seen);
  }
  if (seen.has(data.i)) {
    state.duplicates++;
    return;
  }
  seen.add(data.i);
  state.delivered++;
  const latency = at - data.t;
  state.latencies.push(latency);
  const earliest = state.firsts.get(data.i);
  if (earliest === undefined || latency < earliest) state.firsts.set(data.i, latency);
  if (at < state.first) state.first = at;
  if (at > state.last) state.last = at;
}

interface BasaltFrame {
  type: string;
  change?: string;
  code?: string;
  doc?: { data?: { phase?: unknown; i?: unknown; t?: unknown } };
}

interface ParseFrame {
  op: string;
  code?: number;
  object?: { phase?: unknown; i?: unknown; t?: unknown };
}

/**
 * Frames that arrived after the handshake, parsed once the process has read everything
 * that arrived together: parsing while other sockets still wait to be read would add this
 * process's own work to the latency it measures on them.
 */
let arrived: Array<{ protocol: Protocol; index: number; raw: Buffer; at: number }> = [];

function later(protocol: Protocol, index: number, raw: Buffer, at: number): void {
  if (arrived.length === 0) setImmediate(parseArrived);
  arrived.push({ protocol, index, raw, at });
}

function parseArrived(): void {
  const batch = arrived;
  arrived = [];
  for (const { protocol, index, raw, at } of batch) {
    if (protocol === 'basalt') {
      const frame = JSON.parse(String(raw)) as BasaltFrame;
      if (frame.type === 'change' && frame.change === 'added' && frame.doc?.data) record(index, frame.doc.data, at);
      else count(`${frame.type}${frame.change ? `:${frame.change}` : ''}`);
    } else {
      const frame = JSON.parse(String(raw)) as ParseFrame;
      if (frame.op === 'create' && frame.object) record(index, frame.object, at);
      else count(frame.op);
    }
  }
}

/** Opens one socket; resolves once it is authenticated (and subscribed, when asked). */
function openOne(command: OpenCommand, index: number): Promise<WebSocket> {
  const token = command.tokens[index % command.tokens.length] as string;
  const url = command.protocol === 'basalt' ? `${command.url}?access_token=${encodeURIComponent(token)}` : command.url;
  const socket = new WebSocket(url, { perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    let ready = false;
    const timer = setTimeout(() => {
      if (ready) return;
      socket.terminate();
      reject(new Error('not ready within 60 s'));
    }, 60_000);
    const done = () => {
      ready = true;
      clearTimeout(timer);
      sockets.add(socket);
      resolve(socket);
    };
    socket.once('error', (error) => {
      if (!ready) {
        clearTimeout(timer);
        reject(error);
      }
    });
    socket.on('close', () => {
      if (ready && sockets.delete(socket) && !closing) closedByServer++;
    });
    socket.on('message', (raw) => {
      const at = now();
      if (ready) {
        later(command.protocol, index, raw as Buffer, at);
        return;
      }
      if (command.protocol === 'basalt') {
        const frame = JSON.parse(String(raw)) as BasaltFrame;
        if (frame.type === 'change' && frame.change === 'added' && frame.doc?.data) {
          record(index, frame.doc.data, at);
        } else if (!ready && frame.type === 'authenticated') {
          if (!command.subscribe) done();
          else
            socket.send(
              JSON.stringify({
                type: 'subscribe',
                id: 'feed',
                collection: 'live',
                // The whole run's events fit the window, so every one is an `added` for every subscriber.
                query: { where: [['room', '==', 1]], limit: 1000 },
              }),
            );
        } else if (!ready && frame.type === 'subscribed') done();
        else if (frame.type === 'error' && !ready) {
          clearTimeout(timer);
          socket.terminate();
          reject(new Error(`${frame.code ?? 'error'}: ${String(raw)}`));
        } else count(`${frame.type}${frame.change ? `:${frame.change}` : ''}`);
        return;
      }
      const frame = JSON.parse(String(raw)) as ParseFrame;
      if (frame.op === 'create' && frame.object) record(index, frame.object, at);
      else if (!ready && frame.op === 'connected') {
        if (!command.subscribe) done();
        else
          socket.send(
            JSON.stringify({
              op: 'subscribe',
              requestId: 1,
              query: { className: 'Live', where: { room: 1 } },
              sessionToken: token,
            }),
          );
      } else if (!ready && frame.op === 'subscribed') done();
      else if (frame.op === 'error' && !ready) {
        clearTimeout(timer);
        socket.terminate();
        reject(new Error(`parse error ${frame.code ?? ''}: ${String(raw)}`));
      } else count(frame.op);
    });
    socket.once('open', () => {
      if (command.protocol === 'parse') {
        socket.send(JSON.stringify({ op: 'connect', applicationId: command.appId, sessionToken: token }));
      }
    });
  });
}

async function open(command: OpenCommand): Promise<OpenReply> {
  const started = performance.now();
  let next = 0;
  let failed = 0;
  let opened = 0;
  const errors: string[] = [];
  await Promise.all(
    Array.from({ length: Math.min(command.concurrency, command.count) }, async () => {
      while (next < command.count) {
        const index = command.offset + next++;
        try {
          await openOne(command, index);
          opened++;
        } catch (error) {
          failed++;
          if (errors.length < 5) errors.push((error as Error).message);
        }
      }
    }),
  );
  return { op: 'opened', open: opened, failed, errors, ms: Math.round(performance.now() - started) };
}

function report(phase: string, withLatencies: boolean): PhaseReport {
  const state = phaseState(phase);
  return {
    op: 'report',
    phase,
    delivered: state.delivered,
    duplicates: state.duplicates,
    sockets: state.seen.size,
    latencies: withLatencies ? state.latencies : [],
    firsts: withLatencies ? Object.fromEntries(state.firsts) : {},
    first: Number.isFinite(state.first) ? state.first : 0,
    last: state.last,
    open: sockets.size,
    closedByServer,
    other: Object.fromEntries(other),
  };
}

async function closeAll(): Promise<void> {
  closing = true;
  const all = [...sockets];
  sockets.clear();
  await Promise.all(
    all.map(
      (socket) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            socket.terminate();
            resolve();
          }, 2_000);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          socket.close(1000);
        }),
    ),
  );
  phases.clear();
  other.clear();
  closedByServer = 0;
  closing = false;
}

process.on('message', (command: ClientCommand) => {
  const reply = (message: unknown) => process.send?.(message);
  switch (command.op) {
    case 'open':
      void open(command).then(reply);
      break;
    case 'report':
      reply(report(command.phase, command.latencies));
      break;
    case 'close':
      void closeAll().then(() => reply({ op: 'closed' }));
      break;
    case 'exit':
      process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
process.send?.({ op: 'ready' });
