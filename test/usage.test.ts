import { describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { errorCode, request, startTestApp, useTestApp, waitFor, type SharedTestApp } from './helpers.js';
import { TestSocket } from './realtime-client.js';
import type { FunctionUsageFigures, UsageBucket } from '../server/modules/usage/service.js';

// Two instances on one database, as behind a load balancer; each writes its counts every 200 ms.
const env = { BASALT_USAGE_FLUSH_INTERVAL_MS: '200' };
const FUNCTIONS: Record<string, string> = {
  'ok.ts': `
    import { http } from 'basalt/functions';
    export default http({ memory_mb: 256 }, async () => ({ ok: true }));`,
  'fails.ts': `
    import { http } from 'basalt/functions';
    export default http(async () => { throw new Error('no'); });`,
};
const a = useTestApp({ env, functions: FUNCTIONS });
const b = useTestApp({ env, sharing: a });

type FunctionFigures = FunctionUsageFigures;
type Bucket = UsageBucket;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

async function usage(server: SharedTestApp, query: string): Promise<Bucket[]> {
  const response = await request(server.url, 'GET', `/v1/admin/usage?${query}`, { token: server.serviceKey });
  expect(response.status, response.text).toBe(200);
  return (response.body as { buckets: Bucket[] }).buckets;
}

/** Today and yesterday by the hour: wide enough that a test crossing an hour or a day still sums right. */
function hoursQuery(): string {
  const to = new Date(Math.ceil(Date.now() / HOUR) * HOUR + HOUR).toISOString();
  const from = new Date(Date.now() - DAY).toISOString();
  return `from=${from}&to=${to}&granularity=hour`;
}

interface Totals {
  functions: Record<string, FunctionFigures>;
  reads: number;
  writes: number;
  bytesIn: number;
  bytesOut: number;
  stored: number;
  messages: number;
  peak: number;
}

function totals(buckets: Bucket[]): Totals {
  const sum: Totals = { functions: {}, reads: 0, writes: 0, bytesIn: 0, bytesOut: 0, stored: 0, messages: 0, peak: 0 };
  for (const bucket of buckets) {
    for (const [name, figures] of Object.entries(bucket.functions)) {
      const into = (sum.functions[name] ??= {
        invocations: 0,
        errors: 0,
        cold_starts: 0,
        duration_ms: 0,
        gb_seconds: 0,
      });
      into.invocations += figures.invocations;
      into.errors += figures.errors;
      into.cold_starts += figures.cold_starts;
      into.duration_ms += figures.duration_ms;
      into.gb_seconds += figures.gb_seconds;
    }
    sum.reads += bucket.documents.reads;
    sum.writes += bucket.documents.writes;
    sum.bytesIn += bucket.storage.bytes_in;
    sum.bytesOut += bucket.storage.bytes_out;
    sum.stored = bucket.storage.bytes_stored;
    sum.messages += bucket.realtime.messages;
    sum.peak = Math.max(sum.peak, bucket.realtime.peak_connections);
  }
  return sum;
}

describe('the usage meter', () => {
  it('counts exactly what was done, summed over both instances, by the hour and by the day', async () => {
    // Functions: 3 successful runs on one instance (one cold start), 2 failing on the other (one cold start).
    for (let i = 0; i < 3; i++) expect((await request(a.url, 'GET', '/v1/functions/ok')).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await request(b.url, 'GET', '/v1/functions/fails')).status).toBe(500);

    // Documents: 2 creates and a batch of 2 on a, an update on b: 5 writes; 4 reads.
    const svc = a.serviceKey;
    expect(
      (await request(a.url, 'POST', '/v1/admin/collections', { token: svc, body: { name: 'notes' } })).status,
    ).toBe(201);
    for (const id of ['n1', 'n2']) {
      expect((await request(a.url, 'POST', '/v1/db/notes', { token: svc, body: { id, data: { n: id } } })).status).toBe(
        201,
      );
    }
    const batch = await request(a.url, 'POST', '/v1/db/batch', {
      token: svc,
      body: {
        ops: [
          { op: 'set', collection: 'notes', id: 'n3', data: { n: 3 } },
          { op: 'delete', collection: 'notes', id: 'n2' },
        ],
      },
    });
    expect(batch.status, batch.text).toBe(200);
    expect((await request(b.url, 'PATCH', '/v1/db/notes/n1', { token: svc, body: { data: { m: 1 } } })).status).toBe(
      200,
    );
    expect((await request(b.url, 'GET', '/v1/db/notes/n1', { token: svc })).status).toBe(200);
    expect((await request(a.url, 'GET', '/v1/db/notes/n3', { token: svc })).status).toBe(200);
    // A missing document is no read.
    expect((await request(a.url, 'GET', '/v1/db/notes/n2', { token: svc })).status).toBe(404);
    const query = await request(a.url, 'POST', '/v1/db/notes/query', { token: svc, body: {} });
    expect(query.status, query.text).toBe(200); // two documents: two reads

    // Storage (each instance with its own local store here): 1000 bytes in on a, 500 on b; 1000 out;
    // the 500 removed: 1000 stored.
    expect((await request(a.url, 'POST', '/v1/admin/buckets', { token: svc, body: { name: 'files' } })).status).toBe(
      201,
    );
    const put = (server: SharedTestApp, name: string, size: number) =>
      request(server.url, 'PUT', `/v1/storage/files/${name}`, {
        token: svc,
        headers: { 'content-type': 'application/octet-stream' },
        rawBody: new Uint8Array(size).fill(7),
      });
    expect((await put(a, 'big.bin', 1000)).status).toBe(201);
    expect((await put(b, 'small.bin', 500)).status).toBe(201);
    const got = await request(a.url, 'GET', '/v1/storage/files/big.bin', { token: svc });
    expect(got.status).toBe(200);
    expect((await request(b.url, 'DELETE', '/v1/storage/files/small.bin', { token: svc })).status).toBe(204);

    // Active users: two users with a successful authenticated request, one of them on both
    // instances, and one who only signed up (a session started): 3.
    const first = await signUp(a.url);
    const second = await signUp(b.url);
    await signUp(b.url);
    for (const server of [a, b]) {
      expect((await request(server.url, 'GET', '/v1/auth/user', { token: first.session!.access_token })).status).toBe(
        200,
      );
    }
    expect((await request(a.url, 'GET', '/v1/auth/user', { token: second.session!.access_token })).status).toBe(200);

    // Realtime: two sockets at once on a, one ping each way.
    const one = await TestSocket.open(a.url, { token: svc });
    const two = await TestSocket.open(a.url, { token: svc });
    one.send({ type: 'ping' });
    await one.next((frame) => frame.type === 'pong');
    one.close();
    two.close();

    const expected = (t: Totals) =>
      t.functions.ok?.invocations === 3 &&
      t.functions.fails?.invocations === 2 &&
      t.writes === 5 &&
      t.reads === 4 &&
      t.bytesIn === 1500 &&
      t.stored === 1000 &&
      t.peak === 2;
    // The other instance's counts arrive within its flush interval.
    let hours: Bucket[] = [];
    await waitFor('both instances to write their counts', async () => {
      hours = await usage(a, hoursQuery());
      return expected(totals(hours));
    });
    const byHour = totals(hours);
    expect(byHour.functions.ok).toMatchObject({ invocations: 3, errors: 0, cold_starts: 1 });
    expect(byHour.functions.fails).toMatchObject({ invocations: 2, errors: 2, cold_starts: 1 });
    expect(byHour.functions.ok!.duration_ms).toBeGreaterThan(0);
    expect(byHour.functions.ok!.gb_seconds).toBeCloseTo((byHour.functions.ok!.duration_ms / 1000) * (256 / 1024), 9);
    expect(byHour.functions.fails!.gb_seconds).toBeCloseTo(
      (byHour.functions.fails!.duration_ms / 1000) * (128 / 1024),
      9,
    );
    expect(byHour).toMatchObject({ writes: 5, reads: 4, bytesIn: 1500, bytesOut: 1000, stored: 1000, peak: 2 });
    // The ping and its pong, at least (the sockets' other frames count too).
    expect(byHour.messages).toBeGreaterThanOrEqual(2);
    expect(Math.max(...hours.map((bucket) => bucket.auth.active_users))).toBeLessThanOrEqual(3);
    expect(hours.some((bucket) => bucket.auth.active_users > 0)).toBe(true);
    // Every hour of the range has its bucket, in order.
    for (let i = 1; i < hours.length; i++) {
      expect(Date.parse(hours[i]!.start) - Date.parse(hours[i - 1]!.start)).toBe(HOUR);
    }

    // By the day: the same sums, and the day's distinct users (3, whatever hours they were in).
    const dayFrom = new Date(Math.floor(Date.now() / DAY) * DAY - DAY).toISOString();
    const dayTo = new Date(Math.floor(Date.now() / DAY) * DAY + DAY).toISOString();
    const days = await usage(b, `from=${dayFrom}&to=${dayTo}&granularity=day`);
    expect(days).toHaveLength(2);
    expect(days.map((day) => Date.parse(day.start))).toEqual([Date.parse(dayFrom), Date.parse(dayFrom) + DAY]);
    const byDay = totals(days);
    expect(byDay.functions).toEqual(byHour.functions);
    expect(byDay).toMatchObject({ writes: 5, reads: 4, bytesIn: 1500, bytesOut: 1000, stored: 1000, peak: 2 });
    expect(days.reduce((sum, day) => sum + day.auth.active_users, 0)).toBeGreaterThanOrEqual(3);
    expect(days.at(-1)!.auth.active_users + days[0]!.auth.active_users).toBeLessThanOrEqual(6);
    const today = days.find((day) => Date.parse(day.start) === Math.floor(Date.now() / DAY) * DAY)!;
    if (Date.now() % DAY > 60_000) expect(today.auth.active_users).toBe(3);
  });

  it('keeps bytes_stored right through copies, moves over an object and bulk deletes', async () => {
    const svc = a.serviceKey;
    const stored = async () => totals(await usage(a, hoursQuery())).stored;
    const base = await stored();
    expect((await request(a.url, 'POST', '/v1/admin/buckets', { token: svc, body: { name: 'bulk' } })).status).toBe(
      201,
    );
    for (const [name, size] of [
      ['x1.bin', 300],
      ['x2.bin', 200],
      ['x3.bin', 100],
    ] as const) {
      const put = await request(a.url, 'PUT', `/v1/storage/bulk/${name}`, {
        token: svc,
        headers: { 'content-type': 'application/octet-stream' },
        rawBody: new Uint8Array(size).fill(1),
      });
      expect(put.status).toBe(201);
    }
    await waitFor('the uploads measured', async () => (await stored()) === base + 600);

    const copied = await request(a.url, 'POST', '/v1/storage/copy', {
      token: svc,
      body: { bucket: 'bulk', from: 'x1.bin', to: 'c1.bin' },
    });
    expect(copied.status, copied.text).toBe(201);
    await waitFor('the copy measured', async () => (await stored()) === base + 900);

    // A move over an existing object removes that object's bytes.
    const moved = await request(a.url, 'POST', '/v1/storage/move', {
      token: svc,
      body: { bucket: 'bulk', from: 'x2.bin', to: 'x3.bin', upsert: true },
    });
    expect(moved.status, moved.text).toBe(200);
    await waitFor('the replacing move measured', async () => (await stored()) === base + 800);

    const removed = await request(a.url, 'DELETE', '/v1/storage/bulk', {
      token: svc,
      body: { paths: ['x1.bin', 'c1.bin', 'missing.bin'] },
    });
    expect(removed.status, removed.text).toBe(200);
    await waitFor('the bulk delete measured', async () => (await stored()) === base + 200);

    const dropped = await request(a.url, 'DELETE', '/v1/admin/buckets/bulk?force=true', { token: svc });
    expect(dropped.status, dropped.text).toBe(204);
    await waitFor('the forced bucket delete measured', async () => (await stored()) === base);
  });

  it('writes the counts a stopping instance still held', async () => {
    // An instance that would flush only hourly: what it counted reaches Postgres when it stops.
    const late = await startTestApp(
      a.database,
      { BASALT_USAGE_FLUSH_INTERVAL_MS: '3600000' },
      {
        serviceKey: a.serviceKey,
      },
    );
    const before = totals(await usage(a, hoursQuery())).writes;
    try {
      for (let i = 0; i < 2; i++) {
        const created = await request(late.url, 'POST', '/v1/db/notes', { token: a.serviceKey, body: { data: { i } } });
        expect(created.status).toBe(201);
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(totals(await usage(a, hoursQuery())).writes).toBe(before);
    } finally {
      await late.close();
    }
    expect(totals(await usage(a, hoursQuery())).writes - before).toBe(2);
  });
});

describe('retention', () => {
  it('deletes hours older than 90 days and keeps the others', async () => {
    const old = new Date(Math.floor((Date.now() - 91 * DAY) / HOUR) * HOUR);
    const kept = new Date(Math.floor((Date.now() - 89 * DAY) / HOUR) * HOUR);
    for (const hour of [old, kept]) {
      await a.sql.query('INSERT INTO basalt.usage_hours (hour, document_reads) VALUES ($1, 7)', [hour]);
      await a.sql.query(
        "INSERT INTO basalt.usage_function_hours (hour, function_name, invocations) VALUES ($1, 'ok', 1)",
        [hour],
      );
    }
    // A new instance prunes at its first flush (then about hourly).
    const pruner = await startTestApp(a.database, env, { serviceKey: a.serviceKey });
    try {
      await waitFor('the old hour to be pruned', async () => {
        const { rows } = await a.sql.query('SELECT 1 FROM basalt.usage_hours WHERE hour = $1', [old]);
        return rows.length === 0;
      });
    } finally {
      await pruner.close();
    }
    const { rows } = await a.sql.query<{ hour: Date }>(
      'SELECT hour FROM basalt.usage_function_hours WHERE hour IN ($1, $2)',
      [old, kept],
    );
    expect(rows.map((row) => row.hour.getTime())).toEqual([kept.getTime()]);
    const days = await usage(
      a,
      `from=${kept.toISOString()}&to=${new Date(kept.getTime() + DAY).toISOString()}&granularity=day`,
    );
    expect(days[0]!.documents.reads).toBe(7);
  });
});

describe('GET /v1/admin/usage input', () => {
  it('refuses users, and bad ranges or granularities with 400', async () => {
    const user = await signUp(a.url);
    const denied = await request(a.url, 'GET', '/v1/admin/usage', { token: user.session!.access_token });
    expect(denied.status).toBe(403);
    expect(errorCode(denied.body)).toBe('FORBIDDEN');
    for (const query of [
      'granularity=week',
      'from=yesterday',
      'to=2026-13-45T99:00:00Z',
      'from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z',
      'from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z',
      'from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&granularity=day',
      'extra=1',
    ]) {
      const response = await request(a.url, 'GET', `/v1/admin/usage?${query}`, { token: a.serviceKey });
      expect(response.status, query).toBe(400);
      expect(errorCode(response.body), query).toBe('INVALID_REQUEST');
    }
    // The defaults: the last 24 hours by the hour.
    const buckets = await usage(a, '');
    expect(buckets.length).toBeGreaterThanOrEqual(24);
    expect(buckets.length).toBeLessThanOrEqual(25);
  });
});
