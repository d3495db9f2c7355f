import type { TokenVerifier } from '../../internal/caller.js';
import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import type { DocumentService } from '../documents/service.js';
import { createLiveDocuments } from './live.js';
import { realtimeRoutes } from './routes.js';
import { RealtimeService } from './service.js';

/**
 * The realtime module: the websocket endpoint (live queries and channels). start() begins
 * listening for channel messages from other instances and the heartbeats; stop() closes
 * every socket. Live queries read the change feed, so realtime stops before it.
 */
export interface RealtimeModule extends ServerModule {
  service: RealtimeService;
}

export interface RealtimeModuleDeps {
  /** Snapshots and read rules of live queries. */
  documents: DocumentService;
  /** Checks a socket's token when it connects and again while it stays open. */
  tokenVerifier: TokenVerifier;
}

export function buildRealtimeModule(platform: Platform, deps: RealtimeModuleDeps): RealtimeModule {
  const service = new RealtimeService({
    config: platform.config.realtime,
    databaseUrl: platform.config.databaseUrl,
    serviceKey: platform.config.serviceKey,
    db: platform.db,
    log: platform.log,
    metrics: platform.metrics,
    usage: platform.usage,
    tokenVerifier: deps.tokenVerifier,
    live: { feed: platform.changes, documents: createLiveDocuments(deps.documents, platform.changes) },
  });
  let started = false;
  return {
    service,
    routes: async (app) => {
      await app.register(realtimeRoutes, { realtime: service });
    },
    async start() {
      started = true;
      await service.start();
    },
    async stop() {
      // Stopping removes this instance's presences from the database: nothing to remove
      // (and no connection to open) if it never started.
      if (started) await service.stop();
    },
  };
}
