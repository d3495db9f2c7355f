import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { UsageRepository } from './repository.js';
import { usageRoutes } from './routes.js';
import { UsageService } from './service.js';

export interface UsageModule extends ServerModule {
  service: UsageService;
}

/**
 * The usage meter's module: the meter itself lives in the platform (every module counts
 * into it); this writes its counts every flush interval, and on stop, and serves
 * `GET /v1/admin/usage`.
 */
export function buildUsageModule(platform: Platform): UsageModule {
  const service = new UsageService(platform.usage, new UsageRepository(platform.db), platform.log, {
    flushIntervalMs: platform.config.usageFlushIntervalMs,
  });
  let started = false;
  return {
    service,
    routes: async (app) => {
      await app.register(usageRoutes, { usage: service });
    },
    async start() {
      started = true;
      service.start();
    },
    async stop() {
      if (started) await service.stop();
    },
  };
}
