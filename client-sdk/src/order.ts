/**
 * Document order, as the server sorts query results (docs/realtime.md): missing < null <
 * booleans < numbers < strings < arrays < objects; strings by code point; ties by id. Live
 * queries keep their results in this order on the client; the server's SQL ORDER BY and its
 * in-process sort use the same definition.
 */
import type { Doc } from './wire.js';

export type OrderDirection = 'asc' | 'desc';
export type OrderBy = ReadonlyArray<readonly [string, OrderDirection]>;

/** Type rank in sort order; 0 is "missing". */
export function typeRank(value: unknown): number {
  if (value === undefined) return 0;
  if (value === null) return 1;
  switch (typeof value) {
    case 'boolean':
      return 2;
    case 'number':
      return 3;
    case 'string':
      return 4;
    default:
      return Array.isArray(value) ? 5 : 6;
  }
}

/** Code-point order, which is UTF-8 byte order and Postgres's COLLATE "C". */
export function compareStrings(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    // A surrogate belongs to an astral code point, which sorts after all of the BMP
    // (U+E000-U+FFFF included): lifting surrogates above U+FFFF gives code point order.
    const xs = x >= 0xd800 && x <= 0xdfff ? x + 0x10000 : x;
    const ys = y >= 0xd800 && y <= 0xdfff ? y + 0x10000 : y;
    return xs < ys ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** Sort order of two values: by type rank, then within the type. */
export function compareValues(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  if (typeof a === 'boolean' && typeof b === 'boolean') return a === b ? 0 : a ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return a === b ? 0 : a < b ? -1 : 1;
  if (typeof a === 'string' && typeof b === 'string') return compareStrings(a, b);
  return 0;
}

export const SYSTEM_FIELDS = new Set(['id', 'owner', 'created_at', 'updated_at']);

/** Follows a path into data as Postgres's #> does: integer segments index arrays, other keys must be own. */
export function valueAtPath(data: unknown, path: readonly string[]): unknown {
  let value = data;
  for (const part of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    if (Array.isArray(value)) {
      if (!/^\d+$/.test(part)) return undefined;
      value = value[Number(part)];
    } else {
      value = Object.prototype.hasOwnProperty.call(value, part) ? (value as Record<string, unknown>)[part] : undefined;
    }
  }
  return value;
}

/** A document's field by its dotted path (a system field, or a path into data). */
export function fieldValue(doc: Doc<unknown>, path: string): unknown {
  if (SYSTEM_FIELDS.has(path)) return (doc as unknown as Record<string, unknown>)[path];
  return valueAtPath(doc.data, path.split('.'));
}

/** Compares two documents by `orderBy`, then by id in the direction of the last term. */
export function documentComparator(orderBy: OrderBy = []): (a: Doc<unknown>, b: Doc<unknown>) => number {
  const idDirection = (orderBy.at(-1)?.[1] ?? 'asc') === 'asc' ? 1 : -1;
  return (a, b) => {
    for (const [path, direction] of orderBy) {
      const order = compareValues(fieldValue(a, path), fieldValue(b, path));
      if (order !== 0) return direction === 'desc' ? -order : order;
    }
    return compareStrings(a.id, b.id) * idDirection;
  };
}
