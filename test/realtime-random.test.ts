import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCollection } from './documents-support.js';
import { request, useTestApp } from './helpers.js';
import { sleep, TestSocket, type Frame } from './realtime-client.js';

interface Doc {
  id: string;
  version: number;
  data: Record<string, unknown>;
}

const one = useTestApp();
const two = useTestApp({ sharing: one });
const sockets: TestSocket[] = [];

/** A small seeded generator, so a failure can be replayed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The client's copy; every frame must be consistent with it (no double add, no unknown remove). */
class Copy {
  docs = new Map<string, Doc>();
  cursor = '';
  constructor(readonly label: string) {}
  apply(frame: Frame): void {
    if ((frame.type === 'subscribed' || frame.type === 'reset') && Array.isArray(frame.docs)) {
      this.docs = new Map((frame.docs as Doc[]).map((doc) => [doc.id, doc]));
    } else if (frame.type === 'change') {
      const doc = frame.doc as Doc;
      const known = this.docs.has(doc.id);
      const context = `${this.label}: ${String(frame.change)} ${doc.id}`;
      if (frame.change === 'added') expect(known, context).toBe(false);
      else expect(known, context).toBe(true);
      if (frame.change === 'removed') this.docs.delete(doc.id);
      else {
        const before = this.docs.get(doc.id);
        if (before) expect(doc.version, context).toBeGreaterThanOrEqual(before.version);
        this.docs.set(doc.id, doc);
      }
    }
    if (typeof frame.cursor === 'string') this.cursor = frame.cursor;
  }
  state(): Array<[string, number]> {
    return [...this.docs.values()].map((doc) => [doc.id, doc.version] as [string, number]).sort();
  }
}

async function expectedState(body: unknown): Promise<Array<[string, number]>> {
  const response = await request(one.url, 'POST', '/v1/db/rand/query', { token: one.serviceKey, body });
  return ((response.body as { docs: Doc[] }).docs ?? []).map((doc) => [doc.id, doc.version] as [string, number]).sort();
}

async function expectedDoc(id: string): Promise<Array<[string, number]>> {
  const response = await request(one.url, 'GET', `/v1/db/rand/${id}`, { token: one.serviceKey });
  return response.status === 200 ? [[id, (response.body as Doc).version]] : [];
}

/** Drains frames of `id` into the copy until it equals the expected state (re-read while it does not). */
async function converge(
  socket: TestSocket,
  copy: Copy,
  id: string,
  expected: () => Promise<Array<[string, number]>>,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const want = await expected();
    for (;;) {
      try {
        copy.apply(await socket.next((frame) => frame.id === id, 300));
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('no matching frame')) break;
        throw error;
      }
    }
    if (JSON.stringify(copy.state()) === JSON.stringify(want)) return;
    if (Date.now() > deadline) expect(copy.state()).toEqual(want);
  }
}

beforeAll(async () => {
  await createCollection(one, { name: 'rand', rules: { read: 'true' } });
});

afterAll(() => {
  for (const socket of sockets) socket.close();
});

describe('live queries under random writes', () => {
  it('keep every copy equal to its query, through HTTP and SQL writes, transactions and a resume', async () => {
    // RT_SEED=<n> replays another sequence.
    const random = prng(Number(process.env.RT_SEED ?? 20261128));
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const ids = Array.from({ length: 16 }, (_, i) => `k${i}`);
    const topOfGroup = { where: [['g', '==', 1]], order_by: [['score', 'desc']], limit: 5 };
    const lowest = { order_by: [['score', 'asc']], limit: 4 };

    const a = await TestSocket.open(two.url, { token: two.serviceKey });
    const b = await TestSocket.open(one.url, { token: one.serviceKey });
    let c = await TestSocket.open(two.url, { token: two.serviceKey });
    sockets.push(a, b, c);
    const copies = { top: new Copy('top'), doc: new Copy('doc'), low: new Copy('low') };
    a.send({ type: 'subscribe', id: 'top', collection: 'rand', query: topOfGroup });
    b.send({ type: 'subscribe', id: 'doc', collection: 'rand', doc_id: 'k3' });
    c.send({ type: 'subscribe', id: 'low', collection: 'rand', query: lowest });
    copies.top.apply(await a.nextOfType('subscribed', { id: 'top' }));
    copies.doc.apply(await b.nextOfType('subscribed', { id: 'doc' }));
    copies.low.apply(await c.nextOfType('subscribed', { id: 'low' }));

    const sqlOp = (): [string, unknown[]] => {
      const id = pick(ids);
      const score = Math.floor(random() * 20);
      const g = random() < 0.5 ? 1 : 2;
      switch (pick(['insert', 'update', 'delete'] as const)) {
        case 'insert':
          return [
            `INSERT INTO basalt_data.rand (id, data) VALUES ($1, jsonb_build_object('score', $2::int, 'g', $3::int))
             ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data`,
            [id, score, g],
          ];
        case 'update':
          return [
            `UPDATE basalt_data.rand SET data = data || jsonb_build_object('score', $2::int) WHERE id = $1`,
            [id, score],
          ];
        default:
          return [`DELETE FROM basalt_data.rand WHERE id = $1 AND $2::int >= 0`, [id, score]];
      }
    };
    const httpOp = async () => {
      const id = pick(ids);
      const data = { score: Math.floor(random() * 20), g: random() < 0.5 ? 1 : 2 };
      const kind = pick(['put', 'patch', 'delete'] as const);
      const method = kind === 'put' ? 'PUT' : kind === 'patch' ? 'PATCH' : 'DELETE';
      await request(one.url, method, `/v1/db/rand/${id}`, {
        token: one.serviceKey,
        body: kind === 'delete' ? undefined : { data: kind === 'patch' ? { score: data.score } : data },
      });
    };

    let held: pg.Client | null = null;
    for (let step = 0; step < 160; step++) {
      if (step === 60) {
        // The third client drops off; it resumes 40 steps later on the other instance.
        c.ws.terminate();
        await c.waitClosed();
      }
      if (step === 100) {
        c = await TestSocket.open(one.url, { token: one.serviceKey });
        sockets.push(c);
        c.send({ type: 'subscribe', id: 'low', collection: 'rand', query: lowest, resume_from: copies.low.cursor });
        const resumed = await c.nextOfType('subscribed', { id: 'low' });
        expect(resumed.docs).toBeUndefined();
      }
      const roll = random();
      if (roll < 0.45) await httpOp();
      else if (roll < 0.8) {
        const [text, values] = sqlOp();
        await one.sql.query(text, values);
      } else if (roll < 0.92) {
        await one.sql.query('BEGIN');
        for (let i = 0; i < 3; i++) {
          const [text, values] = sqlOp();
          await one.sql.query(text, values);
        }
        await one.sql.query('COMMIT');
      } else if (held === null) {
        // A transaction that stays open while later ones commit.
        held = new pg.Client({ connectionString: one.database.url });
        await held.connect();
        await held.query('BEGIN');
        await held.query(
          `INSERT INTO basalt_data.rand (id, data) VALUES ($1, '{"score": 0, "g": 1}') ON CONFLICT (id) DO NOTHING`,
          [`held${step}`],
        );
      } else {
        await held.query('COMMIT');
        await held.end();
        held = null;
      }
      if (step % 10 === 0) await sleep(20);
    }
    if (held) {
      await held.query('COMMIT');
      await held.end();
    }

    await converge(a, copies.top, 'top', () => expectedState(topOfGroup));
    await converge(b, copies.doc, 'doc', () => expectedDoc('k3'));
    await converge(c, copies.low, 'low', () => expectedState(lowest));
    for (const socket of [a, b, c]) expect(socket.all((frame) => frame.type === 'error')).toEqual([]);
  }, 90_000);
});
