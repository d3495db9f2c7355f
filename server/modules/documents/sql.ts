/**
 * Compiles parsed queries (query.ts) to SQL for the repository. Every value is a bind
 * parameter. Identifiers and path literals come only from names that passed the strict
 * validators in names.ts, and are quoted anyway. Field paths are written as literals
 * (`data #> '{a,b}'`) rather than parameters so that Postgres can match them against a
 * collection's expression indexes.
 */
import { COLLECTION_NAME, PATH_SEGMENT } from './names.js';
import {
  tiebreakDirection,
  typeRank,
  type Condition,
  type Cursor,
  type FieldRef,
  type Filter,
  type OrderTerm,
} from './query.js';
import type { JsonValue } from './types.js';

/** The schema that holds every collection's table. */
export const DATA_SCHEMA = 'basalt_data';
/** Alias of the collection table in document queries (rules compile against it too). */
export const ROW_ALIAS = 'd';

/**
 * The start of an UPDATE's SET list on a collection table: stores the version and time the
 * stamping trigger would, so the trigger does not fire for Basalt's own updates.
 */
export const STAMPED_UPDATE = `version = ${ROW_ALIAS}.version + 1, updated_at = now(),`;

/** Collects bind values; `add` returns the placeholder. */
export class SqlParams {
  readonly values: unknown[] = [];
  add(value: unknown, cast?: string): string {
    this.values.push(value);
    return cast ? `$${this.values.length}::${cast}` : `$${this.values.length}`;
  }
}

export function quoteIdent(name: string): string {
  // Validated names never contain a quote; doubling is the belt to those braces.
  return `"${name.replaceAll('"', '""')}"`;
}

/** `basalt_data."name"`, for a name that passed the collection validator. */
export function tableRef(collection: string): string {
  if (!COLLECTION_NAME.test(collection)) throw new Error(`unsafe collection name reached SQL: ${collection}`);
  return `${DATA_SCHEMA}.${quoteIdent(collection)}`;
}

/** `d.data #> '{a,b}'`: the JSON value at a path (SQL NULL when missing). */
export function dataPathExpr(path: readonly string[], alias: string | null = ROW_ALIAS): string {
  for (const segment of path) {
    if (!PATH_SEGMENT.test(segment)) throw new Error(`unsafe path segment reached SQL: ${segment}`);
  }
  return `(${alias ? `${alias}.` : ''}data #> '{${path.join(',')}}')`;
}

/**
 * `d.data -> 'a'`: the value of a top-level field, the same as dataPathExpr(['a']) (data is
 * always an object) without the path array Postgres takes apart on every row. Only where
 * the expression need not match an index's, which is dataPathExpr's.
 */
export function dataFieldExpr(field: string, alias: string | null = ROW_ALIAS): string {
  if (!PATH_SEGMENT.test(field)) throw new Error(`unsafe path segment reached SQL: ${field}`);
  return `(${alias ? `${alias}.` : ''}data -> '${field}')`;
}

function column(name: string): string {
  return `${ROW_ALIAS}.${quoteIdent(name)}`;
}

const TIMESTAMP_FIELDS = new Set(['created_at', 'updated_at']);

function jsonParam(params: SqlParams, value: JsonValue): string {
  return params.add(JSON.stringify(value), 'jsonb');
}

function isScalar(value: JsonValue): boolean {
  return typeof value !== 'object' || value === null;
}

/**
 * One condition on a data path. `array-contains` of a scalar is jsonb containment of the
 * one-element list (a scalar among the array's top-level elements, by jsonb's equality):
 * the same answer as the EXISTS over the elements that other values need, without a
 * subquery per row, which would keep Postgres from planning parallel workers.
 */
function compileDataCondition(cond: Condition, path: readonly string[], params: SqlParams): string {
  const x = dataPathExpr(path);
  const value = cond.value;
  switch (cond.op) {
    case '==':
      return `${x} = ${jsonParam(params, value)}`;
    case '!=':
      return `${x} <> ${jsonParam(params, value)}`;
    case '<':
    case '<=':
    case '>':
    case '>=': {
      if (typeof value === 'string') {
        return `(jsonb_typeof(${x}) = 'string' AND (${x} #>> '{}') COLLATE "C" ${cond.op} ${params.add(value, 'text')})`;
      }
      // Within one JSON type, jsonb's own order is numeric for numbers and false < true.
      const type = typeof value === 'number' ? 'number' : 'boolean';
      return `(jsonb_typeof(${x}) = '${type}' AND ${x} ${cond.op} ${jsonParam(params, value)})`;
    }
    case 'in':
      return `${x} = ANY(${params.add(
        (value as JsonValue[]).map((item) => JSON.stringify(item)),
        'jsonb[]',
      )})`;
    case 'not-in':
      return `(${x} <> 'null'::jsonb AND NOT (${x} = ANY(${params.add(
        (value as JsonValue[]).map((item) => JSON.stringify(item)),
        'jsonb[]',
      )})))`;
    case 'array-contains':
      if (isScalar(value))
        return `(CASE WHEN jsonb_typeof(${x}) = 'array' THEN ${x} @> ${jsonParam(params, [value])} ELSE false END)`;
      return `EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${x}) = 'array' THEN ${x} ELSE '[]'::jsonb END) AS e(v) WHERE e.v = ${jsonParam(params, value)})`;
    case 'array-contains-any':
      if ((value as JsonValue[]).every(isScalar)) {
        const lists = (value as JsonValue[]).map((item) => JSON.stringify([item]));
        return `(CASE WHEN jsonb_typeof(${x}) = 'array' THEN ${x} @> ANY(${params.add(lists, 'jsonb[]')}) ELSE false END)`;
      }
      return `EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${x}) = 'array' THEN ${x} ELSE '[]'::jsonb END) AS e(v) WHERE e.v = ANY(${params.add(
        (value as JsonValue[]).map((item) => JSON.stringify(item)),
        'jsonb[]',
      )}))`;
    case 'exists':
      return value === true ? `${x} IS NOT NULL` : `${x} IS NULL`;
  }
}

function compileSystemCondition(cond: Condition, name: string, params: SqlParams): string {
  const col = column(name);
  const cast = TIMESTAMP_FIELDS.has(name) ? 'timestamptz' : 'text';
  const value = cond.value;
  switch (cond.op) {
    case '==':
      return value === null ? `${col} IS NULL` : `${col} = ${params.add(value, cast)}`;
    case '!=':
      return value === null ? `${col} IS NOT NULL` : `${col} IS DISTINCT FROM ${params.add(value, cast)}`;
    case '<':
    case '<=':
    case '>':
    case '>=':
      return `${col} ${cond.op} ${params.add(value, cast)}`;
    case 'in': {
      const list = value as JsonValue[];
      const strings = list.filter((item) => item !== null);
      const match = strings.length > 0 ? `${col} = ANY(${params.add(strings, `${cast}[]`)})` : 'FALSE';
      return list.includes(null) ? `(${match} OR ${col} IS NULL)` : match;
    }
    case 'not-in': {
      const strings = (value as JsonValue[]).filter((item) => item !== null);
      const match = strings.length > 0 ? `NOT (${col} = ANY(${params.add(strings, `${cast}[]`)}))` : 'TRUE';
      return `(${col} IS NOT NULL AND ${match})`;
    }
    case 'exists':
      return value === true ? 'TRUE' : 'FALSE';
    default:
      // Refused by the parser; kept so a new operator cannot slip through silently.
      throw new Error(`operator ${cond.op} on ${name} reached SQL`);
  }
}

export function compileFilter(filter: Filter, params: SqlParams): string {
  switch (filter.kind) {
    case 'cond':
      return filter.field.kind === 'data'
        ? compileDataCondition(filter, filter.field.path, params)
        : compileSystemCondition(filter, filter.field.name, params);
    case 'and':
      return `(${filter.filters.map((inner) => compileFilter(inner, params)).join(' AND ')})`;
    case 'or':
      return `(${filter.filters.map((inner) => compileFilter(inner, params)).join(' OR ')})`;
  }
}

/**
 * The sort key of an order_by term as SQL expressions, compared left to right. For a
 * data path: type rank (missing 0, null 1, boolean 2, number 3, string 4, array 5,
 * object 6), then a numeric key (booleans 0/1, numbers), then a "C"-collated string key.
 * None is ever NULL, so row comparisons in cursors are exact.
 */
function sortKeyExprs(field: FieldRef): string[] {
  if (field.kind === 'system') {
    if (field.name === 'owner') return [`(${column('owner')} IS NOT NULL)`, `coalesce(${column('owner')}, '')`];
    return [column(field.name)];
  }
  const x = dataPathExpr(field.path);
  return [
    `(CASE jsonb_typeof(${x}) WHEN 'null' THEN 1 WHEN 'boolean' THEN 2 WHEN 'number' THEN 3 WHEN 'string' THEN 4 WHEN 'array' THEN 5 WHEN 'object' THEN 6 ELSE 0 END)`,
    `(CASE jsonb_typeof(${x}) WHEN 'number' THEN (${x})::numeric WHEN 'boolean' THEN (CASE WHEN ${x} = 'true'::jsonb THEN 1 ELSE 0 END) ELSE 0 END)`,
    `((CASE WHEN jsonb_typeof(${x}) = 'string' THEN ${x} #>> '{}' ELSE '' END) COLLATE "C")`,
  ];
}

function sortKeyParams(field: FieldRef, value: JsonValue | undefined, params: SqlParams): string[] {
  if (field.kind === 'system') {
    if (field.name === 'owner') {
      return [params.add(value !== null, 'boolean'), params.add(value ?? '', 'text')];
    }
    return [params.add(value, TIMESTAMP_FIELDS.has(field.name) ? 'timestamptz' : 'text')];
  }
  const numeric = typeof value === 'number' ? String(value) : typeof value === 'boolean' ? (value ? '1' : '0') : '0';
  return [
    params.add(typeRank(value), 'int'),
    params.add(numeric, 'numeric'),
    `(${params.add(typeof value === 'string' ? value : '', 'text')} COLLATE "C")`,
  ];
}

export function compileOrderBy(orderBy: readonly OrderTerm[], reversed = false): string {
  // `reversed` reads the same order from its end (for pages taken from the end).
  const sql = (direction: 'asc' | 'desc') => ((direction === 'asc') !== reversed ? 'ASC' : 'DESC');
  const parts: string[] = [];
  for (const term of orderBy) {
    for (const expr of sortKeyExprs(term.field)) parts.push(`${expr} ${sql(term.direction)}`);
  }
  const last = orderBy.at(-1);
  if (!(last?.field.kind === 'system' && last.field.name === 'id')) {
    parts.push(`${column('id')} ${sql(tiebreakDirection(orderBy))}`);
  }
  return parts.join(', ');
}

/**
 * "Strictly after the cursor" in the query's order (or strictly before it), as a keyset predicate:
 * k1 > c1 OR (k1 = c1 AND k2 > c2) OR ... OR (all equal AND id > cid), with > and <
 * per term direction. Each k is a row of the term's sort keys.
 */
export function compileAfter(
  orderBy: readonly OrderTerm[],
  cursor: Cursor,
  params: SqlParams,
  side: 'after' | 'before' = 'after',
): string {
  const terms: Array<{ exprs: string[]; values: string[]; direction: 'asc' | 'desc' }> = orderBy.map((term, i) => ({
    exprs: sortKeyExprs(term.field),
    values: sortKeyParams(term.field, cursor.values[i], params),
    direction: term.direction,
  }));
  const last = orderBy.at(-1);
  if (!(last?.field.kind === 'system' && last.field.name === 'id')) {
    terms.push({
      exprs: [column('id')],
      values: [params.add(cursor.id, 'text')],
      direction: tiebreakDirection(orderBy),
    });
  }
  const row = (items: string[]) => (items.length === 1 ? (items[0] as string) : `ROW(${items.join(', ')})`);
  const alternatives = terms.map((term, i) => {
    const equal = terms.slice(0, i).map((prior) => `${row(prior.exprs)} = ${row(prior.values)}`);
    const beyond = `${row(term.exprs)} ${(term.direction === 'asc') === (side === 'after') ? '>' : '<'} ${row(term.values)}`;
    return `(${[...equal, beyond].join(' AND ')})`;
  });
  return `(${alternatives.join(' OR ')})`;
}

/** The columns of a document row, timestamps formatted as the API's ISO strings. */
export function documentColumns(alias: string = ROW_ALIAS): string {
  const a = `${alias}.`;
  return (
    `${a}id, ${a}owner, ${a}version, ` +
    `to_char(${a}created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at, ` +
    `to_char(${a}updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at, ${a}data`
  );
}
