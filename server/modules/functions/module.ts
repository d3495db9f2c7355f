import { existsSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { SERVICE_CALLER } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { Readable } from 'node:stream';
import type { DocumentService } from '../documents/service.js';
import type { StorageService } from '../storage/service.js';
import { FunctionDispatcher, dispatcherMetrics } from './dispatcher.js';
import type { RpcHandler } from './pool.js';
import { InvocationRepository, type InvocationRecord } from './repository.js';
import { functionRoutes, httpFunctionRoute } from './routes.js';
import { NUMERIC_OPTIONS } from './loader.js';
import { FunctionsService, numberOption } from './service.js';
import { registerWarmWorkersGauge } from './warm-capacity.js';

/**
 * The functions module: HTTP functions, and the dispatcher that hands change events and
 * schedules to the job queue. start() loads the functions folder, then starts the
 * dispatcher (whose workers run only with the `worker` role) and, in development, the
 * folder watch.
 */
export interface FunctionsModule extends ServerModule {
  service: FunctionsService;
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

/** ctx.db inside a function: the document service with the service role, the same path as HTTP writes. */
function documentsRpc(documents: DocumentService): RpcHandler {
  return async (_target, method, args) => {
    const [collection, second, third, fourth] = args;
    const name = text(collection);
    switch (method) {
      case 'create':
        return documents.create(SERVICE_CALLER, name, { data: second, id: record(third).id });
      case 'get':
        try {
          return await documents.get(SERVICE_CALLER, name, text(second));
        } catch (error) {
          if (error instanceof AppError && error.code === 'NOT_FOUND') return null;
          throw error;
        }
      case 'set':
        return (await documents.set(SERVICE_CALLER, name, text(second), { data: third })).doc;
      case 'update': {
        const ifVersion = record(fourth).ifVersion;
        return documents.update(
          SERVICE_CALLER,
          name,
          text(second),
          { data: third },
          {
            ifVersion: typeof ifVersion === 'number' ? ifVersion : undefined,
          },
        );
      }
      case 'delete':
        await documents.delete(SERVICE_CALLER, name, text(second));
        return null;
      case 'query':
        return documents.query(SERVICE_CALLER, name, record(second));
      case 'count':
        return documents.count(SERVICE_CALLER, name, record(second));
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

/** ctx.storage inside a function: the storage service with the service role. */
function storageRpc(storage: StorageService): RpcHandler {
  return async (_target, method, args) => {
    const [bucket, second, third, fourth] = args;
    const name = text(bucket);
    switch (method) {
      case 'upload': {
        const body =
          typeof third === 'string' ? Buffer.from(third) : third instanceof Uint8Array ? Buffer.from(third) : null;
        if (!body) throw new AppError('INVALID_REQUEST', 'upload takes a string or bytes.');
        const options = record(fourth);
        return storage.upload(SERVICE_CALLER, {
          bucket: name,
          rawPath: encodeURIComponent(text(second)),
          body: Readable.from([body]),
          contentType: typeof options.contentType === 'string' ? options.contentType : 'application/octet-stream',
          upsert: options.upsert === true,
          declaredSize: body.length,
        });
      }
      case 'download': {
        const object = await storage.objectForRead(SERVICE_CALLER, name, encodeURIComponent(text(second)));
        return readAll(await storage.openBytes(object.storage_key));
      }
      case 'remove':
        await storage.remove(SERVICE_CALLER, name, encodeURIComponent(text(second)));
        return null;
      case 'list': {
        const options = record(second);
        return storage.list(SERVICE_CALLER, name, {
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

/** ctx.db and ctx.storage call these. */
export interface FunctionsDeps {
  documents: DocumentService;
  storage: StorageService;
}

export function buildFunctionsModule(platform: Platform, deps: FunctionsDeps): FunctionsModule {
  const invocations = new InvocationRepository(platform.db);
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
  const service = new FunctionsService(
    {
      functionsDir: platform.config.functionsDir,
      buildDir: path.join(platform.config.dataDir, 'functions-build'),
      environment: platform.config.environment,
      idleTimeoutMs: platform.config.functionsIdleTimeoutMs,
      roles: platform.config.roles,
      onRun: (run) => {
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
    platform.log,
  );
  registerWarmWorkersGauge(platform.metrics, () => service.warmWorkers());
  const db = documentsRpc(deps.documents);
  const storage = storageRpc(deps.storage);
  service.useRpc(async (target, method, args) => (target === 'db' ? db : storage)(target, method, args));
  const metrics = dispatcherMetrics(platform.metrics);
  // A stopped dispatcher does not start again: a reload takes a new one.
  const newDispatcher = () =>
    new FunctionDispatcher(service, platform.changes, platform.db, platform.log, metrics, {
      databaseUrl: platform.config.databaseUrl,
      runWorkers: platform.config.roles.worker,
    });
  let dispatcher = newDispatcher();
  let watcher: FSWatcher | null = null;
  let reloadTimer: NodeJS.Timeout | null = null;
  let reloading: Promise<void> = Promise.resolve();

  // Development: a saved file reloads every function and re-registers queues and schedules.
  const reload = () => {
    reloading = reloading.then(async () => {
      try {
        await dispatcher.stop();
        await service.load();
        dispatcher = newDispatcher();
        await dispatcher.start();
      } catch (error) {
        platform.log.error({ err: error }, 'reloading functions failed');
      }
    });
  };

  const retry = async (invocationId: string): Promise<InvocationRecord> => {
    const dead = await service.takeDeadForRetry(invocationId);
    if (!dead) throw new AppError('NOT_FOUND', 'No dead-lettered invocation with this id.');
    if (!(await dispatcher.retry(dead.functionName, dead.jobId))) {
      throw new AppError('UNAVAILABLE', 'The job queue is not running on this instance.');
    }
    const updated = await invocations.get(invocationId);
    if (!updated) throw new AppError('NOT_FOUND', 'No dead-lettered invocation with this id.');
    return updated;
  };

  return {
    service,
    retry,
    routes: async (app) => {
      await app.register(functionRoutes, { functions: service, retry });
      await app.register(httpFunctionRoute, { functions: service });
    },
    async start() {
      await service.load();
      await dispatcher.start();
      if (platform.config.functionsWatch && existsSync(platform.config.functionsDir)) {
        watcher = watch(platform.config.functionsDir, () => {
          if (reloadTimer) clearTimeout(reloadTimer);
          reloadTimer = setTimeout(reload, 150);
        });
        watcher.unref();
      }
    },
    async stop() {
      watcher?.close();
      if (reloadTimer) clearTimeout(reloadTimer);
      await reloading;
      await dispatcher.stop();
      await service.close();
    },
  };
}
