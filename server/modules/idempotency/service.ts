/**
 * Idempotency keys (docs/documents.md#idempotency-keys): a write sent with
 * `Idempotency-Key` runs once; a retry of the same request with the same key within 24 h
 * gets the first answer again (status, body, the headers that describe it) and changes
 * nothing. The key is scoped to the caller (a user's id, the service key, or the public
 * caller), so one caller can neither replay nor block another's keys.
 *
 * Concurrency: the first request inserts the key `pending` (the primary key serialises
 * claims) before anything runs. A duplicate that arrives meanwhile waits for the answer,
 * polling, for up to `waitMs`, then gets 409 IDEMPOTENCY_PENDING: it never runs the
 * write a second time. A pending key whose process died is taken over after
 * `pendingTakeoverSeconds`. A 5xx answer is not kept (the key is released) so the client's
 * retry runs the request again; every other answer is kept.
 */
import { createHash } from 'node:crypto';
import type { Caller } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import type { IdempotencyRepository } from './repository.js';

/** The header's value: 1–255 visible ASCII characters (spaces allowed inside). */
const KEY_PATTERN = /^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$/;

export const IDEMPOTENCY_DEFAULTS = {
  expireAfterSeconds: 24 * 3600,
  pendingTakeoverSeconds: 600,
  waitMs: 10_000,
  pollMs: 50,
} as const;

export type IdempotencyOptions = { [K in keyof typeof IDEMPOTENCY_DEFAULTS]: number };

/** What identifies a request: everything that can change what it does. */
export interface RequestIdentity {
  method: string;
  /** Path and query string as sent. */
  url: string;
  /** The parsed JSON body, or null for a streamed body (then `headers` carries its length and type). */
  body: unknown;
  /** Headers that change a write's meaning (If-Match, x-upsert, content type and length …). */
  headers: Record<string, string | undefined>;
}

export interface StoredAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export type Claim =
  { kind: 'run'; scope: string; key: string; hash: Buffer } | { kind: 'replay'; answer: StoredAnswer };

export function scopeOf(caller: Caller): string {
  if (caller.role === 'service') return 'service';
  if (caller.role === 'public') return 'public';
  return `user:${caller.uid}`;
}

export function parseIdempotencyKey(header: string | string[] | undefined): string | null {
  if (header === undefined) return null;
  if (typeof header !== 'string' || !KEY_PATTERN.test(header)) {
    throw new AppError('INVALID_REQUEST', 'Idempotency-Key: 1 to 255 visible ASCII characters, sent once.', {
      details: { field: 'idempotency-key', max_length: 255 },
    });
  }
  return header;
}

export function requestHash(request: RequestIdentity): Buffer {
  const hash = createHash('sha256');
  hash.update(`${request.method.toUpperCase()}\n${request.url}\n`);
  for (const name of Object.keys(request.headers).sort()) {
    const value = request.headers[name];
    if (value !== undefined) hash.update(`${name}:${value}\n`);
  }
  hash.update('\n');
  if (request.body !== null && request.body !== undefined) hash.update(JSON.stringify(request.body));
  return hash.digest();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class IdempotencyService {
  private readonly options: IdempotencyOptions;

  constructor(
    private readonly repo: IdempotencyRepository,
    options: Partial<IdempotencyOptions> = {},
  ) {
    this.options = { ...IDEMPOTENCY_DEFAULTS, ...options };
  }

  /**
   * Claims the key for this request, or returns the first request's answer. Throws
   * IDEMPOTENCY_MISMATCH for another request under the key, IDEMPOTENCY_PENDING when
   * the first is still running after the wait.
   */
  async begin(caller: Caller, key: string, request: RequestIdentity): Promise<Claim> {
    const scope = scopeOf(caller);
    const hash = requestHash(request);
    const { expireAfterSeconds, pendingTakeoverSeconds, waitMs, pollMs } = this.options;
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (await this.repo.claim(scope, key, hash, expireAfterSeconds, pendingTakeoverSeconds)) {
        return { kind: 'run', scope, key, hash };
      }
      const row = await this.repo.find(scope, key);
      // Gone between the two statements (released after a 5xx, or pruned): claim again.
      if (row === null) continue;
      if (!row.requestHash.equals(hash)) {
        throw new AppError('IDEMPOTENCY_MISMATCH', 'This Idempotency-Key was used with a different request.', {
          details: { field: 'idempotency-key' },
        });
      }
      if (row.state === 'done' && row.status !== null) {
        return {
          kind: 'replay',
          answer: { status: row.status, headers: row.headers ?? {}, body: row.body ?? Buffer.alloc(0) },
        };
      }
      if (Date.now() >= deadline) {
        throw new AppError('IDEMPOTENCY_PENDING', 'A request with this Idempotency-Key is still running.', {
          details: { field: 'idempotency-key', retry_after_seconds: 1 },
          headers: { 'retry-after': '1' },
        });
      }
      await sleep(pollMs);
    }
  }

  /** Keeps the answer of a claimed request, or releases the key after a server error. */
  async finish(claim: Extract<Claim, { kind: 'run' }>, answer: StoredAnswer): Promise<void> {
    if (answer.status >= 500) await this.repo.release(claim.scope, claim.key, claim.hash);
    else await this.repo.complete(claim.scope, claim.key, claim.hash, answer);
  }

  /** Releases a claimed key whose request ended without an answer (aborted, streamed reply). */
  async abandon(claim: Extract<Claim, { kind: 'run' }>): Promise<void> {
    await this.repo.release(claim.scope, claim.key, claim.hash);
  }

  prune(): Promise<number> {
    return this.repo.prune(this.options.expireAfterSeconds);
  }
}
