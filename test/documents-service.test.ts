/**
 * The DocumentService without HTTP, as functions (`ctx.db`) and realtime call it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PUBLIC_CALLER, SERVICE_CALLER, type UserCaller } from '../server/internal/caller.js';
import { Database } from '../server/internal/db.js';
import { AppError } from '../server/internal/errors.js';
import { AuditRepository } from '../server/modules/audit/repository.js';
import { AuditLog } from '../server/modules/audit/service.js';
import { CollectionRegistry } from '../server/modules/documents/collection-registry.js';
import { CollectionService } from '../server/modules/documents/collection-service.js';
import { SchemaCompiler } from '../server/modules/documents/schema-compiler.js';
import { matchesQuery, parseQuery } from '../server/modules/documents/query.js';
import { DocumentRepository } from '../server/modules/documents/repository.js';
import { DocumentService } from '../server/modules/documents/service.js';
import { createTestDatabase, silentLogger, type TestDatabase } from './helpers.js';

let database: TestDatabase;
let db: Database;
let registry: CollectionRegistry;
let documents: DocumentService;
let collections: CollectionService;

function user(uid: string): UserCaller {
  return { role: 'authenticated', uid, email: `${uid}@example.com`, sessionId: 's', claims: {}, expiresAt: 2e9 };
}

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (error) {
    return error instanceof AppError ? error.code : `not an AppError: ${String(error)}`;
  }
}

beforeAll(async () => {
  database = await createTestDatabase();
  db = new Database({ url: database.url }, silentLogger);
  const repo = new DocumentRepository(db);
  const schemas = new SchemaCompiler();
  registry = new CollectionRegistry(repo, schemas, { databaseUrl: database.url, log: silentLogger });
  await registry.start();
  documents = new DocumentService(repo, registry, { maxDocumentBytes: 1024 * 1024 });
  const audit = new AuditLog(new AuditRepository(db), { log: silentLogger, retentionDays: 90 });
  collections = new CollectionService(repo, registry, schemas, audit);
  await collections.create(SERVICE_CALLER, {
    name: 'notes',
    rules: {
      read: 'auth != null && doc.owner == auth.uid',
      create: 'auth != null',
      update: 'doc.owner == auth.uid',
      delete: 'doc.owner == auth.uid',
    },
  });
});

afterAll(async () => {
  await registry?.stop();
  await db?.close();
  await database?.drop();
});

describe('DocumentService', () => {
  it('serves the service caller as ctx.db does: every call, no rules', async () => {
    const created = await documents.create(SERVICE_CALLER, 'notes', { data: { n: 1 } });
    expect(created.owner).toBeNull();
    expect((await documents.get(SERVICE_CALLER, 'notes', created.id)).data).toEqual({ n: 1 });
    const { doc, created: wasCreated } = await documents.set(SERVICE_CALLER, 'notes', 'svc-1', { data: { n: 2 } });
    expect(wasCreated).toBe(true);
    expect(doc.version).toBe(1);
    const updated = await documents.update(SERVICE_CALLER, 'notes', 'svc-1', { data: { n: { $increment: 3 } } });
    expect(updated.data?.n).toBe(5);
    const page = await documents.query(SERVICE_CALLER, 'notes', { where: [['n', '>=', 1]], order_by: [['n', 'asc']] });
    expect(page.docs.map((d) => d.data.n)).toEqual([1, 5]);
    expect(await documents.count(SERVICE_CALLER, 'notes', {})).toEqual({ count: 2 });
    await documents.delete(SERVICE_CALLER, 'notes', 'svc-1');
    expect(await code(documents.get(SERVICE_CALLER, 'notes', 'svc-1'))).toBe('NOT_FOUND');
  });

  it('lets only the service key choose an owner', async () => {
    const forAlice = await documents.create(SERVICE_CALLER, 'notes', { id: 'for-alice', data: {}, owner: 'alice' });
    expect(forAlice.owner).toBe('alice');
    expect((await documents.get(user('alice'), 'notes', 'for-alice')).owner).toBe('alice');
    expect(await code(documents.create(user('bob'), 'notes', { data: {}, owner: 'alice' }))).toBe('FORBIDDEN');
    expect(await code(documents.create(SERVICE_CALLER, 'notes', { data: {}, owner: 5 }))).toBe('INVALID_REQUEST');
  });

  it('keeps two users apart on every call', async () => {
    const alice = user('alice');
    const bob = user('bob');
    const doc = await documents.create(alice, 'notes', { id: 'a-private', data: { secret: 1 } });
    expect(doc.owner).toBe('alice');
    expect(await code(documents.get(bob, 'notes', 'a-private'))).toBe('NOT_FOUND');
    expect(await code(documents.update(bob, 'notes', 'a-private', { data: { secret: 2 } }))).toBe('NOT_FOUND');
    expect(await code(documents.delete(bob, 'notes', 'a-private'))).toBe('NOT_FOUND');
    expect(await code(documents.set(bob, 'notes', 'a-private', { data: {} }))).toBe('NOT_FOUND');
    expect((await documents.query(bob, 'notes', {})).docs).toEqual([]);
    expect(await documents.count(bob, 'notes', {})).toEqual({ count: 0 });
    expect(
      await code(
        documents.batch(bob, { ops: [{ op: 'update', collection: 'notes', id: 'a-private', data: { secret: 3 } }] }),
      ),
    ).toBe('NOT_FOUND');
    expect((await documents.get(alice, 'notes', 'a-private')).data).toEqual({ secret: 1 });
    expect(await code(documents.query(PUBLIC_CALLER, 'notes', {}))).toBe('resolved');
    expect((await documents.query(PUBLIC_CALLER, 'notes', {})).docs).toEqual([]);
  });

  it('exposes the compiled read rule and the in-process query semantics realtime uses', async () => {
    const meta = await documents.collections.get('notes');
    const doc = await documents.get(SERVICE_CALLER, 'notes', 'a-private');
    expect(documents.allows(meta, 'read', user('alice'), { doc })).toBe(true);
    expect(documents.allows(meta, 'read', user('bob'), { doc })).toBe(false);
    expect(documents.allows(meta, 'read', SERVICE_CALLER, { doc })).toBe(true);
    expect(matchesQuery(parseQuery({ where: [['secret', '==', 1]] }), doc)).toBe(true);
    expect(matchesQuery(parseQuery({ where: [['owner', '==', 'bob']] }), doc)).toBe(false);
  });

  it('answers NOT_FOUND for a collection that does not exist and INVALID_REQUEST for a bad name', async () => {
    expect(await code(documents.get(SERVICE_CALLER, 'nothing', 'x'))).toBe('NOT_FOUND');
    expect(await code(documents.get(SERVICE_CALLER, 'Bad;Name', 'x'))).toBe('INVALID_REQUEST');
    expect(await code(documents.get(SERVICE_CALLER, 'notes', 'bad id'))).toBe('INVALID_REQUEST');
  });
});
