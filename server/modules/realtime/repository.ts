import type { Database } from '../../internal/db.js';
import { fromPostgresError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import { ReconnectingClient } from '../../internal/reconnecting-client.js';

/** The pg_notify channel every instance of one Basalt database listens on for channel traffic. */
export const REALTIME_NOTIFY_CHANNEL = 'basalt_realtime';
/** pg_notify refuses payloads of 8000 bytes or more; keep a margin for the envelope. */
export const MAX_NOTIFY_BYTES = 7900;

export interface PresenceRow {
  ref: string;
  channel: string;
  key: string;
  payload: unknown;
}

/** SQL of realtime channels: presence rows, instance heartbeats and notifications. */
export class RealtimeRepository {
  constructor(private readonly db: Database) {}

  async notify(message: string): Promise<void> {
    try {
      await this.db.query('SELECT pg_notify($1, $2)', [REALTIME_NOTIFY_CHANNEL, message]);
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  /** Registers (or revives) this instance; returns false when it had been swept as dead. */
  async beat(instanceId: string): Promise<boolean> {
    try {
      const updated = await this.db.query('UPDATE basalt.realtime_instances SET heartbeat_at = now() WHERE id = $1', [
        instanceId,
      ]);
      if (updated.rowCount === 1) return true;
      await this.db.query(
        'INSERT INTO basalt.realtime_instances (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()',
        [instanceId],
      );
      return false;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async insertPresence(instanceId: string, row: PresenceRow): Promise<void> {
    try {
      await this.db.query(
        `INSERT INTO basalt.realtime_presence (ref, instance_id, channel, key, payload) VALUES ($1, $2, $3, $4, $5::jsonb)
         ON CONFLICT (ref) DO UPDATE SET payload = EXCLUDED.payload, key = EXCLUDED.key`,
        [row.ref, instanceId, row.channel, row.key, JSON.stringify(row.payload)],
      );
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  /** Deletes presences by ref and returns the ones that existed (so each leave is announced once). */
  async deletePresences(refs: string[]): Promise<PresenceRow[]> {
    if (refs.length === 0) return [];
    try {
      const result = await this.db.query<PresenceRow>(
        'DELETE FROM basalt.realtime_presence WHERE ref = ANY($1::uuid[]) RETURNING ref, channel, key, payload',
        [refs],
      );
      return result.rows;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async channelPresence(channel: string): Promise<PresenceRow[]> {
    try {
      const result = await this.db.query<PresenceRow>(
        'SELECT ref, channel, key, payload FROM basalt.realtime_presence WHERE channel = $1 ORDER BY joined_at, ref',
        [channel],
      );
      return result.rows;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  /**
   * Removes instances whose heartbeat is older than `staleMs` (and this instance's own
   * leftovers never, since it just beat), returning their presences so the leaves can
   * be announced. Row locks make two sweepers return each row once.
   */
  async sweepDeadInstances(staleMs: number): Promise<PresenceRow[]> {
    try {
      return await this.db.transaction(async (tx) => {
        const dead = await tx.query<{ id: string }>(
          `SELECT id FROM basalt.realtime_instances
           WHERE heartbeat_at < now() - make_interval(secs => $1::double precision / 1000)
           FOR UPDATE SKIP LOCKED`,
          [staleMs],
        );
        if (dead.rows.length === 0) return [];
        const ids = dead.rows.map((row) => row.id);
        const gone = await tx.query<PresenceRow>(
          'DELETE FROM basalt.realtime_presence WHERE instance_id = ANY($1::uuid[]) RETURNING ref, channel, key, payload',
          [ids],
        );
        await tx.query('DELETE FROM basalt.realtime_instances WHERE id = ANY($1::uuid[])', [ids]);
        return gone.rows;
      });
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  async removeInstance(instanceId: string): Promise<PresenceRow[]> {
    try {
      return await this.db.transaction(async (tx) => {
        const gone = await tx.query<PresenceRow>(
          'DELETE FROM basalt.realtime_presence WHERE instance_id = $1 RETURNING ref, channel, key, payload',
          [instanceId],
        );
        await tx.query('DELETE FROM basalt.realtime_instances WHERE id = $1', [instanceId]);
        return gone.rows;
      });
    } catch (error) {
      throw fromPostgresError(error);
    }
  }
}

/**
 * A dedicated connection that LISTENs for channel traffic (a pooled client cannot hold a
 * LISTEN), on the shared reconnecting client; `onReconnect` lets the owner re-announce
 * state that may have been missed while it was away.
 */
export class NotificationListener {
  private readonly connection: ReconnectingClient;

  constructor(url: string, log: Logger, onMessage: (payload: string) => void, onReconnect: () => void) {
    this.connection = new ReconnectingClient({
      url,
      applicationName: 'basalt-realtime-listen',
      log,
      onConnect: async (client, { reconnected }) => {
        await client.query(`LISTEN ${REALTIME_NOTIFY_CHANNEL}`);
        if (reconnected) onReconnect();
      },
      onNotification: (message) => {
        if (message.channel === REALTIME_NOTIFY_CHANNEL && message.payload !== undefined) onMessage(message.payload);
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
