import { AppError } from '../../internal/errors.js';
import { IdleBackoff } from '../../internal/idle-backoff.js';
import type { Logger } from '../../internal/log.js';
import { ReconnectingClient } from '../../internal/reconnecting-client.js';
import type { AuthRepository } from './repository.js';

/**
 * Revoked sessions, mirrored in memory on every instance so that verifying an access
 * token costs no query. Fed by polling basalt.session_revocations; a revocation made on
 * this instance is added at once. The poll re-reads a window that overlaps the previous
 * one, because a revocation's timestamp is taken before its transaction commits.
 *
 * While no token is verified the poll backs off (up to IDLE_POLL_MS): the mirror only
 * matters to verifications, and one that finds it stale polls first (isRevoked), then the
 * poll runs every `pollMs` again.
 */
export class RevocationCache {
  private readonly revoked = new Map<string, number>();
  private since: Date | null = null;
  private lastSuccess = 0;
  private timer: IdleBackoff | null = null;
  private polling: Promise<number> | null = null;
  private listener: ReconnectingClient | null = null;
  private failing = false;
  private static readonly OVERLAP_MS = 30_000;
  /** The longest wait between two polls while no token is verified. */
  static readonly IDLE_POLL_MS = 30_000;

  constructor(
    private readonly repo: Pick<AuthRepository, 'revocations'>,
    private readonly options: { pollMs: number; horizonSeconds: number; log: Logger; databaseUrl?: string },
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = new IdleBackoff({
      minMs: this.options.pollMs,
      maxMs: Math.max(this.options.pollMs, RevocationCache.IDLE_POLL_MS),
      run: async () => (await this.poll()) > 0,
    });
    this.timer.start();
    const url = this.options.databaseUrl;
    if (url && !this.listener) {
      // Hints make other instances' revocations apply at once rather than at the next poll.
      // After a reconnect, a poll catches up with hints sent while the connection was down.
      this.listener = new ReconnectingClient({
        url,
        applicationName: 'basalt-auth-revocations',
        log: this.options.log,
        onConnect: async (client, { reconnected }) => {
          await this.repo.revocations.listen(client);
          if (reconnected) void this.poll();
        },
        onNotification: () => void this.poll(),
      });
      void this.listener.start();
    }
  }

  async stop(): Promise<void> {
    this.timer?.stop();
    this.timer = null;
    const listener = this.listener;
    this.listener = null;
    await listener?.stop();
    await this.polling;
  }

  /** Reads new revocations; resolves with how many were new (0 when the poll failed). */
  poll(): Promise<number> {
    this.polling ??= this.doPoll().finally(() => {
      this.polling = null;
    });
    return this.polling;
  }

  private async doPoll(): Promise<number> {
    try {
      const from = this.since === null ? null : new Date(this.since.getTime() - RevocationCache.OVERLAP_MS);
      const { ids, now } = await this.repo.revocations.since(from, this.options.horizonSeconds);
      const seen = Date.now();
      let added = 0;
      for (const id of ids) {
        if (this.revoked.has(id)) continue;
        this.revoked.set(id, seen);
        added++;
      }
      this.since = now;
      this.lastSuccess = seen;
      const horizonMs = (this.options.horizonSeconds + 60) * 1000;
      for (const [id, at] of this.revoked) if (seen - at > horizonMs) this.revoked.delete(id);
      if (this.failing) this.options.log.info('session revocations are read again');
      this.failing = false;
      return added;
    } catch (error) {
      // Once per outage: a poll every second would otherwise log a line a second.
      if (!this.failing) this.options.log.warn({ err: error }, 'could not read session revocations; retrying');
      this.failing = true;
      return 0;
    }
  }

  add(sessionIds: string[]): void {
    const now = Date.now();
    for (const id of sessionIds) this.revoked.set(id, now);
  }

  /**
   * Whether the session is revoked. While the cache is fresh this is a map lookup; when
   * polling has failed for a while, ask Postgres directly, and fail closed if it cannot answer.
   */
  async isRevoked(sessionId: string): Promise<boolean> {
    // Tokens are being verified: keep the mirror fresh from now on.
    this.timer?.wake();
    if (this.revoked.has(sessionId)) return true;
    const staleAfter = Math.max(3000, this.options.pollMs * 3);
    if (Date.now() - this.lastSuccess <= staleAfter) return false;
    await this.poll();
    if (Date.now() - this.lastSuccess <= staleAfter) return this.revoked.has(sessionId);
    try {
      return await this.repo.revocations.isRevoked(sessionId);
    } catch (error) {
      throw new AppError('UNAVAILABLE', 'Sessions cannot be checked right now.', { cause: error });
    }
  }
}
