import { describe, expect, it } from 'vitest';
import { signUp } from './auth-helpers.js';
import { createCollection, request, useTestApp } from './helpers.js';
import type { Doc } from './documents-support.js';

const server = useTestApp();

type Expanded = Doc & { expand?: Record<string, Expanded | Expanded[] | null> };

/** Counts the statements the app's pool runs while `work` runs (a query hook on the pool). */
async function countStatements(work: () => Promise<unknown>): Promise<string[]> {
  const pool = server.app.platform.db.pool;
  const original = pool.query;
  const seen: string[] = [];
  pool.query = ((...args: unknown[]) => {
    const first = args[0];
    const text = typeof first === 'string' ? first : ((first as { text?: string }).text ?? '');
    if (text.includes('basalt_data.')) seen.push(text);
    return (original as (...a: unknown[]) => unknown).apply(pool, args);
  }) as typeof pool.query;
  try {
    await work();
  } finally {
    pool.query = original;
  }
  return seen;
}

async function put(collection: string, id: string, data: Record<string, unknown>) {
  const result = await request(server.url, 'PUT', `/v1/db/${collection}/${id}`, {
    token: server.serviceKey,
    body: { data },
  });
  expect(result.status, result.text).toBe(201);
}

describe('references and expand', () => {
  it('declares refs and expands them on get and query, each level in one statement', async () => {
    await createCollection(server, { name: 'people', rules: { read: 'auth != null && doc.id != "bob"' } });
    await createCollection(server, { name: 'tags', rules: { read: 'true' } });
    await createCollection(server, { name: 'vault', rules: {} });
    await createCollection(server, {
      name: 'articles',
      rules: { read: 'true' },
      refs: { author: 'people', tags: 'tags', secret: 'vault', 'meta.editor': 'people' },
    });
    await createCollection(server, { name: 'notes', rules: { read: 'true' }, refs: { article: 'articles' } });
    await put('people', 'ann', { name: 'Ann' });
    await put('people', 'bob', { name: 'Bob', hidden: true });
    await put('tags', 't1', { label: 'one' });
    await put('tags', 't2', { label: 'two' });
    await put('vault', 'v1', { code: 42 });
    for (let i = 0; i < 20; i++) {
      await put('articles', `a${i}`, {
        title: `A${i}`,
        author: i % 2 === 0 ? 'ann' : 'bob',
        tags: ['t1', 'missing', 't2'],
        secret: 'v1',
        meta: { editor: 'ann' },
      });
    }
    await put('notes', 'n1', { article: 'a0' });
    await put('notes', 'n2', { article: 'a1' });
    await put('notes', 'n3', { article: 'nope' });
    const user = await signUp(server.url);

    const get = await request(server.url, 'GET', '/v1/db/articles/a0?expand=author,tags,secret,meta.editor', {
      token: user.token,
    });
    expect(get.status, get.text).toBe(200);
    const doc = get.body as Expanded;
    expect((doc.expand?.author as Expanded).data).toEqual({ name: 'Ann' });
    expect((doc.expand?.tags as Expanded[]).map((tag) => tag.id)).toEqual(['t1', 't2']);
    // vault has no read rule: only the service key reads it.
    expect(doc.expand?.secret).toBeNull();
    expect((doc.expand?.['meta.editor'] as Expanded).id).toBe('ann');

    // Bob is hidden from users by his collection's own read rule.
    const odd = await request(server.url, 'GET', '/v1/db/articles/a1?expand=author', { token: user.token });
    expect((odd.body as Expanded).expand?.author).toBeNull();
    // The public caller may read no one in people.
    const anon = await request(server.url, 'GET', '/v1/db/articles/a0?expand=author');
    expect((anon.body as Expanded).expand?.author).toBeNull();
    // The service key reads everything.
    const service = await request(server.url, 'GET', '/v1/db/articles/a0?expand=secret', { token: server.serviceKey });
    expect(((service.body as Expanded).expand?.secret as Expanded).data).toEqual({ code: 42 });

    // A 20-document query with three expansions: one statement for the page, one for the level.
    let page: { docs: Expanded[] } | undefined;
    const statements = await countStatements(async () => {
      const result = await request(server.url, 'POST', '/v1/db/articles/query', {
        token: user.token,
        body: { limit: 20, order_by: [['title', 'asc']], expand: ['author', 'tags', 'meta.editor'] },
      });
      expect(result.status, result.text).toBe(200);
      page = result.body as { docs: Expanded[] };
    });
    expect(statements).toHaveLength(2);
    expect(page?.docs).toHaveLength(20);
    for (const article of page?.docs ?? []) {
      const author = article.expand?.author as Expanded | null;
      if (article.data.author === 'ann') expect(author?.id).toBe('ann');
      else expect(author).toBeNull();
      expect((article.expand?.tags as Expanded[]).map((tag) => tag.id)).toEqual(['t1', 't2']);
    }

    // Two levels: note → article → author, one statement per level.
    let notes: Expanded[] = [];
    const twoLevels = await countStatements(async () => {
      const result = await request(server.url, 'POST', '/v1/db/notes/query', {
        token: user.token,
        body: { expand: ['article.author', 'article.tags'] },
      });
      expect(result.status, result.text).toBe(200);
      notes = (result.body as { docs: Expanded[] }).docs;
    });
    expect(twoLevels).toHaveLength(3);
    const n1 = notes.find((note) => note.id === 'n1');
    const article = n1?.expand?.article as Expanded;
    expect(article.id).toBe('a0');
    expect((article.expand?.author as Expanded).id).toBe('ann');
    expect(notes.find((note) => note.id === 'n3')?.expand?.article).toBeNull();

    // select projects the data after expansion: a reference left out of select still expands.
    const projected = await request(server.url, 'POST', '/v1/db/articles/query', {
      token: user.token,
      body: {
        where: [['author', '==', 'ann']],
        order_by: [['title', 'asc']],
        limit: 2,
        select: ['title'],
        expand: ['author'],
      },
    });
    expect(projected.status, projected.text).toBe(200);
    const projectedDocs = (projected.body as { docs: Expanded[] }).docs;
    expect(projectedDocs.map((doc) => doc.data)).toEqual([{ title: 'A0' }, { title: 'A10' }]);
    for (const doc of projectedDocs) expect((doc.expand?.author as Expanded).data).toEqual({ name: 'Ann' });

    // Backward paging keeps the expansions: the last two articles by title.
    const lastTwo = await request(server.url, 'POST', '/v1/db/articles/query', {
      token: user.token,
      body: { order_by: [['title', 'asc']], limit_to_last: 2, expand: ['tags'] },
    });
    expect(lastTwo.status, lastTwo.text).toBe(200);
    const lastDocs = (lastTwo.body as { docs: Expanded[] }).docs;
    expect(lastDocs.map((doc) => doc.id)).toEqual(['a8', 'a9']);
    for (const doc of lastDocs) expect((doc.expand?.tags as Expanded[]).map((tag) => tag.id)).toEqual(['t1', 't2']);
  });

  it('refuses unknown paths, too deep paths and malformed expand with 400', async () => {
    const cases: Array<[string, unknown]> = [
      ['/v1/db/articles/a0?expand=title', undefined],
      ['/v1/db/articles/a0?expand=author.x', undefined],
      ['/v1/db/notes/n1?expand=article.author.x', undefined],
      ["/v1/db/articles/a0?expand=a'b", undefined],
    ];
    for (const [path] of cases) {
      const result = await request(server.url, 'GET', path, { token: server.serviceKey });
      expect(result.status, path).toBe(400);
    }
    const tooMany = await request(server.url, 'POST', '/v1/db/articles/query', {
      token: server.serviceKey,
      body: { expand: Array.from({ length: 11 }, () => 'author') },
    });
    expect(tooMany.status).toBe(400);
    const badRefs = await request(server.url, 'PATCH', '/v1/admin/collections/articles', {
      token: server.serviceKey,
      body: { refs: { author: 'Bad Name' } },
    });
    expect(badRefs.status).toBe(400);
  });

  it('a reference to a collection that does not exist yet expands to null', async () => {
    await createCollection(server, { name: 'later', rules: { read: 'true' }, refs: { thing: 'notyet' } });
    await put('later', 'l1', { thing: 'x' });
    const result = await request(server.url, 'GET', '/v1/db/later/l1?expand=thing', { token: server.serviceKey });
    expect(result.status, result.text).toBe(200);
    expect((result.body as Expanded).expand?.thing).toBeNull();
  });
});
