import net from 'node:net';
import WebSocket from 'ws';
import type { BasaltClient, QuerySnapshot, WebSocketConstructor } from '../src/index.js';
import type { OfflineEngine } from '../src/offline/engine.js';

/**
 * A loopback TCP proxy in front of a server: `blocked` refuses connections (the network is
 * gone while the server runs), and `dropNextAnswerTo(pattern)` forwards the next request
 * whose head matches but cuts the connection when its answer comes back — the server
 * applied it, the client never hears.
 */
export class Proxy {
  blocked = false;
  private dropPattern: RegExp | null = null;
  dropped = 0;
  /** The requests that went through: method, path and Idempotency-Key (null: none). */
  readonly requests: Array<{ method: string; path: string; idempotencyKey: string | null }> = [];
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly url: string,
  ) {}

  static async start(target: string): Promise<Proxy> {
    const { hostname, port } = new URL(target);
    const holder: { proxy?: Proxy } = {};
    const server = net.createServer((client) => {
      const self = holder.proxy as Proxy;
      if (self.blocked) return void client.destroy();
      const upstream = net.connect(Number(port), hostname);
      self.sockets.add(client).add(upstream);
      let victim = false;
      client.on('data', (chunk: Buffer) => {
        const head = /^(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP\/1\.1\r\n(?:[^\r]*\r\n)*?\r\n/.exec(
          chunk.toString('latin1'),
        );
        if (head) {
          const key = /^idempotency-key: *([^\r]*)\r$/im.exec(head[0]);
          self.requests.push({ method: head[1] as string, path: head[2] as string, idempotencyKey: key?.[1] ?? null });
        }
        if (self.dropPattern?.test(chunk.toString('latin1'))) {
          self.dropPattern = null;
          victim = true;
        }
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        if (victim) {
          self.dropped++;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(chunk);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address() as net.AddressInfo;
    holder.proxy = new Proxy(server, `http://127.0.0.1:${address.port}`);
    return holder.proxy;
  }

  dropNextAnswerTo(pattern: RegExp): void {
    this.dropPattern = pattern;
  }

  /** Cuts every open connection (and refuses new ones while `blocked`). */
  cut(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The frames a client's socket sent. */
export function recordingWebSocket(sent: Array<Record<string, unknown>>): WebSocketConstructor {
  return class Recording extends WebSocket {
    constructor(address: string) {
      super(address);
      const send = this.send.bind(this);
      this.send = ((data: string) => {
        sent.push(JSON.parse(data) as Record<string, unknown>);
        send(data);
      }) as WebSocket['send'];
    }
  };
}

/** The client's offline engine (not public: a test stops it to stand for a page reload). */
export function engineOf(basalt: BasaltClient): OfflineEngine | undefined {
  return (basalt.db as unknown as { engine?: OfflineEngine }).engine;
}

/** A live query's snapshots. */
export interface Watched<T> {
  snaps: Array<QuerySnapshot<T>>;
  last(): QuerySnapshot<T>;
  stop(): void;
}

export function watch<T>(query: { onSnapshot(cb: (s: QuerySnapshot<T>) => void): () => void }): Watched<T> {
  const snaps: Array<QuerySnapshot<T>> = [];
  const stop = query.onSnapshot((snapshot) => snaps.push(snapshot));
  return { snaps, last: () => snaps.at(-1) as QuerySnapshot<T>, stop };
}
