import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** A write the proxy saw: what a test checks its Idempotency-Key and its fate by. */
export interface SeenWrite {
  method: string;
  path: string;
  idempotencyKey: string | null;
  /** The server answered it, and the proxy dropped the answer on the floor. */
  answerDropped: boolean;
  status: number | null;
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * An HTTP and websocket proxy on loopback in front of a Basalt server. With the server down it
 * resets the page's connections (as a refused connection would fail them). Armed with
 * `dropAnswerOf`, it forwards the next matching write, waits until the server has answered —
 * the write is applied — and then cuts the page's connection instead of passing the answer
 * on: the client cannot tell whether its write happened.
 */
export class LoopbackProxy {
  private server: http.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  private dropNext: ((method: string, path: string) => boolean) | null = null;
  readonly writes: SeenWrite[] = [];
  port = 0;

  constructor(private readonly targetPort: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The next write matching `match` is applied by the server but its answer never reaches the page. */
  dropAnswerOf(match: (method: string, path: string) => boolean): void {
    this.dropNext = match;
  }

  async listen(): Promise<void> {
    const server = http.createServer((incoming, outgoing) => this.forward(incoming, outgoing));
    server.keepAliveTimeout = 1_000;
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    server.on('upgrade', (incoming: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      const close = () => {
        socket.destroy();
        upstream.destroy();
      };
      upstream.on('connect', () => {
        const lines = [`${incoming.method} ${incoming.url} HTTP/1.1`];
        for (let i = 0; i < incoming.rawHeaders.length; i += 2) {
          lines.push(`${incoming.rawHeaders[i]}: ${incoming.rawHeaders[i + 1]}`);
        }
        upstream.write(lines.join('\r\n') + '\r\n\r\n');
        if (head.length) upstream.write(head);
        socket.pipe(upstream).pipe(socket);
      });
      upstream.on('error', close).on('close', close);
      socket.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  private forward(incoming: http.IncomingMessage, outgoing: http.ServerResponse): void {
    const method = incoming.method ?? 'GET';
    const path = incoming.url ?? '/';
    const key = incoming.headers['idempotency-key'];
    const write: SeenWrite | null = WRITE_METHODS.has(method)
      ? { method, path, idempotencyKey: typeof key === 'string' ? key : null, answerDropped: false, status: null }
      : null;
    if (write) this.writes.push(write);
    const upstream = http.request(
      { host: '127.0.0.1', port: this.targetPort, method, path, headers: incoming.headers, agent: false },
      (answer) => {
        if (write) write.status = answer.statusCode ?? null;
        // Decided once the server answered: attempts that never reached it do not count.
        const drop = write !== null && this.dropNext !== null && this.dropNext(method, path);
        if (drop) {
          this.dropNext = null;
          // Read the whole answer (the server is done with the write), then hang up on the page.
          answer.resume();
          answer.on('end', () => {
            if (write) write.answerDropped = true;
            incoming.socket.destroy();
          });
          return;
        }
        outgoing.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        answer.pipe(outgoing);
      },
    );
    // The server is down (or went down mid-request): the page's connection fails as a refused one would.
    upstream.on('error', () => incoming.socket.destroy());
    incoming.pipe(upstream);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
