// Type tests of the typed API: `npm run typecheck` checks this file under strict settings, so a
// `@ts-expect-error` that no longer errs (a typo that compiles again) fails the check. Vitest
// runs the few runtime checks.
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  BasaltError,
  createClient,
  deleteField,
  increment,
  isBasaltError,
  serverTimestamp,
  arrayUnion,
  type AnyBasaltError,
  type CollectionRef,
  type Doc,
  type DocumentData,
  type ErrorDetailsOf,
  type FieldPath,
  type LiveDoc,
  type PathValue,
  type PresenceState,
  type Query,
  type QueryResult,
  type QuerySnapshot,
  type RealtimeChannel,
  type UpdateData,
} from '../src/index.js';

/** An interface (no index signature), with nested objects, arrays and an optional field. */
interface Note {
  title: string;
  views: number;
  tags: string[];
  meta: { color: string; pinned: boolean; author: { name: string } };
  archived?: boolean;
}

const basalt = createClient('http://127.0.0.1:1', { persistSession: false });
const notes = basalt.db.collection<Note>('notes');
const anything = basalt.db.collection('anything');

describe('typed collections', () => {
  it('accepts nested partial updates of an interface', () => {
    const patch: UpdateData<Note> = { meta: { color: 'red' } };
    const deeper: UpdateData<Note> = { meta: { author: {} }, views: increment(1) };
    expect([patch, deeper]).toHaveLength(2);
    const _update = () => notes.doc('n1').update({ meta: { pinned: true }, tags: arrayUnion('a') });
    expect(_update).toBeTypeOf('function');
  });

  it('checks transforms against the field type', () => {
    // @ts-expect-error increment applies to numbers, and title is a string
    const wrong: UpdateData<Note> = { title: increment(1) };
    // @ts-expect-error arrayUnion of numbers into a string[] field
    const wrongElement: UpdateData<Note> = { tags: arrayUnion(1) };
    // @ts-expect-error a field that Note does not have
    const unknownField: UpdateData<Note> = { tittle: 'x' };
    const right: UpdateData<Note> = { title: serverTimestamp(), archived: deleteField(), views: increment(-1) };
    expect([wrong, wrongElement, unknownField, right]).toHaveLength(4);
  });

  it('checks the same at the call sites: update, set, add and a typed batch', () => {
    const note = notes.doc('n1');
    const _calls = () => {
      // @ts-expect-error increment applies to numbers, and title is a string
      void note.update({ title: increment(1) });
      // @ts-expect-error a field that Note does not have
      void note.update({ tittle: 'x' });
      // @ts-expect-error a nested field of the wrong type
      void note.update({ meta: { pinned: 'yes' } });
      // @ts-expect-error a misspelt nested field
      void note.update({ meta: { colour: 'red' } });
      const rest = { views: 0, tags: [], meta: { color: 'red', pinned: false, author: { name: 'a' } } };
      // @ts-expect-error increment of a string field in a whole-document write
      void note.set({ title: increment(1), ...rest });
      // @ts-expect-error add() checks the data against Note too
      void notes.add({ title: 1, ...rest });
      void notes.add({ title: serverTimestamp(), ...rest });
      // @ts-expect-error a batch typed with Note checks its patch
      basalt.db.batch().update<Note>('notes', 'n1', { title: increment(1) });
      void note.update({ views: increment(1), meta: { author: { name: 'b' } }, archived: deleteField() });
    };
    expect(_calls).toBeTypeOf('function');
  });

  it('types field paths, dotted into nested objects and array positions', () => {
    expectTypeOf<'meta.author.name'>().toExtend<FieldPath<Note>>();
    expectTypeOf<'tags.0'>().toExtend<FieldPath<Note>>();
    expectTypeOf<'meta.colour'>().not.toExtend<FieldPath<Note>>();
    expectTypeOf<PathValue<Note, 'meta.color'>>().toEqualTypeOf<string>();
    expectTypeOf<PathValue<Note, 'created_at'>>().toEqualTypeOf<string>();
    expectTypeOf<FieldPath<DocumentData>>().toEqualTypeOf<string>();
  });

  it('rejects misspelt paths and values of the wrong type in where, orderBy and select', () => {
    const build = () => {
      notes.where('meta.color', '==', 'red').where('views', '>=', 3).where('tags', 'array-contains', 'x');
      notes.where('title', 'in', ['a', 'b']).where('archived', 'exists', false).where('owner', '==', null);
      // @ts-expect-error a typo in the path
      notes.where('tittle', '==', 'x');
      // @ts-expect-error views is a number
      notes.where('views', '==', 'three');
      // @ts-expect-error array-contains takes an element of the array
      notes.where('tags', 'array-contains', ['x']);
      // @ts-expect-error in takes a list
      notes.where('title', 'in', 'a');
      // @ts-expect-error a typo in a nested path
      notes.orderBy('meta.colr');
      // @ts-expect-error select names data paths
      notes.select('titel');
    };
    expect(build).toBeTypeOf('function');
  });

  it('keeps untyped collections permissive', () => {
    const _build = () =>
      anything.where('any.path', '==', 1).where('x', 'in', ['a', 2]).orderBy('whatever').select('a', 'b.c');
    expectTypeOf<ReturnType<typeof _build>>().toEqualTypeOf<Query<DocumentData, DocumentData>>();
    const patch: UpdateData<DocumentData> = { a: increment(1), b: { c: 'x' }, d: deleteField() };
    expect(patch).toBeDefined();
  });

  it('narrows results to the selected fields', () => {
    const _picked = notes.select('title', 'meta.color');
    type Picked = Awaited<ReturnType<typeof _picked.get>>;
    expectTypeOf<Picked>().toEqualTypeOf<QueryResult<{ title: string; meta: { color: string } }>>();
    // Optional fields stay optional: the server leaves absent paths out.
    type WithOptional = Awaited<
      ReturnType<
        Query<Note, ReturnType<typeof notes.select<'archived'>> extends Query<Note, infer R> ? R : never>['get']
      >
    >;
    expectTypeOf<WithOptional['docs'][number]['data']>().toEqualTypeOf<{ archived?: boolean }>();
    expectTypeOf(notes).toEqualTypeOf<CollectionRef<Note>>();
    expectTypeOf<Awaited<ReturnType<typeof notes.get>>['prevCursor']>().toEqualTypeOf<string | null>();
  });

  it('has one document type for get() and live queries', () => {
    expectTypeOf<LiveDoc<Note>>().toEqualTypeOf<Doc<Note>>();
    expectTypeOf<QuerySnapshot<Note>['docs'][number]>().toEqualTypeOf<Doc<Note>>();
    const _listen = () => notes.onSnapshot((snapshot) => expectTypeOf(snapshot.docs).toEqualTypeOf<Doc<Note>[]>());
    expect(_listen).toBeTypeOf('function');
  });
});

describe('typed channels', () => {
  it('types broadcast payloads and presence', () => {
    const room = basalt.channel<{ typing: { who: string }; moved: { x: number } }, { name: string }>('room');
    expectTypeOf(room).toEqualTypeOf<
      RealtimeChannel<{ typing: { who: string }; moved: { x: number } }, { name: string }>
    >();
    room.on('broadcast', 'typing', (payload: { who: string }) => void payload.who);
    room.on('presence', (state, { joins }) => {
      expectTypeOf(state).toEqualTypeOf<PresenceState<{ name: string }>>();
      expectTypeOf(joins[0]?.payload).toEqualTypeOf<{ name: string } | undefined>();
    });
    const _send = () => {
      void room.send('typing', { who: 'me' });
      // @ts-expect-error the payload of "typing" has `who`
      void room.send('typing', { x: 1 });
      // @ts-expect-error an event the channel does not have
      void room.send('typo', { who: 'me' });
      // @ts-expect-error presence payloads are { name }
      void room.track({ nick: 'me' });
    };
    // @ts-expect-error a handler for another payload type
    room.on('broadcast', 'moved', (payload: { who: string }) => void payload);
    expect(_send).toBeTypeOf('function');
    // Events declared as an interface work as well as a type literal.
    interface Events {
      typing: { who: string };
    }
    const declared = basalt.channel<Events>('declared');
    declared.on('broadcast', 'typing', (payload) => expectTypeOf(payload).toEqualTypeOf<{ who: string }>());
    const untyped = basalt.channel('other');
    untyped.on('broadcast', 'anything', (payload) => expectTypeOf(payload).toBeUnknown());
  });
});

describe('typed errors', () => {
  it('gives each code its details, narrowed by a switch or by isBasaltError', () => {
    const handle = (error: unknown): string => {
      if (isBasaltError(error, 'VERSION_CONFLICT')) {
        expectTypeOf(error.details?.actual).toEqualTypeOf<number | null | undefined>();
        return 'conflict';
      }
      if (!isBasaltError(error)) return 'other';
      expectTypeOf(error).toEqualTypeOf<AnyBasaltError>();
      switch (error.code) {
        case 'PAYLOAD_TOO_LARGE':
          return `max ${error.details?.max_file_size ?? error.details?.max_bytes}`;
        case 'RATE_LIMITED':
          return `retry in ${error.details?.retry_after ?? 1}`;
        case 'INVALID_REQUEST':
          return error.details?.field ?? error.details?.issues?.[0]?.path ?? 'invalid';
        default:
          return error.code;
      }
    };
    const conflict = new BasaltError('VERSION_CONFLICT', undefined, { details: { expected: 1, actual: 2 } });
    expect(handle(conflict)).toBe('conflict');
    expect(handle(new BasaltError('RATE_LIMITED', undefined, { details: { retry_after: 3 } }))).toBe('retry in 3');
    expect(handle(new Error('x'))).toBe('other');
    expect(conflict.is('VERSION_CONFLICT')).toBe(true);
    expectTypeOf<ErrorDetailsOf<'QUOTA_EXCEEDED'>['limit']>().toEqualTypeOf<number>();
  });
});

describe('internals', () => {
  it('are not part of the public types', () => {
    const realtime = basalt.realtime;
    const room = basalt.channel('room');
    const touch = () => {
      // @ts-expect-error the transport stays inside the client
      void basalt.http;
      // @ts-expect-error channels talk to the socket through the client only
      realtime.joinChannel(room);
      // @ts-expect-error raw frames are the connection's business
      realtime.send({ type: 'ping' });
      // @ts-expect-error broadcast goes through RealtimeChannel.send
      void realtime.broadcast({ type: 'broadcast' });
      // @ts-expect-error channel membership is the connection's business
      realtime.release(room);
      // @ts-expect-error whether the channel is joined is internal
      void room.joined;
      // @ts-expect-error frames reach a channel through the connection only
      room.handle({ type: 'broadcast' });
    };
    expect(touch).toBeTypeOf('function');
  });
});
