import net from 'node:net';
import pg from 'pg';
import type { Change, ChangeBatch, ChangeFeed } from '../server/internal/changes/feed.js';

/** Everything a feed delivers, in delivery order, with the batches' cursors. */
export class Collector {
  readonly changes: Change[] = [];
  readonly batches: ChangeBatch[] = [];
  readonly unsubscribe: () => void;

  constructor(feed: ChangeFeed) {
    this.unsubscribe = feed.subscribe((batch) => {
      this.batches.push(batch);
      this.changes.push(...batch.changes);
    });
  }

  rowIds(table?: string): string[] {
    return this.changes.filter((change) => table === undefined || change.table === table).map((c) => c.rowId);
  }

  has(rowId: string, table?: string): boolean {
    return this.rowIds(table).includes(rowId);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A plain client, like psql: writes through it bypass Basalt entirely. */
export async function sqlClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: 'test-psql' });
  await client.connect();
  return client;
}

/** Creates a tracked table `<name>(id text primary key, v int)`. */
export async function createTrackedTable(url: string, name: string): Promise<void> {
  const client = await sqlClient(url);
  try {
    await client.query(`CREATE TABLE public.${name} (id text PRIMARY KEY, v int NOT NULL DEFAULT 0)`);
    await client.query(`SELECT basalt.track_changes('public.${name}')`);
  } finally {
    await client.end();
  }
}

/** Duplicated change ids, if any. */
export function duplicates(changes: Change[]): string[] {
  const seen = new Set<string>();
  const twice: string[] = [];
  for (const change of changes) {
    if (seen.has(change.id)) twice.push(change.id);
    seen.add(change.id);
  }
  return twice;
}

/**
 * A TCP proxy in front of Postgres that can fake an outage: every open connection is cut
 * and new ones are refused until it ends, as when Postgres restarts.
 */
export class FlakyProxy {
  private readonly server = net.createServer((socket) => this.accept(socket));
  private readonly sockets = new Set<net.Socket>();
  private down = false;

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  static async start(targetUrl: string): Promise<{ proxy: FlakyProxy; url: string }> {
    const target = new URL(targetUrl);
    const proxy = new FlakyProxy(target.hostname, Number(target.port || 5432));
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    const address = proxy.server.address();
    if (!address || typeof address !== 'object') throw new Error('proxy has no port');
    const url = new URL(targetUrl);
    url.hostname = '127.0.0.1';
    url.port = String(address.port);
    return { proxy, url: url.toString() };
  }

  /** Cuts every connection and refuses new ones for `ms`. */
  outage(ms: number): Promise<void> {
    this.down = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    return new Promise((resolve) =>
      setTimeout(() => {
        this.down = false;
        resolve();
      }, ms),
    );
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    if (this.down) {
      socket.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, this.targetHost);
    for (const [from, to] of [
      [socket, upstream],
      [upstream, socket],
    ] as const) {
      this.sockets.add(from);
      from.pipe(to);
      from.on('error', () => to.destroy());
      from.on('close', () => {
        to.destroy();
        this.sockets.delete(from);
      });
    }
  }
}
