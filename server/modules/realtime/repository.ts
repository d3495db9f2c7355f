import { asc, eq, inArray, lt, sql } from 'drizzle-orm';
import { realtimeInstances, realtimePresence } from '../../db/schema.js';
import type { Database, Drizzle } from '../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../internal/repository.js';

/** The pg_notify channel every instance of one Basalt database listens on for channel traffic. */
export const REALTIME_NOTIFY_CHANNEL = 'basalt_realtime';
/** pg_notify refuses payloads of 8000 bytes or more; keep a margin for the envelope. */
export const MAX_NOTIFY_BYTES = 7900;

export type PresenceRow = Pick<typeof realtimePresence.$inferSelect, 'ref' | 'channel' | 'key' | 'payload'>;

const PRESENCE_COLUMNS = {
  ref: realtimePresence.ref,
  channel: realtimePresence.channel,
  key: realtimePresence.key,
  payload: realtimePresence.payload,
};

/** SQL of realtime channels: presence rows, instance heartbeats and notifications. */
export class RealtimeRepository {
  constructor(private readonly db: Database) {}

  async notify(message: string): Promise<void> {
    await runQuery(this.db.pool, 'SELECT pg_notify($1, $2)', [REALTIME_NOTIFY_CHANNEL, message]);
  }

  /** Registers (or revives) this instance; returns false when it had been swept as dead. */
  async beat(instanceId: string): Promise<boolean> {
    return mapDatabaseErrors(async () => {
      const updated = await this.db.drizzle
        .update(realtimeInstances)
        .set({ heartbeatAt: sql`now()` })
        .where(eq(realtimeInstances.id, instanceId));
      if (updated.rowCount === 1) return true;
      await this.db.drizzle
        .insert(realtimeInstances)
        .values({ id: instanceId })
        .onConflictDoUpdate({ target: realtimeInstances.id, set: { heartbeatAt: sql`now()` } });
      return false;
    });
  }

  async insertPresence(instanceId: string, row: PresenceRow): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db.drizzle
        .insert(realtimePresence)
        .values({ ...row, instanceId })
        .onConflictDoUpdate({
          target: realtimePresence.ref,
          set: { payload: sql`excluded.payload`, key: sql`excluded.key` },
        }),
    );
  }

  /** Deletes presences by ref and returns the ones that existed (so each leave is announced once). */
  async deletePresences(refs: string[]): Promise<PresenceRow[]> {
    if (refs.length === 0) return [];
    return mapDatabaseErrors(() =>
      this.db.drizzle.delete(realtimePresence).where(inArray(realtimePresence.ref, refs)).returning(PRESENCE_COLUMNS),
    );
  }

  async channelPresence(channel: string): Promise<PresenceRow[]> {
    return mapDatabaseErrors(() =>
      this.db.drizzle
        .select(PRESENCE_COLUMNS)
        .from(realtimePresence)
        .where(eq(realtimePresence.channel, channel))
        .orderBy(asc(realtimePresence.joinedAt), asc(realtimePresence.ref)),
    );
  }

  /**
   * Removes instances whose heartbeat is older than `staleMs` (and this instance's own
   * leftovers never, since it just beat), returning their presences so the leaves can
   * be announced. Row locks make two sweepers return each row once.
   */
  async sweepDeadInstances(staleMs: number): Promise<PresenceRow[]> {
    return mapDatabaseErrors(() =>
      this.db.transaction(async (tx) => {
        const dead = await this.db
          .builder(tx)
          .select({ id: realtimeInstances.id })
          .from(realtimeInstances)
          .where(
            lt(realtimeInstances.heartbeatAt, sql`now() - make_interval(secs => ${staleMs}::double precision / 1000)`),
          )
          .for('update', { skipLocked: true });
        return removeInstances(
          this.db.builder(tx),
          dead.map((row) => row.id),
        );
      }),
    );
  }

  async removeInstance(instanceId: string): Promise<PresenceRow[]> {
    return mapDatabaseErrors(() => this.db.transaction((tx) => removeInstances(this.db.builder(tx), [instanceId])));
  }
}

/** Deletes instances and their presences (in the caller's transaction), returning the presences. */
async function removeInstances(builder: Drizzle, ids: string[]): Promise<PresenceRow[]> {
  if (ids.length === 0) return [];
  const gone = await builder
    .delete(realtimePresence)
    .where(inArray(realtimePresence.instanceId, ids))
    .returning(PRESENCE_COLUMNS);
  await builder.delete(realtimeInstances).where(inArray(realtimeInstances.id, ids));
  return gone;
}
