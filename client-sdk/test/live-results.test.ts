import WebSocket from 'ws';
import { beforeAll, describe, expect, it } from 'vitest';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import { createCollection, request, useTestApp, waitFor } from '../../test/helpers.js';
import { createClient, type BasaltClient, type BasaltError } from '../src/index.js';
import { clientsStoppedAfterAll } from './sdk-support.js';

// What onSnapshot gives an app: every match (or a clear error past the cap), hasMore on a
// window, startAfter honoured, one snapshot at most when the session changes user, its own
// presence once, and error details.

const app = useTestApp();
const clients = clientsStoppedAfterAll();

interface Snap {
  ids: string[];
  changes: string[];
  hasMore: boolean;
}

function client(): BasaltClient {
  const basalt = createClient(app.url, { persistSession: false, autoRefreshToken: false, WebSocket });
  clients.push(basalt);
  return basalt;
}

function until(check: () => boolean, timeoutMs = 10_000): Promise<true> {
  return waitFor(check.toString(), () => check() || null, timeoutMs, 20);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function insertTeam(prefix: string, team: string, count: number): Promise<void> {
  await app.sql.query(
    `INSERT INTO basalt_data.players (id, data)
       SELECT $1 || g, jsonb_build_object('team', $2::text, 'n', g) FROM generate_series(1, $3::int) g`,
    [prefix, team, count],
  );
}

/** Follows a query, recording each snapshot (ids, changes as `type:id`, hasMore) and each error. */
/** What onSnapshot is called on (a query), as far as these tests read it. */
interface Listenable {
  onSnapshot(
    callback: (snapshot: {
      docs: Array<{ id: string }>;
      changes: Array<{ type: string; doc: { id: string } }>;
      hasMore: boolean;
    }) => void,
    onError: (error: BasaltError) => void,
  ): () => void;
}

function watch(query: Listenable): { snapshots: Snap[]; errors: BasaltError[]; stop: () => void } {
  const snapshots: Snap[] = [];
  const errors: BasaltError[] = [];
  const stop = query.onSnapshot(
    (snapshot) =>
      snapshots.push({
        ids: snapshot.docs.map((doc) => doc.id),
        changes: snapshot.changes.map((change) => `${change.type}:${change.doc.id}`),
        hasMore: snapshot.hasMore,
      }),
    (error) => errors.push(error),
  );
  return { snapshots, errors, stop };
}

beforeAll(async () => {
  await createCollection(app, { name: 'players', rules: { read: 'true' } });
  await createCollection(app, {
    name: 'posts',
    rules: { read: 'doc.data.public == true || (auth != null && doc.owner == auth.uid)', create: 'auth != null' },
  });
});

describe('query onSnapshot', () => {
  it('gives all 130 matches of a query without limit, hasMore false', async () => {
    await insertTeam('red', 'red', 130);
    const { snapshots, errors } = watch(client().db.collection('players').where('team', '==', 'red'));
    await until(() => snapshots.length === 1);
    expect(snapshots[0]?.ids).toHaveLength(130);
    expect(snapshots[0]?.hasMore).toBe(false);
    expect(errors).toEqual([]);
  });

  it('fails past 1000 matches without limit, with details.limit, instead of cutting the result', async () => {
    await insertTeam('blue', 'blue', 1001);
    const { snapshots, errors } = watch(client().db.collection('players').where('team', '==', 'blue'));
    await until(() => errors.length === 1, 15_000);
    expect(errors[0]?.code).toBe('INVALID_REQUEST');
    expect(errors[0]?.details).toMatchObject({ limit: 1000 });
    expect(snapshots).toEqual([]);
  });

  it('says hasMore on a window, and honours startAfter', async () => {
    await insertTeam('page', 'page', 12);
    const query = client().db.collection('players').where('team', '==', 'page').orderBy('n').limit(5);
    const first = await query.get();
    const second = await query.startAfter(first.nextCursor).get();
    const windowed = watch(query);
    const after = watch(query.startAfter(first.nextCursor));
    await until(() => windowed.snapshots.length === 1 && after.snapshots.length === 1);
    expect(windowed.snapshots[0]).toMatchObject({ ids: first.docs.map((doc) => doc.id), hasMore: true });
    expect(after.snapshots[0]).toMatchObject({ ids: second.docs.map((doc) => doc.id), hasMore: true });
    expect(after.snapshots[0]?.ids).toEqual(['page6', 'page7', 'page8', 'page9', 'page10']);
    // The last page: hasMore turns false when what lay beyond it goes.
    await app.sql.query(`DELETE FROM basalt_data.players WHERE id IN ('page11', 'page12')`);
    await until(() => after.snapshots.at(-1)?.hasMore === false);
    expect(after.snapshots.at(-1)?.ids).toEqual(['page6', 'page7', 'page8', 'page9', 'page10']);
    expect(windowed.snapshots.at(-1)?.hasMore).toBe(true);
  });

  it('ends the 101st listener of a connection with details.limit', async () => {
    const basalt = client();
    const errors: BasaltError[] = [];
    for (let i = 0; i < 101; i++) {
      basalt.db
        .collection('players')
        .doc(`x${i}`)
        .onSnapshot(
          () => undefined,
          (error) => errors.push(error),
        );
    }
    await until(() => errors.length === 1);
    expect(errors[0]?.code).toBe('INVALID_REQUEST');
    expect(errors[0]?.details).toEqual({ limit: 100 });
  });
});

describe('signing in and out under a live query', () => {
  it('sign-in: one snapshot with the user’s documents; sign-out: the listener ends with FORBIDDEN, nothing removed', async () => {
    const email = uniqueEmail('live');
    const owner = client();
    await owner.auth.signUp({ email, password: STRONG_PASSWORD });
    for (const n of [1, 2, 3]) await owner.db.collection('posts').add({ n }, { id: `mine${n}` });
    for (const n of [1, 2]) {
      const put = await request(app.url, 'PUT', `/v1/db/posts/open${n}`, {
        token: app.serviceKey,
        body: { data: { public: true, n } },
      });
      expect(put.status).toBeLessThan(300);
    }

    const basalt = client();
    const feed = watch(basalt.db.collection('posts'));
    const open = watch(basalt.db.collection('posts').where('public', '==', true));
    await until(() => feed.snapshots.length === 1 && open.snapshots.length === 1);
    expect(feed.snapshots[0]?.ids.sort()).toEqual(['open1', 'open2']);

    await basalt.auth.signIn({ email, password: STRONG_PASSWORD });
    await until(() => feed.snapshots.length === 2);
    await sleep(500);
    expect(feed.snapshots).toHaveLength(2);
    expect(feed.snapshots[1]?.ids.sort()).toEqual(['mine1', 'mine2', 'mine3', 'open1', 'open2']);
    expect(feed.snapshots[1]?.changes.sort()).toEqual(['added:mine1', 'added:mine2', 'added:mine3']);
    // Nothing changed for the public query: no snapshot at all.
    expect(open.snapshots).toHaveLength(1);

    await basalt.auth.signOut();
    await until(() => feed.errors.length === 1);
    expect(feed.errors[0]?.code).toBe('FORBIDDEN');
    await owner.db.collection('posts').add({ n: 4 }, { id: 'mine4' });
    await sleep(500);
    expect(feed.snapshots).toHaveLength(2);
    expect(open.snapshots).toHaveLength(1);
    expect(open.errors).toEqual([]);
    // The public query goes on for the signed-out client.
    await request(app.url, 'PUT', '/v1/db/posts/open3', { token: app.serviceKey, body: { data: { public: true } } });
    await until(() => open.snapshots.length === 2);
    expect(open.snapshots[1]?.changes).toEqual(['added:open3']);
  });
});

describe('a session revoked elsewhere', () => {
  it('ends the listener with the error, never turning it into a public query', async () => {
    const email = uniqueEmail('revoked');
    const basalt = client();
    await basalt.auth.signUp({ email, password: STRONG_PASSWORD });
    await basalt.db.collection('posts').add({ n: 1 }, { id: 'revoked1' });
    const feed = watch(basalt.db.collection('posts').where('n', '==', 1));
    await until(() => feed.snapshots.length === 1);
    expect(feed.snapshots[0]?.ids).toContain('revoked1');
    // Signed out everywhere from another device: this client still holds an unexpired token.
    const other = client();
    await other.auth.signIn({ email, password: STRONG_PASSWORD });
    await other.auth.signOut({ scope: 'global' });
    await until(() => feed.errors.length === 1, 20_000);
    expect(feed.errors[0]?.code).toBe('UNAUTHENTICATED');
    await sleep(500);
    expect(feed.snapshots).toHaveLength(1);
  }, 30_000);
});

describe('presence', () => {
  it('shows a client its own tracked presence once', async () => {
    const basalt = client();
    const room = basalt.channel('own-presence');
    const joins: string[] = [];
    room.on('presence', (_state, diff) => joins.push(...diff.joins.map((entry) => JSON.stringify(entry.payload))));
    await room.track({ name: 'ada' });
    await sleep(600);
    expect(joins).toEqual([JSON.stringify({ name: 'ada' })]);
    expect(Object.values(room.presenceState())).toEqual([[{ name: 'ada' }]]);
  });
});
