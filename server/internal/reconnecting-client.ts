import pg from 'pg';
import { redactDatabaseUrl } from './db.js';
import type { Logger } from './log.js';

/**
 * The one backoff policy of every connection Basalt keeps outside the pool: the first retry
 * after a quarter of a second, doubling up to 5 s, each delay jittered by ±20 % so that the
 * instances of a fleet do not knock on a restarted Postgres in step.
 */
export const RECONNECT_BACKOFF = { minMs: 250, maxMs: 5_000, jitter: 0.2 } as const;

/** How long a connection attempt may take before it counts as failed. */
const CONNECT_TIMEOUT_MS = 10_000;
/** A half-open socket must not hang a LISTEN or a lock holder forever. */
const QUERY_TIMEOUT_MS = 30_000;

export interface ReconnectingClientOptions {
  url: string;
  /** Postgres' application_name, and the name in log lines. */
  applicationName: string;
  log: Logger;
  /**
   * Runs on every connect, first or again (LISTEN, taking a session lock, reading what may
   * have been missed while disconnected). A throw counts as a lost connection.
   */
  onConnect(client: pg.Client, info: { reconnected: boolean }): Promise<void>;
  /** The connection went away (Postgres restart, terminated backend, network); it reconnects by itself. */
  onLost?(): void;
  onNotification?(message: pg.Notification): void;
}

/**
 * One connection outside the pool that must stay on one session: LISTEN, session advisory
 * locks. Every such connection of Basalt (the change feed, the collection and revocation
 * listeners, realtime channels, the functions dispatcher's lock) is one of these, so they
 * all notice a lost connection the same way, log it once per outage, reconnect with the
 * same backoff, and redo their session state in onConnect.
 *
 * It never keeps the process alive (timers are unref'd, stop() ends the socket) and never
 * throws out of start(): a Postgres that is down is retried until stop().
 */
export class ReconnectingClient {
  private client: pg.Client | null = null;
  /** The newest client made, connected or not; events of older ones are ignored. */
  private latest: pg.Client | null = null;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | null = null;
  private backoffMs: number = RECONNECT_BACKOFF.minMs;
  private outageLogged = false;
  private connectedOnce = false;

  constructor(private readonly options: ReconnectingClientOptions) {}

  /** The live client, or null while disconnected. */
  get current(): pg.Client | null {
    return this.client;
  }

  /** Connects; resolves after the first attempt, whether it succeeded or a retry was scheduled. */
  start(): Promise<void> {
    if (!this.stopped) return Promise.resolve();
    this.stopped = false;
    return this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    // A connect still in flight (Postgres down) is abandoned, not awaited: ending its
    // client makes it fail, and its failure is ignored once it is no longer the latest.
    const client = this.latest;
    this.client = null;
    this.latest = null;
    if (client) await client.end().catch(() => undefined);
  }

  /** Treats the connection as lost: closes it and reconnects later (used when a query on it fails). */
  reset(reason: unknown): void {
    const client = this.client;
    if (!client) return;
    this.lost(client, reason);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({
      connectionString: this.options.url,
      application_name: this.options.applicationName,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      query_timeout: QUERY_TIMEOUT_MS,
    });
    this.latest = client;
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    const onNotification = this.options.onNotification;
    if (onNotification) client.on('notification', (message) => onNotification(message));
    try {
      await client.connect();
      if (this.stopped || client !== this.latest) {
        await client.end().catch(() => undefined);
        return;
      }
      this.client = client;
      await this.options.onConnect(client, { reconnected: this.connectedOnce });
      if (client !== this.client) return; // lost while onConnect ran
      this.connectedOnce = true;
      if (this.outageLogged) this.options.log.info(`${this.options.applicationName}: reconnected to Postgres`);
      this.outageLogged = false;
      this.backoffMs = RECONNECT_BACKOFF.minMs;
    } catch (error) {
      this.lost(client, error);
    }
  }

  private lost(client: pg.Client, reason: unknown): void {
    // Later events of a client already given up on (its 'end' after an 'error') change nothing.
    if (client !== this.latest) return;
    const wasConnected = this.client === client;
    this.latest = null;
    this.client = null;
    client.removeAllListeners('notification');
    client.end().catch(() => undefined);
    if (this.stopped) return;
    if (!this.outageLogged) {
      this.outageLogged = true;
      const reasonText = reason instanceof Error ? reason.message : String(reason);
      this.options.log.warn(
        { err: reason },
        `${this.options.applicationName}: ${wasConnected ? 'lost its' : 'has no'} Postgres connection to ${redactDatabaseUrl(this.options.url)} (${reasonText}); reconnecting`,
      );
    }
    if (wasConnected) this.options.onLost?.();
    const spread = 1 + (Math.random() * 2 - 1) * RECONNECT_BACKOFF.jitter;
    const delay = Math.round(this.backoffMs * spread);
    this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_BACKOFF.maxMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
    this.retryTimer.unref();
  }
}
