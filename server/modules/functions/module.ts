import { hkdfSync } from 'node:crypto';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { AppError } from '../../internal/errors.js';
import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { Readable } from 'node:stream';
import type { DocumentService } from '../documents/service.js';
import type { StorageService } from '../storage/service.js';
import { EventsRepository } from '../events/repository.js';
import { eventRoutes } from '../events/routes.js';
import { EventsService } from '../events/service.js';
import { FunctionDispatcher, dispatcherMetrics } from './dispatcher.js';
import { InvocationRepository, type InvocationRecord } from './repository.js';
import { functionRoutes, httpFunctionRoute } from './routes.js';
import { DeployRepository } from './deploy-repository.js';
import { parseSecretsKey, SecretStore } from './secrets.js';
import type { AuditLog } from '../audit/service.js';
import { FunctionsService, numberOption, type ServerRpc } from './service.js';
import { NUMERIC_OPTIONS } from './loader.js';
import { registerWarmWorkersGauge } from './warm-capacity.js';
import { SpanExporter } from './span-export.js';

/**
 * The functions module: deploys (admin API and the functions folder), secrets, HTTP
 * functions, and the dispatcher that hands change events and schedules to the job queue.
 * start() deploys the functions folder (what changed only), loads what is live, starts the
 * dispatcher (whose workers run only with the `worker` role), follows deploys made on any
 * instance and, in development, watches the folder.
 */
export interface FunctionsModule extends ServerModule {
  service: FunctionsService;
  secrets: SecretStore;
  /** Topics: publish (the internal API) and their settings. */
  events: EventsService;
  /** Re-queues a dead-lettered invocation's event; NOT_FOUND unless it is dead. */
  retry(invocationId: string): Promise<InvocationRecord>;
}

function text(value: unknown): string {
  if (typeof value !== 'string') throw new AppError('INVALID_REQUEST', 'Expected a string argument.');
  return value;
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
}

/** ctx.db inside a function: the document service as `caller` (the service role, or the HTTP caller), the same path as HTTP writes. */
function documentsRpc(documents: DocumentService): ServerRpc {
  return async (_target, method, args, caller) => {
    const [collection, second, third, fourth] = args;
    const name = text(collection);
    switch (method) {
      case 'create':
        return documents.create(caller, name, { data: second, id: record(third).id });
      case 'get':
        try {
          return await documents.get(caller, name, text(second));
        } catch (error) {
          if (error instanceof AppError && error.code === 'NOT_FOUND') return null;
          throw error;
        }
      case 'set':
        return (await documents.set(caller, name, text(second), { data: third })).doc;
      case 'update': {
        const ifVersion = record(fourth).ifVersion;
        return documents.update(
          caller,
          name,
          text(second),
          { data: third },
          {
            ifVersion: typeof ifVersion === 'number' ? ifVersion : undefined,
          },
        );
      }
      case 'delete':
        await documents.delete(caller, name, text(second));
        return null;
      case 'query':
        return documents.query(caller, name, record(second));
      case 'count':
        return documents.count(caller, name, record(second));
      default:
        throw new AppError('INVALID_REQUEST', `ctx.db has no method "${method}".`);
    }
  };
}

async function readAll(stream: Readable): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return new Uint8Array(Buffer.concat(chunks));
}

/** ctx.storage inside a function: the storage service as `caller`. */
function storageRpc(storage: StorageService): ServerRpc {
  return async (_target, method, args, caller) => {
    const [bucket, second, third, fourth] = args;
    const name = text(bucket);
    switch (method) {
      case 'upload': {
        const body =
          typeof third === 'string' ? Buffer.from(third) : third instanceof Uint8Array ? Buffer.from(third) : null;
        if (!body) throw new AppError('INVALID_REQUEST', 'upload takes a string or bytes.');
        const options = record(fourth);
        return storage.upload(caller, {
          bucket: name,
          rawPath: encodeURIComponent(text(second)),
          body: Readable.from([body]),
          contentType: typeof options.contentType === 'string' ? options.contentType : 'application/octet-stream',
          upsert: options.upsert === true,
          declaredSize: body.length,
        });
      }
      case 'download': {
        const object = await storage.objectForRead(caller, name, encodeURIComponent(text(second)));
        return readAll(await storage.openBytes(object.storage_key));
      }
      case 'remove':
        await storage.remove(caller, name, encodeURIComponent(text(second)));
        return null;
      case 'list': {
        const options = record(second);
        return storage.list(caller, name, {
          prefix: typeof options.prefix === 'string' ? options.prefix : undefined,
          limit: typeof options.limit === 'number' ? options.limit : undefined,
          after: typeof options.after === 'string' ? options.after : undefined,
        });
      }
      default:
        throw new AppError('INVALID_REQUEST', `ctx.storage has no method "${method}".`);
    }
  };
}

/** ctx.events inside a function: publishes in the running invocation's trace, with it as parent. */
function eventsRpc(events: EventsService): ServerRpc {
  return async (_target, method, args, _caller, origin) => {
    const from = { trace_id: origin.trace_id, parent_invocation_id: origin.parent_invocation_id };
    switch (method) {
      case 'publish': {
        const [topic, payload, options] = args;
        const { key, delay_seconds: delaySeconds } = record(options);
        return events.publish(
          text(topic),
          payload,
          { key: key as string | null | undefined, delaySeconds: delaySeconds as number | undefined },
          from,
        );
      }
      case 'publishMany': {
        const [topic, list] = args;
        return events.publishMany(text(topic), list, from);
      }
      default:
        throw new AppError('INVALID_REQUEST', `ctx.events has no method "${method}".`);
    }
  };
}

/** ctx.db and ctx.storage call these. */
export interface FunctionsDeps {
  documents: DocumentService;
  storage: StorageService;
  /** Where deploys and secret changes record their admin events, in their transactions. */
  audit: AuditLog;
}

/**
 * How often an instance compares its live functions and secrets with the database: the
 * safety net behind the change feed, which carries both within a second.
 */
const RECONCILE_MS = 5_000;

export function buildFunctionsModule(platform: Platform, deps: FunctionsDeps): FunctionsModule {
  const invocations = new InvocationRepository(platform.db);
  const deploys = new DeployRepository(platform.db);
  // Apps built without main.ts (tests, tools) resolve no key file: theirs follows from the service key.
  const secretsKey = platform.config.secretsKey
    ? parseSecretsKey(platform.config.secretsKey)
    : Buffer.from(hkdfSync('sha256', platform.config.serviceKey, 'basalt', 'function secrets', 32));
  if (!secretsKey) throw new Error('the secrets key must be 32 bytes (64 hex digits, or base64)');
  const secrets = new SecretStore(platform.db, secretsKey, platform.log, deps.audit);
  const invocationCount = platform.metrics.counter(
    'basalt_function_invocations_total',
    'Function runs finished, by function and status (succeeded, failed, dead).',
    ['function', 'status'],
  );
  const invocationDuration = platform.metrics.histogram(
    'basalt_function_duration_seconds',
    'Time a function run took, by function.',
    ['function'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  );
  // Where an OTLP endpoint is set, a span per run goes to it (docs/tracing.md).
  const spans = platform.config.otel ? new SpanExporter(platform.config.otel, platform.log) : null;
  const service = new FunctionsService(
    {
      functionsDir: platform.config.functionsDir,
      buildDir: path.join(platform.config.dataDir, 'functions-build'),
      environment: platform.config.environment,
      idleTimeoutMs: platform.config.functionsIdleTimeoutMs,
      roles: platform.config.roles,
      audit: deps.audit,
      onRun: (run) => {
        spans?.record(run);
        invocationCount.inc({ function: run.functionName, status: run.status });
        invocationDuration.observe({ function: run.functionName }, run.durationMs / 1000);
        const fn = service.find(run.functionName);
        platform.usage.functionRun(
          run.functionName,
          run.status !== 'succeeded',
          run.cold,
          run.durationMs,
          fn ? numberOption(fn.options, 'memory_mb') : NUMERIC_OPTIONS.memory_mb.default,
        );
      },
    },
    invocations,
    deploys,
    secrets,
    platform.log,
  );
  registerWarmWorkersGauge(platform.metrics, () => service.warmWorkers());
  const db = documentsRpc(deps.documents);
  const storage = storageRpc(deps.storage);
  const dispatcher = new FunctionDispatcher(
    service,
    deploys,
    platform.changes,
    platform.db,
    platform.log,
    dispatcherMetrics(platform.metrics),
    { databaseUrl: platform.config.databaseUrl, runWorkers: platform.config.roles.worker },
  );
  const events = new EventsService(platform.db, new EventsRepository(platform.db), dispatcher, deps.audit);
  const publish = eventsRpc(events);
  // The writes a run makes carry its origin into the change log, so the runs they trigger join its trace.
  service.useRpc(async (target, method, args, caller, origin) =>
    platform.db.withOrigin(origin, () =>
      (target === 'db' ? db : target === 'storage' ? storage : publish)(target, method, args, caller, origin),
    ),
  );
  let watcher: FSWatcher | null = null;
  let redeployTimer: NodeJS.Timeout | null = null;
  let reconcileTimer: NodeJS.Timeout | null = null;
  let unsubscribe: (() => void) | null = null;
  let stopped = false;
  let lastFingerprint: string | null = null;
  let following: Promise<void> = Promise.resolve();

  /** Loads what is live in the database here, and has the dispatcher follow it. */
  const follow = () => {
    following = following
      .then(async () => {
        if (stopped) return;
        await service.sync();
        await dispatcher.sync();
        lastFingerprint = await deploys.activeFingerprint();
      })
      .catch((error: unknown) => platform.log.error({ err: error }, 'following deployed functions failed; retrying'));
    return following;
  };

  /**
   * The safety net behind the change feed: every few seconds, two cheap queries tell
   * whether the live functions or the secrets differ from what this instance holds.
   */
  const reconcile = async () => {
    try {
      if ((await deploys.activeFingerprint()) !== lastFingerprint) await follow();
      await secrets.refresh(false);
    } catch (error) {
      platform.log.debug({ err: error }, 'reconciling functions failed');
    }
    if (!stopped) {
      reconcileTimer = setTimeout(() => void reconcile(), RECONCILE_MS);
      reconcileTimer.unref();
    }
  };

  // Development: a saved file is deployed again (only what changed mints a version).
  const redeployFolder = () => {
    following = following
      .then(() => service.deployFolder())
      .catch((error: unknown) => platform.log.error({ err: error }, 'deploying the functions folder failed'));
    void follow();
  };

  const retry = async (invocationId: string): Promise<InvocationRecord> => {
    const record = await invocations.get(invocationId);
    if (record?.status === 'dead' && !service.find(record.function)) {
      throw new AppError('UNAVAILABLE', 'The function is not deployed: deploy it again, then retry.');
    }
    const dead = await service.takeDeadForRetry(invocationId);
    if (!dead) throw new AppError('NOT_FOUND', 'No dead-lettered invocation with this id.');
    if (!(await dispatcher.retry(dead.functionName, dead.jobId, invocationId))) {
      throw new AppError('UNAVAILABLE', 'The function is not deployed: deploy it again, then retry.');
    }
    const updated = await invocations.get(invocationId);
    if (!updated) throw new AppError('NOT_FOUND', 'No dead-lettered invocation with this id.');
    return updated;
  };

  return {
    service,
    secrets,
    events,
    retry,
    routes: async (app) => {
      await app.register(functionRoutes, { functions: service, secrets, retry });
      await app.register(eventRoutes, { events });
      await app.register(httpFunctionRoute, { functions: service });
    },
    async start() {
      await secrets.refresh();
      await service.deployFolder();
      // Deploys made on any instance reach this one through the change log (basalt.function_active).
      // So do secrets, through their revision row (the values are never in the log).
      unsubscribe = platform.changes.subscribe(
        (batch) => {
          const tables = new Set(batch.changes.filter((change) => change.schema === 'basalt').map((c) => c.table));
          if (tables.has('function_active')) void follow();
          if (tables.has('secret_revisions')) {
            secrets.refresh().catch((error: unknown) => platform.log.error({ err: error }, 'reading secrets failed'));
          }
        },
        () => ['basalt.function_active', 'basalt.secret_revisions'],
      );
      await follow();
      reconcileTimer = setTimeout(() => void reconcile(), RECONCILE_MS);
      reconcileTimer.unref();
      if (platform.config.functionsWatch && existsSync(platform.config.functionsDir)) {
        watcher = watch(platform.config.functionsDir, () => {
          if (redeployTimer) clearTimeout(redeployTimer);
          redeployTimer = setTimeout(redeployFolder, 150);
        });
        watcher.unref();
      }
    },
    async stop() {
      stopped = true;
      watcher?.close();
      unsubscribe?.();
      if (redeployTimer) clearTimeout(redeployTimer);
      if (reconcileTimer) clearTimeout(reconcileTimer);
      await following;
      await dispatcher.stop();
      await service.close();
      // After the runs: the spans of those that finished while stopping go too.
      await spans?.shutdown();
    },
  };
}
