import type { Doc } from './api.js';

export interface LiveQuery {
  where?: unknown;
  order_by?: unknown;
  limit?: number;
}

export interface LiveHandlers {
  /** The whole result set (first answer, a reset, or after a reconnect). */
  onSnapshot(docs: Doc[]): void;
  onChange(kind: 'added' | 'modified' | 'removed', doc: Doc): void;
  onStatus(status: 'connecting' | 'live' | 'error', message?: string): void;
}

interface Frame {
  type: string;
  id?: string;
  docs?: Doc[];
  doc?: Doc;
  change?: 'added' | 'modified' | 'removed';
  cursor?: string;
  code?: string;
  message?: string;
}

/**
 * One live query over the realtime websocket. The service key goes in an `auth` frame,
 * never in the URL. On a dropped connection it reconnects and resumes from the last
 * cursor, so no change is missed.
 */
export class LiveSubscription {
  private socket: WebSocket | null = null;
  private cursor: string | null = null;
  private closed = false;
  private retryTimer: number | null = null;
  private attempts = 0;

  constructor(
    private readonly key: string,
    private readonly collection: string,
    private readonly query: LiveQuery,
    private readonly handlers: LiveHandlers,
  ) {
    this.connect();
  }

  private connect(): void {
    if (this.closed) return;
    this.handlers.onStatus('connecting');
    const url = new URL('/v1/realtime', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.attempts = 0;
      socket.send(JSON.stringify({ type: 'auth', access_token: this.key }));
      socket.send(
        JSON.stringify({
          type: 'subscribe',
          id: 'table',
          collection: this.collection,
          query: this.query,
          ...(this.cursor ? { resume_from: this.cursor } : {}),
        }),
      );
    });
    socket.addEventListener('message', (event) => this.onFrame(JSON.parse(String(event.data)) as Frame));
    socket.addEventListener('close', () => {
      if (this.closed) return;
      this.handlers.onStatus('error', 'Connection lost; reconnecting…');
      const delay = Math.min(10_000, 500 * 2 ** this.attempts++);
      this.retryTimer = window.setTimeout(() => this.connect(), delay);
    });
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case 'subscribed':
        if (frame.cursor) this.cursor = frame.cursor;
        // With resume_from, `subscribed` carries no docs: the missed changes follow.
        if (frame.docs) this.handlers.onSnapshot(frame.docs);
        this.handlers.onStatus('live');
        break;
      case 'reset':
        if (frame.cursor) this.cursor = frame.cursor;
        this.handlers.onSnapshot(frame.docs ?? []);
        break;
      case 'change':
        if (frame.cursor) this.cursor = frame.cursor;
        if (frame.change && frame.doc) this.handlers.onChange(frame.change, frame.doc);
        break;
      case 'error':
        this.handlers.onStatus('error', `${frame.code ?? 'ERROR'}: ${frame.message ?? ''}`);
        break;
      default:
        break;
    }
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer !== null) window.clearTimeout(this.retryTimer);
    this.socket?.close(1000, 'closed');
  }
}
