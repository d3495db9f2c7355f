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

/**
 * Drives a server with autocannon: a fixed number of connections, each sending its next
 * request as soon as the previous answers (closed loop, as wrk does). Latency percentiles are
 * computed here from autocannon's per-response timings, because its own histogram keeps only
 * whole milliseconds — too coarse for sub-millisecond reads.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const latencies: number[] = [];
  const instance = autocannon()({
    url: options.url,
    connections: options.connections,
    duration: options.durationSeconds,
    pipelining: 1,
    timeout: 30,
    headers: options.headers ?? {},
    requests: options.requests,
    renderProgressBar: false,
    renderResultsTable: false,
    renderLatencyTable: false,
  });
  instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
    if (status >= 200 && status < 300) latencies.push(responseTime);
  });
  const result = await instance;
  const sorted = Float64Array.from(latencies).sort();
  const statusCodes: Record<string, number> = {};
  for (const [code, stat] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = stat.count;
  const failed = result.non2xx + result.errors + result.timeouts;
  return {
    rps: round(sorted.length / result.duration, 1),
    p50_ms: round(percentile(sorted, 50)),
    p90_ms: round(percentile(sorted, 90)),
    p99_ms: round(percentile(sorted, 99)),
    requests: sorted.length,
    failed,
    ...(failed > 0 ? { status_codes: statusCodes } : {}),
  };
}
