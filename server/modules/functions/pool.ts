import { Worker } from 'node:worker_threads';
import type { Logger } from '../../internal/log.js';
import { newTraceId } from '../../internal/trace.js';
import type { FunctionResponse } from './http-response.js';
import type { FromWorker, LogLine, ProbedDefinition, RpcTarget, ToWorker } from './protocol.js';

export type RpcHandler = (
  target: RpcTarget,
  method: string,
  args: unknown[],
  as: 'service' | 'caller',
) => Promise<unknown>;

export interface RunRequest {
  invocationId: string;
  bundle: string;
  exportName: string;
  input: unknown;
  env: Record<string, string | undefined>;
  secrets?: Record<string, string>;
  asCaller?: boolean;
  /** ctx.trace_id (a new trace when not given). */
  traceId?: string;
  timeoutMs: number;
  memoryMb: number;
  /** Idle workers to keep for this bundle: its concurrency, so a steady load never pays a cold start. */
  keepWarm?: number;
  /**
   * Buffers of `input` moved to the worker rather than copied (a large request body): the
   * caller gives them up, they are empty on this side once the run is sent.
   */
  transfer?: ArrayBuffer[];
  rpc: RpcHandler;
}

export type RunOutcome =
  | {
      status: 'succeeded';
      /** What the handler returned, as JSON text (`null` for nothing): an HTTP function's response as is. */
      json: string;
      /** The same, parsed (on first read). */
      readonly value: unknown;
      /** An HTTP function's `Response`, in place of `json`. */
      response?: FunctionResponse;
      logs: LogLine[];
      durationMs: number;
      cold: boolean;
    }
  | {
      status: 'failed' | 'timeout' | 'crashed';
      error: string;
      logs: LogLine[];
      durationMs: number;
      cold: boolean;
    };

/**
 * The environment inside a function: none of the server's environment (its service key, the
 * database URL, the secrets key). A function reads what it declares, through ctx.env and
 * ctx.secrets.
 */
const WORKER_ENVIRONMENT: Record<string, string> = {};

/**
 * A function's warm capacity (docs/functions.md#warm-capacity): `minWarm` workers kept
 * whether or not it is called (provisioned concurrency, never reaped), and how long any
 * other worker may stay idle before it ends.
 */
export interface WarmCapacity {
  functionName: string;
  bundle: string;
  exportName: string;
  memoryMb: number;
  minWarm: number;
  idleMs: number;
}

/** Workers are pooled per function (bundle and export) and memory limit. */
function poolKey(bundle: string, exportName: string, memoryMb: number): string {
  return `${bundle}|${exportName}|${memoryMb}`;
}

/** The key of a spare worker: started, with no function loaded yet. */
const SPARE = '';

const MAX_LOG_LINES = 200;
const MAX_LOG_LINE = 4096;

/** What a worker's messages, error and exit go to while it runs an invocation. */
interface ActiveRun {
  onMessage(message: FromWorker): void;
  onError(error: Error): void;
  onExit(exitCode: number): void;
}

type SettleRun = (pooled: PooledWorker, request: RunRequest, cold: boolean, reusable: boolean) => void;

interface PooledWorker {
  worker: Worker;
  key: string;
  /** When it was last given back (performance.now()). */
  idleSince: number;
  /** The invocation it runs, or null while idle. */
  run: ActiveRun | null;
}

/**
 * A successful outcome, its JSON parsed only if something reads `value` (an HTTP answer is
 * sent as the text). A class: an object literal with a getter is built slowly on every call.
 */
class Succeeded {
  readonly status = 'succeeded';
  private parsed: { value: unknown } | null = null;

  constructor(
    readonly json: string,
    readonly response: FunctionResponse | undefined,
    public logs: LogLine[],
    readonly durationMs: number,
    readonly cold: boolean,
  ) {}

  get value(): unknown {
    this.parsed ??= { value: JSON.parse(this.json) as unknown };
    return this.parsed.value;
  }
}

/**
 * Function workers: one invocation per worker thread at a time, warm workers kept per
 * (bundle, memory limit) for reuse. A timeout or a crash terminates that worker only;
 * the server thread never runs user code.
 */
export class WorkerPool {
  private readonly idle = new Map<string, PooledWorker[]>();
  private readonly busy = new Set<PooledWorker>();
  private closed = false;
  /** One sweep for every idle worker, rather than a timer set and cleared on every run. */
  private sweeper: NodeJS.Timeout | null = null;
  /** Warm capacity by pool key, as the last configure() gave it. */
  private capacity = new Map<string, WarmCapacity>();
  /**
   * Pool keys configured before and no longer (a function's replaced version), with their
   * function's name: their workers are never kept idle.
   */
  private readonly retired = new Map<string, string>();
  /**
   * One started worker per memory limit with no function in it, taken by the next cold start
   * of any function with that limit: starting a thread and its runtime is most of a cold start,
   * loading a bundle the least. Started after a cold start and when a new version goes live
   * (after a deploy, the first call comes soon), never at rest; it ends after the idle timeout.
   */
  private readonly spares = new Map<number, PooledWorker>();
  private configured = false;

  constructor(
    private readonly workerScript: string,
    private readonly log: Logger,
    private readonly options: { idleMs?: number; maxIdlePerKey?: number } = {},
  ) {}

  get size(): { idle: number; busy: number; spare: number } {
    let idle = 0;
    for (const list of this.idle.values()) idle += list.length;
    return { idle, busy: this.busy.size, spare: this.spares.size };
  }

  /**
   * Sets every function's warm capacity (after each load), and starts the workers that
   * `minWarm` asks for at once, each with its bundle loaded, so a first call is warm.
   * Functions no longer listed lose theirs: their workers are reaped when idle.
   */
  configure(capacities: WarmCapacity[]): void {
    const previous = this.capacity;
    this.capacity = new Map(
      capacities.map((capacity) => [poolKey(capacity.bundle, capacity.exportName, capacity.memoryMb), capacity]),
    );
    // A function's previous version (after a deploy or rollback) keeps no workers: its idle
    // ones end now, the running ones when their run ends.
    for (const [key, capacity] of previous) if (!this.capacity.has(key)) this.retired.set(key, capacity.functionName);
    for (const key of this.capacity.keys()) this.retired.delete(key);
    for (const key of this.retired.keys()) {
      for (const pooled of this.idle.get(key) ?? []) void pooled.worker.terminate();
      this.idle.delete(key);
      if (this.busyCount(key) === 0) this.retired.delete(key);
    }
    for (const key of this.capacity.keys()) this.replenish(key);
    if (this.configured) {
      for (const [key, capacity] of this.capacity) if (!previous.has(key)) this.startSpare(capacity.memoryMb);
    }
    this.configured = true;
    this.startSweeping();
  }

  private startSpare(memoryMb: number): void {
    if (this.closed || this.spares.has(memoryMb)) return;
    const spare = this.spawn(SPARE, memoryMb);
    spare.idleSince = performance.now();
    this.spares.set(memoryMb, spare);
    this.startSweeping();
  }

  /** Live workers (idle or running) per function, for basalt_function_warm_workers. */
  warmWorkers(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const [key, capacity] of this.capacity) {
      counts.set(capacity.functionName, (this.idle.get(key)?.length ?? 0) + this.busyCount(key));
    }
    // A replaced version's runs still in flight count too, until they end.
    for (const [key, functionName] of this.retired) {
      const busy = this.busyCount(key);
      if (busy > 0) counts.set(functionName, (counts.get(functionName) ?? 0) + busy);
    }
    return counts;
  }

  private busyCount(key: string): number {
    let count = 0;
    for (const pooled of this.busy) if (pooled.key === key) count++;
    return count;
  }

  /** Starts idle workers until the function has its `minWarm` (after a load, a crash or a timeout). */
  private replenish(key: string): void {
    const capacity = this.capacity.get(key);
    if (!capacity || this.closed) return;
    const list = this.idle.get(key) ?? [];
    for (let live = list.length + this.busyCount(key); live < capacity.minWarm; live++) {
      const pooled = this.spawn(key, capacity.memoryMb);
      // Loading the bundle now spares the first call that cost; the answer is not awaited.
      pooled.worker.postMessage({ type: 'probe', bundle: capacity.bundle } satisfies ToWorker);
      pooled.idleSince = performance.now();
      list.push(pooled);
    }
    if (list.length > 0) this.idle.set(key, list);
  }

  private spawn(key: string, memoryMb: number): PooledWorker {
    const worker = new Worker(this.workerScript, {
      resourceLimits: { maxOldGenerationSizeMb: memoryMb, maxYoungGenerationSizeMb: Math.max(4, memoryMb / 8) },
      execArgv: [],
      env: WORKER_ENVIRONMENT,
    });
    worker.unref();
    const pooled: PooledWorker = { worker, key, idleSince: 0, run: null };
    // Listeners for the worker's life rather than per run: adding and removing three on every
    // call cost more than the dispatch. An idle worker that fails or exits leaves the pool.
    worker.on('message', (message: FromWorker) => pooled.run?.onMessage(message));
    worker.on('error', (error: Error) => {
      if (pooled.run) pooled.run.onError(error);
      else this.log.warn({ err: error }, 'an idle function worker failed');
    });
    worker.on('exit', (exitCode: number) => {
      if (pooled.run) pooled.run.onExit(exitCode);
      else this.forget(pooled);
    });
    return pooled;
  }

  /** Drops an idle worker that ended on its own, and starts another if its function keeps some warm. */
  private forget(pooled: PooledWorker): void {
    if (pooled.key === SPARE) {
      for (const [memoryMb, spare] of this.spares) if (spare === pooled) this.spares.delete(memoryMb);
      return;
    }
    const list = this.idle.get(pooled.key);
    const index = list?.indexOf(pooled) ?? -1;
    if (!list || index < 0) return;
    list.splice(index, 1);
    if (list.length === 0) this.idle.delete(pooled.key);
    this.replenish(pooled.key);
  }

  private take(key: string, memoryMb: number): { pooled: PooledWorker; cold: boolean } {
    const list = this.idle.get(key);
    // The most recently used first: the others stay idle long enough to be let go.
    const pooled = list?.pop();
    if (pooled) return { pooled, cold: false };
    const spare = this.spares.get(memoryMb);
    if (spare) {
      this.spares.delete(memoryMb);
      spare.key = key;
      // Its successor starts once this call's invoke is posted: cold starts in a row (a burst,
      // a new version right after a call of the old one) each find one ready or nearly so.
      setImmediate(() => this.startSpare(memoryMb));
      return { pooled: spare, cold: true };
    }
    return { pooled: this.spawn(key, memoryMb), cold: true };
  }

  private giveBack(pooled: PooledWorker, keepWarm: number): void {
    this.busy.delete(pooled);
    const list = this.idle.get(pooled.key) ?? [];
    if (this.closed || list.length >= keepWarm || this.retired.has(pooled.key)) {
      void pooled.worker.terminate();
      return;
    }
    pooled.idleSince = performance.now();
    list.push(pooled);
    this.idle.set(pooled.key, list);
    this.startSweeping();
  }

  /** Sweeps often enough for the shortest idle timeout: a quarter of it, from 250 ms to 10 s. */
  private startSweeping(): void {
    if (this.sweeper || this.closed || (this.idle.size === 0 && this.spares.size === 0)) return;
    let shortest = this.idleMs;
    for (const capacity of this.capacity.values()) shortest = Math.min(shortest, capacity.idleMs);
    this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.min(shortest / 4, 10_000)));
    this.sweeper.unref();
  }

  private get idleMs(): number {
    return this.options.idleMs ?? 60_000;
  }

  /**
   * Ends the workers idle for their function's idle timeout, keeping its `minWarm`; stops
   * sweeping once no idle worker may be reaped.
   */
  private sweep(): void {
    const now = performance.now();
    let reapable = false;
    for (const [key, list] of this.idle) {
      const capacity = this.capacity.get(key);
      const cutoff = now - (capacity?.idleMs ?? this.idleMs);
      const spare = Math.max(0, list.length + this.busyCount(key) - (capacity?.minWarm ?? 0));
      // Idle lists are in order of return: the longest idle come first.
      let stale = 0;
      while (stale < Math.min(spare, list.length) && (list[stale]?.idleSince ?? Infinity) <= cutoff) stale++;
      for (const pooled of list.splice(0, stale)) void pooled.worker.terminate();
      if (list.length === 0) this.idle.delete(key);
      else if (spare > stale) reapable = true;
    }
    for (const [memoryMb, spare] of this.spares) {
      if (spare.idleSince <= now - this.idleMs) {
        this.spares.delete(memoryMb);
        void spare.worker.terminate();
      } else reapable = true;
    }
    if (!reapable && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  async run(request: RunRequest): Promise<RunOutcome> {
    if (this.closed) throw new Error('the worker pool is closed');
    const key = poolKey(request.bundle, request.exportName, request.memoryMb);
    const { pooled, cold } = this.take(key, request.memoryMb);
    this.busy.add(pooled);
    return new Promise<RunOutcome>((resolve) => {
      const run = new PoolRun(this.settleRun, pooled, request, cold, resolve);
      pooled.run = run;
      const message: ToWorker = {
        type: 'invoke',
        invocationId: request.invocationId,
        bundle: request.bundle,
        exportName: request.exportName,
        input: request.input,
        env: request.env,
        secrets: request.secrets ?? {},
        asCaller: request.asCaller ?? false,
        traceId: request.traceId ?? newTraceId(),
      };
      if (request.transfer && request.transfer.length > 0) pooled.worker.postMessage(message, request.transfer);
      else pooled.worker.postMessage(message);
    });
  }

  /** Where a run's worker goes when the run ends: back to the pool, or ended (a timeout, a crash). */
  private readonly settleRun: SettleRun = (pooled, request, cold, reusable) => {
    pooled.run = null;
    if (reusable) this.giveBack(pooled, request.keepWarm ?? this.options.maxIdlePerKey ?? 2);
    else {
      this.busy.delete(pooled);
      void pooled.worker.terminate();
      this.replenish(pooled.key);
    }
    // A cold start that found no spare starts one after its run, not during it: starting a
    // thread then would slow the very call it follows.
    if (cold) this.startSpare(request.memoryMb);
  };

  /** Loads a bundle in a throw-away worker and lists its definitions, so broken user code never runs in the server thread. */
  async probe(bundle: string, timeoutMs = 10_000): Promise<ProbedDefinition[]> {
    const worker = new Worker(this.workerScript, {
      execArgv: [],
      env: WORKER_ENVIRONMENT,
      resourceLimits: { maxOldGenerationSizeMb: 256 },
    });
    try {
      return await new Promise<ProbedDefinition[]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`loading took longer than ${timeoutMs} ms`)), timeoutMs);
        worker.once('message', (message: FromWorker) => {
          clearTimeout(timer);
          if (message.type === 'probed' && message.ok) resolve(message.definitions);
          else if (message.type === 'probed') reject(new Error(message.error));
          else reject(new Error('unexpected message while loading'));
        });
        worker.once('error', (error) => {
          clearTimeout(timer);
          reject(error);
        });
        worker.postMessage({ type: 'probe', bundle } satisfies ToWorker);
      });
    } finally {
      await worker.terminate();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    const all = [...this.busy, ...[...this.idle.values()].flat(), ...this.spares.values()];
    this.idle.clear();
    this.spares.clear();
    this.busy.clear();
    await Promise.all(all.map((pooled) => pooled.worker.terminate()));
    this.log.debug('function workers stopped');
  }
}

/** A run's timeout: a plain function given the run, so no closure is made per call. */
function timeOut(run: PoolRun): void {
  run.timedOut();
}

/**
 * One invocation on its worker: collects its logs, answers its ctx.* calls, and settles it
 * once (result, timeout, error or exit, whichever comes first). A class rather than a set of
 * closures made on every call: a warm call allocates one object for all of it.
 */
class PoolRun implements ActiveRun {
  private readonly logs: LogLine[] = [];
  private readonly started = performance.now();
  private readonly timer: NodeJS.Timeout;
  private settled = false;

  constructor(
    private readonly settle: SettleRun,
    private readonly pooled: PooledWorker,
    private readonly request: RunRequest,
    private readonly cold: boolean,
    private readonly resolve: (outcome: RunOutcome) => void,
  ) {
    this.timer = setTimeout(timeOut, request.timeoutMs, this);
  }

  private elapsed(): number {
    return Math.round(performance.now() - this.started);
  }

  private finish(outcome: RunOutcome, reusable: boolean): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.settle(this.pooled, this.request, this.cold, reusable);
    this.resolve(outcome);
  }

  private fail(status: 'failed' | 'timeout' | 'crashed', error: string, reusable: boolean): void {
    this.finish({ status, error, logs: this.logs, durationMs: this.elapsed(), cold: this.cold }, reusable);
  }

  timedOut(): void {
    this.fail('timeout', `timed out after ${this.request.timeoutMs} ms`, false);
  }

  onMessage(message: FromWorker): void {
    const { request } = this;
    if (message.type === 'result' && message.invocationId === request.invocationId) {
      if (message.ok) {
        this.finish(new Succeeded(message.json, message.response, this.logs, this.elapsed(), this.cold), true);
      } else {
        const reason =
          message.error.name && message.error.name !== 'Error'
            ? `${message.error.name}: ${message.error.message}`
            : message.error.message;
        this.fail('failed', reason, true);
      }
    } else if (message.type === 'log' && message.invocationId === request.invocationId) {
      if (this.logs.length < MAX_LOG_LINES) {
        this.logs.push({ ...message.line, message: message.line.message.slice(0, MAX_LOG_LINE) });
      }
    } else if (message.type === 'rpc' && message.invocationId === request.invocationId) {
      const { worker } = this.pooled;
      request.rpc(message.target, message.method, message.args, message.as).then(
        (value) =>
          worker.postMessage({ type: 'rpc-result', callId: message.callId, ok: true, value } satisfies ToWorker),
        (error: unknown) => {
          const failure = error as { code?: unknown; message?: unknown };
          worker.postMessage({
            type: 'rpc-result',
            callId: message.callId,
            ok: false,
            error: {
              code: typeof failure.code === 'string' ? failure.code : 'INTERNAL',
              message: typeof failure.message === 'string' ? failure.message : 'call failed',
            },
          } satisfies ToWorker);
        },
      );
    }
  }

  onError(error: Error): void {
    const code = (error as NodeJS.ErrnoException).code;
    this.fail(
      'crashed',
      code === 'ERR_WORKER_OUT_OF_MEMORY' ? `exceeded its memory limit of ${this.request.memoryMb} MB` : error.message,
      false,
    );
  }

  onExit(exitCode: number): void {
    this.fail('crashed', `worker exited with code ${exitCode}`, false);
  }
}
