import { AppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import { hourStart, isEmptyWindow, type UsageMeter } from './meter.js';
import type { UsageRepository } from './repository.js';

export type UsageGranularity = 'hour' | 'day';

export interface FunctionUsageFigures {
  invocations: number;
  errors: number;
  cold_starts: number;
  duration_ms: number;
  gb_seconds: number;
}

/** One bucket of `GET /v1/admin/usage`. */
export interface UsageBucket {
  start: string;
  functions: Record<string, FunctionUsageFigures>;
  documents: { reads: number; writes: number };
  storage: { bytes_in: number; bytes_out: number; bytes_stored: number };
  realtime: { messages: number; peak_connections: number };
  auth: { active_users: number };
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** How long usage is kept, and so the widest range one can ask for. */
export const USAGE_RETENTION_DAYS = 90;
/** The widest range one answer covers: the days kept, and the day the range starts in. */
const MAX_SPAN_MS = (USAGE_RETENTION_DAYS + 1) * DAY_MS;

export interface UsageQuery {
  from?: string;
  to?: string;
  granularity?: string;
}

function parseTime(value: string | undefined, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  const at = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(value) || Number.isNaN(at)) {
    throw new AppError('INVALID_REQUEST', `${field}: an ISO 8601 date or timestamp.`, { details: { field } });
  }
  return at;
}

function bucketStart(at: number, granularity: UsageGranularity): number {
  const size = granularity === 'hour' ? HOUR_MS : DAY_MS;
  return Math.floor(at / size) * size;
}

function emptyBucket(start: number): UsageBucket {
  return {
    start: new Date(start).toISOString(),
    functions: {},
    documents: { reads: 0, writes: 0 },
    storage: { bytes_in: 0, bytes_out: 0, bytes_stored: 0 },
    realtime: { messages: 0, peak_connections: 0 },
    auth: { active_users: 0 },
  };
}

/**
 * The usage meter's storage side: writes the instance's counts every flush interval and
 * answers `GET /v1/admin/usage` by summing hours into buckets.
 */
export class UsageService {
  private timer: NodeJS.Timeout | null = null;
  private hourTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private lastPrune = 0;

  constructor(
    private readonly meter: UsageMeter,
    private readonly repo: UsageRepository,
    private readonly log: Logger,
    private readonly options: { flushIntervalMs: number },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.options.flushIntervalMs);
    this.timer.unref();
    this.scheduleHourBoundary();
  }

  /** A flush at each hour boundary, so that no window spans two hours. */
  private scheduleHourBoundary(): void {
    const now = Date.now();
    const next = hourStart(now).getTime() + HOUR_MS;
    this.hourTimer = setTimeout(
      () => {
        void this.flush();
        this.scheduleHourBoundary();
      },
      next - now + 1,
    );
    this.hourTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.hourTimer) clearTimeout(this.hourTimer);
    this.timer = null;
    this.hourTimer = null;
    await this.flush();
  }

  /** Writes what was counted since the last flush; a failed write is kept for the next one. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const window = this.meter.take();
      if (!isEmptyWindow(window)) {
        try {
          await this.repo.add(window, this.meter.instanceId);
        } catch (error) {
          this.meter.giveBack(window);
          this.log.warn({ err: error }, 'writing usage failed; it is kept for the next flush');
        }
      }
      if (Date.now() - this.lastPrune > HOUR_MS) {
        this.lastPrune = Date.now();
        await this.repo
          .prune(new Date(Date.now() - USAGE_RETENTION_DAYS * DAY_MS))
          .catch((error: unknown) => this.log.warn({ err: error }, 'pruning usage failed'));
      }
    });
    return this.flushing;
  }

  async usage(query: UsageQuery): Promise<{ buckets: UsageBucket[] }> {
    const granularity = query.granularity ?? 'hour';
    if (granularity !== 'hour' && granularity !== 'day') {
      throw new AppError('INVALID_REQUEST', 'granularity: hour or day.', { details: { field: 'granularity' } });
    }
    const now = Date.now();
    const to = parseTime(query.to, 'to', now);
    const from = parseTime(query.from, 'from', to - (granularity === 'hour' ? DAY_MS : 30 * DAY_MS));
    if (from >= to) throw new AppError('INVALID_REQUEST', 'from must be before to.', { details: { field: 'from' } });
    const first = bucketStart(from, granularity);
    const size = granularity === 'hour' ? HOUR_MS : DAY_MS;
    if (to - first > MAX_SPAN_MS) {
      throw new AppError('INVALID_REQUEST', `At most ${USAGE_RETENTION_DAYS} days at a time.`, {
        details: { field: 'from' },
      });
    }
    // This instance's latest counts are included (the others' within one flush interval).
    await this.flush();

    const buckets: UsageBucket[] = [];
    const byStart = new Map<number, UsageBucket>();
    for (let start = first; start < to; start += size) {
      const bucket = emptyBucket(start);
      buckets.push(bucket);
      byStart.set(start, bucket);
    }
    const rangeFrom = new Date(first);
    const rangeTo = new Date(bucketStart(to - 1, granularity) + size);
    const bucketOf = (hour: Date) => byStart.get(bucketStart(hour.getTime(), granularity));

    const [hours, functionHours, peaks, users, storedBefore] = await Promise.all([
      this.repo.hours(rangeFrom, rangeTo),
      this.repo.functionHours(rangeFrom, rangeTo),
      this.repo.connectionPeaks(rangeFrom, rangeTo),
      this.repo.activeUsers(rangeFrom, rangeTo, granularity),
      this.repo.storedBefore(rangeFrom),
    ]);
    // The stored total of a bucket is the last measured by its end, carried forward.
    const storedAt = new Map<number, number>();
    for (const row of hours) {
      const bucket = bucketOf(row.hour);
      if (!bucket) continue;
      bucket.documents.reads += Number(row.document_reads);
      bucket.documents.writes += Number(row.document_writes);
      bucket.storage.bytes_in += Number(row.storage_bytes_in);
      bucket.storage.bytes_out += Number(row.storage_bytes_out);
      bucket.realtime.messages += Number(row.realtime_messages);
      if (row.storage_bytes_stored !== null) {
        storedAt.set(bucketStart(row.hour.getTime(), granularity), Number(row.storage_bytes_stored));
      }
    }
    let stored = storedBefore === null ? 0 : Number(storedBefore);
    for (const bucket of buckets) {
      stored = storedAt.get(Date.parse(bucket.start)) ?? stored;
      bucket.storage.bytes_stored = stored;
    }
    for (const row of functionHours) {
      const bucket = bucketOf(row.hour);
      if (!bucket) continue;
      const figures = (bucket.functions[row.function_name] ??= {
        invocations: 0,
        errors: 0,
        cold_starts: 0,
        duration_ms: 0,
        gb_seconds: 0,
      });
      figures.invocations += Number(row.invocations);
      figures.errors += Number(row.errors);
      figures.cold_starts += Number(row.cold_starts);
      figures.duration_ms += Number(row.duration_ms);
      figures.gb_seconds += Number(row.gb_seconds);
    }
    // A day's peak is its busiest hour's.
    for (const row of peaks) {
      const bucket = bucketOf(row.hour);
      if (bucket) bucket.realtime.peak_connections = Math.max(bucket.realtime.peak_connections, Number(row.peak));
    }
    for (const row of users) {
      const bucket = byStart.get(row.bucket.getTime());
      if (bucket) bucket.auth.active_users = Number(row.users);
    }
    return { buckets };
  }
}
