/** `basalt.events`: publishes to topics (`POST /v1/events/:topic`). */
import type { HttpTransport } from './transport.js';

export interface PublishOptions {
  /** Events with one key run in publish order, one at a time, in each subscribed function. */
  key?: string;
  /** Seconds (0–900) before the subscribers may run the event. */
  delaySeconds?: number;
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
    return this.http.request<{ id: string }>('POST', `/v1/events/${encodeURIComponent(topic)}`, {
      payload,
      ...(options.key === undefined ? {} : { key: options.key }),
      ...(options.delaySeconds === undefined ? {} : { delay_seconds: options.delaySeconds }),
    });
  }
}
