/**
 * What the server would answer, computed on the client (docs/offline.md): a queued write
 * applied to a document, and whether a document matches a query's `where`.
 */
import type * as Order from '../order.js';
import type { Doc } from '../wire.js';

/**
 * The ordering and path helpers of order.ts, handed over by createClient: the main bundle
 * has them already, and importing them here would split them into a chunk of their own.
 */
export type OrderKit = Pick<typeof Order, 'compareValues' | 'documentComparator' | 'fieldValue' | 'typeRank'>;

/** One queued op, as the outbox keeps it. */
export interface PendingOp {
  op: 'create' | 'set' | 'update' | 'delete';
  collection: string;
  id: string;
  data?: unknown;
  /** Sent as `If-Match` (or the batch op's `if_version`): fails with VERSION_CONFLICT on another version. */
  if_version?: number;
}

type Data = Record<string, unknown>;

function isPlainObject(value: unknown): value is Data {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((key) => deepEqual((a as Data)[key], (b as Data)[key]));
}

/**
 * A field transform's result on `current` (as the server computes it), or `undefined` when
 * `value` is no transform; `DELETE` for deleteField().
 */
const DELETE = Symbol('delete');
function transform(value: unknown, current: unknown, now: string): unknown {
  if (!isPlainObject(value)) return undefined;
  const keys = Object.keys(value);
  if (keys.length !== 1) return undefined;
  const argument = value[keys[0] as string];
  const list = Array.isArray(current) ? current : [];
  switch (keys[0]) {
    case '$increment':
      return (typeof current === 'number' ? current : 0) + (argument as number);
    case '$server_timestamp':
      return now;
    case '$array_union':
      return [...list, ...(argument as unknown[]).filter((item) => !list.some((known) => deepEqual(known, item)))];
    case '$array_remove':
      return list.filter((known) => !(argument as unknown[]).some((item) => deepEqual(known, item)));
    case '$delete':
      return DELETE;
    default:
      return undefined;
  }
}

/** `patch` deep-merged into `target` (a copy), transforms computed; `replace` starts from nothing (set/create). */
function merge(target: Data | undefined, patch: Data, now: string): Data {
  const result: Data = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    const computed = transform(value, result[key], now);
    if (computed === DELETE) delete result[key];
    else if (computed !== undefined) result[key] = computed;
    else if (isPlainObject(value))
      result[key] = merge(isPlainObject(result[key]) ? result[key] : undefined, value, now);
    else result[key] = value;
  }
  return result;
}

/** The document after `op`, as the server would store it (null: absent). `owner` is the current user's id. */
export function applyOp(base: Doc | null, op: PendingOp, owner: string | null, now: string): Doc | null {
  if (op.op === 'delete' || (op.op === 'update' && !base)) return null;
  const data = merge(op.op === 'update' ? base?.data : undefined, (op.data ?? {}) as Data, now);
  return {
    id: op.id,
    collection: op.collection,
    owner: base ? base.owner : owner,
    version: base?.version ?? 0,
    created_at: base?.created_at ?? now,
    updated_at: now,
    data,
  };
}

/** Whether `doc` matches a query's `where` list (ANDed entries; `{or}` and `{and}` groups). */
export function matches(doc: Doc, filters: readonly unknown[] | undefined, order: OrderKit): boolean {
  return (filters ?? []).every((filter) => matchesFilter(doc, filter, order));
}

function matchesFilter(doc: Doc, filter: unknown, order: OrderKit): boolean {
  const { typeRank } = order;
  const compares = (actual: unknown, expected: unknown, test: (result: number) => boolean) =>
    typeRank(actual) === typeRank(expected) && typeRank(actual) > 1 && test(order.compareValues(actual, expected));
  if (Array.isArray(filter)) {
    const [path, op, expected] = filter as [string, string, unknown];
    const actual = order.fieldValue(doc, path);
    const inList = (value: unknown) => Array.isArray(expected) && expected.some((item) => deepEqual(item, value));
    switch (op) {
      case '==':
        return deepEqual(actual, expected);
      case '!=':
        return actual !== undefined && !deepEqual(actual, expected);
      case '<':
        return compares(actual, expected, (result) => result < 0);
      case '<=':
        return compares(actual, expected, (result) => result <= 0);
      case '>':
        return compares(actual, expected, (result) => result > 0);
      case '>=':
        return compares(actual, expected, (result) => result >= 0);
      case 'in':
        return inList(actual);
      case 'not-in':
        return actual !== undefined && !inList(actual);
      case 'array-contains':
        return Array.isArray(actual) && actual.some((item) => deepEqual(item, expected));
      case 'array-contains-any':
        return Array.isArray(actual) && actual.some(inList);
      case 'exists':
        return (actual !== undefined) === (expected !== false);
      default:
        return false;
    }
  }
  if (isPlainObject(filter) && Array.isArray(filter.or)) {
    return filter.or.some((inner) => matchesFilter(doc, inner, order));
  }
  if (isPlainObject(filter) && Array.isArray(filter.and)) return matches(doc, filter.and, order);
  return false;
}
