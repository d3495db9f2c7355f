import pg from 'pg';
import type { Logger } from '../log.js';
import { redactDatabaseUrl } from '../db.js';

export interface DedicatedConnectionOptions {
  url: string;
  applicationName: string;
  log: Logger;
  /** Runs on every (re)connect, e.g. LISTEN; a throw counts as a lost connection. */
  onConnect(client: pg.Client): Promise<void>;
  /** The connection went away (Postgres restart, terminated backend, network). */
  onLost?(): void;
  onNotification?(message: pg.Notification): void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * One connection outside the pool that must stay on one session (LISTEN, session advisory
 * locks). Reconnects with exponential backoff after any loss, logging once per outage, and
 * never keeps the process alive: its timers are unref'd and stop() ends the socket.
 */
export class DedicatedConnection {
  private client: pg.Client | null = null;
  /** The newest client made, connected or not; events of older ones are ignored. */
  private latest: pg.Client | null = null;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | null = null;
  private backoffMs: number;
  private outageLogged = false;

  constructor(private readonly options: DedicatedConnectionOptions) {
    this.backoffMs = options.minBackoffMs ?? 250;
  }

  /** The live client, or null while disconnected. */
  get current(): pg.Client | null {
    return this.client;
  }

  start(): Promise<void> {
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
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      // A half-open socket must not hang the reader or the ticker forever.
      query_timeout: 30_000,
    });
    this.latest = client;
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    if (this.options.onNotification) client.on('notification', this.options.onNotification);
    try {
      await client.connect();
      if (this.stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      this.client = client;
      await this.options.onConnect(client);
      if (this.outageLogged) {
        this.options.log.info(`${this.options.applicationName}: reconnected to Postgres`);
      }
      this.outageLogged = false;
      this.backoffMs = this.options.minBackoffMs ?? 250;
    } catch (error) {
      this.lost(client, error);
    }
  }

  private lost(client: pg.Client, reason: unknown): void {
    // Later events of a client already given up on (its 'end' after an 'error') change nothing.
    if (client !== this.latest) return;
    this.latest = null;
    this.client = null;
    client.removeAllListeners('notification');
    client.end().catch(() => undefined);
    if (this.stopped) return;
    if (!this.outageLogged) {
      this.outageLogged = true;
      this.options.log.warn(
        { err: reason },
        `${this.options.applicationName}: lost its Postgres connection to ${redactDatabaseUrl(this.options.url)}; reconnecting`,
      );
    }
    this.options.onLost?.();
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs ?? 5_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
    this.retryTimer.unref();
  }
}
