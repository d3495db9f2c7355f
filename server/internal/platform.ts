import type { Config } from '../config.js';
import type { ChangeFeed } from './changes/feed.js';
import type { TokenVerifier } from './caller.js';
import type { Database } from './db.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

/** The configuration once start has resolved the database and the service key. */
export interface RuntimeConfig extends Config {
  databaseUrl: string;
  serviceKey: string;
}

export interface ReadinessCheck {
  name: string;
  check(): Promise<boolean>;
}

/**
 * The shared services every module is built from. Passed explicitly into modules; there
 * are no module-level singletons, so several apps can live in one process (tests do).
 */
export interface Platform {
  config: RuntimeConfig;
  db: Database;
  log: Logger;
  metrics: Metrics;
  /** /readyz answers 200 only when every check passes. Modules add theirs (e.g. storage). */
  readiness: ReadinessCheck[];
  /** Set by the auth module; until then only the service key authenticates. */
  tokenVerifier: TokenVerifier | null;
  /** The change-log reader of this instance (docs/changes.md); null only in apps built without one. */
  changes: ChangeFeed | null;
  /** Work to do when the app closes, after HTTP has drained (stop readers, workers). */
  onClose(task: () => Promise<void>): void;
}
