import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import WebSocket from 'ws';
import { request, useTestApp } from '../../test/helpers.js';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import { clientsStoppedAfterAll } from './sdk-support.js';
import {
  avg,
  BasaltError,
  count,
  createClient,
  max,
  min,
  sum,
  type AggregateGroup,
  type BasaltClient,
  type Doc,
} from '../src/index.js';

const server = useTestApp({ env: { BASALT_REALTIME_AGGREGATE_INTERVAL_MS: '100' } });
const clients = clientsStoppedAfterAll();
let client: BasaltClient;

interface Gear {
  name: string;
  status: string;
  price: number;
  maker?: string;
}

async function admin(method: string, path: string, body: unknown) {
  const result = await request(server.url, method, path, { token: server.serviceKey, body });
  expect(result.status, result.text).toBeLessThan(300);
}

beforeAll(async () => {
  await admin('POST', '/v1/admin/collections', { name: 'makers', rules: { read: 'auth != null' } });
  await admin('POST', '/v1/admin/collections', {
    name: 'gear',
    rules: { read: 'auth != null', create: 'auth != null' },
    refs: { maker: 'makers' },
    search: { fields: ['name'], language: 'english' },
  });
  await admin('PUT', '/v1/db/makers/acme', { data: { title: 'Acme' } });
  // On Node 20 the live aggregates' socket comes from the ws package.
  client = createClient(server.url, { persistSession: false, autoRefreshToken: false, WebSocket });
  await client.auth.signUp({ email: uniqueEmail('sdk'), password: STRONG_PASSWORD });
  clients.push(client);
  const gear = client.db.collection<Gear>('gear');
  await gear.add({ name: 'Two-person tent', status: 'new', price: 200, maker: 'acme' }, { id: 'tent' });
  await gear.add({ name: 'Camp stove', status: 'new', price: 50 }, { id: 'stove' });
  await gear.add({ name: 'Camping chair', status: 'used', price: 20, maker: 'acme' }, { id: 'chair' });
});

describe('SDK: expand, aggregate, search', () => {
  it('expands references on queries and single documents', async () => {
    const gear = client.db.collection<Gear>('gear');
    const { docs } = await gear.where('maker', '==', 'acme').orderBy('name').expand('maker').get();
    expect(docs.map((doc) => doc.id)).toEqual(['chair', 'tent']);
    expect((docs[0]?.expand?.maker as Doc | null)?.data).toEqual({ title: 'Acme' });
    const tent = await gear.doc('tent').get({ expand: ['maker'] });
    expect((tent?.expand?.maker as Doc | null)?.id).toBe('acme');
  });

  it('aggregates with typed aliases, grouped and ordered', async () => {
    const gear = client.db.collection<Gear>('gear');
    const groups = await gear.aggregate(
      { n: count(), total: sum('price'), mean: avg('price'), low: min('price'), high: max('price') },
      { groupBy: ['status'], orderBy: [['total', 'desc']] },
    );
    expectTypeOf(groups[0]!.values).toEqualTypeOf<{
      n: number | null;
      total: number | null;
      mean: number | null;
      low: number | null;
      high: number | null;
    }>();
    expect(groups).toEqual([
      { key: { status: 'new' }, values: { n: 2, total: 250, mean: 125, low: 50, high: 200 } },
      { key: { status: 'used' }, values: { n: 1, total: 20, mean: 20, low: 20, high: 20 } },
    ]);
    const filtered = await gear.where('price', '<', 100).aggregate({ n: count() });
    expect(filtered).toEqual([{ key: {}, values: { n: 2 } }]);
  });

  it('searches with web-search syntax and highlights', async () => {
    const gear = client.db.collection<Gear>('gear');
    const { docs } = await gear.search('camp -stove', { highlight: true }).limit(20).get();
    expect(docs.map((doc) => doc.id)).toEqual(['chair']);
    expect(docs[0]?.highlights?.name).toBe('<mark>Camping</mark> chair');
    const phrase = await gear.search('"two person"').get();
    expect(phrase.docs.map((doc) => doc.id)).toEqual(['tent']);
  });

  it('follows an aggregate live: typed groups at once, then after writes, until stopped', async () => {
    const gear = client.db.collection<Gear>('gear');
    const snapshots: Array<Array<AggregateGroup<{ n: ['count']; total: ['sum', string] }>>> = [];
    let wake: () => void = () => undefined;
    const next = () => new Promise<void>((resolve) => (wake = resolve));
    let arrived = next();
    const live = gear.where('price', '<', 1000).aggregate({ n: count(), total: sum('price') }, { groupBy: ['status'] });
    const stop = live.onSnapshot((groups) => {
      expectTypeOf(groups[0]!.values).toEqualTypeOf<{ n: number | null; total: number | null }>();
      snapshots.push(groups);
      wake();
    });
    await arrived;
    expect(snapshots.at(-1)).toEqual([
      { key: { status: 'new' }, values: { n: 2, total: 250 } },
      { key: { status: 'used' }, values: { n: 1, total: 20 } },
    ]);
    // The same aggregation awaited gives the same groups.
    expect(await live).toEqual(snapshots.at(-1));

    arrived = next();
    await gear.add({ name: 'Lantern', status: 'used', price: 15 }, { id: 'lantern' });
    await arrived;
    expect(snapshots.at(-1)).toEqual([
      { key: { status: 'new' }, values: { n: 2, total: 250 } },
      { key: { status: 'used' }, values: { n: 2, total: 35 } },
    ]);

    stop();
    const seen = snapshots.length;
    await gear.add({ name: 'Mug', status: 'used', price: 5 }, { id: 'mug' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(snapshots).toHaveLength(seen);
  });

  it('a refused live aggregate reaches the error callback with its catalogue code', async () => {
    const error = await new Promise<BasaltError>((resolve) => {
      client.db
        .collection('gear')
        .aggregate({ n: ['median' as 'count'] })
        .onSnapshot(() => undefined, resolve);
    });
    expect(error).toBeInstanceOf(BasaltError);
    expect(error.code).toBe('INVALID_REQUEST');
  });
});
