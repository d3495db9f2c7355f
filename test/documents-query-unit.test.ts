import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  compareDocuments,
  compareStrings,
  compareValues,
  decodeCursor,
  encodeCursor,
  isAfterCursor,
  matchesQuery,
  normalizeTimestamp,
  parseQuery,
  type Document,
} from '../server/modules/documents/query.js';
import { applyPatch, materialize, parsePatch } from '../server/modules/documents/transforms.js';

function doc(id: string, data: Document['data'], extra: Partial<Document> = {}): Document {
  return {
    id,
    collection: 'c',
    owner: null,
    version: 1,
    created_at: '2026-01-01T00:00:00.000000Z',
    updated_at: '2026-01-01T00:00:00.000000Z',
    data,
    ...extra,
  };
}

describe('compareStrings', () => {
  it('is UTF-8 byte order (Postgres COLLATE "C"), astral characters included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (a, b) => {
        const bytes = Math.sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
        expect(Math.sign(compareStrings(a, b))).toBe(bytes);
      }),
      { numRuns: 2000 },
    );
    expect(compareStrings('\uFFFD', '\u{1F600}')).toBeLessThan(0);
    expect(compareStrings('B', 'a')).toBeLessThan(0);
  });
});

describe('compareValues', () => {
  it('orders types: missing < null < boolean < number < string < array < object', () => {
    const ordered = [undefined, null, false, true, -1, 0, 2.5, '', 'a', [], [1], {}];
    for (let i = 0; i < ordered.length - 1; i++) {
      expect(compareValues(ordered[i], ordered[i + 1])).toBeLessThanOrEqual(0);
    }
    expect(compareValues([1], [0, 0])).toBe(0);
    expect(compareValues(1, '1')).toBeLessThan(0);
  });
});

describe('normalizeTimestamp', () => {
  it('normalises offsets, precision and date-only forms to UTC with microseconds', () => {
    expect(normalizeTimestamp('2026-01-02T03:04:05Z')).toBe('2026-01-02T03:04:05.000000Z');
    expect(normalizeTimestamp('2026-01-02T03:04:05.1234567+01:30')).toBe('2026-01-02T01:34:05.123456Z');
    expect(normalizeTimestamp('2026-01-02 03:04:05.5-05')).toBe('2026-01-02T08:04:05.500000Z');
    expect(normalizeTimestamp('2026-01-02')).toBe('2026-01-02T00:00:00.000000Z');
    expect(normalizeTimestamp('2026-02-30')).toBeNull();
    expect(normalizeTimestamp('yesterday')).toBeNull();
    expect(normalizeTimestamp('2026-01-02T25:00:00Z')).toBeNull();
  });

  it('orders as strings the way the instants order', () => {
    fc.assert(
      fc.property(
        fc.date({ min: new Date('1970-01-01'), max: new Date('2200-01-01'), noInvalidDate: true }),
        fc.date({ min: new Date('1970-01-01'), max: new Date('2200-01-01'), noInvalidDate: true }),
        (a, b) => {
          const x = normalizeTimestamp(a.toISOString()) as string;
          const y = normalizeTimestamp(b.toISOString()) as string;
          expect(Math.sign(compareStrings(x, y))).toBe(Math.sign(a.getTime() - b.getTime()));
        },
      ),
    );
  });
});

describe('matchesQuery and compareDocuments', () => {
  it('evaluate where and order_by in process', () => {
    const query = parseQuery({
      where: [
        ['a', '>', 1],
        {
          or: [
            ['tags', 'array-contains', 'x'],
            ['owner', '==', 'u1'],
          ],
        },
      ],
      order_by: [['a', 'desc']],
    });
    const docs = [
      doc('d1', { a: 2, tags: ['x'] }),
      doc('d2', { a: 3, tags: [] }, { owner: 'u1' }),
      doc('d3', { a: '5', tags: ['x'] }),
      doc('d4', { a: 0, tags: ['x'] }),
    ];
    expect(docs.filter((d) => matchesQuery(query, d)).map((d) => d.id)).toEqual(['d1', 'd2']);
    expect([...docs].sort(compareDocuments(query)).map((d) => d.id)).toEqual(['d3', 'd2', 'd1', 'd4']);
  });

  it('round-trips cursors and places documents after them', () => {
    const query = parseQuery({
      order_by: [
        ['a', 'asc'],
        ['created_at', 'desc'],
      ],
    });
    const last = doc('m', { a: 2 });
    const cursor = decodeCursor(encodeCursor(query.orderBy, last), query.orderBy);
    expect(isAfterCursor(query, cursor, doc('z', { a: 3 }))).toBe(true);
    // Ties break by id in the last term's direction (desc here).
    expect(isAfterCursor(query, cursor, doc('a', { a: 2 }))).toBe(true);
    expect(isAfterCursor(query, cursor, doc('n', { a: 2 }))).toBe(false);
    expect(isAfterCursor(query, cursor, doc('z', {}))).toBe(false);
    expect(() => decodeCursor(encodeCursor(query.orderBy, last), [])).toThrow();
  });
});

describe('transforms', () => {
  it('deep-merge and transforms leave the base untouched', () => {
    const base = { a: { b: 1 }, n: 1, list: [1, 2] };
    const next = applyPatch(base, parsePatch({ a: { c: 2 }, n: { $increment: 1 }, list: { $array_remove: [1] } }), 'T');
    expect(next).toEqual({ a: { b: 1, c: 2 }, n: 2, list: [2] });
    expect(base).toEqual({ a: { b: 1 }, n: 1, list: [1, 2] });
    expect(materialize(parsePatch({ x: { $delete: true }, t: { $server_timestamp: true } }), 'T')).toEqual({ t: 'T' });
  });
});
