import { describe, expect, it } from 'vitest';
import type { Change } from '../server/internal/changes/feed.js';
import { eventFor } from '../server/modules/functions/events.js';
import type { LoadedFunction } from '../server/modules/functions/loader.js';

/**
 * An upload event's object is built from the change-log row, whose timestamps come from
 * Postgres' JSON; the storage API writes them with six digits of microseconds, and the event
 * must show the same text (functions compare and store it).
 */
const onUpload: LoadedFunction = {
  name: 'thumbnail',
  file: 'thumbnail.ts',
  bundle: '',
  exportName: 'default',
  kind: 'object',
  options: { bucket: 'uploads', on: 'upload' },
  version: 1,
  source: 'folder',
  deployedAt: new Date(0),
};

function uploadChange(createdAt: string, updatedAt: string): Change {
  return {
    id: '7',
    tick: 1,
    txid: '1',
    schema: 'basalt',
    table: 'objects',
    op: 'insert',
    rowId: 'r',
    oldRow: null,
    newRow: {
      id: '18cdaf4b-0206-4e2c-bffb-d8db06026ecf',
      bucket: 'uploads',
      path: 'a.txt',
      size: 3,
      content_type: 'text/plain',
      etag: '"e"',
      sha256: 'e',
      owner: null,
      created_at: createdAt,
      updated_at: updatedAt,
    },
    committedAt: '2026-12-07T14:31:47.400Z',
  };
}

describe('an upload event object', () => {
  it.each([
    ['a fraction Postgres trimmed', '2026-12-07T14:31:47.38908+00:00', '2026-12-07T14:31:47.389080Z'],
    ['a whole second', '2026-12-07T14:31:47+00:00', '2026-12-07T14:31:47.000000Z'],
    ['all six digits', '2026-12-07T14:31:47.799656+00:00', '2026-12-07T14:31:47.799656Z'],
    ['another offset', '2026-12-07T16:31:47.5+02:00', '2026-12-07T14:31:47.500000Z'],
  ])('writes %s as the storage API does', (_case, stored, shown) => {
    const event = eventFor(onUpload, uploadChange(stored, stored)) as { object: Record<string, unknown> } | null;
    expect(event?.object).toMatchObject({ created_at: shown, updated_at: shown });
  });
});
