// Type tests: `npx tsc --noEmit -p .` checks this file under strict settings (a
// `@ts-expect-error` that no longer errs fails it); vitest runs the few runtime checks.
import { describe, expect, expectTypeOf, it } from 'vitest';
import WebSocket from 'ws';
import {
  createClient,
  type BasaltClient,
  type DocumentRef,
  type BatchResult,
  type Doc,
  type DocumentData,
  type RedactedDoc,
  type SendResult,
  type WebSocketConstructor,
  type WriteBatch,
} from '../src/index.js';

interface Note {
  title: string;
  meta: { color: string };
}

describe('public types', () => {
  it('createClient takes the ws package’s WebSocket as it is typed', () => {
    const basalt = createClient('http://127.0.0.1:1', { WebSocket, persistSession: false });
    expect(basalt.url).toBe('http://127.0.0.1:1');
    expectTypeOf(WebSocket).toExtend<WebSocketConstructor>();
    expectTypeOf(globalThis.WebSocket).toExtend<WebSocketConstructor>();
  });

  it('update() says the data may be hidden; batch results are typed', () => {
    type Updated = Awaited<ReturnType<DocumentRef<Note>['update']>>;
    expectTypeOf<Updated>().toEqualTypeOf<Doc<Note> | RedactedDoc<Note>>();
    expectTypeOf<RedactedDoc<Note>['data']>().toEqualTypeOf<null>();
    const read = (updated: Doc<Note> | RedactedDoc<Note>): string | undefined => {
      // @ts-expect-error data is null when the read rule hides the document
      void updated.data.title;
      return updated.data?.meta.color;
    };
    expect(read).toBeTypeOf('function');
    const _commit = (batch: WriteBatch) => batch.commit<Note>();
    expectTypeOf<Awaited<ReturnType<typeof _commit>>>().toEqualTypeOf<BatchResult<Note>[]>();
    expectTypeOf<BatchResult>().toEqualTypeOf<Doc<DocumentData> | RedactedDoc<DocumentData> | null>();
    expectTypeOf<BatchResult<Note>>().toEqualTypeOf<Doc<Note> | RedactedDoc<Note> | null>();
  });

  it('functions.invoke resolves with the declared result type', () => {
    expectTypeOf<BasaltClient['functions']['invoke']>().toBeFunction();
    expectTypeOf<ReturnType<BasaltClient['functions']['invoke']>>().toEqualTypeOf<Promise<unknown>>();
  });

  it('keeps the transport and the channel’s bookkeeping internal', () => {
    const basalt = createClient('http://127.0.0.1:1', { persistSession: false });
    // @ts-expect-error the HTTP transport is not part of the client's surface
    expect(basalt.http).toBeUndefined();
    const room = basalt.channel('room');
    // @ts-expect-error whether the channel is joined is the connection's business
    expect(room.joined).toBeUndefined();
    // @ts-expect-error frames reach the channel through the connection only
    expect(room.handle).toBeUndefined();
    expect(Object.keys(room)).toEqual([]);
    expectTypeOf(room.send).returns.toEqualTypeOf<Promise<SendResult>>();
    expectTypeOf<SendResult>().toEqualTypeOf<'ok' | 'error' | 'timed out'>();
  });
});
