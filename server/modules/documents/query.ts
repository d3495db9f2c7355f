/**
 * The query language of /v1/db/:collection/query, parsed once into a typed form that
 * both the SQL compiler (sql.ts) and the in-process evaluator below read. The two must
 * agree on every document: realtime decides with matchesQuery/compareDocuments what
 * the database decided with SQL, and a property test holds them to it.
 *
 * Semantics (docs/documents.md repeats them for users):
 * - Values order by type first: missing < null < booleans < numbers < strings < arrays
 *   < objects. Booleans: false < true; numbers by value; strings by Unicode code point
 *   (byte order of UTF-8, i.e. COLLATE "C"); arrays and objects tie with each other
 *   (ties fall through to the next order_by term and finally to the document id).
 * - `==`, `in`: deep equality; a number never equals a string. A missing field matches
 *   nothing but `exists false`. `!=` matches present fields that differ (null included);
 *   `not-in` matches present, non-null fields equal to none of the values.
 * - `<`, `<=`, `>`, `>=` compare only values of the query value's type (number, string
 *   or boolean): `age > 5` never matches a string age.
 * - A document missing an order_by field is not excluded: it sorts before null.
 */
import { createHash } from 'node:crypto';
import { compareStrings, compareValues, valueAtPath as valueAtPathOf } from '../../../client-sdk/src/order.js';
import { AppError } from '../../internal/errors.js';
import { findUserJsonProblem, MAX_USER_JSON_DEPTH } from '../../internal/user-json.js';
import { isStorableJson, parseFieldPath } from './names.js';
import type { Document, JsonObject, JsonValue } from './types.js';

export const OPERATORS = [
  '==',
  '!=',
  '<',
  '<=',
  '>',
  '>=',
  'in',
  'not-in',
  'array-contains',
  'array-contains-any',
  'exists',
] as const;
export type Operator = (typeof OPERATORS)[number];
export const SYSTEM_FIELDS = ['id', 'owner', 'created_at', 'updated_at'] as const;
export type SystemField = (typeof SYSTEM_FIELDS)[number];

export const QUERY_LIMITS = {
  defaultLimit: 100,
  maxLimit: 1000,
  maxConditions: 20,
  maxListValues: 100,
  maxOrderBy: 8,
  maxGroupDepth: 4,
} as const;

export type FieldRef = { kind: 'system'; name: SystemField } | { kind: 'data'; path: string[] };

export interface Condition {
  kind: 'cond';
  field: FieldRef;
  op: Operator;
  /** For system timestamps, normalised to the document format (UTC, microseconds). */
  value: JsonValue;
}
export interface Group {
  kind: 'and' | 'or';
  filters: Filter[];
}
export type Filter = Condition | Group;

export interface OrderTerm {
  field: FieldRef;
  direction: 'asc' | 'desc';
}

/** Where a page ends: the last document's order_by values (undefined = missing) and its id. */
export interface Cursor {
  values: Array<JsonValue | undefined>;
  id: string;
}

export interface ParsedQuery {
  filter: Filter | null;
  orderBy: OrderTerm[];
  limit: number;
  after: Cursor | null;
}

export interface QueryInput {
  where?: unknown;
  order_by?: unknown;
  limit?: unknown;
  after?: unknown;
  /** Only for /query (not live queries): see parsePage. */
  before?: unknown;
  limit_to_last?: unknown;
  select?: unknown;
}

function invalid(message: string, details: Record<string, unknown> = {}): AppError {
  return new AppError('INVALID_REQUEST', message, { details });
}

function isSystemField(path: string): path is SystemField {
  return (SYSTEM_FIELDS as readonly string[]).includes(path);
}

export function parseFieldRef(path: unknown, where: string): FieldRef {
  if (typeof path === 'string' && isSystemField(path)) return { kind: 'system', name: path };
  return { kind: 'data', path: parseFieldPath(path, where) };
}

export function fieldRefName(field: FieldRef): string {
  return field.kind === 'system' ? field.name : field.path.join('.');
}

// ---------------------------------------------------------------------------
// Timestamps

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?$/;

/**
 * Normalises an ISO 8601 time to the form documents carry: UTC, six fractional digits,
 * `Z` (e.g. 2026-01-02T03:04:05.123456Z). Strings in that form order like the instants.
 * Returns null for anything else (including years outside 0001-9999).
 */
export function normalizeTimestamp(input: string): string | null {
  const match = TIMESTAMP.exec(input.trim());
  if (!match) return null;
  const [, y, mo, d, h = '00', mi = '00', s = '00', fraction = '', zone = 'Z'] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) return null;
  let offsetMinutes = 0;
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    offsetMinutes = sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || '0'));
  }
  const local = new Date(0);
  local.setUTCFullYear(year, month - 1, day);
  local.setUTCHours(hour, minute, second, 0);
  if (local.getUTCDate() !== day) return null; // e.g. 2026-02-30
  const instant = new Date(local.getTime() - offsetMinutes * 60_000);
  const utcYear = instant.getUTCFullYear();
  if (utcYear < 1 || utcYear > 9999) return null;
  const micros = (fraction + '000000').slice(0, 6);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return (
    `${pad(utcYear, 4)}-${pad(instant.getUTCMonth() + 1)}-${pad(instant.getUTCDate())}` +
    `T${pad(instant.getUTCHours())}:${pad(instant.getUTCMinutes())}:${pad(instant.getUTCSeconds())}.${micros}Z`
  );
}

// ---------------------------------------------------------------------------
// Values: type order, comparison, equality

// The one definition of document order, shared with the SDK's live queries.
export { compareStrings, compareValues, typeRank } from '../../../client-sdk/src/order.js';

export function deepEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true;
  if (a === null || b === null || a === undefined || b === undefined) return false;
  if (typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => deepEqual(item, b[i]));
  }
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.prototype.hasOwnProperty.call(b, key) && deepEqual(a[key], b[key]));
}

/** Follows a path into data: integer segments index arrays, as Postgres's #> does. */
export function valueAtPath(data: JsonValue, path: readonly string[]): JsonValue | undefined {
  // Data is parsed JSON, so whatever lies at a path is JSON too.
  return valueAtPathOf(data, path) as JsonValue | undefined;
}

export function fieldValue(doc: Document, field: FieldRef): JsonValue | undefined {
  if (field.kind === 'data') return valueAtPath(doc.data, field.path);
  return doc[field.name];
}

// ---------------------------------------------------------------------------
// Parsing

interface ParseState {
  conditions: number;
}

function parseCondition(entry: unknown[], where: string, state: ParseState): Condition {
  state.conditions++;
  if (state.conditions > QUERY_LIMITS.maxConditions) {
    throw invalid(`where: at most ${QUERY_LIMITS.maxConditions} conditions.`, {
      field: 'where',
      max: QUERY_LIMITS.maxConditions,
    });
  }
  if (entry.length !== 3) throw invalid(`${where}: a condition is [path, op, value].`, { field: where });
  const [path, op, value] = entry as [unknown, unknown, JsonValue];
  const field = parseFieldRef(path, `${where}[0]`);
  if (typeof op !== 'string' || !(OPERATORS as readonly string[]).includes(op)) {
    throw invalid(`${where}: unknown operator ${JSON.stringify(op)}.`, {
      field: `${where}[1]`,
      operators: OPERATORS,
    });
  }
  return { kind: 'cond', field, op: op as Operator, value: checkValue(field, op as Operator, value, where) };
}

function checkList(value: JsonValue, where: string): JsonValue[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw invalid(`${where}: this operator takes a non-empty array.`, { field: `${where}[2]` });
  }
  if (value.length > QUERY_LIMITS.maxListValues) {
    throw invalid(`${where}: at most ${QUERY_LIMITS.maxListValues} values.`, {
      field: `${where}[2]`,
      max: QUERY_LIMITS.maxListValues,
    });
  }
  return value;
}

function checkValue(field: FieldRef, op: Operator, value: JsonValue, where: string): JsonValue {
  if (value === undefined) throw invalid(`${where}: the value is missing.`, { field: `${where}[2]` });
  const problem = findUserJsonProblem(value);
  if (problem) {
    throw invalid(
      problem.kind === 'depth'
        ? `${where}: the value nests deeper than ${MAX_USER_JSON_DEPTH} levels.`
        : `${where}: strings may not contain NUL or unpaired surrogates.`,
      { field: `${where}[2]`, ...(problem.kind === 'depth' ? { max_depth: MAX_USER_JSON_DEPTH } : {}) },
    );
  }
  if (op === 'exists') {
    if (typeof value !== 'boolean') throw invalid(`${where}: exists takes true or false.`, { field: `${where}[2]` });
    return value;
  }
  const isList = op === 'in' || op === 'not-in' || op === 'array-contains-any';
  const values = isList ? checkList(value, where) : [value];
  if (op === '<' || op === '<=' || op === '>' || op === '>=') {
    if (typeof value !== 'number' && typeof value !== 'string' && typeof value !== 'boolean') {
      throw invalid(`${where}: ${op} compares numbers, strings or booleans.`, { field: `${where}[2]` });
    }
  }
  if (field.kind === 'data') return value;

  if (op === 'array-contains' || op === 'array-contains-any') {
    throw invalid(`${where}: ${op} does not apply to ${field.name}.`, { field: `${where}[1]` });
  }
  const nullable = field.name === 'owner' && op !== '<' && op !== '<=' && op !== '>' && op !== '>=';
  const normalised = values.map((item) => {
    if (item === null && nullable) return null;
    if (typeof item !== 'string') {
      throw invalid(`${where}: ${field.name} is compared with ${nullable ? 'a string or null' : 'a string'}.`, {
        field: `${where}[2]`,
      });
    }
    if (field.name === 'created_at' || field.name === 'updated_at') {
      const time = normalizeTimestamp(item);
      if (time === null) {
        throw invalid(`${where}: ${JSON.stringify(item.slice(0, 100))} is not an ISO 8601 time.`, {
          field: `${where}[2]`,
        });
      }
      return time;
    }
    return item;
  });
  return isList ? normalised : (normalised[0] as JsonValue);
}

function parseFilterEntry(entry: unknown, where: string, state: ParseState, depth: number): Filter {
  if (Array.isArray(entry)) return parseCondition(entry, where, state);
  if (entry !== null && typeof entry === 'object') {
    const keys = Object.keys(entry);
    const kind = keys[0];
    if (keys.length === 1 && (kind === 'or' || kind === 'and')) {
      if (depth >= QUERY_LIMITS.maxGroupDepth) {
        throw invalid(`${where}: groups nest at most ${QUERY_LIMITS.maxGroupDepth} deep.`, { field: where });
      }
      const members = (entry as Record<string, unknown>)[kind];
      if (!Array.isArray(members) || members.length === 0) {
        throw invalid(`${where}.${kind}: a group is a non-empty array of conditions.`, { field: `${where}.${kind}` });
      }
      return {
        kind,
        filters: members.map((member, i) => parseFilterEntry(member, `${where}.${kind}[${i}]`, state, depth + 1)),
      };
    }
  }
  throw invalid(`${where}: expected [path, op, value], {"or": [...]} or {"and": [...]}.`, { field: where });
}

/** Parses a `where` list (ANDed); null when there is no condition. */
export function parseWhere(where: unknown): Filter | null {
  if (where === undefined || where === null) return null;
  if (!Array.isArray(where)) throw invalid('where: expected an array of conditions.', { field: 'where' });
  const state: ParseState = { conditions: 0 };
  const filters = where.map((entry, i) => parseFilterEntry(entry, `where[${i}]`, state, 0));
  if (filters.length === 0) return null;
  return filters.length === 1 ? (filters[0] as Filter) : { kind: 'and', filters };
}

export function parseOrderBy(orderBy: unknown): OrderTerm[] {
  if (orderBy === undefined || orderBy === null) return [];
  if (!Array.isArray(orderBy))
    throw invalid('order_by: expected [[path, "asc" | "desc"], ...].', { field: 'order_by' });
  if (orderBy.length > QUERY_LIMITS.maxOrderBy) {
    throw invalid(`order_by: at most ${QUERY_LIMITS.maxOrderBy} terms.`, {
      field: 'order_by',
      max: QUERY_LIMITS.maxOrderBy,
    });
  }
  const seen = new Set<string>();
  return orderBy.map((term: unknown, i) => {
    const where = `order_by[${i}]`;
    // A bare path is accepted as ascending.
    const [path, direction = 'asc'] = Array.isArray(term) ? (term as unknown[]) : [term];
    if (
      (Array.isArray(term) && (term.length < 1 || term.length > 2)) ||
      (direction !== 'asc' && direction !== 'desc')
    ) {
      throw invalid(`${where}: expected [path, "asc" | "desc"].`, { field: where });
    }
    const field = parseFieldRef(path, `${where}[0]`);
    const name = fieldRefName(field);
    if (seen.has(name)) throw invalid(`${where}: ${name} is already ordered on.`, { field: where });
    seen.add(name);
    return { field, direction };
  });
}

export function parseLimit(limit: unknown): number {
  if (limit === undefined || limit === null) return QUERY_LIMITS.defaultLimit;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > QUERY_LIMITS.maxLimit) {
    throw invalid(`limit: a whole number from 1 to ${QUERY_LIMITS.maxLimit}.`, {
      field: 'limit',
      max: QUERY_LIMITS.maxLimit,
    });
  }
  return limit;
}

export function parseQuery(input: QueryInput): ParsedQuery {
  const orderBy = parseOrderBy(input.order_by);
  return {
    filter: parseWhere(input.where),
    orderBy,
    limit: parseLimit(input.limit),
    after: input.after === undefined || input.after === null ? null : decodeCursor(input.after, orderBy),
  };
}

// ---------------------------------------------------------------------------
// Evaluation in process

function compareSameType(actual: JsonValue | undefined, expected: JsonValue): number | null {
  if (actual === undefined || actual === null || typeof actual !== typeof expected || typeof actual === 'object') {
    return null;
  }
  return compareValues(actual, expected);
}

function matchesCondition(doc: Document, cond: Condition): boolean {
  const actual = fieldValue(doc, cond.field);
  const value = cond.value;
  switch (cond.op) {
    case '==':
      return actual !== undefined && deepEqual(actual, value);
    case '!=':
      return actual !== undefined && !deepEqual(actual, value);
    case '<':
    case '<=':
    case '>':
    case '>=': {
      const order = compareSameType(actual, value);
      if (order === null) return false;
      if (cond.op === '<') return order < 0;
      if (cond.op === '<=') return order <= 0;
      if (cond.op === '>') return order > 0;
      return order >= 0;
    }
    case 'in':
      return actual !== undefined && (value as JsonValue[]).some((item) => deepEqual(actual, item));
    case 'not-in':
      return actual !== undefined && actual !== null && !(value as JsonValue[]).some((item) => deepEqual(actual, item));
    case 'array-contains':
      return Array.isArray(actual) && actual.some((item) => deepEqual(item, value));
    case 'array-contains-any':
      return Array.isArray(actual) && actual.some((item) => (value as JsonValue[]).some((v) => deepEqual(item, v)));
    case 'exists':
      return (actual !== undefined) === value;
  }
}

export function matchesFilter(doc: Document, filter: Filter | null): boolean {
  if (filter === null) return true;
  switch (filter.kind) {
    case 'cond':
      return matchesCondition(doc, filter);
    case 'and':
      return filter.filters.every((inner) => matchesFilter(doc, inner));
    case 'or':
      return filter.filters.some((inner) => matchesFilter(doc, inner));
  }
}

/** Whether a document satisfies the query's `where` (limit and `after` are not considered). */
export function matchesQuery(query: Pick<ParsedQuery, 'filter'>, doc: Document): boolean {
  return matchesFilter(doc, query.filter);
}

/** The direction of the id tiebreak: that of the last order_by term, else ascending. */
export function tiebreakDirection(orderBy: readonly OrderTerm[]): 'asc' | 'desc' {
  return orderBy.at(-1)?.direction ?? 'asc';
}

/** Orders documents exactly as the query's SQL ORDER BY does (order_by terms, then id). */
export function compareDocuments(query: Pick<ParsedQuery, 'orderBy'>): (a: Document, b: Document) => number {
  const terms = query.orderBy;
  const idDirection = tiebreakDirection(terms) === 'asc' ? 1 : -1;
  return (a, b) => {
    for (const term of terms) {
      const order = compareValues(fieldValue(a, term.field), fieldValue(b, term.field));
      if (order !== 0) return term.direction === 'asc' ? order : -order;
    }
    return compareStrings(a.id, b.id) * idDirection;
  };
}

// ---------------------------------------------------------------------------
// Cursors

/**
 * A short fingerprint of an order (each term's field and direction, and so the id tiebreak's
 * direction): a cursor carries the fingerprint of the order it was made under, so a cursor
 * replayed under another order_by of the same length is refused rather than read as
 * positions in an order it does not describe.
 */
export function orderFingerprint(orderBy: readonly OrderTerm[]): string {
  const terms = orderBy.map(({ field, direction }) => [
    field.kind === 'system' ? field.name : ['data', ...field.path],
    direction,
  ]);
  return createHash('sha256').update(JSON.stringify(terms)).digest('base64url').slice(0, 12);
}

/** The opaque cursor that resumes after `doc` in a query with this order_by. */
export function encodeCursor(orderBy: readonly OrderTerm[], doc: Document): string {
  const values = orderBy.map((term) => {
    const value = fieldValue(doc, term.field);
    return value === undefined ? [] : [value];
  });
  return Buffer.from(JSON.stringify({ v: values, id: doc.id, o: orderFingerprint(orderBy) }), 'utf8').toString(
    'base64url',
  );
}

/**
 * Reads a cursor back for a query with this order_by. A cursor made before cursors carried
 * their order's fingerprint (no `o`) is still taken when its number of terms fits.
 */
export function decodeCursor(cursor: unknown, orderBy: readonly OrderTerm[]): Cursor {
  const bad = () => invalid('after: not a cursor of this query (order_by must stay the same).', { field: 'after' });
  if (
    typeof cursor !== 'string' ||
    cursor.length === 0 ||
    cursor.length > 200_000 ||
    !/^[A-Za-z0-9_-]+$/.test(cursor)
  ) {
    throw bad();
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const { v, id, o } = (parsed ?? {}) as { v?: unknown; id?: unknown; o?: unknown };
  if (o !== undefined && o !== orderFingerprint(orderBy)) {
    throw invalid(
      'after: this cursor was made by a query with another order_by; a cursor resumes only a query with the same order_by (same fields, same directions).',
      { field: 'after', reason: 'order_by_mismatch' },
    );
  }
  if (typeof id !== 'string' || !Array.isArray(v) || v.length !== orderBy.length || !isStorableJson(parsed)) {
    throw bad();
  }
  const values = v.map((wrapped: unknown, i) => {
    if (!Array.isArray(wrapped) || wrapped.length > 1) throw bad();
    const value = wrapped[0] as JsonValue | undefined;
    const field = (orderBy[i] as OrderTerm).field;
    if (field.kind === 'system') {
      if (field.name === 'owner' ? value !== null && typeof value !== 'string' : typeof value !== 'string') throw bad();
      if (field.name === 'created_at' || field.name === 'updated_at') {
        const time = normalizeTimestamp(value as string);
        if (time === null) throw bad();
        return time;
      }
    }
    return value;
  });
  return { values, id };
}

/** Whether `doc` comes strictly after the cursor position in the query's order. */
export function isAfterCursor(query: Pick<ParsedQuery, 'orderBy'>, cursor: Cursor, doc: Document): boolean {
  const terms = query.orderBy;
  for (const [i, term] of terms.entries()) {
    const order = compareValues(fieldValue(doc, term.field), cursor.values[i]);
    if (order !== 0) return term.direction === 'asc' ? order > 0 : order < 0;
  }
  const order = compareStrings(doc.id, cursor.id);
  return tiebreakDirection(terms) === 'asc' ? order > 0 : order < 0;
}

/** Applies where, order_by, after and limit to documents in memory (tests, realtime snapshots). */
export function runQueryInMemory(query: ParsedQuery, docs: readonly Document[]): Document[] {
  const { after } = query;
  return docs
    .filter((doc) => matchesQuery(query, doc) && (after === null || isAfterCursor(query, after, doc)))
    .sort(compareDocuments(query))
    .slice(0, query.limit);
}

// ---------------------------------------------------------------------------
// Pages of /query: backward paging and projection (live queries take neither)

export const MAX_SELECT_PATHS = 100;

/** What /query takes beyond a live query: a cursor to end before, paging from the end, a projection. */
export interface PageOptions {
  /** Only documents strictly before this position in the query's order. */
  before: Cursor | null;
  /** The page is the last `limit` documents rather than the first. */
  fromEnd: boolean;
  /** The page size: `limit_to_last` when given, else the query's limit. */
  limit: number;
  /** Data paths to keep in each document (null: the whole data). */
  select: string[][] | null;
}

export function parsePage(input: QueryInput, query: ParsedQuery): PageOptions {
  let before: Cursor | null = null;
  if (input.before !== undefined && input.before !== null) {
    try {
      before = decodeCursor(input.before, query.orderBy);
    } catch {
      throw invalid('before: not a cursor of this query (order_by must stay the same).', { field: 'before' });
    }
  }
  const fromEnd = input.limit_to_last !== undefined && input.limit_to_last !== null;
  let limit = query.limit;
  if (fromEnd) {
    try {
      limit = parseLimit(input.limit_to_last);
    } catch {
      throw invalid(`limit_to_last: a whole number from 1 to ${QUERY_LIMITS.maxLimit}.`, {
        field: 'limit_to_last',
        max: QUERY_LIMITS.maxLimit,
      });
    }
  }
  return { before, fromEnd, limit, select: parseSelect(input.select) };
}

function parseSelect(select: unknown): string[][] | null {
  if (select === undefined || select === null) return null;
  if (!Array.isArray(select)) throw invalid('select: expected an array of field paths.', { field: 'select' });
  if (select.length > MAX_SELECT_PATHS) {
    throw invalid(`select: at most ${MAX_SELECT_PATHS} paths.`, { field: 'select', max: MAX_SELECT_PATHS });
  }
  return select.map((path: unknown, i) => parseFieldPath(path, `select[${i}]`));
}

/**
 * The data reduced to the selected paths, nested as in the document. A path that is absent
 * is left out; a path below another selected path adds nothing (the whole value is there).
 */
export function projectData(data: JsonObject, paths: readonly string[][]): JsonObject {
  const result: JsonObject = {};
  const sorted = [...paths].sort((a, b) => a.length - b.length);
  const taken: string[] = [];
  for (const path of sorted) {
    const joined = path.join('.');
    if (taken.some((prefix) => joined.startsWith(`${prefix}.`) || joined === prefix)) continue;
    const value = valueAtPath(data, path);
    if (value === undefined) continue;
    taken.push(joined);
    let target = result;
    for (const segment of path.slice(0, -1)) {
      const next = target[segment];
      if (next !== null && typeof next === 'object' && !Array.isArray(next)) target = next;
      else target = target[segment] = {};
    }
    target[path.at(-1) as string] = value;
  }
  return result;
}

export type { Document, JsonObject, JsonValue };
