/**
 * Document bodies: checking user data (no `$` field names, bounded nesting) and field
 * transforms (`{"$increment": n}` and friends). A body is parsed into a patch tree whose
 * leaves are plain JSON or transforms; applying it to a stored document (PATCH: deep
 * merge) or to nothing (create, PUT) gives the data to store.
 */
import { AppError } from '../../internal/errors.js';
import { dataJson } from './json.js';
import { isStorableString } from './names.js';
import { deepEqual } from './query.js';
import type { JsonObject, JsonValue } from './types.js';

export const MAX_DATA_DEPTH = 64;

export type Transform =
  | { $transform: 'increment'; by: number }
  | { $transform: 'server_timestamp' }
  | { $transform: 'array_union'; values: JsonValue[] }
  | { $transform: 'array_remove'; values: JsonValue[] }
  | { $transform: 'delete' };

export type PatchValue = JsonValue | Transform | PatchObject;
export interface PatchObject {
  [key: string]: PatchValue;
}

const TRANSFORM = Symbol('transform');
type TaggedTransform = Transform & { [TRANSFORM]: true };

function isTransform(value: unknown): value is TaggedTransform {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[TRANSFORM] === true;
}

function tag(transform: Transform): TaggedTransform {
  return Object.assign(transform, { [TRANSFORM]: true as const });
}

function fieldError(message: string, path: string): AppError {
  return new AppError('INVALID_REQUEST', message, { details: { field: path || 'data' } });
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function checkKey(key: string, path: string): void {
  if (!isStorableString(key)) throw fieldError('field names may not contain NUL or unpaired surrogates.', path);
  if (key.startsWith('$')) throw fieldError(`field names may not start with "$" (${path.slice(0, 200)}).`, path);
  // An own "__proto__" key would turn into a prototype change when data is copied.
  if (key === '__proto__') throw fieldError('"__proto__" is not allowed as a field name.', path);
}

/** Checks plain user JSON (array elements, transform operands): no `$` keys, bounded depth. */
function checkPlain(value: unknown, path: string, depth: number): JsonValue {
  if (depth > MAX_DATA_DEPTH) throw fieldError(`data nests deeper than ${MAX_DATA_DEPTH} levels.`, path);
  if (typeof value === 'string') {
    if (!isStorableString(value)) throw fieldError('strings may not contain NUL or unpaired surrogates.', path);
    return value;
  }
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw fieldError('numbers must be finite.', path);
    return value;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkPlain(item, `${path}[${i}]`, depth + 1));
    return value as JsonValue[];
  }
  if (typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      checkKey(key, join(path, key));
      checkPlain(inner, join(path, key), depth + 1);
    }
    return value as JsonObject;
  }
  throw fieldError('not a JSON value.', path);
}

function parseTransform(key: string, operand: unknown, path: string): TaggedTransform {
  switch (key) {
    case '$increment':
      if (typeof operand !== 'number' || !Number.isFinite(operand)) {
        throw fieldError('$increment takes a finite number.', path);
      }
      return tag({ $transform: 'increment', by: operand });
    case '$server_timestamp':
      if (operand !== true) throw fieldError('$server_timestamp takes true.', path);
      return tag({ $transform: 'server_timestamp' });
    case '$array_union':
    case '$array_remove':
      if (!Array.isArray(operand)) throw fieldError(`${key} takes an array.`, path);
      checkPlain(operand, path, 1);
      return tag({
        $transform: key === '$array_union' ? 'array_union' : 'array_remove',
        values: operand as JsonValue[],
      });
    case '$delete':
      if (operand !== true) throw fieldError('$delete takes true.', path);
      return tag({ $transform: 'delete' });
    default:
      throw fieldError(`field names may not start with "$" (${key}).`, path);
  }
}

function parseObject(value: Record<string, unknown>, path: string, depth: number): PatchObject {
  if (depth > MAX_DATA_DEPTH) throw fieldError(`data nests deeper than ${MAX_DATA_DEPTH} levels.`, path);
  const out: PatchObject = {};
  for (const [key, inner] of Object.entries(value)) {
    const innerPath = join(path, key);
    checkKey(key, innerPath);
    out[key] = parseValue(inner, innerPath, depth + 1);
  }
  return out;
}

function parseValue(value: unknown, path: string, depth: number): PatchValue {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.some((key) => key.startsWith('$'))) {
      if (keys.length !== 1) throw fieldError('a field transform is an object with exactly one "$" key.', path);
      const key = keys[0] as string;
      return parseTransform(key, (value as Record<string, unknown>)[key], path);
    }
    return parseObject(value as Record<string, unknown>, path, depth);
  }
  return checkPlain(value, path, depth);
}

/** Parses a body's `data`: an object of user fields, possibly with transforms. */
export function parsePatch(data: unknown): PatchObject {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw fieldError('data must be a JSON object.', 'data');
  }
  return parseObject(data as Record<string, unknown>, '', 1);
}

export function hasServerTimestamp(patch: PatchValue): boolean {
  if (isTransform(patch)) return patch.$transform === 'server_timestamp';
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return false;
  return Object.values(patch).some(hasServerTimestamp);
}

function applyTransform(current: JsonValue | undefined, transform: Transform, now: string): JsonValue | undefined {
  switch (transform.$transform) {
    case 'increment': {
      const base = typeof current === 'number' ? current : 0;
      const next = base + transform.by;
      if (!Number.isFinite(next)) throw fieldError('$increment overflows the number range.', 'data');
      return next;
    }
    case 'server_timestamp':
      return now;
    case 'array_union': {
      const base = Array.isArray(current) ? [...current] : [];
      for (const value of transform.values) {
        if (!base.some((item) => deepEqual(item, value))) base.push(value);
      }
      return base;
    }
    case 'array_remove': {
      const base = Array.isArray(current) ? current : [];
      return base.filter((item) => !transform.values.some((value) => deepEqual(item, value)));
    }
    case 'delete':
      return undefined;
  }
}

/**
 * Deep-merges a patch into stored data: objects merge key by key, anything else
 * (arrays included) replaces, transforms compute from the stored value. `now` is the
 * transaction's time, used by $server_timestamp.
 */
export function applyPatch(base: JsonObject, patch: PatchObject, now: string): JsonObject {
  const out: JsonObject = { ...base };
  for (const [key, value] of Object.entries(patch)) {
    const current = Object.prototype.hasOwnProperty.call(base, key) ? base[key] : undefined;
    let next: JsonValue | undefined;
    if (isTransform(value)) {
      next = applyTransform(current, value, now);
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const inner = current !== null && typeof current === 'object' && !Array.isArray(current) ? current : {};
      next = applyPatch(inner as JsonObject, value as PatchObject, now);
    } else {
      next = value as JsonValue;
    }
    if (next === undefined) delete out[key];
    else out[key] = next;
  }
  return out;
}

/** The data a create or replace stores: the body with its transforms applied to nothing. */
export function materialize(patch: PatchObject, now: string): JsonObject {
  return applyPatch({}, patch, now);
}

/** Size of data as stored JSON text, the measure BASALT_MAX_DOCUMENT_BYTES limits. */
export function dataBytes(data: JsonObject): number {
  return Buffer.byteLength(dataJson(data), 'utf8');
}
