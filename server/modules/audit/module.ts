import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { AuditRepository } from './repository.js';
import { auditRoutes } from './routes.js';
import { AuditLog } from './service.js';

/** The audit module: the log every module records into, its admin API and its prune. */
export interface AuditModule extends ServerModule {
  log: AuditLog;
}

/** How often an instance tries to prune; the advisory lock lets one of them do it at a time. */
const PRUNE_EVERY_MS = 60 * 60 * 1000;

export function buildAuditModule(platform: Platform): AuditModule {
  const { config, log, metrics } = platform;
  const failures = metrics.counter(
    'basalt_audit_write_failures_total',
    'Audit events that could not be written outside a transaction (failed sign-ins, admin changes).',
  );
  const audit = new AuditLog(new AuditRepository(platform.db), {
    log,
    retentionDays: config.auditRetentionDays,
    onWriteFailed: () => failures.inc(),
  });
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<unknown> | null = null;
  const prune = () => {
    if (running) return;
    running = audit
      .prune()
      .then((deleted) => {
        if (deleted) log.info({ deleted }, 'audit log pruned');
      })
      .catch((error: unknown) => log.warn({ err: error }, 'audit log prune failed'))
      .finally(() => {
        running = null;
      });
  };
  return {
    log: audit,
    routes: async (app) => {
      await app.register(auditRoutes, { audit });
    },
    async start() {
      if (!config.roles.worker) return;
      timer = setInterval(prune, PRUNE_EVERY_MS);
      timer.unref();
      prune();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      await running;
    },
  };
}
