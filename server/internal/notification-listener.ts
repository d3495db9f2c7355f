import type { Logger } from './log.js';
import { ReconnectingClient } from './reconnecting-client.js';
import { runQuery } from './repository.js';

export interface NotificationListenerOptions {
  url: string;
  /** The pg_notify channel (a plain identifier: it is written into LISTEN as is). */
  channel: string;
  applicationName: string;
  log: Logger;
  onMessage(payload: string): void;
  /** After the connection was lost and made again: notifications sent meanwhile were missed. */
  onReconnect(): void;
}

/**
 * A dedicated connection that LISTENs on one channel (a pooled client cannot hold a LISTEN),
 * on the shared reconnecting client; `onReconnect` lets the owner catch up on what it may
 * have missed while it was away.
 */
export class NotificationListener {
  private readonly connection: ReconnectingClient;

  constructor(options: NotificationListenerOptions) {
    const { channel } = options;
    this.connection = new ReconnectingClient({
      url: options.url,
      applicationName: options.applicationName,
      log: options.log,
      onConnect: async (client, { reconnected }) => {
        await runQuery(client, `LISTEN ${channel}`);
        if (reconnected) options.onReconnect();
      },
      onNotification: (message) => {
        if (message.channel === channel && message.payload !== undefined) options.onMessage(message.payload);
      },
    });
  }

  start(): Promise<void> {
    return this.connection.start();
  }

  stop(): Promise<void> {
    return this.connection.stop();
  }
}
