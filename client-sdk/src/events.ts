/** `basalt.events`: publishes to topics (`POST /v1/events/:topic`). */
import type { HttpTransport } from './transport.js';

export interface PublishOptions {
  /** Events with one key run in publish order, one at a time, in each subscribed function. */
  key?: string;
  /** Seconds (0–900) before the subscribers may run the event. */
  delaySeconds?: number;
}

/** One event of a batch publish (`publishMany`). */
export interface BatchEvent extends PublishOptions {
  /** Any JSON value, at most 256 KiB. */
  payload: unknown;
}

export class EventsClient {
  private readonly http: HttpTransport;

  constructor(http: HttpTransport) {
    this.http = http;
  }

  /**
   * Publishes `payload` (any JSON value, at most 256 KiB) to `topic`, with the session's token:
   * allowed where the topic's `publish` rule allows it (else FORBIDDEN, or UNAUTHENTICATED
   * signed out). Resolves with the event's id once the event is durable.
   */
  publish(topic: string, payload: unknown, options: PublishOptions = {}): Promise<{ id: string }> {
    return this.http.request<{ id: string }>(
      'POST',
      `/v1/events/${encodeURIComponent(topic)}`,
      wireEvent(payload, options),
    );
  }

  /**
   * Publishes up to 1,000 events to `topic` in one request, all of them or none (one
   * transaction), the topic's `publish` rule checked for each: one refused event refuses the
   * batch, its error naming the event's `details.index`. Resolves with the events' ids, in
   * order, once they are durable. Events of one key run in list order.
   */
  publishMany(topic: string, events: BatchEvent[]): Promise<{ ids: string[] }> {
    return this.http.request<{ ids: string[] }>('POST', `/v1/events/${encodeURIComponent(topic)}`, {
      events: events.map((event) => wireEvent(event.payload, event)),
    });
  }
}

/** An event as the wire names it (`delay_seconds`); an option not given is undefined, which JSON leaves out. */
function wireEvent(payload: unknown, options: PublishOptions): Record<string, unknown> {
  return { payload, key: options.key, delay_seconds: options.delaySeconds };
}
