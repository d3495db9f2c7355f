import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { useTestApp } from './helpers.js';
import { sleep, TestSocket } from './realtime-client.js';

/**
 * Channel traffic travels through pg_notify, which Postgres does not keep for a listener
 * that is away. When the realtime listener loses its connection, presence changes made
 * meanwhile must still reach the members once it is back.
 */

const app = useTestApp();

async function terminateListener(): Promise<number> {
  const admin = new pg.Client({ connectionString: app.database.url });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ n: string }>(
      `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity
       WHERE datname = current_database() AND application_name = 'basalt-realtime-listen'`,
    );
    return Number(rows[0]?.n ?? 0);
  } finally {
    await admin.end();
  }
}

describe('the realtime listener losing its connection', () => {
  it('tells members the presence joins and leaves sent while it was away', { timeout: 30_000 }, async () => {
    const member = await TestSocket.open(app.url);
    const leaver = await TestSocket.open(app.url);
    try {
      member.send({ type: 'join', channel: 'lobby', presence: { name: 'member' } });
      await member.nextOfType('joined', { channel: 'lobby' });
      leaver.send({ type: 'join', channel: 'lobby', presence: { name: 'leaver' } });
      await leaver.nextOfType('joined', { channel: 'lobby' });
      await member.next(
        (frame) =>
          frame.type === 'presence' &&
          (frame.joins as Array<{ payload: unknown }>).some((entry) =>
            JSON.stringify(entry.payload).includes('leaver'),
          ),
      );

      expect(await terminateListener()).toBe(1);
      await sleep(50); // the listener is gone; it comes back after its first backoff step
      const newcomer = await TestSocket.open(app.url);
      newcomer.send({ type: 'join', channel: 'lobby', presence: { name: 'newcomer' } });
      await newcomer.nextOfType('joined', { channel: 'lobby' });
      leaver.send({ type: 'leave', channel: 'lobby' });
      await leaver.nextOfType('left', { channel: 'lobby' });

      const joined = await member.next(
        (frame) =>
          frame.type === 'presence' &&
          (frame.joins as Array<{ payload: unknown }>).some((entry) =>
            JSON.stringify(entry.payload).includes('newcomer'),
          ),
        10_000,
      );
      // The leave came in the same catch-up frame, or through the listener once it was back.
      const deadline = Date.now() + 5_000;
      const leaves = () =>
        member.all(
          (frame) =>
            frame.type === 'presence' &&
            (frame.leaves as Array<{ payload: unknown }>).some((entry) =>
              JSON.stringify(entry.payload).includes('leaver'),
            ),
        );
      while (leaves().length === 0 && Date.now() < deadline) await sleep(50);
      expect(leaves()).toHaveLength(1);
      expect(joined.channel).toBe('lobby');
      newcomer.close();
    } finally {
      member.close();
      leaver.close();
    }
  });
});
