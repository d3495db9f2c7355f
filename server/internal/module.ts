import type { FastifyPluginAsync } from 'fastify';

/**
 * What every module's build returns (docs/operations.md#modules), besides the services it
 * hands to the modules built after it. Building does no I/O: connections, listeners,
 * timers and loads begin in start(), and stop() ends them, whether or not start() ran or
 * finished, so an app that fails to start still closes cleanly.
 */
export interface ServerModule extends Lifecycle {
  /** Registers the module's HTTP routes; only processes with the `api` role register them. */
  routes: FastifyPluginAsync;
}

/** What the app starts when it is ready and stops, in reverse order, when it closes. */
export interface Lifecycle {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** One line of /readyz: the instance is ready only when every check answers true. */
export interface ReadinessCheck {
  name: string;
  check(): Promise<boolean>;
}
