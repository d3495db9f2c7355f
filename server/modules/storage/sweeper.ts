import type { Logger } from '../../internal/log.js';
import type { StorageBackend } from './backends/index.js';
import type { StorageRepository } from './repository.js';

export interface SweepResult {
  /** Pending keys (abandoned uploads, unfinished deletions) whose bytes were removed. */
  pending: number;
  /** Keys in the backend that no row or pending mark accounts for. */
  orphans: number;
  /** Unfinished writes discarded: temporary files, S3 multipart uploads. */
  stale_writes: number;
  /** Resumable uploads past their expiry whose bytes were removed. */
  expired_uploads: number;
  /** False when another instance was sweeping, so this one did nothing. */
  ran: boolean;
}

const BATCH = 500;
const SCAN_INTERVAL_MS = 24 * 3600 * 1000;
/** Keys Basalt writes: an object's bytes (`<bucket>/<uuid>`) or a transform variant (`<bucket>/t<hash>`). */
const BASALT_KEY =
  /^[a-z0-9][a-z0-9_-]{0,62}\/(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|t[A-Za-z0-9_-]{43})$/;

/**
 * Removes bytes that no object row owns: uploads a crash abandoned, deletions a crash
 * interrupted, unfinished multipart uploads and temporary files. Anything younger than
 * the grace period is left alone, and a pending mark is claimed (deleted) before its
 * bytes are, so an upload still running loses the race cleanly instead of committing
 * a row without bytes.
 */
export class StorageSweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  /** Set on close: a long sweep stops between keys so shutdown is not held up. */
  private stopping = false;
  private lastScan = 0;

  constructor(
    private readonly repo: StorageRepository,
    private readonly backend: StorageBackend,
    private readonly log: Logger,
    private readonly uploads: { expire(limit: number): Promise<number> } | null,
    private readonly onSwept?: (result: SweepResult) => void,
  ) {}

  /**
   * One sweep, if no other instance is sweeping (advisory lock). `scanBackend: false` skips
   * listing the whole backend for unreferenced keys: by design only a crash inside the sweeper
   * itself leaves such keys, so the periodic sweep scans at most once a day.
   */
  async sweep(graceSeconds: number, options: { scanBackend?: boolean } = {}): Promise<SweepResult> {
    const result = await this.repo.withSweeperLock(() => this.sweepLocked(graceSeconds, options.scanBackend ?? true));
    return result ?? { pending: 0, orphans: 0, stale_writes: 0, expired_uploads: 0, ran: false };
  }

  private async sweepLocked(graceSeconds: number, scanBackend: boolean): Promise<SweepResult> {
    const cutoff = new Date(Date.now() - graceSeconds * 1000);
    const result: SweepResult = { pending: 0, orphans: 0, stale_writes: 0, expired_uploads: 0, ran: true };

    // Expired resumable uploads first: their keys are then ordinary pending marks for below.
    while (!this.stopping && this.uploads) {
      const expired = await this.uploads.expire(BATCH);
      result.expired_uploads += expired;
      if (expired < BATCH) break;
    }

    const seen = new Set<string>();
    while (!this.stopping) {
      const keys = (await this.repo.stalePending(cutoff, BATCH)).filter((key) => !seen.has(key));
      if (keys.length === 0) break;
      for (const key of keys) {
        seen.add(key);
        const claim = await this.repo.claimStalePending(key, cutoff);
        if (claim !== 'delete') continue;
        try {
          await this.backend.delete(key);
        } catch (error) {
          // Put the mark back, so the next sweep retries instead of leaving an unmarked key.
          await this.repo.addPending(this.repo.pool, key, 'delete');
          throw error;
        }
        result.pending++;
      }
    }

    while (!this.stopping) {
      const variants = await this.repo.deleteStaleVariants(cutoff, BATCH);
      for (const key of variants) await this.backend.delete(key);
      result.orphans += variants.length;
      if (variants.length < BATCH) break;
    }

    result.stale_writes = await this.backend.discardStaleWrites(
      cutoff,
      async (key) => await this.repo.pendingTouchedSince(key, cutoff),
    );

    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      const known = await this.repo.knownKeys(batch);
      for (const key of batch) {
        if (known.has(key)) continue;
        await this.backend.delete(key);
        result.orphans++;
      }
      batch = [];
    };
    for await (const entry of scanBackend ? this.backend.list() : []) {
      if (this.stopping) break;
      // Only keys of Basalt's own shape: anything else in a shared S3 bucket is not ours to delete.
      if (!BASALT_KEY.test(entry.key) || entry.lastModified >= cutoff) continue;
      batch.push(entry.key);
      if (batch.length >= BATCH) await flush();
    }
    if (batch.length > 0) await flush();

    if (result.pending + result.orphans + result.stale_writes + result.expired_uploads > 0)
      this.log.info(result, 'storage sweep removed orphans');
    this.onSwept?.(result);
    return result;
  }

  /** Sweeps every `intervalSeconds` (first run after one interval); 0 disables. */
  start(intervalSeconds: number, graceSeconds: number): void {
    if (intervalSeconds <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      const scanBackend = Date.now() - this.lastScan >= SCAN_INTERVAL_MS;
      this.running = this.sweep(graceSeconds, { scanBackend })
        .then((result) => {
          if (scanBackend && result.ran) this.lastScan = Date.now();
        })
        .catch((error: unknown) => this.log.warn({ err: error }, 'storage sweep failed'))
        .finally(() => {
          this.running = null;
        });
    }, intervalSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
