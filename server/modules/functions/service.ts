import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Caller } from '../../internal/caller.js';
import { ruleAuthFromCaller } from '../../internal/rules/index.js';
import { AppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import type { HttpRequest } from '../../functions-api.js';
import {
  buildFailureReason,
  bundleFunction,
  buildWorkerScript,
  cleanBuildDir,
  definitionProblem,
  functionFiles,
  functionName,
  NUMERIC_OPTIONS,
  releaseBuilder,
  validFunctionName,
} from './loader.js';
import type { FunctionResponse } from './http-response.js';
import type { LoadError, LoadedFunction, NumericOption } from './loader.js';
import { WorkerPool, type RpcHandler, type RunOutcome } from './pool.js';
import { InvocationRecorder } from './recorder.js';
import { warmCapacities } from './warm-capacity.js';
import type { InvocationRecord, InvocationRepository, InvocationRun, InvocationStatus } from './repository.js';

export interface FunctionsOptions {
  functionsDir: string;
  buildDir: string;
  /** The process environment; a function sees only the variables it declares in `env`. */
  environment: Readonly<Record<string, string>>;
  /** Told of every finished run (HTTP and event alike), e.g. to count it in the metrics. */
  onRun?: (run: InvocationRun) => void;
  /** Warm workers unused this long end, unless a function sets its `idle_timeout_s` (default 300 s). */
  idleTimeoutMs?: number;
  /** Which functions this instance runs, and so keeps `min_warm` workers for (default: all). */
  roles?: { api: boolean; worker: boolean };
}

export interface FunctionSummary {
  name: string;
  kind: LoadedFunction['kind'];
  file: string;
  trigger: Record<string, unknown>;
  options: { retries: number; timeout_ms: number; memory_mb: number; concurrency: number };
}

/** An HTTP call of a function as the route received it: the function's request without `auth`. */
export type HttpInvocation = Omit<HttpRequest, 'auth'>;

/** What an HTTP function answered: a value sent as JSON with 200, or its own `Response`. */
export type HttpAnswer = { kind: 'json'; value: unknown } | ({ kind: 'response' } & FunctionResponse);

/** Callers waiting for a busy function; beyond this they are turned away with 429. */
const MAX_WAITING = 1000;

/** A function's numeric option, or its default: the load refused values outside the option's range. */
export function numberOption(options: Record<string, unknown>, key: NumericOption): number {
  const value = options[key];
  return typeof value === 'number' ? value : NUMERIC_OPTIONS[key].default;
}

class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly limit: number) {}

  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) {
      if (this.waiting.length >= MAX_WAITING)
        throw new AppError('RATE_LIMITED', 'The function is busy.', { headers: { 'retry-after': '1' } });
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      this.waiting.shift()?.();
    };
  }
}

/**
 * Loads the functions folder and runs functions in worker threads, recording every
 * invocation. HTTP functions run here directly; event functions are run by the
 * dispatcher's jobs through `run`.
 */
export class FunctionsService {
  private functions = new Map<string, LoadedFunction>();
  private loadErrors: LoadError[] = [];
  private readonly limits = new Map<string, Semaphore>();
  private pool: WorkerPool | null = null;
  private generation = 0;
  private rpc: RpcHandler = async () => {
    throw new AppError('UNAVAILABLE', 'ctx.db and ctx.storage are not available in this server.');
  };
  /** HTTP runs are written after their response, in batches (event runs commit with their jobs). */
  private readonly recorder: InvocationRecorder;

  constructor(
    private readonly options: FunctionsOptions,
    private readonly invocations: InvocationRepository,
    private readonly log: Logger,
  ) {
    this.recorder = new InvocationRecorder((runs) => invocations.record(runs), log);
  }

  /** Installs what ctx.db and ctx.storage call (the service-role document and storage services). */
  useRpc(handler: RpcHandler): void {
    this.rpc = handler;
  }

  get errors(): readonly LoadError[] {
    return this.loadErrors;
  }

  /** (Re)loads every file of the functions folder. A broken file is reported and skipped; the rest keep working. */
  async load(): Promise<void> {
    const generation = ++this.generation;
    if (!this.pool) {
      await cleanBuildDir(this.options.buildDir);
      const script = await buildWorkerScript(this.options.buildDir);
      this.pool = new WorkerPool(script, this.log, { idleMs: this.options.idleTimeoutMs });
    }
    const loaded = new Map<string, LoadedFunction>();
    const errors: LoadError[] = [];
    for (const file of await functionFiles(this.options.functionsDir)) {
      try {
        const bundle = await bundleFunction(file, path.join(this.options.buildDir, 'bundles'), generation);
        const definitions = await this.pool.probe(bundle);
        if (definitions.length === 0)
          throw new Error('it exports no function definition (use the helpers of basalt/functions)');
        // Every definition of a file is checked before any is kept: a bad file loads nothing.
        const fromFile: LoadedFunction[] = [];
        for (const definition of definitions) {
          const name = functionName(file, definition.exportName);
          if (!validFunctionName(name)) throw new Error(`"${name}" is not a valid function name`);
          if (loaded.has(name) || fromFile.some((fn) => fn.name === name)) {
            throw new Error(`a function named "${name}" is defined twice`);
          }
          const problem = definitionProblem(definition.kind, definition.options);
          if (problem) throw new Error(`${name}: ${problem}`);
          fromFile.push({
            name,
            file,
            bundle,
            exportName: definition.exportName,
            kind: definition.kind,
            options: definition.options,
          });
        }
        for (const fn of fromFile) loaded.set(fn.name, fn);
      } catch (error) {
        const reason = buildFailureReason(error);
        errors.push({ file, reason });
        this.log.error(`function file ${file} was not loaded: ${reason}`);
      }
    }
    await releaseBuilder();
    this.functions = loaded;
    this.loadErrors = errors;
    this.limits.clear();
    this.pool.configure(
      warmCapacities(loaded.values(), {
        idleMs: this.options.idleTimeoutMs ?? NUMERIC_OPTIONS.idle_timeout_s.default * 1000,
        memoryMb: NUMERIC_OPTIONS.memory_mb.default,
        roles: this.options.roles ?? { api: true, worker: true },
      }),
    );
    this.log.info(`loaded ${loaded.size} function(s) from ${this.options.functionsDir}`);
  }

  list(): FunctionSummary[] {
    return [...this.functions.values()].map((fn) => this.summary(fn)).sort((a, b) => a.name.localeCompare(b.name));
  }

  find(name: string): LoadedFunction | undefined {
    return this.functions.get(name);
  }

  byKind(kind: LoadedFunction['kind']): LoadedFunction[] {
    return [...this.functions.values()].filter((fn) => fn.kind === kind);
  }

  private summary(fn: LoadedFunction): FunctionSummary {
    const {
      retries: _r,
      timeout_ms: _t,
      memory_mb: _m,
      concurrency: _c,
      env: _e,
      min_warm: _w,
      idle_timeout_s: _i,
      ...trigger
    } = fn.options;
    return {
      name: fn.name,
      kind: fn.kind,
      file: path.relative(this.options.functionsDir, fn.file),
      trigger,
      options: {
        retries: numberOption(fn.options, 'retries'),
        timeout_ms: numberOption(fn.options, 'timeout_ms'),
        memory_mb: numberOption(fn.options, 'memory_mb'),
        concurrency: numberOption(fn.options, 'concurrency'),
      },
    };
  }

  private environmentFor(fn: LoadedFunction): Record<string, string | undefined> {
    const declared = Array.isArray(fn.options.env)
      ? fn.options.env.filter((name): name is string => typeof name === 'string')
      : [];
    return Object.fromEntries(declared.map((name) => [name, this.options.environment[name]]));
  }

  /** Runs one invocation of `fn` and records it; returns the record's id with the outcome. */
  async run(
    fn: LoadedFunction,
    input: unknown,
    meta: { trigger: string; eventId: string | null; attempt: number; jobId?: string; lastAttempt?: boolean },
  ): Promise<{ invocationId: string; outcome: RunOutcome }> {
    const { run, outcome } = await this.execute(fn, input, meta);
    await this.invocations.record([run]);
    return { invocationId: run.id, outcome };
  }

  /** Runs one invocation and returns its record unwritten, for callers that record many at once. */
  async execute(
    fn: LoadedFunction,
    input: unknown,
    meta: { trigger: string; eventId: string | null; attempt: number; jobId?: string; lastAttempt?: boolean },
  ): Promise<{ run: InvocationRun; outcome: RunOutcome }> {
    if (!this.pool) throw new AppError('UNAVAILABLE', 'Functions are not loaded.');
    let limit = this.limits.get(fn.name);
    if (!limit) {
      limit = new Semaphore(numberOption(fn.options, 'concurrency'));
      this.limits.set(fn.name, limit);
    }
    const release = await limit.acquire();
    try {
      const id = randomUUID();
      const startedAt = new Date();
      const outcome = await this.pool.run({
        invocationId: id,
        bundle: fn.bundle,
        exportName: fn.exportName,
        input,
        env: this.environmentFor(fn),
        timeoutMs: numberOption(fn.options, 'timeout_ms'),
        memoryMb: numberOption(fn.options, 'memory_mb'),
        keepWarm: numberOption(fn.options, 'concurrency'),
        rpc: this.rpc,
      });
      const status: InvocationStatus =
        outcome.status === 'succeeded' ? 'succeeded' : meta.lastAttempt ? 'dead' : 'failed';
      const run: InvocationRun = {
        id,
        functionName: fn.name,
        trigger: meta.trigger,
        eventId: meta.eventId,
        attempt: meta.attempt,
        jobId: meta.jobId,
        status,
        startedAt,
        durationMs: outcome.durationMs,
        error: outcome.status === 'succeeded' ? null : outcome.error,
        logs: outcome.logs,
        cold: outcome.cold,
      };
      this.options.onRun?.(run);
      return { run, outcome };
    } finally {
      release();
    }
  }

  record(runs: InvocationRun[]): Promise<void> {
    return this.invocations.record(runs);
  }

  /** An HTTP function call: its answer, or FUNCTION_ERROR / FUNCTION_TIMEOUT naming the invocation. */
  async invokeHttp(name: string, caller: Caller, request: HttpInvocation): Promise<HttpAnswer> {
    const fn = this.functions.get(name);
    if (!fn || fn.kind !== 'http') throw new AppError('NOT_FOUND', `No HTTP function named "${name}".`);
    const method = typeof fn.options.method === 'string' ? fn.options.method.toUpperCase() : null;
    if (method && method !== request.method) {
      throw new AppError('METHOD_NOT_ALLOWED', `The function "${name}" answers ${method} only.`);
    }
    const { run, outcome } = await this.execute(
      fn,
      { ...request, auth: ruleAuthFromCaller(caller) },
      {
        trigger: 'http',
        eventId: null,
        attempt: 1,
      },
    );
    // Recorded after the response, not before it: see InvocationRecorder.
    const backlogFull = this.recorder.add(run);
    if (backlogFull) await backlogFull;
    const invocationId = run.id;
    if (outcome.status === 'succeeded') {
      return outcome.response ? { kind: 'response', ...outcome.response } : { kind: 'json', value: outcome.value };
    }
    if (outcome.status === 'timeout') {
      throw new AppError('FUNCTION_TIMEOUT', `The function "${name}" ran past its timeout.`, {
        details: { invocation_id: invocationId },
      });
    }
    throw new AppError('FUNCTION_ERROR', `The function "${name}" failed.`, {
      details: { invocation_id: invocationId },
    });
  }

  takeDeadForRetry(invocationId: string): Promise<{ functionName: string; jobId: string } | null> {
    return this.invocations.takeDeadForRetry(invocationId);
  }

  async invocationsOf(
    name: string,
    options: { status?: InvocationStatus; limit: number; before?: string },
  ): Promise<InvocationRecord[]> {
    if (!this.functions.has(name)) throw new AppError('NOT_FOUND', `No function named "${name}".`);
    // This instance's own HTTP runs answered a moment ago are listed too.
    await this.recorder.flush();
    return this.invocations.list(name, options);
  }

  /** Writes the HTTP runs still waiting to be recorded. */
  flushRecords(): Promise<void> {
    return this.recorder.flush();
  }

  /** Live workers per function (basalt_function_warm_workers). */
  warmWorkers(): Map<string, number> {
    return this.pool?.warmWorkers() ?? new Map();
  }

  async close(): Promise<void> {
    await this.pool?.close();
    this.pool = null;
    // After the pool: runs its closing cut short are recorded too.
    await this.recorder.close();
  }
}
