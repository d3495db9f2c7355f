import type { Database } from '../../internal/db.js';
import type { Logger } from '../../internal/log.js';
import { NotificationListener } from '../../internal/notification-listener.js';
import { QUEUE_WAKE_CHANNEL, notifyQueueWake } from './repository.js';

/** Queues announced within this long go out as one notification: a burst costs one statement. */
const COALESCE_MS = 20;
/** pg_notify refuses payloads of 8000 bytes or more; keep a margin for the envelope. */
const MAX_PAYLOAD_BYTES = 7_900;

interface WakeMessage {
  /** The announcing instance: it woke its own runners already. */
  from: string;
  queues: string[];
}

export interface QueueWakeOptions {
  databaseUrl: string;
  db: Database;
  log: Logger;
  /** This instance, to skip its own announcements. */
  instanceId: string;
  /** Whether this instance runs jobs, hence listens (an API-only instance only announces). */
  listen: boolean;
  /** Wakes this instance's runners of these queues; null: of every queue (after missed notifications). */
  wake(queues: string[] | null): void;
}

/**
 * Wakes the queue runners of every instance when jobs are sent on one of them.
 *
 * A runner whose queue stays empty polls less and less often (every 15 s at most), so a job
 * sent by another instance — an event published through an API-only instance, a retry asked
 * of any instance, jobs the dispatch leader queued — would otherwise wait for that poll.
 * Announcements are hints carried by pg_notify, sent after the jobs committed and coalesced
 * over COALESCE_MS; a hint lost while a listener reconnects is made up by waking every
 * runner once, and the poll still catches anything else.
 */
export class QueueWake {
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private readonly listener: NotificationListener | null;
  private stopped = false;

  constructor(private readonly options: QueueWakeOptions) {
    this.listener = options.listen
      ? new NotificationListener({
          url: options.databaseUrl,
          channel: QUEUE_WAKE_CHANNEL,
          applicationName: 'basalt-queue-wake',
          log: options.log,
          onMessage: (payload) => this.received(payload),
          onReconnect: () => options.wake(null),
        })
      : null;
  }

  async start(): Promise<void> {
    await this.listener?.start();
  }

  /** Jobs were added to these queues (and committed): wake the other instances' runners. */
  announce(queues: Iterable<string>): void {
    if (this.stopped) return;
    for (const queue of queues) this.pending.add(queue);
    if (this.pending.size === 0 || this.timer) return;
    this.timer = setTimeout(() => void this.flush(), COALESCE_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.listener?.stop();
  }

  private async flush(): Promise<void> {
    this.timer = null;
    const queues = [...this.pending];
    this.pending.clear();
    for (const payload of wakePayloads(this.options.instanceId, queues)) {
      try {
        await notifyQueueWake(this.options.db, payload);
      } catch (error) {
        // A hint only: the other instances' polls still find the jobs.
        this.options.log.debug({ err: error }, 'queue wake-up not sent');
      }
    }
  }

  private received(payload: string): void {
    let message: WakeMessage;
    try {
      message = JSON.parse(payload) as WakeMessage;
    } catch {
      return;
    }
    if (message.from === this.options.instanceId || !Array.isArray(message.queues)) return;
    this.options.wake(message.queues.filter((queue): queue is string => typeof queue === 'string'));
  }
}

/** The announcements for these queues, each under pg_notify's payload limit. */
export function wakePayloads(from: string, queues: string[]): string[] {
  const encode = (list: string[]) => JSON.stringify({ from, queues: list } satisfies WakeMessage);
  const envelopeBytes = Buffer.byteLength(encode([]));
  const payloads: string[] = [];
  let batch: string[] = [];
  let bytes = envelopeBytes;
  for (const queue of queues) {
    const queueBytes = Buffer.byteLength(JSON.stringify(queue)) + 1; // with its comma
    if (batch.length > 0 && bytes + queueBytes > MAX_PAYLOAD_BYTES) {
      payloads.push(encode(batch));
      batch = [];
      bytes = envelopeBytes;
    }
    batch.push(queue);
    bytes += queueBytes;
  }
  if (batch.length > 0) payloads.push(encode(batch));
  return payloads;
}
