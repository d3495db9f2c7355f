import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileRuleToSql, parseRule } from '../server/internal/rules/index.js';
import { signUp, type SignedUp } from './auth-helpers.js';
import type { Doc } from './documents-support.js';
import { request, useTestApp } from './helpers.js';

/**
 * docs/rules-cookbook.md: every recipe's rules compile with the server's rule engine, and
 * each collection and bucket, created on a real server from the page's own JSON, allows
 * and denies what the page says.
 */

interface Recipe {
  kind: 'collections' | 'buckets';
  body: { name: string; public?: boolean; rules: Record<string, string> };
}

async function recipes(): Promise<Recipe[]> {
  const page = await readFile(path.resolve(import.meta.dirname, '../docs/rules-cookbook.md'), 'utf8');
  const found: Recipe[] = [];
  for (const match of page.matchAll(/^`POST \/v1\/admin\/(collections|buckets)`\n\n```json\n([\s\S]*?)\n```/gm)) {
    found.push({ kind: match[1] as Recipe['kind'], body: JSON.parse(match[2] as string) as Recipe['body'] });
  }
  return found;
}

const server = useTestApp();
let all: Recipe[];
let alice: SignedUp;
let bob: SignedUp;
let carol: SignedUp;

type Caller = SignedUp | null | { token: string };

function as(caller: Caller, method: string, urlPath: string, body?: unknown, headers?: Record<string, string>) {
  return request(server.url, method, urlPath, { body, token: caller?.token, headers });
}

function upload(caller: Caller, bucket: string, objectPath: string, upsert = false) {
  return request(server.url, 'PUT', `/v1/storage/${bucket}/${objectPath}`, {
    token: caller?.token,
    rawBody: new TextEncoder().encode('bytes of a file'),
    headers: { 'content-type': 'application/pdf', ...(upsert ? { 'x-upsert': 'true' } : {}) },
  });
}

const DENIED = [401, 403, 404];

/** A user made by the service key with the given app_metadata, signed in. */
async function userWithClaims(appMetadata: Record<string, unknown>): Promise<{ token: string }> {
  const email = `claims-${randomBytes(6).toString('hex')}@example.com`;
  const password = `Correct-Horse-${randomBytes(8).toString('hex')}`;
  const created = await as({ token: server.serviceKey }, 'POST', '/v1/admin/users', {
    email,
    password,
    email_confirm: true,
    app_metadata: appMetadata,
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const signedIn = await as(null, 'POST', '/v1/auth/signin', { email, password });
  expect(signedIn.status).toBe(200);
  return { token: (signedIn.body as { session: { access_token: string } }).session.access_token };
}

async function queryIds(caller: Caller, collection: string): Promise<string[]> {
  const response = await as(caller, 'POST', `/v1/db/${collection}/query`, {});
  expect(response.status).toBe(200);
  return (response.body as { docs: Doc[] }).docs.map((doc) => doc.id).sort();
}

beforeAll(async () => {
  all = await recipes();
  for (const recipe of all) {
    const created = await as({ token: server.serviceKey }, 'POST', `/v1/admin/${recipe.kind}`, recipe.body);
    expect(created.status, `${recipe.body.name}: ${JSON.stringify(created.body)}`).toBe(201);
  }
  [alice, bob, carol] = await Promise.all([signUp(server.url), signUp(server.url), signUp(server.url)]);
});

describe('every rule of the cookbook compiles', () => {
  it('finds the recipes the page has', () => {
    expect(all.map((recipe) => recipe.body.name)).toEqual([
      'notes',
      'projects',
      'articles',
      'posts',
      'files',
      'avatars',
    ]);
  });

  it('parses each rule and compiles it to SQL for its subject', () => {
    for (const recipe of all) {
      for (const [action, source] of Object.entries(recipe.body.rules)) {
        const rule = parseRule(source);
        const subject = recipe.kind === 'collections' ? 'doc' : 'object';
        expect(rule.variables.has(subject === 'doc' ? 'object' : 'doc'), `${recipe.body.name}.${action}`).toBe(false);
        const sql = compileRuleToSql(rule, { auth: null, now: new Date(), params: [], subject, rowAlias: 'row' });
        expect(sql.length).toBeGreaterThan(0);
      }
    }
  });
});

describe('owner only (notes)', () => {
  it('the owner does everything; another user gets 404; a tokenless caller creates nothing', async () => {
    const created = await as(alice, 'POST', '/v1/db/notes', { id: 'n1', data: { text: 'mine' } });
    expect(created.status).toBe(201);
    expect((await as(alice, 'GET', '/v1/db/notes/n1')).status).toBe(200);
    expect(await queryIds(alice, 'notes')).toEqual(['n1']);
    expect((await as(bob, 'GET', '/v1/db/notes/n1')).status).toBe(404);
    expect((await as(bob, 'PATCH', '/v1/db/notes/n1', { data: { text: 'x' } })).status).toBe(404);
    expect((await as(bob, 'DELETE', '/v1/db/notes/n1')).status).toBe(404);
    expect(await queryIds(bob, 'notes')).toEqual([]);
    expect(DENIED).toContain((await as(null, 'POST', '/v1/db/notes', { data: { text: 'anon' } })).status);
    expect((await as(alice, 'PATCH', '/v1/db/notes/n1', { data: { text: 'edited' } })).status).toBe(200);
    expect((await as(alice, 'DELETE', '/v1/db/notes/n1')).status).toBe(204);
  });
});

describe('team members (projects)', () => {
  it('members read and edit; only the creator changes members or deletes; others see nothing', async () => {
    const refused = await as(alice, 'POST', '/v1/db/projects', { data: { title: 'p', members: [bob.id] } });
    expect(refused.status).toBe(403);
    const members = [alice.id, bob.id];
    expect((await as(alice, 'POST', '/v1/db/projects', { id: 'p1', data: { title: 'p', members } })).status).toBe(201);
    expect((await as(bob, 'GET', '/v1/db/projects/p1')).status).toBe(200);
    expect((await as(bob, 'PATCH', '/v1/db/projects/p1', { data: { title: 'renamed' } })).status).toBe(200);
    expect((await as(bob, 'PATCH', '/v1/db/projects/p1', { data: { members: [bob.id] } })).status).toBe(403);
    expect((await as(bob, 'DELETE', '/v1/db/projects/p1')).status).toBe(403);
    expect((await as(carol, 'GET', '/v1/db/projects/p1')).status).toBe(404);
    expect(await queryIds(carol, 'projects')).toEqual([]);
    expect(await queryIds(bob, 'projects')).toEqual(['p1']);
    const withCarol = [alice.id, bob.id, carol.id];
    expect((await as(alice, 'PATCH', '/v1/db/projects/p1', { data: { members: withCarol } })).status).toBe(200);
    expect((await as(carol, 'GET', '/v1/db/projects/p1')).status).toBe(200);
    expect((await as(alice, 'DELETE', '/v1/db/projects/p1')).status).toBe(204);
  });
});

describe('roles from claims (articles)', () => {
  it('everyone reads published articles; editors write and read drafts; only admins delete', async () => {
    const editor = await userWithClaims({ role: 'editor' });
    const admin = await userWithClaims({ role: 'admin' });
    const published = { title: 'out', published: true };
    expect((await as(editor, 'POST', '/v1/db/articles', { id: 'a1', data: published })).status).toBe(201);
    expect((await as(editor, 'POST', '/v1/db/articles', { id: 'a2', data: { title: 'draft' } })).status).toBe(201);
    expect(await queryIds(null, 'articles')).toEqual(['a1']);
    expect(await queryIds(alice, 'articles')).toEqual(['a1']);
    expect(await queryIds(editor, 'articles')).toEqual(['a1', 'a2']);
    expect((await as(null, 'GET', '/v1/db/articles/a2')).status).toBe(404);
    expect(DENIED).toContain((await as(alice, 'POST', '/v1/db/articles', { data: { title: 'no' } })).status);
    expect(DENIED).toContain((await as(alice, 'PATCH', '/v1/db/articles/a1', { data: { title: 'no' } })).status);
    expect((await as(editor, 'PATCH', '/v1/db/articles/a2', { data: { published: true } })).status).toBe(200);
    expect((await as(editor, 'DELETE', '/v1/db/articles/a2')).status).toBe(403);
    expect((await as(admin, 'DELETE', '/v1/db/articles/a2')).status).toBe(204);
  });
});

describe('public read, owner write (posts)', () => {
  it('published posts are public, drafts their author’s; long titles are refused', async () => {
    expect((await as(alice, 'POST', '/v1/db/posts', { id: 'p1', data: { title: 'hi', published: true } })).status).toBe(
      201,
    );
    expect((await as(alice, 'POST', '/v1/db/posts', { id: 'p2', data: { title: 'draft' } })).status).toBe(201);
    expect(await queryIds(null, 'posts')).toEqual(['p1']);
    expect((await as(null, 'GET', '/v1/db/posts/p2')).status).toBe(404);
    expect(await queryIds(alice, 'posts')).toEqual(['p1', 'p2']);
    expect(await queryIds(bob, 'posts')).toEqual(['p1']);
    expect((await as(bob, 'PATCH', '/v1/db/posts/p1', { data: { title: 'mine now' } })).status).toBe(403);
    expect((await as(alice, 'POST', '/v1/db/posts', { data: { title: 'x'.repeat(201) } })).status).toBe(403);
  });
});

describe('storage: files per user (files, avatars)', () => {
  it('each user reads, lists, overwrites and deletes only their own files, under users/', async () => {
    expect((await upload(alice, 'files', 'users/alice/cv.pdf')).status).toBe(201);
    expect((await upload(bob, 'files', 'users/bob/cv.pdf')).status).toBe(201);
    expect((await upload(alice, 'files', 'elsewhere/cv.pdf')).status).toBe(403);
    expect((await as(alice, 'GET', '/v1/storage/files/users/alice/cv.pdf')).status).toBe(200);
    expect((await as(bob, 'GET', '/v1/storage/files/users/alice/cv.pdf')).status).toBe(403);
    expect((await upload(bob, 'files', 'users/alice/cv.pdf', true)).status).toBe(403);
    expect((await as(bob, 'DELETE', '/v1/storage/files/users/alice/cv.pdf')).status).toBe(403);
    const listed = await as(bob, 'GET', '/v1/storage/files?prefix=users/');
    expect((listed.body as { objects: Array<{ path: string }> }).objects.map((object) => object.path)).toEqual([
      'users/bob/cv.pdf',
    ]);
    expect((await as(alice, 'DELETE', '/v1/storage/files/users/alice/cv.pdf')).status).toBe(204);
  });

  it('a public bucket is read by anyone; writes still follow the rule', async () => {
    const image = await request(server.url, 'PUT', '/v1/storage/avatars/alice.png', {
      token: alice.token,
      rawBody: new TextEncoder().encode('png'),
      headers: { 'content-type': 'image/png' },
    });
    expect(image.status).toBe(201);
    expect((await upload(alice, 'avatars', 'alice.pdf')).status).toBe(403);
    expect((await as(null, 'GET', '/v1/storage/avatars/alice.png')).status).toBe(200);
    expect((await as(null, 'GET', '/v1/storage/avatars')).status).toBe(200);
    expect((await as(bob, 'DELETE', '/v1/storage/avatars/alice.png')).status).toBe(403);
  });
});
