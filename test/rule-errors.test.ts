import { describe, expect, it } from 'vitest';
import { request, useTestApp } from './helpers.js';

const server = useTestApp();

interface RuleErrorBody {
  error: { code: string; message: string; details: Record<string, unknown> };
}

/** Tries to create a collection or a bucket with `source` as its `kind` rule; expects the refusal. */
async function refusal(owner: 'collections' | 'buckets', kind: string, source: string): Promise<RuleErrorBody> {
  const response = await request(server.url, 'POST', `/v1/admin/${owner}`, {
    token: server.serviceKey,
    body: { name: 'ruled', rules: { [kind]: source } },
  });
  expect(response.status, response.text).toBe(400);
  return response.body as RuleErrorBody;
}

/** Saves `source` as a collection's `kind` rule and as a bucket's, and returns both refusals. */
async function refusals(collectionKind: string, bucketKind: string, source: string) {
  return {
    collection: await refusal('collections', collectionKind, source),
    bucket: await refusal('buckets', bucketKind, source),
  };
}

const SHAPE = ['position', 'reason', 'rule', 'source'];

describe('a refused rule has one error shape for collections and buckets', () => {
  const cases: Array<[string, string, string, Record<string, unknown>]> = [
    ['a syntax error', 'auth.uid ==', 'syntax', { position: 11, expected: expect.any(String) }],
    ['an unknown operator', 'auth.uid = "x"', 'syntax', { position: 9 }],
    ['an empty rule', '', 'syntax', { position: 0 }],
    ['a rule over 4096 bytes', `auth.uid == "${'x'.repeat(5000)}"`, 'too_long', {}],
    ['nesting too deep', `${'('.repeat(40)}true${')'.repeat(40)}`, 'too_deep', {}],
  ];
  for (const [name, source, reason, extra] of cases) {
    it(`${name}: INVALID_RULE with {rule, position, reason, source}`, async () => {
      const { collection, bucket } = await refusals('read', 'read', source);
      for (const body of [collection, bucket]) {
        expect(body.error.code).toBe('INVALID_RULE');
        expect(body.error.message).toMatch(/^rules\.read: /);
        expect(body.error.details).toMatchObject({ rule: 'read', reason, ...extra });
        expect(Object.keys(body.error.details)).toEqual(expect.arrayContaining(SHAPE));
        expect(typeof body.error.details.position).toBe('number');
      }
      // The same parser answer through both owners: the same details, key for key.
      expect(bucket.error.details).toEqual(collection.error.details);
      expect(bucket.error.message).toBe(collection.error.message);
    });
  }

  it('a variable the rule cannot see: reason variable_not_available, its position and name', async () => {
    // `object` exists only in bucket rules, `doc` only in collection rules.
    const collection = await refusal('collections', 'read', 'auth != null && object.size < 10');
    const bucket = await refusal('buckets', 'read', 'auth != null && doc.owner == auth.uid');
    expect(collection.error.details).toEqual({
      rule: 'read',
      reason: 'variable_not_available',
      position: 16,
      variable: 'object',
      source: 'auth != null && object.size < 10',
    });
    expect(bucket.error.details).toEqual({
      rule: 'read',
      reason: 'variable_not_available',
      position: 16,
      variable: 'doc',
      source: 'auth != null && doc.owner == auth.uid',
    });
    const incoming = await refusals('delete', 'delete', 'incoming.owner == auth.uid');
    expect(incoming.collection.error.details).toMatchObject({ rule: 'delete', variable: 'incoming', position: 0 });
    expect(incoming.bucket.error.details).toMatchObject({ rule: 'delete', variable: 'incoming', position: 0 });
  });

  it('names the kind that failed, for each kind of each owner', async () => {
    const { collection, bucket } = await refusals('update', 'write', 'auth.uid ==');
    expect(collection.error.details.rule).toBe('update');
    expect(bucket.error.details.rule).toBe('write');
  });

  it('saves neither the collection nor the bucket', async () => {
    await refusals('read', 'read', 'auth.uid ==');
    const token = server.serviceKey;
    expect((await request(server.url, 'GET', '/v1/admin/collections/ruled', { token })).status).toBe(404);
    expect((await request(server.url, 'GET', '/v1/admin/buckets/ruled', { token })).status).toBe(404);
  });
});
