import type { Config } from '../config.js';
import type { ChangeFeed } from './changes/feed.js';
import type { Database } from './db.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { UsageMeter } from '../modules/usage/meter.js';

/** The configuration once start has resolved the database and the service key. */
export interface RuntimeConfig extends Config {
  databaseUrl: string;
  serviceKey: string;
}

/**
 * The shared services every module is built from, complete when created. Passed explicitly
 * into modules; there are no module-level singletons, so several apps can live in one
 * process (tests do). What one module hands to another (the token verifier, the document
 * service) is passed as that module's build result, not through here.
 */
export interface Platform {
  config: RuntimeConfig;
  db: Database;
  log: Logger;
  metrics: Metrics;
  /** The change-log reader of this instance (docs/changes.md); started and stopped by the app. */
  changes: ChangeFeed;
  /** This instance's pay-per-use counters (docs/usage.md); the usage module writes them. */
  usage: UsageMeter;
}
