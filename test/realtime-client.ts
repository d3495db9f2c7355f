import WebSocket from 'ws';

export type Frame = { type: string } & Record<string, unknown>;

/** A raw websocket client for tests: collects frames and waits for the ones asked for. */
export class TestSocket {
  readonly frames: Frame[] = [];
  closeCode: number | null = null;
  private waiters: Array<() => void> = [];
  private readonly taken = new Set<number>();

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.frames.push(JSON.parse(String(data)) as Frame);
      this.wake();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.wake();
    });
    ws.on('error', () => undefined);
  }

  static async open(baseUrl: string, options: { token?: string; header?: string } = {}): Promise<TestSocket> {
    const url = new URL('/v1/realtime', baseUrl.replace(/^http/, 'ws'));
    if (options.token) url.searchParams.set('access_token', options.token);
    const ws = new WebSocket(url, {
      headers: options.header ? { authorization: `Bearer ${options.header}` } : {},
    });
    const socket = new TestSocket(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return socket;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  /** The first frame not yet taken that matches (waiting for it); other frames stay available. */
  async next(match: (frame: Frame) => boolean = () => true, timeoutMs = 5_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = 0; i < this.frames.length; i++) {
        const frame = this.frames[i] as Frame;
        if (!this.taken.has(i) && match(frame)) {
          this.taken.add(i);
          return frame;
        }
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || this.closeCode !== null) {
        throw new Error(
          `no matching frame within ${timeoutMs} ms (closed: ${this.closeCode}); got ${JSON.stringify(this.frames.filter((_, i) => !this.taken.has(i)).slice(-20))}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  nextOfType(type: string, extra: Record<string, unknown> = {}, timeoutMs?: number): Promise<Frame> {
    return this.next(
      (frame) => frame.type === type && Object.entries(extra).every(([key, value]) => frame[key] === value),
      timeoutMs,
    );
  }

  /** Frames received so far that match, without consuming them. */
  all(match: (frame: Frame) => boolean): Frame[] {
    return this.frames.filter(match);
  }

  async waitClosed(timeoutMs = 5_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.closeCode === null) {
      if (Date.now() > deadline) throw new Error('socket did not close');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.closeCode;
  }

  close(): void {
    this.ws.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
