import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { signUp, useMailServer, uniqueEmail } from './auth-helpers.js';
import {
  createBucket,
  createCollection,
  createTestDatabase,
  putText,
  request,
  startTestApp,
  useTestApp,
  waitFor,
} from './helpers.js';

/**
 * The example functions in examples/functions/ load, run, and reload when a file changes;
 * functions/, what a new project runs, holds only a harmless hello.
 */

const examples = fileURLToPath(new URL('../examples/functions/', import.meta.url));
const projectFunctions = fileURLToPath(new URL('../functions/', import.meta.url));
const mail = useMailServer();

const server = useTestApp({
  functions: examples,
  env: () => ({ BASALT_FUNCTIONS_WATCH: 'true', SMTP_URL: mail.url, MAIL_FROM: 'Example <hello@example.com>' }),
});

beforeAll(async () => {
  await createBucket(server, { name: 'documents' });
  await createBucket(server, { name: 'photos' });
  for (const name of ['posts', 'stats', 'word_counts']) await createCollection(server, { name });
});

describe('the example functions', () => {
  it('all load, with their triggers', async () => {
    const response = await request(server.url, 'GET', '/v1/admin/functions', { token: server.serviceKey });
    const body = response.body as {
      functions: Array<{ name: string; kind: string; trigger: object }>;
      errors: unknown[];
    };
    expect(body.errors).toEqual([]);
    expect(body.functions.map((fn) => [fn.name, fn.kind, fn.trigger])).toEqual([
      ['countPosts', 'document', { collection: 'posts', on: 'write' }],
      ['hello', 'http', {}],
      ['nightlyCleanup', 'schedule', { cron: '0 3 * * *' }],
      ['photoThumbnail', 'object', { bucket: 'photos', on: 'upload' }],
      ['welcomeMail', 'auth', { on: 'user.created' }],
      ['wordCount', 'object', { bucket: 'documents', on: 'upload' }],
    ]);
  });

  it('hello answers over HTTP', async () => {
    const response = await request(server.url, 'POST', '/v1/functions/hello', { body: { name: 'Ada' } });
    expect(response.body).toEqual({ message: 'Hello, Ada!', signedIn: false });
  });

  it('countPosts keeps the count on create and delete', async () => {
    for (const id of ['p1', 'p2', 'p3']) {
      await request(server.url, 'POST', '/v1/db/posts', {
        token: server.serviceKey,
        body: { id, data: { title: id } },
      });
    }
    await request(server.url, 'DELETE', '/v1/db/posts/p2', { token: server.serviceKey });
    await waitFor('the count to settle at 2', async () => {
      const stats = await request(server.url, 'GET', '/v1/db/stats/posts', { token: server.serviceKey });
      const data = (stats.body as { data?: { count?: number; updated_by_event?: string } } | undefined)?.data;
      return data?.count === 2 && data.updated_by_event ? data : null;
    });
  });

  it('welcomeMail mails a user who signs up', async () => {
    const email = uniqueEmail('welcome');
    await signUp(server.url, email);
    const received = await mail.waitFor(
      (message) => message.to.includes(email) && message.raw.includes('Welcome!'),
      20_000,
    );
    expect(received.raw).toContain('From: Example <hello@example.com>');
    expect(received.raw).toMatch(/Message-ID: <evt_\d+@basalt\.welcome>/i);
  });

  it('wordCount writes the word count of an uploaded text file', async () => {
    const uploaded = await putText(server, 'documents/notes/today.txt', 'one two  three\nfour');
    expect(uploaded.status).toBe(201);
    const count = await waitFor('the word count', async () => {
      const response = await request(server.url, 'GET', '/v1/db/word_counts/notes_today_txt', {
        token: server.serviceKey,
      });
      return response.status === 200 ? (response.body as { data: Record<string, unknown> }).data : null;
    });
    expect(count).toMatchObject({ path: 'notes/today.txt', words: 4 });
  });

  it('photoThumbnail makes a 256-pixel WebP of an uploaded image, and none of its own output', async () => {
    const jpeg = await sharp({ create: { width: 1024, height: 768, channels: 3, background: '#884422' } })
      .jpeg()
      .toBuffer();
    const uploaded = await request(server.url, 'PUT', '/v1/storage/photos/trip/beach.jpg', {
      token: server.serviceKey,
      headers: { 'content-type': 'image/jpeg' },
      rawBody: new Uint8Array(jpeg),
    });
    expect(uploaded.status).toBe(201);
    const thumbnail = await waitFor('the thumbnail', async () => {
      const response = await fetch(`${server.url}/v1/storage/photos/thumbs/trip/beach.jpg.webp`, {
        headers: { authorization: `Bearer ${server.serviceKey}` },
      });
      return response.status === 200 ? Buffer.from(await response.arrayBuffer()) : null;
    });
    const meta = await sharp(thumbnail).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['webp', 256, 192]);
    const listed = await request(server.url, 'GET', '/v1/storage/photos?prefix=thumbs/thumbs/', {
      token: server.serviceKey,
    });
    expect((listed.body as { objects: unknown[] }).objects).toEqual([]);
  });

  it('reloads when a file is added, in development', async () => {
    await writeFile(
      path.join(server.functionsDir, 'added.ts'),
      `import { http } from 'basalt/functions';\nexport default http(async () => ({ added: true }));\n`,
    );
    const answer = await waitFor('the new function', async () => {
      const response = await request(server.url, 'GET', '/v1/functions/added');
      return response.status === 200 ? response.body : null;
    });
    expect(answer).toEqual({ added: true });
    // The event functions keep working after the reload.
    await request(server.url, 'POST', '/v1/db/posts', { token: server.serviceKey, body: { id: 'p4', data: {} } });
    await waitFor('the count after the reload', async () => {
      const stats = await request(server.url, 'GET', '/v1/db/stats/posts', { token: server.serviceKey });
      return (stats.body as { data?: { count?: number } } | undefined)?.data?.count === 3;
    });
  });
});

describe('the functions a new project starts with', () => {
  it('are a single HTTP hello: nothing that reacts to data or mails anyone', async () => {
    // A database of its own: deployed functions are shared by every instance of a database.
    const database = await createTestDatabase();
    const fresh = await startTestApp(database, { BASALT_FUNCTIONS_DIR: projectFunctions });
    try {
      const response = await request(fresh.url, 'GET', '/v1/admin/functions', { token: fresh.serviceKey });
      const body = response.body as { functions: Array<{ name: string; kind: string }>; errors: unknown[] };
      expect(body.errors).toEqual([]);
      expect(body.functions.map((fn) => [fn.name, fn.kind])).toEqual([['hello', 'http']]);
      const hello = await request(fresh.url, 'GET', '/v1/functions/hello?name=Ada');
      expect(hello.body).toEqual({ message: 'Hello, Ada!', signedIn: false });
    } finally {
      await fresh.close();
      await database.drop();
    }
  });
});
