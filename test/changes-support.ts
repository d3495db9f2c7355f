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

export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
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
