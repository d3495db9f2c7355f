import http from 'node:http';
import type { EventEmitter } from 'node:events';
import { benchRequire } from './deps.js';

/** Per-connection state that autocannon hands to setupRequest and onResponse. */
export type ConnectionContext = Record<string, unknown>;

export interface LoadRequest {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** Called before each request on a connection: vary the path or body here. */
  setupRequest?: (request: LoadRequest, context: ConnectionContext) => LoadRequest;
  /** Called with each response's body; lets a connection chain state (e.g. refresh tokens). */
  onResponse?: (status: number, body: string, context: ConnectionContext) => void;
}

/** The subset of autocannon's result this harness reads. */
interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number };
  statusCodeStats: Record<string, { count: number }>;
}

interface AutocannonInstance extends EventEmitter, PromiseLike<AutocannonResult> {}

type Autocannon = (options: Record<string, unknown>) => AutocannonInstance;

let cached: Autocannon | null = null;
function autocannon(): Autocannon {
  cached ??= benchRequire('autocannon') as Autocannon;
  return cached;
}

export interface LoadOptions {
  url: string;
  connections: number;
  durationSeconds: number;
  headers?: Record<string, string>;
  requests: LoadRequest[];
}

export interface LoadResult {
  /** Successful (2xx) responses per second over the run. */
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  requests: number;
  /** Responses that were not 2xx, plus socket errors and timeouts: a valid run has 0. */
  failed: number;
  status_codes?: Record<string, number>;
  first_failure?: string | null;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? Number.NaN;
}

export function round(value: number, digits = 2): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** The figures of a run from its successful responses' latencies (ms) and its failures. */
function loadResult(
  latencies: number[],
  seconds: number,
  failures: { failed: number; statusCodes: Record<string, number>; firstFailure: string | null },
): LoadResult {
  const sorted = Float64Array.from(latencies).sort();
  const { failed, statusCodes, firstFailure } = failures;
  return {
    rps: round(sorted.length / seconds, 1),
    p50_ms: round(percentile(sorted, 50)),
    p90_ms: round(percentile(sorted, 90)),
    p99_ms: round(percentile(sorted, 99)),
    requests: sorted.length,
    failed,
    ...(failed > 0 ? { status_codes: statusCodes, first_failure: firstFailure } : {}),
  };
}

/**
 * Drives a server with autocannon: a fixed number of connections, each sending its next
 * request as soon as the previous answers (closed loop, as wrk does). Latency percentiles are
 * computed here from autocannon's per-response timings, because its own histogram keeps only
 * whole milliseconds — too coarse for sub-millisecond reads.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const latencies: number[] = [];
  let firstFailure: string | null = null;
  // Keep the first failed answer's body: "failed: 1312" alone does not say what went wrong.
  const requests = options.requests.map((request) => ({
    ...request,
    onResponse: (status: number, body: string, context: ConnectionContext) => {
      if ((status < 200 || status >= 300) && firstFailure === null) firstFailure = `${status} ${body.slice(0, 300)}`;
      request.onResponse?.(status, body, context);
    },
  }));
  const instance = autocannon()({
    url: options.url,
    connections: options.connections,
    duration: options.durationSeconds,
    pipelining: 1,
    timeout: 30,
    headers: options.headers ?? {},
    requests,
    renderProgressBar: false,
    renderResultsTable: false,
    renderLatencyTable: false,
  });
  instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
    if (status >= 200 && status < 300) latencies.push(responseTime);
  });
  const result = await instance;
  const statusCodes: Record<string, number> = {};
  for (const [code, stat] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = stat.count;
  const failed = result.non2xx + result.errors + result.timeouts;
  return loadResult(latencies, result.duration, { failed, statusCodes, firstFailure });
}

export interface ChainedOptions<State> {
  url: string;
  connections: number;
  durationSeconds: number;
  headers?: Record<string, string>;
  /** A connection's starting state; null when none is left (the connection stops). */
  start(): State | null;
  request(state: State): { method: 'GET' | 'POST'; path: string; body?: string };
  /** The state for the connection's next request, from this answer; null stops the connection. */
  next(status: number, body: string, state: State): State | null;
  /**
   * Give connection i the source address 127.0.0.(i+2), so the server sees one client address
   * per connection, as it would with real users, instead of one address for all (which puts
   * every per-IP counter on one hot row). Needs a loopback target.
   */
  addressPerConnection?: boolean;
}

/**
 * A closed loop like autocannon's, for requests that depend on the previous answer on the same
 * connection (refresh-token chains). autocannon resets its per-connection context after every
 * pass over its request list, so it cannot carry a token from one answer to the next request.
 * Plain node:http with one keep-alive socket per connection.
 */
export async function runChained<State>(options: ChainedOptions<State>): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.connections });
  const base = new URL(options.url);
  const latencies: number[] = [];
  const statusCodes: Record<string, number> = {};
  let failed = 0;
  let firstFailure: string | null = null;
  const deadline = Date.now() + options.durationSeconds * 1000;

  const send = (spec: { method: string; path: string; body?: string }, localAddress: string | undefined) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = http.request(
        {
          localAddress,
          host: base.hostname,
          port: base.port,
          method: spec.method,
          path: spec.path,
          agent,
          headers: {
            ...options.headers,
            ...(spec.body === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(spec.body) }),
          },
        },
        (response) => {
          let body = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (body += chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
          response.on('error', reject);
        },
      );
      request.on('error', reject);
      request.end(spec.body);
    });

  const connection = async (_: unknown, index: number): Promise<void> => {
    const localAddress = options.addressPerConnection ? `127.0.0.${2 + (index % 250)}` : undefined;
    let state = options.start();
    while (state !== null && Date.now() < deadline) {
      const t0 = process.hrtime.bigint();
      let status = 0;
      let body = '';
      try {
        ({ status, body } = await send(options.request(state), localAddress));
      } catch (error) {
        body = (error as Error).message;
      }
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      statusCodes[String(status)] = (statusCodes[String(status)] ?? 0) + 1;
      if (status >= 200 && status < 300) {
        if (Date.now() <= deadline) latencies.push(ms);
      } else {
        failed++;
        firstFailure ??= `${status} ${body.slice(0, 300)}`;
      }
      state = options.next(status, body, state);
    }
  };
  await Promise.all(Array.from({ length: options.connections }, connection));
  agent.destroy();
  return loadResult(latencies, options.durationSeconds, { failed, statusCodes, firstFailure });
}
