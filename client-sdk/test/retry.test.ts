import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BasaltError, createClient } from '../src/index.js';

// A server that answers the first `failures` requests with `status` (and `Retry-After` when
// set), then 200 with a document: enough to watch the SDK's retries on the wire.
let server: http.Server;
let url: string;
let hits: Array<{ method: string; at: number }> = [];
let failures = 0;
let status = 503;
let retryAfter: string | null = null;

beforeAll(async () => {
  server = http.createServer((request, response) => {
    hits.push({ method: request.method ?? '', at: Date.now() });
    request.resume();
    if (hits.length <= failures) {
      const code = status === 429 ? 'RATE_LIMITED' : 'UNAVAILABLE';
      response.writeHead(status, {
        'content-type': 'application/json',
        ...(retryAfter !== null ? { 'retry-after': retryAfter } : {}),
      });
      response.end(JSON.stringify({ error: { code, message: 'busy' } }));
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ id: 'a', collection: 'notes', data: { ok: true } }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  hits = [];
  failures = 0;
  status = 503;
  retryAfter = null;
});

function client(retry?: { attempts?: number; maxDelayMs?: number } | false) {
  return createClient(url, { persistSession: false, ...(retry !== undefined ? { retry } : {}) });
}

describe('retries of idempotent calls', () => {
  it('retries a GET answered 503, waiting as Retry-After asks', async () => {
    failures = 1;
    retryAfter = '1';
    const doc = await client().db.collection('notes').doc('a').get();
    expect(doc?.data).toEqual({ ok: true });
    expect(hits.map((hit) => hit.method)).toEqual(['GET', 'GET']);
    expect((hits[1]?.at ?? 0) - (hits[0]?.at ?? 0)).toBeGreaterThanOrEqual(950);
  });

  it('retries PUT and DELETE on 429 with backoff, at most `attempts` times', async () => {
    failures = 1;
    status = 429;
    await client().db.collection('notes').doc('a').set({ ok: true });
    expect(hits.map((hit) => hit.method)).toEqual(['PUT', 'PUT']);
    hits = [];
    failures = 10;
    const refused = await client({ attempts: 3 })
      .db.collection('notes')
      .doc('a')
      .delete()
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BasaltError);
    expect((refused as BasaltError).code).toBe('RATE_LIMITED');
    expect(hits.map((hit) => hit.method)).toEqual(['DELETE', 'DELETE', 'DELETE']);
  });

  it('never retries a POST, nor past the longest wait, nor when turned off', async () => {
    failures = 1;
    const posted = await client()
      .db.collection('notes')
      .add({ ok: true })
      .catch((error: unknown) => error);
    expect((posted as BasaltError).code).toBe('UNAVAILABLE');
    expect(hits).toHaveLength(1);
    hits = [];
    failures = 1;
    retryAfter = '60';
    const later = await client({ maxDelayMs: 2_000 })
      .db.collection('notes')
      .doc('a')
      .get()
      .catch((error: unknown) => error);
    expect((later as BasaltError).code).toBe('UNAVAILABLE');
    expect(hits).toHaveLength(1);
    hits = [];
    failures = 1;
    retryAfter = null;
    const off = await client(false)
      .db.collection('notes')
      .doc('a')
      .get()
      .catch((error: unknown) => error);
    expect((off as BasaltError).status).toBe(503);
    expect(hits).toHaveLength(1);
  });
});
