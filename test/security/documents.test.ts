/**
 * Attacks on the documents surface (/v1/db, /v1/admin/collections) and on the JSON entry
 * every route shares. Bob is the attacker; Alice owns documents Bob may neither read nor
 * change. The promise: whatever Bob sends about Alice's document, he gets exactly what an id
 * that does not exist gets, before anything that depends on the stored data is checked.
 */
import pg from 'pg';
import { expect } from 'vitest';
import { errorCode, request, waitFor, type TestApp } from '../helpers.js';
import { signUp, type SignedUp } from '../auth-helpers.js';
import { createCollection, type Doc } from '../documents-support.js';
import { orderFingerprint } from '../../server/modules/documents/query.js';
import { securitySuite, type HttpResult } from './harness.js';

/** Small enough that a PATCH can push Alice's stored document over it. */
const MAX_DOCUMENT_BYTES = 4096;
const HOSTILE_DEPTH = 6000;

interface Fixture {
  alice: SignedUp;
  bob: SignedUp;
  /** Alice's account: a hidden balance, a 2,000-byte note and a secret. */
  account: Doc;
  /** Alice's account whose balance is near the largest double. */
  hugeAccount: Doc;
  secret: string;
}

const OWNER_ONLY = {
  read: 'auth != null && doc.owner == auth.uid',
  create: 'auth != null && incoming.owner == auth.uid',
  update: 'auth != null && doc.owner == auth.uid',
  delete: 'auth != null && doc.owner == auth.uid',
};

const MISSING_ID = 'no-such-account';

/** `[[[…1…]]]` nested `depth` deep, as raw JSON text (JSON.stringify of it would recurse). */
function nestedArrayJson(depth: number): string {
  return `${'['.repeat(depth)}1${']'.repeat(depth)}`;
}

function nestedObjectJson(depth: number): string {
  return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** An answer with ids blanked, so a hidden document's answer can be compared with a missing one's. */
function normalized(result: HttpResult, ids: string[]): unknown {
  let text = result.text;
  for (const id of ids) text = text.replaceAll(id, '<id>');
  return { status: result.status, body: text };
}

function send(
  server: TestApp,
  user: SignedUp | null,
  method: string,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
) {
  return request(server.url, method, path, { body, token: user?.token, headers });
}

/**
 * Sends the same request about Alice's document and about a missing id, as Bob, and asserts
 * both answers are the same 404 — the attacker learns nothing, not even that the id exists.
 */
async function expectSameAsMissing(
  server: TestApp,
  fixture: Fixture,
  build: (id: string) => { method: string; path: string; body?: unknown; headers?: Record<string, string> },
  hiddenId = fixture.account.id,
): Promise<void> {
  const hidden = build(hiddenId);
  const missing = build(MISSING_ID);
  const onHidden = await send(server, fixture.bob, hidden.method, hidden.path, hidden.body, hidden.headers);
  const onMissing = await send(server, fixture.bob, missing.method, missing.path, missing.body, missing.headers);
  expect(onHidden.status, onHidden.text).toBe(404);
  expect(errorCode(onHidden.body)).toBe('NOT_FOUND');
  expect(normalized(onHidden, [hiddenId, MISSING_ID])).toEqual(normalized(onMissing, [hiddenId, MISSING_ID]));
  expect(onHidden.text).not.toContain(fixture.secret);
}

async function expectUnchanged(server: TestApp, fixture: Fixture, id = fixture.account.id): Promise<void> {
  const stored = await send(server, fixture.alice, 'GET', `/v1/db/accounts/${id}`);
  expect(stored.status).toBe(200);
  const original = id === fixture.account.id ? fixture.account : fixture.hugeAccount;
  expect((stored.body as Doc).version).toBe(original.version);
  expect((stored.body as Doc).data).toEqual(original.data);
}

const patchAccount = (data: unknown, headers?: Record<string, string>) => (id: string) => ({
  method: 'PATCH',
  path: `/v1/db/accounts/${id}`,
  body: { data },
  headers,
});

const batchOf = (op: Record<string, unknown>) => (id: string) => ({
  method: 'POST',
  path: '/v1/db/batch',
  body: { ops: [{ collection: 'accounts', id, ...op }] },
});

securitySuite<Fixture>({
  surface: 'documents',
  env: { BASALT_MAX_DOCUMENT_BYTES: String(MAX_DOCUMENT_BYTES) },
  async setup(server) {
    await createCollection(server, {
      name: 'accounts',
      rules: OWNER_ONLY,
      schema: {
        type: 'object',
        properties: { balance: { type: 'number', minimum: 0 }, note: { type: 'string' } },
      },
    });
    await createCollection(server, { name: 'notes', rules: { read: 'true', create: 'true' } });
    // Write-only for everyone signed in: anyone may vote, only the owner reads the tally.
    await createCollection(server, {
      name: 'ballots',
      rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null', update: 'auth != null' },
      schema: { type: 'object', properties: { votes: { type: 'number', maximum: 100 } } },
    });
    const [alice, bob] = await Promise.all([signUp(server.url), signUp(server.url)]);
    const secret = `alice-secret-${Date.now()}`;
    const created = await send(server, alice, 'POST', '/v1/db/accounts', {
      id: 'alice-account',
      data: { balance: 1000, note: 'n'.repeat(2000), secret },
    });
    expect(created.status, created.text).toBe(201);
    const ballot = await send(server, alice, 'POST', '/v1/db/ballots', {
      id: 'alice-ballot',
      data: { votes: 90, note: 'n'.repeat(2000), secret },
    });
    expect(ballot.status, ballot.text).toBe(201);
    const huge = await send(server, alice, 'POST', '/v1/db/accounts', {
      id: 'alice-huge',
      data: { balance: 1.7e308, secret },
    });
    expect(huge.status, huge.text).toBe(201);
    // Bob has an account too, so his queries have something to return.
    expect((await send(server, bob, 'POST', '/v1/db/accounts', { data: { balance: 5 } })).status).toBe(201);
    return { alice, bob, account: created.body as Doc, hugeAccount: huge.body as Doc, secret };
  },
  tokenOf: (fixture, actor) =>
    actor === 'alice' ? fixture.alice.token : actor === 'bob' ? fixture.bob.token : undefined,
  attacks: [
    // -- writes to a document the attacker may neither read nor update ------------------------
    {
      name: 'binary search on a hidden number with $increment: every step answers as a missing id',
      source: 'issue 15 #2',
      async run(fixture, server) {
        // The schema says balance >= 0: a step past the balance would fail the schema if it ran first.
        for (const step of [1, 999, 1000, 1001, 1_000_000]) {
          await expectSameAsMissing(server, fixture, patchAccount({ balance: { $increment: -step } }));
        }
        await expectUnchanged(server, fixture);
      },
    },
    {
      name: 'PATCH that fails the schema on a hidden document: 404, no schema issues',
      source: 'issue 15 #2',
      request: (f) => ({
        method: 'PATCH',
        path: `/v1/db/accounts/${f.account.id}`,
        as: 'bob',
        body: { data: { balance: { $increment: -5000 } } },
      }),
      status: 404,
      code: 'NOT_FOUND',
      mustNotContain: (f) => ['minimum', 'issues', f.secret],
    },
    {
      name: 'size probe: a PATCH pushing a hidden document over the limit answers 404, not 413 with its size',
      source: 'issue 15 #2',
      async run(fixture, server) {
        const filler = 'x'.repeat(MAX_DOCUMENT_BYTES - 1500);
        await expectSameAsMissing(server, fixture, patchAccount({ filler }));
        const answer = await send(server, fixture.bob, 'PATCH', `/v1/db/accounts/${fixture.account.id}`, {
          data: { filler },
        });
        expect(answer.text).not.toContain('size');
        await expectUnchanged(server, fixture);
      },
    },
    {
      name: '$increment overflow on a hidden number near the largest double: 404',
      source: 'issue 15 #2',
      async run(fixture, server) {
        await expectSameAsMissing(
          server,
          fixture,
          patchAccount({ balance: { $increment: 1e308 } }),
          fixture.hugeAccount.id,
        );
        await expectUnchanged(server, fixture, fixture.hugeAccount.id);
      },
    },
    {
      name: 'array transforms on a hidden document ($array_union, $array_remove, $delete): 404',
      source: 'issue 15 #2',
      async run(fixture, server) {
        await expectSameAsMissing(server, fixture, patchAccount({ tags: { $array_union: ['x'.repeat(3000)] } }));
        await expectSameAsMissing(server, fixture, patchAccount({ tags: { $array_remove: [1] } }));
        await expectSameAsMissing(server, fixture, patchAccount({ balance: { $delete: true } }));
        await expectSameAsMissing(server, fixture, patchAccount({ stamp: { $server_timestamp: true } }));
        await expectUnchanged(server, fixture);
      },
    },
    {
      name: 'batch update: the same probes through /v1/db/batch answer as a missing id',
      source: 'issue 15 #2',
      async run(fixture, server) {
        await expectSameAsMissing(server, fixture, batchOf({ op: 'update', data: { balance: { $increment: -5000 } } }));
        await expectSameAsMissing(server, fixture, batchOf({ op: 'update', data: { balance: { $increment: -1 } } }));
        await expectSameAsMissing(
          server,
          fixture,
          batchOf({ op: 'update', data: { filler: 'x'.repeat(MAX_DOCUMENT_BYTES - 1500) } }),
        );
        await expectSameAsMissing(
          server,
          fixture,
          batchOf({ op: 'update', data: { balance: { $increment: 1e308 } } }),
          fixture.hugeAccount.id,
        );
        await expectUnchanged(server, fixture);
      },
    },
    {
      name: 'version probing with If-Match / if_version on a hidden document: 404 for every version',
      source: 'issue 15 #2',
      async run(fixture, server) {
        for (const version of [1, 2, 3]) {
          const ifMatch = { 'if-match': String(version) };
          await expectSameAsMissing(server, fixture, patchAccount({ balance: { $increment: -1 } }, ifMatch));
          await expectSameAsMissing(server, fixture, patchAccount({ balance: { $increment: -5000 } }, ifMatch));
          await expectSameAsMissing(server, fixture, (id) => ({
            method: 'DELETE',
            path: `/v1/db/accounts/${id}`,
            headers: ifMatch,
          }));
          await expectSameAsMissing(server, fixture, batchOf({ op: 'update', data: { b: 1 }, if_version: version }));
          await expectSameAsMissing(server, fixture, batchOf({ op: 'delete', if_version: version }));
        }
        await expectUnchanged(server, fixture);
      },
    },
    {
      name: 'PUT over a hidden document (replace, with bad data, oversized, with If-Match): 404, unchanged',
      source: 'issue 15 #2',
      async run(fixture, server) {
        const path = `/v1/db/accounts/${fixture.account.id}`;
        for (const [data, headers] of [
          [{ balance: 1 }, {}],
          [{ balance: -1 }, {}],
          [{ filler: 'x'.repeat(MAX_DOCUMENT_BYTES + 10) }, {}],
          [{ balance: 1 }, { 'if-match': '1' }],
          [{ balance: 1 }, { 'if-match': '7' }],
        ] as const) {
          const answer = await send(server, fixture.bob, 'PUT', path, { data }, headers);
          expect(answer.status, answer.text).toBe(404);
          expect(errorCode(answer.body)).toBe('NOT_FOUND');
          const batch = await send(server, fixture.bob, 'POST', '/v1/db/batch', {
            ops: [
              {
                op: 'set',
                collection: 'accounts',
                id: fixture.account.id,
                data,
                ...('if-match' in headers ? { if_version: Number(headers['if-match']) } : {}),
              },
            ],
          });
          expect(batch.status, batch.text).toBe(404);
        }
        await expectUnchanged(server, fixture);
      },
    },
    {
      name: 'a write-only caller learns whether the write fits, never the stored size or schema issues',
      source: 'issue 15 #2',
      async run(fixture, server) {
        const path = '/v1/db/ballots/alice-ballot';
        const tooMany = await send(server, fixture.bob, 'PATCH', path, { data: { votes: { $increment: 20 } } });
        expect(tooMany.status, tooMany.text).toBe(400);
        expect(errorCode(tooMany.body)).toBe('INVALID_REQUEST');
        expect((tooMany.body as { error: { details?: unknown } }).error.details).toBeUndefined();
        const tooBig = await send(server, fixture.bob, 'PATCH', path, {
          data: { filler: 'x'.repeat(MAX_DOCUMENT_BYTES - 1500) },
        });
        expect(tooBig.status, tooBig.text).toBe(413);
        expect((tooBig.body as { error: { details?: unknown } }).error.details).toEqual({
          max_bytes: MAX_DOCUMENT_BYTES,
        });
        expect(tooBig.text).not.toContain('"size"');
        const vote = await send(server, fixture.bob, 'PATCH', path, { data: { votes: { $increment: 1 } } });
        expect(vote.status, vote.text).toBe(200);
        expect((vote.body as { data: unknown }).data).toBeNull();
        expect(vote.text).not.toContain(fixture.secret);
      },
    },
    {
      name: 'DELETE of a hidden document: 404 as a missing id, still there',
      request: (f) => ({ method: 'DELETE', path: `/v1/db/accounts/${f.account.id}`, as: 'bob' }),
      status: 404,
      code: 'NOT_FOUND',
      check: async (_result, fixture, server) => expectUnchanged(server, fixture),
    },
    {
      name: 'GET of a hidden document: 404',
      request: (f) => ({ method: 'GET', path: `/v1/db/accounts/${f.account.id}`, as: 'bob' }),
      status: 404,
      code: 'NOT_FOUND',
      mustNotContain: (f) => [f.secret],
    },
    {
      name: 'a user cannot choose the owner of a new document (planting one in another account)',
      request: (f) => ({
        method: 'POST',
        path: '/v1/db/accounts',
        as: 'bob',
        body: { owner: f.alice.id, data: { balance: 1 } },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },

    // -- reads: filters, order and cursors over hidden documents --------------------------------
    {
      name: 'query filters on hidden fields match only readable documents',
      request: (f) => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: {
          where: [
            {
              or: [
                ['secret', '==', f.secret],
                ['balance', '>=', 1000],
                ['owner', '==', f.alice.id],
              ],
            },
          ],
        },
      }),
      status: 200,
      mustNotContain: (f) => [f.secret, f.alice.id],
      check: (result) => expect((result.body as { docs: Doc[] }).docs).toEqual([]),
    },
    {
      name: 'count with a filter on a hidden field counts only readable documents',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/count',
        as: 'bob',
        body: { where: [['balance', '>', 100]] },
      }),
      status: 200,
      check: (result) => expect(result.body).toEqual({ count: 0 }),
    },
    {
      name: 'order_by a hidden field returns only readable documents, so their order tells nothing',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: { order_by: [['balance', 'desc']], limit: 1000 },
      }),
      status: 200,
      mustNotContain: (f) => [f.secret, f.alice.id],
      check: (result, fixture) => {
        const docs = (result.body as { docs: Doc[] }).docs;
        expect(docs.length).toBe(1);
        expect(docs.every((doc) => doc.owner === fixture.bob.id)).toBe(true);
      },
    },
    {
      name: 'a forged cursor placed just before a hidden document does not page into it',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: {
          order_by: [['balance', 'desc']],
          after: Buffer.from(JSON.stringify({ v: [[1001]], id: 'a' })).toString('base64url'),
        },
      }),
      status: 200,
      mustNotContain: (f) => [f.secret, f.alice.id, f.account.id],
      check: (result, fixture) => {
        const docs = (result.body as { docs: Doc[] }).docs;
        expect(docs.every((doc) => doc.owner === fixture.bob.id)).toBe(true);
      },
    },

    {
      name: 'a cursor made under another order_by (same field, other direction) is refused, not read in reverse',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: {
          order_by: [['balance', 'desc']],
          after: Buffer.from(
            JSON.stringify({
              v: [[1001]],
              id: 'a',
              o: orderFingerprint([{ field: { kind: 'data', path: ['balance'] }, direction: 'asc' }]),
            }),
          ).toString('base64url'),
        },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      mustNotContain: (f) => [f.secret, f.alice.id, f.account.id],
      check: (result) => {
        expect((result.body as { error: { details: unknown } }).error.details).toEqual({
          field: 'after',
          reason: 'order_by_mismatch',
        });
      },
    },
    {
      name: 'a wrong method on a document path answers 405 with Allow and runs no handler',
      request: (f) => ({ method: 'POST', path: `/v1/db/accounts/${f.account.id}`, as: 'bob', body: { data: {} } }),
      status: 405,
      code: 'METHOD_NOT_ALLOWED',
      mustNotContain: (f) => [f.secret],
      check: async (result, fixture, server) => {
        expect(result.headers.get('allow')).toBe('GET, HEAD, PUT, PATCH, DELETE');
        const stored = await request(server.url, 'GET', `/v1/db/accounts/${fixture.account.id}`, {
          token: server.serviceKey,
        });
        expect((stored.body as Doc).version).toBe(fixture.account.version);
      },
    },
    {
      name: 'select of a hidden field, paged from the end, returns only readable documents',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: { select: ['secret', 'balance', 'note'], order_by: [['balance', 'asc']], limit_to_last: 1000 },
      }),
      status: 200,
      mustNotContain: (f) => [f.secret, f.alice.id, f.account.id],
      check: (result, fixture) => {
        const body = result.body as { docs: Doc[]; prev_cursor: string | null };
        expect(body.docs.map((doc) => doc.owner)).toEqual([fixture.bob.id]);
        expect(body.docs[0]?.data).toEqual({ balance: 5 });
        expect(body.prev_cursor).toBeNull();
      },
    },
    {
      name: 'a forged before cursor placed just after a hidden document does not page back into it',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: {
          order_by: [['balance', 'asc']],
          limit_to_last: 5,
          before: Buffer.from(JSON.stringify({ v: [[1001]], id: 'z' })).toString('base64url'),
        },
      }),
      status: 200,
      mustNotContain: (f) => [f.secret, f.alice.id, f.account.id],
      check: (result, fixture) => {
        const docs = (result.body as { docs: Doc[] }).docs;
        expect(docs.every((doc) => doc.owner === fixture.bob.id)).toBe(true);
      },
    },
    {
      name: 'select paths that are not paths, or too many of them: 400',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: { select: ['__proto__.x', '$where', 'a..b'] },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'limit_to_last beyond the maximum is refused, not clamped',
      request: () => ({
        method: 'POST',
        path: '/v1/db/accounts/query',
        as: 'bob',
        body: { limit_to_last: 1_000_000 },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },

    // -- hostile JSON: depth, NUL, prototype keys --------------------------------------------------
    {
      name: `a query value nested ${HOSTILE_DEPTH} deep: 400`,
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes/query',
        as: 'bob',
        rawBody: `{"where":[["a","==",${nestedArrayJson(HOSTILE_DEPTH)}]]}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: `a query value nested ${HOSTILE_DEPTH} deep inside an object: 400`,
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes/count',
        as: 'bob',
        rawBody: `{"where":[["a","in",[${nestedObjectJson(HOSTILE_DEPTH)}]]]}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a cursor whose JSON nests deep: 400',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes/query',
        as: 'bob',
        body: {
          order_by: [['a', 'asc']],
          after: Buffer.from(`{"v":[[${nestedArrayJson(HOSTILE_DEPTH)}]],"id":"x"}`).toString('base64url'),
        },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a query value past the user-JSON depth but inside the body limit: 400 naming the value',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes/query',
        as: 'bob',
        rawBody: `{"where":[["a","==",${nestedArrayJson(100)}]]}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      check: (result) =>
        expect((result.body as { error: { details: unknown } }).error.details).toEqual({
          field: 'where[0][2]',
          max_depth: 64,
        }),
    },
    {
      name: 'document data past the user-JSON depth but inside the body limit: 400',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes',
        as: 'bob',
        rawBody: `{"data":${nestedObjectJson(100)}}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: `document data nested ${HOSTILE_DEPTH} deep: 400`,
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes',
        as: 'bob',
        rawBody: `{"data":{"a":${nestedArrayJson(HOSTILE_DEPTH)}}}`,
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: `every JSON route refuses a body nested ${HOSTILE_DEPTH} deep before it runs, with details`,
      source: 'issue 15 #9',
      async run(fixture, server) {
        const targets: Array<{ method: string; path: string; token?: string; body: string }> = [
          { method: 'POST', path: '/v1/db/batch', body: `{"ops":${nestedArrayJson(HOSTILE_DEPTH)}}` },
          {
            method: 'POST',
            path: '/v1/auth/signup',
            body: `{"email":"deep@example.com","password":"Correct-Horse-42","data":${nestedObjectJson(HOSTILE_DEPTH)}}`,
          },
          {
            method: 'PATCH',
            path: '/v1/auth/user',
            token: fixture.bob.token,
            body: `{"data":${nestedObjectJson(HOSTILE_DEPTH)}}`,
          },
          {
            method: 'POST',
            path: '/v1/admin/collections',
            token: server.serviceKey,
            body: `{"name":"deep","schema":${nestedObjectJson(HOSTILE_DEPTH)}}`,
          },
          { method: 'POST', path: '/v1/db/notes', body: nestedArrayJson(HOSTILE_DEPTH) },
        ];
        for (const target of targets) {
          const answer = await request(server.url, target.method, target.path, {
            rawBody: target.body,
            token: target.token,
            headers: { 'content-type': 'application/json; charset=utf-8' },
          });
          expect(answer.status, `${target.method} ${target.path}: ${answer.text.slice(0, 300)}`).toBe(400);
          expect(errorCode(answer.body)).toBe('INVALID_REQUEST');
          expect((answer.body as { error: { details?: { max_depth?: number } } }).error.details?.max_depth).toBeTypeOf(
            'number',
          );
        }
        expect(
          (await request(server.url, 'GET', '/v1/admin/collections/deep', { token: server.serviceKey })).status,
        ).toBe(404);
      },
    },
    {
      name: 'the body check leaves legitimate bodies alone: the deepest data a document takes, in a batch; emoji escapes',
      source: 'issue 15 #9',
      async run(fixture, server) {
        // 63 objects around a value: the deepest data the documents module accepts.
        const deepest = nestedObjectJson(63);
        const batch = await request(server.url, 'POST', '/v1/db/batch', {
          token: fixture.bob.token,
          rawBody: `{"ops":[{"op":"create","collection":"notes","id":"deepest","data":${deepest}}]}`,
          headers: { 'content-type': 'application/json; charset=utf-8' },
        });
        expect(batch.status, batch.text).toBe(200);
        const emoji = await request(server.url, 'POST', '/v1/db/notes', {
          token: fixture.bob.token,
          rawBody: '{"data":{"text":"\\\\u0000 is not NUL here: \\ud83d\\ude00"}}',
          headers: { 'content-type': 'application/json' },
        });
        expect(emoji.status, emoji.text).toBe(201);
        expect((emoji.body as Doc).data.text).toBe('\\u0000 is not NUL here: \u{1F600}');
      },
    },
    {
      name: 'NUL escaped in any JSON body (here sign-up metadata): 400 naming the field, before the route runs',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/auth/signup',
        rawBody: '{"email":"nul@example.com","password":"Correct-Horse-42","data":{"bio":"a\\u0000b"}}',
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      check: (result) =>
        expect((result.body as { error: { details: unknown } }).error.details).toEqual({ field: 'body.data.bio' }),
    },
    {
      name: 'NUL in a data value: 400',
      source: 'issue 15 #9',
      request: () => ({ method: 'POST', path: '/v1/db/notes', as: 'bob', body: { data: { text: 'a\u0000b' } } }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'NUL in a field name: 400',
      source: 'issue 15 #9',
      request: () => ({ method: 'POST', path: '/v1/db/notes', as: 'bob', body: { data: { 'a\u0000b': 1 } } }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an unpaired surrogate in nested data: 400',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes',
        as: 'bob',
        rawBody: '{"data":{"list":[{"text":"\\ud800"}]}}',
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'NUL in a PATCH transform operand: 400',
      source: 'issue 15 #9',
      request: (f) => ({
        method: 'PATCH',
        path: `/v1/db/accounts/${f.account.id}`,
        as: 'alice',
        body: { data: { tags: { $array_union: ['a\u0000'] } } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'NUL in a query value: 400',
      source: 'issue 15 #9',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes/query',
        as: 'bob',
        body: { where: [['text', '==', 'a\u0000']] },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'NUL in the owner the service key names: 400',
      source: 'issue 15 #9',
      request: () => ({ method: 'POST', path: '/v1/db/notes', as: 'service', body: { owner: 'a\u0000b', data: {} } }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a "__proto__" key anywhere in a body: 400, no prototype change',
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes',
        as: 'bob',
        rawBody: '{"data":{"x":{"__proto__":{"polluted":true}}}}',
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      check: () => expect(({} as Record<string, unknown>).polluted).toBeUndefined(),
    },

    // -- collection schemas that cannot run --------------------------------------------------------
    {
      name: 'a collection schema with $async is refused when saved',
      source: 'issue 15 #13',
      request: () => ({
        method: 'POST',
        path: '/v1/admin/collections',
        as: 'service',
        body: { name: 'async_schema', schema: { $async: true, type: 'object', required: ['x'] } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      check: (result) => expect(result.text).toContain('$async'),
    },
    {
      name: 'a schema change to $async (nested too) is refused and the old schema stays',
      source: 'issue 15 #13',
      async run(fixture, server) {
        for (const schema of [
          { $async: true, type: 'object' },
          { type: 'object', properties: { a: { $async: true, type: 'string' } } },
        ]) {
          const answer = await request(server.url, 'PATCH', '/v1/admin/collections/accounts', {
            token: server.serviceKey,
            body: { schema },
          });
          expect(answer.status, answer.text).toBe(400);
          expect(errorCode(answer.body)).toBe('INVALID_REQUEST');
        }
        // The stored schema still runs: a negative balance is refused for the owner.
        const write = await send(server, fixture.alice, 'PATCH', '/v1/db/accounts/alice-account', {
          data: { balance: -1 },
        });
        expect(write.status).toBe(400);
      },
    },
    {
      name: 'a $async schema stored before the check refuses writes instead of skipping validation (or crashing)',
      source: 'issue 15 #13',
      async run(fixture, server) {
        await createCollection(server, {
          name: 'legacy_async',
          rules: { read: 'true', create: 'true' },
          schema: { type: 'object', required: ['x'] },
        });
        const client = new pg.Client({ connectionString: server.config.databaseUrl });
        await client.connect();
        try {
          await client.query(
            `UPDATE basalt.collections SET schema = '{"$async": true, "type": "object", "required": ["x"]}' WHERE name = 'legacy_async'`,
          );
        } finally {
          await client.end();
        }
        // Such a validator returned a promise: read as "valid", its rejection unhandled.
        const refused = await waitFor('the stored schema to reload', async () => {
          const answer = await send(server, fixture.bob, 'POST', '/v1/db/legacy_async', { data: { x: 1 } });
          return answer.status === 400 ? answer : null;
        });
        expect(errorCode(refused.body)).toBe('INVALID_REQUEST');
        expect(refused.text).toContain('$async');
        const invalid = await send(server, fixture.bob, 'POST', '/v1/db/legacy_async', { data: {} });
        expect(invalid.status).toBe(400);
        expect((await request(server.url, 'GET', '/healthz')).status).toBe(200);
      },
    },
    {
      name: 'schema keywords the validator would skip silently are refused when saved',
      source: 'issue 15 #13',
      async run(_fixture, server) {
        for (const schema of [
          { type: 'object', properties: { email: { type: 'string', format: 'no-such-format' } } },
          { type: 'object', unevaluatedProperties: false },
          { type: 'object', properties: { n: { type: 'number', minimun: 0 } } },
          { type: 'object', properties: { n: { type: 'number', minimum: { $data: '1/m' } } } },
          { type: 'object', discriminator: { propertyName: 'kind' } },
        ]) {
          const answer = await request(server.url, 'POST', '/v1/admin/collections', {
            token: server.serviceKey,
            body: { name: 'skipped_keywords', schema },
          });
          expect(answer.status, `${JSON.stringify(schema)}: ${answer.text}`).toBe(400);
          expect(errorCode(answer.body)).toBe('INVALID_REQUEST');
        }
      },
    },
    // -- expand, aggregate, search, idempotency keys -----------------------------------------
    {
      name: 'expand into a collection the attacker may not read: null (or left out of a list), nothing leaked',
      async run(fixture, server) {
        await createCollection(server, {
          name: 'transfers',
          rules: { read: 'true', create: 'auth != null' },
          refs: { account: 'accounts', accounts: 'accounts' },
        });
        const transfer = await send(server, fixture.alice, 'POST', '/v1/db/transfers', {
          id: 't1',
          data: { account: fixture.account.id, accounts: [fixture.account.id, fixture.hugeAccount.id] },
        });
        expect(transfer.status, transfer.text).toBe(201);
        const got = await send(server, fixture.bob, 'GET', '/v1/db/transfers/t1?expand=account,accounts');
        expect(got.status, got.text).toBe(200);
        expect((got.body as { expand: unknown }).expand).toEqual({ account: null, accounts: [] });
        expect(got.text).not.toContain(fixture.secret);
        const queried = await send(server, fixture.bob, 'POST', '/v1/db/transfers/query', {
          expand: ['account', 'accounts'],
        });
        expect(queried.status).toBe(200);
        expect(queried.text).not.toContain(fixture.secret);
        expect(queried.text).not.toContain('1000');
        // Alice, who may read her accounts, gets them.
        const own = await send(server, fixture.alice, 'GET', '/v1/db/transfers/t1?expand=account');
        expect(own.text).toContain(fixture.secret);
      },
    },
    {
      name: 'aggregates over documents the read rule hides: not counted, not summed, keys not revealed',
      async run(fixture, server) {
        const answer = await send(server, fixture.bob, 'POST', '/v1/db/accounts/aggregate', {
          group_by: ['secret'],
          aggregates: { n: ['count'], total: ['sum', 'balance'], top: ['max', 'balance'] },
        });
        expect(answer.status, answer.text).toBe(200);
        expect(answer.body).toEqual({ groups: [{ key: { secret: null }, values: { n: 1, total: 5, top: 5 } }] });
        expect(answer.text).not.toContain(fixture.secret);
        const anonymous = await send(server, null, 'POST', '/v1/db/accounts/aggregate', {
          aggregates: { n: ['count'] },
        });
        expect(anonymous.body).toEqual({ groups: [{ key: {}, values: { n: 0 } }] });
        // A where on the hidden field cannot probe it either.
        const probe = await send(server, fixture.bob, 'POST', '/v1/db/accounts/aggregate', {
          where: [['balance', '>', 500]],
          aggregates: { n: ['count'] },
        });
        expect(probe.body).toEqual({ groups: [{ key: {}, values: { n: 0 } }] });
      },
    },
    {
      name: 'search text with tsquery operators, SQL and huge strings: read as words, bounded, hidden documents never found',
      async run(fixture, server) {
        await createCollection(server, {
          name: 'diaries',
          rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null' },
          search: { fields: ['text'] },
        });
        const entry = await send(server, fixture.alice, 'POST', '/v1/db/diaries', {
          data: { text: `my password is ${fixture.secret}` },
        });
        expect(entry.status).toBe(201);
        for (const text of [
          fixture.secret,
          'password',
          "password'); DROP TABLE basalt_data.diaries; --",
          'password:* | !x & y <-> z',
          '((((((((((password',
          `"${'password '.repeat(110)}"`.slice(0, 1000),
        ]) {
          const answer = await send(server, fixture.bob, 'POST', '/v1/db/diaries/query', {
            search: text,
            highlight: true,
          });
          expect(answer.status, `${text.slice(0, 40)}: ${answer.text}`).toBe(200);
          expect((answer.body as { docs: unknown[] }).docs).toEqual([]);
        }
        const huge = await send(server, fixture.bob, 'POST', '/v1/db/diaries/query', { search: 'x'.repeat(100_000) });
        expect(huge.status).toBe(400);
        expect(errorCode(huge.body)).toBe('INVALID_REQUEST');
        const mine = await send(server, fixture.alice, 'POST', '/v1/db/diaries/query', { search: 'password' });
        expect((mine.body as { docs: unknown[] }).docs).toHaveLength(1);
      },
    },
    {
      name: 'search paged from the end with forged relevance cursors and select: hidden documents never found',
      async run(fixture, server) {
        // The diaries collection of the row above: alice's entry is hidden from bob.
        const forged = [
          Buffer.from(JSON.stringify({ r: 1e9, id: 'zzz' })).toString('base64url'),
          Buffer.from(JSON.stringify({ r: -1, id: '' })).toString('base64url'),
        ];
        for (const before of forged) {
          const answer = await send(server, fixture.bob, 'POST', '/v1/db/diaries/query', {
            search: 'password',
            limit_to_last: 1000,
            before,
            select: ['text'],
          });
          expect(answer.status, answer.text).toBe(200);
          expect(answer.text).not.toContain(fixture.secret);
          expect((answer.body as { docs: unknown[]; prev_cursor: unknown }).docs).toEqual([]);
        }
        const bad = await send(server, fixture.bob, 'POST', '/v1/db/diaries/query', {
          search: 'password',
          before: 'not a cursor',
        });
        expect(bad.status).toBe(400);
        expect(errorCode(bad.body)).toBe('INVALID_REQUEST');
        const mine = await send(server, fixture.alice, 'POST', '/v1/db/diaries/query', {
          search: 'password',
          limit_to_last: 5,
          select: ['text'],
        });
        expect((mine.body as { docs: Doc[] }).docs.map((doc) => Object.keys(doc.data))).toEqual([['text']]);
      },
    },
    {
      name: 'another user reusing an Idempotency-Key gets neither the first answer nor a block: keys are per caller',
      async run(fixture, server) {
        const key = `key-${Date.now()}`;
        const body = { data: { title: fixture.secret } };
        const first = await send(server, fixture.alice, 'POST', '/v1/db/notes', body, { 'idempotency-key': key });
        expect(first.status).toBe(201);
        const firstId = (first.body as Doc).id;
        const replayed = await send(server, fixture.bob, 'POST', '/v1/db/notes', body, { 'idempotency-key': key });
        expect(replayed.status).toBe(201);
        expect((replayed.body as Doc).id).not.toBe(firstId);
        expect((replayed.body as Doc).owner).toBe(fixture.bob.user.id);
        expect(replayed.headers.get('idempotent-replayed')).toBeNull();
        const other = await send(
          server,
          fixture.bob,
          'POST',
          '/v1/db/notes',
          { data: { x: 1 } },
          {
            'idempotency-key': `${key}-b`,
          },
        );
        expect(other.status).toBe(201);
        const anonymous = await send(server, null, 'POST', '/v1/db/notes', body, { 'idempotency-key': key });
        expect(anonymous.status).toBe(201);
        expect((anonymous.body as Doc).id).not.toBe(firstId);
      },
    },
    ...[256, 4000].map((length) => ({
      name: `an Idempotency-Key of ${length} characters is 400 and runs nothing`,
      request: () => ({
        method: 'POST',
        path: '/v1/db/notes',
        as: 'bob',
        body: { id: `oversized-key-${length}`, data: {} },
        headers: { 'idempotency-key': 'k'.repeat(length) },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      async check(_result: HttpResult, _fixture: Fixture, server: TestApp) {
        const after = await request(server.url, 'GET', `/v1/db/notes/oversized-key-${length}`, {
          token: server.serviceKey,
        });
        expect(after.status).toBe(404);
      },
    })),
  ],
});
