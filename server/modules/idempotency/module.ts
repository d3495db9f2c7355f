import type { Lifecycle } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { IdempotencyRepository } from './repository.js';
import { IdempotencyService } from './service.js';

/** Keys older than the retention are swept this often (a lookup ignores them anyway). */
const PRUNE_EVERY_MS = 10 * 60 * 1000;

export interface IdempotencyModule extends Lifecycle {
  service: IdempotencyService;
}

/** Idempotency keys: the service the HTTP hooks use (routes.ts), and the sweeper of expired keys. */
export function buildIdempotencyModule(platform: Platform): IdempotencyModule {
  const service = new IdempotencyService(new IdempotencyRepository(platform.db.pool));
  let timer: NodeJS.Timeout | null = null;
  const prune = async () => {
    try {
      while ((await service.prune()) > 0);
    } catch (error) {
      platform.log.warn({ err: error }, 'pruning idempotency keys failed');
    }
  };
  return {
    service,
    async start() {
      void prune();
      timer = setInterval(() => void prune(), PRUNE_EVERY_MS);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}
