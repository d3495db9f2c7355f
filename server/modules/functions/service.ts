import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Caller } from '../../internal/caller.js';
import { ruleAuthFromCaller } from '../../internal/rules/index.js';
import { AppError } from '../../internal/errors.js';
import type { Tx } from '../../internal/db.js';
import type { Logger } from '../../internal/log.js';
import type { AuditEvent } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import type { HttpRequest } from '../../functions-api.js';
import { rm } from 'node:fs/promises';
import { SERVICE_CALLER } from '../../internal/caller.js';
import { isTraceId, parseTraceparent, traceOf, type TraceContext, type TraceOrigin } from '../../internal/trace.js';
import {
  buildBundle,
  buildFailureReason,
  buildFailureFile,
  bundleHash,
  buildWorkerScript,
  cleanBuildDir,
  definitionProblem,
  functionFiles,
  functionName,
  NUMERIC_OPTIONS,
  releaseBuilder,
  validFunctionName,
  writeBundle,
  type Bundle,
} from './loader.js';
import { checkDeployFiles, MAX_BUNDLE_BYTES, withDeployFiles } from './deploy-files.js';
import type { DeployRepository, DeploySource, VersionInfo } from './deploy-repository.js';
import type { ProbedDefinition, RpcTarget } from './protocol.js';
import { redact, type SecretStore } from './secrets.js';
import { transferable, type FunctionResponse } from './http-response.js';
import type { LoadError, LoadedFunction, NumericOption } from './loader.js';
import { WorkerPool, type RunOutcome } from './pool.js';
import { InvocationRecorder } from './recorder.js';
import { traceTree, type TraceInvocation } from './trace-tree.js';
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
  /** Where deploys, rollbacks and undeploys record their admin event, in their transaction. */
  audit: AuditLog;
}

export interface FunctionSummary {
  name: string;
  kind: LoadedFunction['kind'];
  file: string;
  trigger: Record<string, unknown>;
  options: { retries: number; timeout_ms: number; memory_mb: number; concurrency: number };
  version: number;
  source: DeploySource;
  deployed_at: string;
}

/** What a deploy or a rollback answers: the version now live. */
export interface DeployedFunction {
  name: string;
  version: number;
  kind: LoadedFunction['kind'];
  trigger: Record<string, unknown>;
  options: Record<string, unknown>;
  deployed_at: string;
}

export interface VersionSummary {
  version: number;
  deployed_at: string;
  active: boolean;
  source: DeploySource;
}

/**
 * How ctx.db, ctx.storage and ctx.events reach the server: as the service role, or as the
 * HTTP caller. `origin` is the calling run: the writes it makes and the events it publishes
 * carry it, so the runs they start join its trace (docs/tracing.md).
 */
export type ServerRpc = (
  target: RpcTarget,
  method: string,
  args: unknown[],
  caller: Caller,
  origin: TraceOrigin,
) => Promise<unknown>;

/** What the service knows of a run besides its input: why it runs, which attempt, and its trace. */
export interface RunMeta {
  trigger: string;
  eventId: string | null;
  attempt: number;
  jobId?: string;
  lastAttempt?: boolean;
  /** The trace it joins; without one it starts a new trace. */
  trace?: TraceContext;
  /** Buffers of the input moved to the worker rather than copied (a large HTTP body); see WorkerPool.run. */
  transfer?: ArrayBuffer[];
}

/** An HTTP call of a function as the route received it: the function's request without `auth`. */
export type HttpInvocation = Omit<HttpRequest, 'auth'>;

/** What an HTTP function answered: JSON text (made in the worker) sent with 200, or its own `Response`. */
export type HttpAnswer = { kind: 'json'; json: string } | ({ kind: 'response' } & FunctionResponse);

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

  /** A slot at once when one is free, else null: a warm call with room takes no promise and no await for it. */
  tryAcquire(): (() => void) | null {
    if (this.active >= this.limit) return null;
    this.active++;
    return this.releaser();
  }

  /** A slot, waiting for one when none is free (RATE_LIMITED when too many wait already). */
  async acquire(): Promise<() => void> {
    const free = this.tryAcquire();
    if (free) return free;
    if (this.waiting.length >= MAX_WAITING)
      throw new AppError('RATE_LIMITED', 'The function is busy.', { headers: { 'retry-after': '1' } });
    // The slot is handed over by the run that releases it, so no caller arriving meanwhile takes it.
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    };
  }
}

/** What `access` lists for each kind of ctx.* call. */
const ACCESS_KINDS: Record<RpcTarget, { kind: string; noun: string }> = {
  db: { kind: 'collections', noun: 'collection' },
  storage: { kind: 'buckets', noun: 'bucket' },
  events: { kind: 'topics', noun: 'topic' },
};

/** The option keys that are not part of a function's trigger. */
const NON_TRIGGER = new Set([
  'retries',
  'timeout_ms',
  'memory_mb',
  'concurrency',
  'env',
  'secrets',
  'access',
  'min_warm',
  'idle_timeout_s',
]);

function triggerOf(options: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(options).filter(([key]) => !NON_TRIGGER.has(key)));
}

function deployedFunction(version: VersionInfo): DeployedFunction {
  return {
    name: version.name,
    version: version.version,
    kind: version.kind,
    trigger: triggerOf(version.options),
    options: version.options,
    deployed_at: version.deployedAt.toISOString(),
  };
}

function buildFailed(reason: string, file?: string): AppError {
  return new AppError('FUNCTION_BUILD_FAILED', `The function does not build or load: ${reason}`, {
    details: { ...(file === undefined ? {} : { file }), reason },
  });
}

function nameList(value: unknown): string[] | null {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : null;
}

/**
 * Deploys functions (through the admin API, or from the functions folder) as immutable
 * versions in Postgres, keeps this instance's set of live versions in step with the
 * database (sync), and runs functions in worker threads, recording every invocation. HTTP
 * functions run here directly; event functions are run by the dispatcher's jobs through
 * `execute`, each on the version its job names.
 */
export class FunctionsService {
  /** The live version of each deployed function, as this instance last synced it. */
  private functions = new Map<string, LoadedFunction>();
  /** Versions loaded for jobs dispatched to them (not necessarily live), by `name@version`. */
  private readonly versions = new Map<string, Promise<LoadedFunction>>();
  private loadErrors: LoadError[] = [];
  private readonly limits = new Map<string, Semaphore>();
  private pool: WorkerPool | null = null;
  private syncing: Promise<boolean> = Promise.resolve(false);
  private rpc: ServerRpc = async () => {
    throw new AppError('UNAVAILABLE', 'ctx.db and ctx.storage are not available in this server.');
  };
  /** HTTP runs are written after their response, in batches (event runs commit with their jobs). */
  private readonly recorder: InvocationRecorder;

  constructor(
    private readonly options: FunctionsOptions,
    private readonly invocations: InvocationRepository,
    private readonly deploys: DeployRepository,
    private readonly secrets: SecretStore,
    private readonly log: Logger,
  ) {
    this.recorder = new InvocationRecorder((runs) => invocations.record(runs), log);
  }

  /** Installs what ctx.db and ctx.storage call (the document and storage services). */
  useRpc(handler: ServerRpc): void {
    this.rpc = handler;
  }

  get errors(): readonly LoadError[] {
    return this.loadErrors;
  }

  private async workers(): Promise<WorkerPool> {
    if (!this.pool) {
      await cleanBuildDir(this.options.buildDir);
      const script = await buildWorkerScript(this.options.buildDir);
      this.pool ??= new WorkerPool(script, this.log, { idleMs: this.options.idleTimeoutMs });
    }
    return this.pool;
  }

  /** Loads a built bundle in a throw-away worker and lists its definitions; FUNCTION_BUILD_FAILED when it does not load. */
  private async probe(bundle: Bundle, file: string): Promise<{ path: string; definitions: ProbedDefinition[] }> {
    const pool = await this.workers();
    const written = await writeBundle(path.join(this.options.buildDir, 'probes'), 'probe', bundle);
    try {
      return { path: written, definitions: await pool.probe(written) };
    } catch (error) {
      throw buildFailed(buildFailureReason(error), file);
    } finally {
      await rm(written, { force: true });
    }
  }

  /** Refuses a definition that cannot run; FUNCTION_BUILD_FAILED naming why. */
  private checkDefinition(name: string, definition: ProbedDefinition, file: string): void {
    if (!validFunctionName(name)) throw buildFailed(`"${name}" is not a valid function name`, file);
    const problem = definitionProblem(definition.kind, definition.options);
    if (problem) throw buildFailed(`${name}: ${problem}`, file);
  }

  /** Writes `audit` in the transaction it is handed, if there is an event to record. */
  private auditWriter(audit: AuditEvent | undefined): ((tx: Tx) => Promise<void>) | undefined {
    return audit && ((tx) => this.options.audit.record(audit, { tx }));
  }

  /**
   * Deploys a function from its source files: built and loaded in a throw-away worker
   * first, so a failure (422 FUNCTION_BUILD_FAILED) changes nothing; then stored as the next
   * version and made live, here at once and on every instance within seconds. Deploys,
   * rollbacks and undeploys take the admin event that records them (`audit`, built by the
   * route, the source redacted) and write it in the transaction that changes the live version.
   */
  async deploy(name: string, files: unknown, entry: unknown, audit?: AuditEvent): Promise<DeployedFunction> {
    if (!validFunctionName(name)) {
      throw new AppError('INVALID_REQUEST', 'A function name is 1–63 characters of letters, digits, - and _.', {
        details: { field: 'name' },
      });
    }
    const deploy = checkDeployFiles(files, entry);
    const bundle = await withDeployFiles(path.join(this.options.buildDir, 'sources'), deploy, async (root, file) => {
      try {
        return await buildBundle(file, { confine: root });
      } catch (error) {
        throw buildFailed(buildFailureReason(error), buildFailureFile(error, root) ?? deploy.entry);
      } finally {
        await releaseBuilder();
      }
    });
    if (Buffer.byteLength(bundle.code, 'utf8') > MAX_BUNDLE_BYTES) {
      throw new AppError('PAYLOAD_TOO_LARGE', `A built function is at most ${MAX_BUNDLE_BYTES} bytes.`, {
        details: { field: 'files', limit: MAX_BUNDLE_BYTES },
      });
    }
    const { definitions } = await this.probe(bundle, deploy.entry);
    const definition =
      definitions.find((candidate) => candidate.exportName === name) ??
      definitions.find((candidate) => candidate.exportName === 'default') ??
      (definitions.length === 1 ? definitions[0] : undefined);
    if (!definition) {
      throw buildFailed(
        definitions.length === 0
          ? 'it exports no function definition (use the helpers of basalt/functions)'
          : `it exports several definitions; export one as default or name it "${name}"`,
        deploy.entry,
      );
    }
    this.checkDefinition(name, definition, deploy.entry);
    const stored = await this.deploys.deploy(
      {
        name,
        kind: definition.kind,
        exportName: definition.exportName,
        options: definition.options,
        entry: deploy.entry,
        bundle: bundle.code,
        bundleFormat: bundle.format,
        bundleHash: bundleHash(bundle),
        source: 'api',
      },
      { alsoInTx: this.auditWriter(audit) },
    );
    if (!stored) throw new AppError('INTERNAL', 'The deploy was not stored.');
    await this.sync();
    return deployedFunction(stored);
  }

  /**
   * Deploys every file of the functions folder the same way, as source "folder". A file
   * whose bundle is the one the folder deployed last deploys nothing, so restarts (of any
   * instance) mint no versions, and an API deploy or an undeploy made since stays in
   * force until the file changes. A broken file is reported under `errors` and skipped.
   */
  async deployFolder(): Promise<void> {
    const errors: LoadError[] = [];
    const seen = new Set<string>();
    for (const file of await functionFiles(this.options.functionsDir)) {
      try {
        let bundle: Bundle;
        try {
          bundle = await buildBundle(file);
        } catch (error) {
          throw new Error(buildFailureReason(error));
        }
        const entry = path.relative(this.options.functionsDir, file);
        const hash = bundleHash(bundle);
        // Unchanged since the folder last deployed it (a restart, another instance): nothing to load.
        const deployed = await this.deploys.folderHashes(entry);
        if (deployed.length > 0 && deployed.every((known) => known === hash)) continue;
        const { definitions } = await this.probe(bundle, path.basename(file)).catch((error: unknown) => {
          throw new Error(error instanceof AppError ? String(error.details?.reason ?? error.message) : String(error));
        });
        if (definitions.length === 0)
          throw new Error('it exports no function definition (use the helpers of basalt/functions)');
        // Every definition of a file is checked before any is deployed: a bad file deploys nothing.
        const names = definitions.map((definition) => functionName(file, definition.exportName));
        definitions.forEach((definition, index) => {
          const name = names[index] ?? '';
          if (seen.has(name) || names.indexOf(name) !== index)
            throw new Error(`a function named "${name}" is defined twice`);
          try {
            this.checkDefinition(name, definition, path.basename(file));
          } catch (error) {
            throw new Error(error instanceof AppError ? String(error.details?.reason ?? error.message) : String(error));
          }
        });
        for (const [index, definition] of definitions.entries()) {
          const name = names[index] ?? '';
          seen.add(name);
          await this.deploys.deploy(
            {
              name,
              kind: definition.kind,
              exportName: definition.exportName,
              options: definition.options,
              entry,
              bundle: bundle.code,
              bundleFormat: bundle.format,
              bundleHash: hash,
              source: 'folder',
            },
            { unlessFolderHash: true },
          );
        }
      } catch (error) {
        const reason = buildFailureReason(error);
        errors.push({ file, reason });
        this.log.error(`function file ${file} was not loaded: ${reason}`);
      }
    }
    await releaseBuilder();
    this.loadErrors = errors;
  }

  /**
   * Brings this instance's live set in step with the database: new versions are loaded
   * (their bundles written for the workers), undeployed functions dropped. Each function
   * swaps at once; runs in flight finish on the version they started with. True when the
   * set changed.
   */
  sync(): Promise<boolean> {
    const next = this.syncing.catch(() => false).then(() => this.syncNow());
    this.syncing = next;
    return next;
  }

  private async syncNow(): Promise<boolean> {
    const live = await this.deploys.active();
    const updated = new Map<string, LoadedFunction>();
    let changed = live.length !== this.functions.size;
    for (const version of live) {
      const current = this.functions.get(version.name);
      if (current?.version === version.version) {
        updated.set(version.name, current);
        continue;
      }
      changed = true;
      const loaded = await this.versionOf(version.name, version.version);
      if (loaded) updated.set(version.name, loaded);
      this.limits.delete(version.name);
    }
    this.functions = updated;
    this.configureWarmCapacity();
    if (changed)
      this.log.info(
        `functions live here: ${[...updated.values()].map((fn) => `${fn.name}@${fn.version}`).join(', ') || 'none'}`,
      );
    return changed;
  }

  /**
   * Gives the pool the warm capacity of the live versions: a deploy or rollback provisions
   * the new version's `min_warm` workers, and the old version's end once idle.
   */
  private configureWarmCapacity(): void {
    this.pool?.configure(
      warmCapacities(this.functions.values(), {
        idleMs: this.options.idleTimeoutMs ?? NUMERIC_OPTIONS.idle_timeout_s.default * 1000,
        memoryMb: NUMERIC_OPTIONS.memory_mb.default,
        roles: this.options.roles ?? { api: true, worker: true },
      }),
    );
  }

  /** A stored version, ready to run here (its bundle written for the workers); null when there is none. */
  versionOf(name: string, version: number): Promise<LoadedFunction | null> {
    const live = this.functions.get(name);
    if (live?.version === version) return Promise.resolve(live);
    const key = `${name}@${version}`;
    let loading = this.versions.get(key);
    if (!loading) {
      loading = (async () => {
        // The build dir is emptied when the workers start: bundles are written after that.
        await this.workers();
        const stored = await this.deploys.version(name, version);
        if (!stored) throw new AppError('NOT_FOUND', `No version ${version} of "${name}".`);
        const bundle = await writeBundle(path.join(this.options.buildDir, 'bundles'), `${name}.v${version}`, {
          code: stored.bundle,
          format: stored.bundleFormat,
        });
        return {
          name,
          file: stored.entry,
          bundle,
          exportName: stored.exportName,
          kind: stored.kind,
          options: stored.options,
          version,
          source: stored.source,
          deployedAt: stored.deployedAt,
        } satisfies LoadedFunction;
      })();
      this.versions.set(key, loading);
      loading.catch(() => this.versions.delete(key));
    }
    return loading.catch((error: unknown) => {
      if (error instanceof AppError && error.code === 'NOT_FOUND') return null;
      throw error;
    });
  }

  /** Every deployed function, whatever its source, as the database has them (the same on every instance). */
  async list(): Promise<FunctionSummary[]> {
    return (await this.deploys.active()).map((version) => ({
      name: version.name,
      kind: version.kind,
      file: version.entry,
      trigger: triggerOf(version.options),
      options: {
        retries: numberOption(version.options, 'retries'),
        timeout_ms: numberOption(version.options, 'timeout_ms'),
        memory_mb: numberOption(version.options, 'memory_mb'),
        concurrency: numberOption(version.options, 'concurrency'),
      },
      version: version.version,
      source: version.source,
      deployed_at: version.deployedAt.toISOString(),
    }));
  }

  async versionsOf(name: string): Promise<VersionSummary[]> {
    const [versions, live] = await Promise.all([this.deploys.versions(name), this.deploys.active()]);
    if (versions.length === 0) throw new AppError('NOT_FOUND', `No function named "${name}".`);
    const active = live.find((version) => version.name === name)?.version;
    return versions.map((version) => ({
      version: version.version,
      deployed_at: version.deployedAt.toISOString(),
      active: version.version === active,
      source: version.source,
    }));
  }

  async rollback(name: string, version: number, audit?: AuditEvent): Promise<DeployedFunction> {
    const restored = await this.deploys.rollback(name, version, this.auditWriter(audit));
    if (!restored) throw new AppError('NOT_FOUND', `No version ${version} of "${name}".`);
    await this.sync();
    return deployedFunction(restored);
  }

  async undeploy(name: string, audit?: AuditEvent): Promise<void> {
    if (!(await this.deploys.undeploy(name, this.auditWriter(audit))))
      throw new AppError('NOT_FOUND', `No deployed function named "${name}".`);
    await this.sync();
  }

  find(name: string): LoadedFunction | undefined {
    return this.functions.get(name);
  }

  byKind(kind: LoadedFunction['kind']): LoadedFunction[] {
    return [...this.functions.values()].filter((fn) => fn.kind === kind);
  }

  private environmentFor(fn: LoadedFunction): Record<string, string | undefined> {
    const declared = nameList(fn.options.env) ?? [];
    return Object.fromEntries(declared.map((name) => [name, this.options.environment[name]]));
  }

  /** Refuses a ctx.db / ctx.storage / ctx.events call outside what the function declared in `access`. */
  private checkAccess(fn: LoadedFunction, target: RpcTarget, args: unknown[]): void {
    const access = fn.options.access as Record<string, unknown> | undefined;
    if (access === undefined) return;
    const { kind, noun } = ACCESS_KINDS[target];
    const allowed = nameList(access[kind]) ?? [];
    const name = args[0];
    if (typeof name !== 'string' || !allowed.includes(name)) {
      throw new AppError(
        'FORBIDDEN',
        `The function "${fn.name}" may not use the ${noun} "${String(name)}" (access.${kind}).`,
      );
    }
  }

  /** Runs one invocation of `fn` and records it; returns the record's id with the outcome. */
  async run(fn: LoadedFunction, input: unknown, meta: RunMeta): Promise<{ invocationId: string; outcome: RunOutcome }> {
    const { run, outcome } = await this.execute(fn, input, meta);
    await this.invocations.record([run]);
    return { invocationId: run.id, outcome };
  }

  /**
   * Runs one invocation and returns its record unwritten, for callers that record many at
   * once. `caller` is the HTTP caller, whom ctx.asCaller acts as.
   */
  async execute(
    fn: LoadedFunction,
    input: unknown,
    meta: RunMeta,
    caller?: Caller,
  ): Promise<{ run: InvocationRun; outcome: RunOutcome }> {
    const pool = this.pool ?? (await this.workers());
    const limitKey = `${fn.name}@${fn.version}`;
    let limit = this.limits.get(limitKey);
    if (!limit) {
      limit = new Semaphore(numberOption(fn.options, 'concurrency'));
      this.limits.set(limitKey, limit);
    }
    const release = limit.tryAcquire() ?? (await limit.acquire());
    try {
      const id = randomUUID();
      const trace = meta.trace ?? traceOf(null);
      const origin: TraceOrigin = { trace_id: trace.traceId, parent_invocation_id: id };
      const startedAt = new Date();
      const secrets = this.secrets.pick(nameList(fn.options.secrets) ?? []);
      // Taken with the values the run gets: a secret rotated while it runs is hidden in its old value too.
      const hiddenBefore = this.secrets.allValues();
      const outcome = await pool.run({
        invocationId: id,
        bundle: fn.bundle,
        exportName: fn.exportName,
        input,
        env: this.environmentFor(fn),
        secrets,
        asCaller: caller !== undefined,
        traceId: trace.traceId,
        timeoutMs: numberOption(fn.options, 'timeout_ms'),
        memoryMb: numberOption(fn.options, 'memory_mb'),
        keepWarm: numberOption(fn.options, 'concurrency'),
        transfer: meta.transfer,
        rpc: async (target, method, args, as) => {
          this.checkAccess(fn, target, args);
          if (as === 'caller' && !caller) {
            throw new AppError('FORBIDDEN', 'ctx.asCaller is only available in HTTP functions.');
          }
          return this.rpc(target, method, args, as === 'caller' && caller ? caller : SERVICE_CALLER, origin);
        },
      });
      // A secret's value never reaches the invocation's record, whoever printed it. (The list
      // is the same array unless the secrets changed during the run: then both are hidden.)
      const hiddenAfter = this.secrets.allValues();
      const hidden =
        hiddenAfter === hiddenBefore
          ? hiddenBefore
          : [...new Set([...hiddenBefore, ...hiddenAfter])].sort((a, b) => b.length - a.length);
      const logs =
        hidden.length === 0
          ? outcome.logs
          : outcome.logs.map((line) => ({ ...line, message: redact(line.message, hidden) }));
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
        error: outcome.status === 'succeeded' ? null : redact(outcome.error, hidden),
        logs,
        cold: outcome.cold,
        version: fn.version,
        traceId: trace.traceId,
        parentInvocationId: trace.parentInvocationId,
        parentSpanId: trace.parentSpanId ?? null,
      };
      this.options.onRun?.(run);
      // Not a spread: that would read (and parse) a successful outcome's lazy `value`.
      outcome.logs = logs;
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
      // Like a route's 405: the method it does take, in `Allow` and in the details.
      throw new AppError('METHOD_NOT_ALLOWED', `The function "${name}" answers ${method} only.`, {
        details: { method: request.method, allowed: [method] },
        headers: { allow: method },
      });
    }
    // A caller that sends a W3C traceparent continues its trace; the function is then the
    // child of the caller's span (in OTLP), with no parent invocation.
    const continued = parseTraceparent(request.headers.traceparent);
    // A large body is moved to the worker, not copied: the route's bytes are the run's alone.
    const moved = transferable(request.rawBody);
    const { run, outcome } = await this.execute(
      fn,
      { ...request, auth: ruleAuthFromCaller(caller) },
      {
        trigger: 'http',
        eventId: null,
        attempt: 1,
        trace: continued
          ? { traceId: continued.traceId, parentInvocationId: null, parentSpanId: continued.parentSpanId }
          : undefined,
        transfer: moved ? [moved] : undefined,
      },
      caller,
    );
    // Recorded after the response, not before it: see InvocationRecorder.
    const backlogFull = this.recorder.add(run);
    if (backlogFull) await backlogFull;
    const invocationId = run.id;
    if (outcome.status === 'succeeded') {
      return outcome.response ? { kind: 'response', ...outcome.response } : { kind: 'json', json: outcome.json };
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
    if (!this.functions.has(name) && !(await this.deploys.hasVersions(name))) {
      throw new AppError('NOT_FOUND', `No function named "${name}".`);
    }
    // This instance's own HTTP runs answered a moment ago are listed too.
    await this.recorder.flush();
    return this.invocations.list(name, options);
  }

  /**
   * The recorded runs of a trace as a tree (trace-tree.ts); NOT_FOUND when it has none.
   * Runs still going are not in it yet: a run is recorded when it ends.
   */
  async trace(traceId: string): Promise<TraceInvocation[]> {
    if (!isTraceId(traceId)) {
      throw new AppError('INVALID_REQUEST', 'A trace id is 32 lowercase hex digits, not all zero.', {
        details: { field: 'trace_id' },
      });
    }
    // This instance's own HTTP runs answered a moment ago are in it too.
    await this.recorder.flush();
    const records = await this.invocations.byTrace(traceId);
    if (records.length === 0) throw new AppError('NOT_FOUND', 'No invocation of this trace is recorded.');
    return traceTree(records);
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
    await this.syncing.catch(() => undefined);
    await this.pool?.close();
    this.pool = null;
    // After the pool: runs its closing cut short are recorded too.
    await this.recorder.close();
  }
}
