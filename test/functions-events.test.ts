import { beforeAll, describe, expect, it } from 'vitest';
import {
  createBucket,
  createCollection,
  errorCode,
  putText,
  request,
  useTestApp,
  waitFor,
  type TestApp,
} from './helpers.js';

/**
 * Event functions end to end: committed changes (through the API or plain SQL) fire
 * functions through the change log and the job queue, with retries, dead-lettering and
 * a retry from the admin API; with two instances each event is handled once.
 */

const FILES: Record<string, string> = {
  // Idempotent by event id: the effect is a document whose id is the event id.
  'recordCreate.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'notes', on: 'create' }, async (event, ctx) => {
      await ctx.db.collection('effects').doc(event.id.replace(/[^A-Za-z0-9_-]/g, '_')).set({
        type: event.type, note: event.after?.id, title: event.after?.data.title ?? null, before: event.before ?? null,
      });
    });`,
  'recordDelete.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'notes', on: 'delete' }, async (event, ctx) => {
      await ctx.db.collection('effects').add({ type: event.type, note: event.before?.id, after: event.after ?? null });
    });`,
  'recordUpload.ts': `
    import { onObject } from 'basalt/functions';
    export default onObject({ bucket: 'inbox', on: 'upload' }, async (event, ctx) => {
      await ctx.db.collection('effects').add({ type: event.type, object: event.object });
    });`,
  'alwaysFails.ts': `
    import { onDocument } from 'basalt/functions';
    export default onDocument({ collection: 'notes', on: 'update', retries: 2 }, async (event) => {
      throw new Error('cannot handle ' + event.id);
    });`,
};

interface Invocation {
  id: string;
  event_id: string;
  status: string;
  attempt: number;
  started_at: string;
  error: string | null;
}

async function invocationsOf(app: TestApp, name: string): Promise<Invocation[]> {
  const response = await request(app.url, 'GET', `/v1/admin/functions/${name}/invocations?limit=1000`, {
    token: app.serviceKey,
  });
  expect(response.status).toBe(200);
  return (response.body as { invocations: Invocation[] }).invocations;
}

async function effects(app: TestApp): Promise<Array<{ id: string; data: Record<string, unknown> }>> {
  const response = await request(app.url, 'POST', '/v1/db/effects/query', {
    token: app.serviceKey,
    body: { limit: 1000 },
  });
  expect(response.status).toBe(200);
  return (response.body as { docs: Array<{ id: string; data: Record<string, unknown> }> }).docs;
}

const first = useTestApp({ functions: FILES });
beforeAll(async () => {
  for (const name of ['notes', 'effects']) await createCollection(first, { name });
  await createBucket(first, { name: 'inbox' });
});
const second = useTestApp({ sharing: first });

describe('event functions', () => {
  it('fires on a document created through the API, with the event and ctx.db', async () => {
    const created = await request(first.url, 'POST', '/v1/db/notes', {
      token: first.serviceKey,
      body: { id: 'api-note', data: { title: 'from the API' } },
    });
    expect(created.status).toBe(201);
    const effect = await waitFor('the create effect', async () =>
      (await effects(first)).find((doc) => doc.data.note === 'api-note'),
    );
    expect(effect.id).toMatch(/^evt_\d+$/);
    expect(effect.data).toEqual({ type: 'document.create', note: 'api-note', title: 'from the API', before: null });
  });

  it('fires on a row inserted with plain SQL', async () => {
    await first.sql.query(
      `INSERT INTO basalt_data.notes (id, owner, data) VALUES ('sql-note', NULL, '{"title":"psql"}')`,
    );
    const effect = await waitFor('the SQL effect', async () =>
      (await effects(first)).find((doc) => doc.data.note === 'sql-note'),
    );
    expect(effect.data.title).toBe('psql');
  });

  it('passes the old document to delete triggers', async () => {
    const removed = await request(first.url, 'DELETE', '/v1/db/notes/sql-note', { token: first.serviceKey });
    expect(removed.status).toBe(204);
    const effect = await waitFor('the delete effect', async () =>
      (await effects(first)).find((doc) => doc.data.type === 'document.delete'),
    );
    expect(effect.data).toEqual({ type: 'document.delete', note: 'sql-note', after: null });
  });

  it('gives an upload trigger the object with every field the storage API shows', async () => {
    const uploaded = await putText(first, 'inbox/reports/q1.txt', 'quarterly numbers');
    expect(uploaded.status).toBe(201);
    const shown = (await uploaded.json()) as Record<string, unknown>;
    const effect = await waitFor('the upload effect', async () =>
      (await effects(first)).find((doc) => doc.data.type === 'object.upload'),
    );
    expect(effect.data.object).toEqual(shown);
  });

  it('handles each event exactly once across two instances', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `pair-${i}`);
    await Promise.all(
      ids.map((id, i) =>
        request(i % 2 ? second.url : first.url, 'POST', '/v1/db/notes', {
          token: first.serviceKey,
          body: { id, data: { title: id } },
        }),
      ),
    );
    await waitFor('all pair effects', async () => {
      const notes = new Set((await effects(first)).map((doc) => doc.data.note));
      return ids.every((id) => notes.has(id));
    });
    // Runs are recorded when their batch ends, a moment after their effects.
    const runs = await waitFor('every run recorded', async () => {
      const succeeded = (await invocationsOf(first, 'recordCreate')).filter((run) => run.status === 'succeeded');
      return succeeded.length >= 22 ? succeeded : null;
    });
    const perEvent = new Map<string, number>();
    for (const run of runs) perEvent.set(run.event_id, (perEvent.get(run.event_id) ?? 0) + 1);
    expect([...perEvent.values()].every((count) => count === 1)).toBe(true);
    expect(perEvent.size).toBe(22); // api-note, sql-note and the 20 pairs
  });

  it('retries a failing function with backoff, dead-letters it, and retries it from the admin API', async () => {
    await request(first.url, 'PUT', '/v1/db/notes/to-update', {
      token: first.serviceKey,
      body: { data: { title: 'a' } },
    });
    const updated = await request(first.url, 'PATCH', '/v1/db/notes/to-update', {
      token: first.serviceKey,
      body: { data: { title: 'changed' } },
    });
    expect(updated.status).toBe(200);
    const runs = await waitFor(
      'three failed attempts',
      async () => {
        const all = await invocationsOf(first, 'alwaysFails');
        return all.length >= 3 && all.some((run) => run.status === 'dead') ? all : null;
      },
      30_000,
    );
    const ordered = [...runs].sort((a, b) => a.attempt - b.attempt);
    expect(ordered.map((run) => run.attempt)).toEqual([1, 2, 3]);
    expect(new Set(ordered.map((run) => run.event_id)).size).toBe(1);
    expect(ordered.map((run) => run.status)).toEqual(['failed', 'failed', 'dead']);
    expect(ordered[0]?.error).toContain('cannot handle evt_');
    const gaps = [1, 2].map(
      (i) => Date.parse(ordered[i]?.started_at ?? '') - Date.parse(ordered[i - 1]?.started_at ?? ''),
    );
    // Backoff with jitter: the first retry waits 1–2 s, the second 2–4 s (plus polling).
    expect(gaps[0]).toBeGreaterThanOrEqual(900);
    expect(gaps[1]).toBeGreaterThanOrEqual(1900);

    const dead = ordered[2] as Invocation;
    const notDead = await request(first.url, 'POST', `/v1/admin/invocations/${ordered[0]?.id}/retry`, {
      token: first.serviceKey,
    });
    expect(notDead.status).toBe(404);
    const retried = await request(first.url, 'POST', `/v1/admin/invocations/${dead.id}/retry`, {
      token: first.serviceKey,
    });
    expect(retried.status).toBe(200);
    const again = await waitFor('the retried run', async () => {
      const all = await invocationsOf(first, 'alwaysFails');
      return all.length >= 4 ? all : null;
    });
    expect(new Set(again.map((run) => run.event_id))).toEqual(new Set([dead.event_id]));
  });

  it('refuses to retry an invocation id that is not a UUID', async () => {
    const malformed = await request(first.url, 'POST', '/v1/admin/invocations/not-a-uuid/retry', {
      token: first.serviceKey,
    });
    expect(malformed.status).toBe(400);
    expect(errorCode(malformed.body)).toBe('INVALID_REQUEST');
  });
});
