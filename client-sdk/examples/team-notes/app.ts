/**
 * "Team notes": a small app written with @basalt/client the way its docs show, on Node 20
 * under strict TypeScript, with no cast. `npm run typecheck` compiles it
 * (client-sdk/examples/tsconfig.json) and client-sdk/test/team-notes-app.test.ts runs it
 * against a real server.
 *
 * The backend it expects: a `notes` collection anyone signed in may read and add to, whose
 * authors may update their notes; an `attachments` bucket where users write under their
 * own id; an HTTP function `word-count`.
 */
import WebSocket from 'ws';
import {
  BasaltError,
  createClient,
  increment,
  isBasaltError,
  serverTimestamp,
  type BasaltClient,
  type Doc,
  type SessionStorage,
} from '@basalt/client';

/** A note as the app stores it. An interface, with a nested object. */
export interface Note {
  title: string;
  body: string;
  team: string;
  likes: number;
  tags: string[];
  pinned: boolean;
  meta: { color: string; edited_at?: string };
}

/** What the team's room carries: who is typing, and who is here. */
interface RoomEvents {
  typing: { who: string };
  liked: { noteId: string; likes: number };
}
interface Member {
  name: string;
}

/** A session kept in a Map: on Node there is no localStorage (a file or a database in a real server). */
class MemorySessionStorage implements SessionStorage {
  private readonly values = new Map<string, string>();
  getItem(key: string): string | null {
    return this.values.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.values.set(key, value);
  }
  removeItem(key: string): void {
    this.values.delete(key);
  }
}

export interface TeamNotesReport {
  firstPage: string[];
  secondPage: string[];
  liveTitles: string[];
  likes: number;
  heardTyping: string[];
  members: string[];
  attachmentSize: number;
  wordCount: number;
  errors: string[];
}

export function connect(url: string): BasaltClient {
  return createClient(url, { WebSocket, storage: new MemorySessionStorage() });
}

/** Says what went wrong in words a user understands, using each error's typed details. */
export function describeError(error: unknown): string {
  if (!isBasaltError(error)) return 'Something went wrong.';
  switch (error.code) {
    case 'VERSION_CONFLICT':
      return `Someone else changed this note (now version ${error.details?.actual ?? 'unknown'}); reload it.`;
    case 'PAYLOAD_TOO_LARGE': {
      const limit = error.details?.max_file_size ?? error.details?.max_bytes;
      return limit === undefined ? 'That is too large.' : `That is too large (at most ${limit} bytes).`;
    }
    case 'RATE_LIMITED':
      return `Too many attempts; try again in ${error.details?.retry_after ?? 60} s.`;
    case 'INVALID_REQUEST':
      return `Check ${error.details?.field ?? 'the form'}: ${error.message}`;
    case 'FORBIDDEN':
      return 'You may not do that.';
    case 'NOT_FOUND':
      return 'It is gone.';
    default:
      return error.message;
  }
}

/** One user's session of the app: sign up, write notes, page, listen, chat, attach, count words. */
export async function runTeamNotes(
  url: string,
  user: { email: string; password: string; name: string },
  teammate: BasaltClient,
): Promise<TeamNotesReport> {
  const basalt = connect(url);
  const errors: string[] = [];
  try {
    const { user: me } = await basalt.auth.signUp({ email: user.email, password: user.password });
    const notes = basalt.db.collection<Note>('notes');

    // Live list of the team's pinned notes, newest first.
    const liveTitles: string[] = [];
    const stopLive = notes
      .where('team', '==', 'core')
      .where('pinned', '==', true)
      .orderBy('created_at', 'desc')
      .limit(10)
      .onSnapshot(
        (snapshot) => {
          liveTitles.splice(0, liveTitles.length, ...snapshot.docs.map((doc) => doc.data.title));
        },
        (error) => errors.push(describeError(error)),
      );

    const written: Doc<Note>[] = [];
    for (let i = 1; i <= 5; i++) {
      written.push(
        await notes.add({
          title: `Note ${i}`,
          body: `Body of note ${i}`,
          team: 'core',
          likes: 0,
          tags: i % 2 === 0 ? ['even'] : ['odd'],
          pinned: i === 5,
          meta: { color: 'yellow' },
        }),
      );
    }

    // Pages of three, in title order.
    const byTitle = notes.where('team', '==', 'core').orderBy('title').limit(3);
    const first = await byTitle.get();
    const second = await byTitle.startAfter(first.nextCursor).get();

    // A like: an atomic increment, guarded by the version the app last saw.
    const liked = written[0];
    let likes = 0;
    if (liked) {
      const updated = await notes
        .doc(liked.id)
        .update({ likes: increment(1), meta: { edited_at: serverTimestamp() } }, { ifVersion: liked.version });
      likes = updated.data?.likes ?? 0;
      // The same version again is stale now: the server says so, with the stored version.
      try {
        await notes.doc(liked.id).update({ likes: increment(1) }, { ifVersion: liked.version });
      } catch (error) {
        errors.push(describeError(error));
      }
    }

    // The team room: typing indicators and who is here.
    const room = basalt.channel<RoomEvents, Member>('team-core');
    const heardTyping: string[] = [];
    room.on('broadcast', 'typing', (payload) => heardTyping.push(payload.who));
    let members: string[] = [];
    room.on('presence', (state) => {
      members = Object.values(state)
        .flat()
        .map((member) => member.name);
    });
    await room.subscribe();
    await room.track({ name: user.name });

    const theirRoom = teammate.channel<RoomEvents, Member>('team-core');
    await theirRoom.subscribe();
    await theirRoom.track({ name: 'teammate' });
    await theirRoom.send('typing', { who: 'teammate' });

    // An attachment under the user's own folder, from bytes a Node app has at hand.
    const attachments = basalt.storage.from('attachments');
    const attachment = await attachments.upload(`${me.id}/note-1.txt`, new TextEncoder().encode('first draft'), {
      contentType: 'text/plain',
      upsert: true,
    });

    // A server-side function, with the shape of its answer stated.
    const counted = await basalt.functions.invoke<{ words: number }>('word-count', { text: 'one two three' });

    // A file over the bucket's limit: the error says how large a file may be.
    try {
      await attachments.upload(`${me.id}/huge.bin`, new Uint8Array(4096));
    } catch (error) {
      if (error instanceof BasaltError) errors.push(describeError(error));
    }

    await waitUntil(() => heardTyping.length > 0 && members.length >= 2 && liveTitles.length > 0);
    stopLive();
    // Leaving the room empties this client's view of it: keep who was here first.
    const here = [...members].sort();
    await theirRoom.unsubscribe();
    await room.unsubscribe();
    return {
      firstPage: first.docs.map((doc) => doc.data.title),
      secondPage: second.docs.map((doc) => doc.data.title),
      liveTitles,
      likes,
      heardTyping,
      members: here,
      attachmentSize: attachment.size,
      wordCount: counted.words,
      errors,
    };
  } finally {
    basalt.realtime.disconnect();
    basalt.auth.stopAutoRefresh();
  }
}

async function waitUntil(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('Timed out waiting for realtime events.');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
