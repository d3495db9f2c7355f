import { AppError } from '../../internal/errors.js';
import type { AuthRepository } from './repository.js';

/**
 * Fixed-window counters in Postgres (basalt.rate_limits), so that a limit holds across
 * all instances. Keys are namespaced strings such as `signin:ip:203.0.113.9`.
 */
export class RateLimiter {
  constructor(
    private readonly repo: Pick<AuthRepository, 'rateLimits'>,
    private readonly windowSeconds: number,
  ) {}

  /** The 429 answer for a limit reached, for callers that count in a statement of their own. */
  limitedError(resetSeconds: number): AppError {
    return new AppError('RATE_LIMITED', `Too many requests; retry in ${resetSeconds} s.`, {
      headers: { 'retry-after': String(resetSeconds) },
      details: { retry_after: resetSeconds },
    });
  }

  /** Counts one request against `key` and throws RATE_LIMITED once it is over `limit`. */
  async consume(key: string, limit: number): Promise<void> {
    const { count, resetSeconds } = await this.repo.rateLimits.hit(key, this.windowSeconds, 1);
    if (count > limit) throw this.limitedError(resetSeconds);
  }

  /**
   * Gives back one count consumed earlier in this window, for limits that count an attempt
   * before its outcome is known and keep only some outcomes (failed sign-ins).
   */
  async refund(key: string): Promise<void> {
    await this.repo.rateLimits.unhit(key, this.windowSeconds);
  }
}
