import path from 'node:path';
import { SERVICE_CALLER } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import type { Platform } from '../../internal/platform.js';
import type { DocumentService } from '../documents/service.js';
import { FunctionDispatcher } from './dispatcher.js';
import type { RpcHandler } from './pool.js';
import { InvocationRepository, type InvocationRecord } from './repository.js';
import { FunctionsService } from './service.js';

export interface FunctionsModule {
  service: FunctionsService;
  dispatcher: FunctionDispatcher | null;
  start(): Promise<void>;
  stop(): Promise<void>;
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
  return async (target, method, args) => {
    if (target !== 'db') throw new AppError('UNAVAILABLE', `ctx.${target} is not available in this server.`);
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

/** Wires the functions module: repository, loader and worker pool, and the event dispatcher. */
export function createFunctionsModule(platform: Platform, deps: { documents: DocumentService }): FunctionsModule {
  const invocations = new InvocationRepository(platform.db);
  const service = new FunctionsService(
    {
      functionsDir: platform.config.functionsDir,
      buildDir: path.join(platform.config.dataDir, 'functions-build'),
      environment: platform.config.environment,
    },
    invocations,
    platform.log,
  );
  service.useRpc(documentsRpc(deps.documents));
  const dispatcher = platform.changes
    ? new FunctionDispatcher(service, platform.changes, platform.db, platform.log, platform.metrics, {
        databaseUrl: platform.config.databaseUrl,
        runWorkers: platform.config.roles.worker,
      })
    : null;

  return {
    service,
    dispatcher,
    async start() {
      await dispatcher?.start();
    },
    async stop() {
      await dispatcher?.stop();
      await service.close();
    },
    async retry(invocationId) {
      const dead = await service.takeDeadForRetry(invocationId);
      if (!dead) throw new AppError('NOT_FOUND', 'No dead-lettered invocation with this id.');
      if (!(await dispatcher?.retry(dead.functionName, dead.jobId))) {
        throw new AppError('UNAVAILABLE', 'The job queue is not running on this instance.');
      }
      const updated = await invocations.get(invocationId);
      if (!updated) throw new AppError('NOT_FOUND', 'No dead-lettered invocation with this id.');
      return updated;
    },
  };
}
