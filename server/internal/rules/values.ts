import type { JsonValue } from './ast.js';
import { hasLoneSurrogate } from './parser.js';

/**
 * The result of an expression that failed: a missing field, a type mismatch, a field of
 * something that is not an object. It is not a JSON value; a rule whose result is not
 * exactly `true` denies. In SQL it is SQL NULL.
 */
export const BOTTOM: unique symbol = Symbol('rule-error');
export type Bottom = typeof BOTTOM;
export type Value = JsonValue | Bottom;

export type JsonType = 'null' | 'boolean' | 'number' | 'string' | 'array' | 'object';

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The JSON type of a value, or undefined for anything JSON cannot hold (undefined, NaN, functions...). */
export function jsonType(value: unknown): JsonType | undefined {
  switch (typeof value) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'boolean';
    case 'number':
      return Number.isFinite(value) ? 'number' : undefined;
    case 'object':
      if (value === null) return 'null';
      return Array.isArray(value) ? 'array' : 'object';
    default:
      return undefined;
  }
}

/** Treats anything that is not a JSON value as a failure, so foreign values never compare equal. */
export function asValue(value: unknown): Value {
  return jsonType(value) === undefined ? BOTTOM : (value as JsonValue);
}

/** JSON equality, as jsonb's `=`: same type, same value; objects ignore key order. */
export function jsonEqual(a: JsonValue, b: JsonValue): boolean {
  const type = jsonType(a);
  if (type !== jsonType(b)) return false;
  switch (type) {
    case 'array': {
      const x = a as JsonValue[];
      const y = b as JsonValue[];
      return x.length === y.length && x.every((item, i) => jsonEqual(item, y[i] as JsonValue));
    }
    case 'object': {
      const x = a as Record<string, JsonValue>;
      const y = b as Record<string, JsonValue>;
      const keys = Object.keys(x);
      if (keys.length !== Object.keys(y).length) return false;
      return keys.every((key) => Object.hasOwn(y, key) && jsonEqual(x[key] as JsonValue, y[key] as JsonValue));
    }
    default:
      // -0 === 0, as numeric equality in Postgres.
      return a === b;
  }
}

/**
 * Compares strings by Unicode code point, which is the order of UTF-8 bytes and so of
 * Postgres' "C" collation. Plain `<` on JS strings compares UTF-16 code units, which
 * puts U+E000..U+FFFF after astral characters; this remaps surrogates above them.
 */
export function compareStrings(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

export function codePointLength(value: string): number {
  let n = 0;
  for (const _ of value) n++;
  return n;
}

// Postgres' text output may carry an offset with seconds (+05:53:28) for old local-mean-time dates.
const ISO_TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)$/;

/**
 * Timestamps are ISO 8601 strings in UTC with milliseconds (`2024-05-01T12:00:00.000Z`),
 * the form of `Date.toISOString()`; being fixed-width, they order as strings the way
 * they order in time. Finer precision is truncated, as the SQL form truncates.
 */
export function canonicalTimestamp(value: unknown): Value {
  if (value === null) return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? BOTTOM : value.toISOString();
  if (typeof value !== 'string') return BOTTOM;
  const m = ISO_TIMESTAMP.exec(value);
  if (!m) return value;
  const [, y, mo, d, h, mi, s, fraction = '', zone = 'Z'] = m;
  const ms = Number(fraction.slice(0, 3).padEnd(3, '0'));
  let time = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  if (Number(y) < 100) time = new Date(time).setUTCFullYear(Number(y));
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replaceAll(':', '');
    const seconds =
      Number(digits.slice(0, 2)) * 3600 + Number(digits.slice(2, 4) || '0') * 60 + Number(digits.slice(4, 6) || '0');
    time -= sign * seconds * 1000;
  }
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? value : date.toISOString();
}

/** A number given as number, bigint or decimal string (pg returns bigint columns as strings). */
export function asNumber(value: unknown): Value {
  if (value === null) return null;
  if (typeof value === 'number') return Number.isFinite(value) ? value : BOTTOM;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && /^-?[0-9]+(\.[0-9]+)?$/.test(value)) return Number(value);
  return BOTTOM;
}

/**
 * A copy of a trusted-shape but foreign value (token claims) that Postgres can also
 * hold: strings with NUL or unpaired surrogates and non-JSON values fail (and are left
 * out of objects), so the SQL form and the in-process form see the same value.
 */
export function sanitizeJson(value: unknown, depth = 0): Value {
  if (depth > 64) return BOTTOM;
  switch (jsonType(value)) {
    case 'string':
      return (value as string).includes('\u0000') || hasLoneSurrogate(value as string) ? BOTTOM : (value as string);
    case 'array': {
      const out: JsonValue[] = [];
      for (const item of value as unknown[]) {
        const clean = sanitizeJson(item, depth + 1);
        if (clean === BOTTOM) return BOTTOM;
        out.push(clean);
      }
      return out;
    }
    case 'object': {
      const out: Record<string, JsonValue> = {};
      for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
        if (key.includes('\u0000') || hasLoneSurrogate(key)) continue;
        const clean = sanitizeJson(item, depth + 1);
        if (clean !== BOTTOM) out[key] = clean;
      }
      return out;
    }
    case undefined:
      return BOTTOM;
    default:
      return value as JsonValue;
  }
}
