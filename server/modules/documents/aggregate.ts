/**
 * Aggregations (docs/documents.md#aggregations): `POST /v1/db/:collection/aggregate`
 * groups the documents the caller may read (the read rule applied in SQL, as for queries)
 * and computes count, sum, avg, min and max per group, in one statement.
 *
 * Semantics: sum, avg, min and max read JSON numbers only; a value of any other type (a
 * string "12", a boolean, null) or a missing field is ignored, and a group with no number
 * gets null. `["count"]` counts documents; `["count", path]` those whose field is present
 * and not null. A group key is the field's value; missing and null fall in one group, key null.
 */
import { AppError } from '../../internal/errors.js';
import { fieldRefName, parseFieldRef, QUERY_LIMITS, type FieldRef } from './query.js';
import { dataFieldExpr, dataPathExpr, quoteIdent, ROW_ALIAS } from './sql.js';
import type { JsonValue } from './types.js';

export const AGGREGATE_LIMITS = { maxAggregates: 20, maxGroupBy: 8, defaultLimit: 100, maxLimit: 1000 } as const;
export const AGGREGATE_FUNCTIONS = ['count', 'sum', 'avg', 'min', 'max'] as const;
export type AggregateFunction = (typeof AGGREGATE_FUNCTIONS)[number];
const ALIAS = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export interface Aggregate {
  alias: string;
  fn: AggregateFunction;
  field: FieldRef | null;
}

export interface ParsedAggregation {
  groupBy: FieldRef[];
  aggregates: Aggregate[];
  /** Terms naming a group_by path or an aggregate alias. */
  orderBy: Array<{
    target: { kind: 'key'; index: number } | { kind: 'value'; index: number };
    direction: 'asc' | 'desc';
  }>;
  limit: number;
}

export interface AggregateInput {
  where?: unknown;
  group_by?: unknown;
  aggregates?: unknown;
  order_by?: unknown;
  limit?: unknown;
}

function invalid(message: string, field: string): AppError {
  return new AppError('INVALID_REQUEST', message, { details: { field } });
}

export function parseAggregation(input: AggregateInput): ParsedAggregation {
  const groupByInput = input.group_by ?? [];
  if (!Array.isArray(groupByInput) || groupByInput.length > AGGREGATE_LIMITS.maxGroupBy) {
    throw invalid(`group_by: a list of at most ${AGGREGATE_LIMITS.maxGroupBy} paths.`, 'group_by');
  }
  const groupBy = groupByInput.map((path, i) => parseFieldRef(path, `group_by[${i}]`));
  const names = groupBy.map(fieldRefName);
  if (new Set(names).size !== names.length) throw invalid('group_by: a path is listed twice.', 'group_by');

  const aggregatesInput = input.aggregates;
  if (aggregatesInput === null || typeof aggregatesInput !== 'object' || Array.isArray(aggregatesInput)) {
    throw invalid('aggregates: {"<alias>": ["count"] | ["sum" | "avg" | "min" | "max", path]}.', 'aggregates');
  }
  const entries = Object.entries(aggregatesInput);
  if (entries.length === 0 || entries.length > AGGREGATE_LIMITS.maxAggregates) {
    throw invalid(`aggregates: 1 to ${AGGREGATE_LIMITS.maxAggregates} of them.`, 'aggregates');
  }
  const aggregates = entries.map(([alias, spec]): Aggregate => {
    const where = `aggregates.${alias}`;
    if (!ALIAS.test(alias)) throw invalid(`${where}: an alias is a letter or _ then letters, digits, _.`, where);
    if (!Array.isArray(spec) || spec.length < 1 || spec.length > 2) {
      throw invalid(`${where}: ["count"] or ["sum" | "avg" | "min" | "max", path].`, where);
    }
    const [fn, path] = spec as [unknown, unknown];
    if (typeof fn !== 'string' || !(AGGREGATE_FUNCTIONS as readonly string[]).includes(fn)) {
      throw invalid(`${where}: unknown function ${JSON.stringify(fn)} (${AGGREGATE_FUNCTIONS.join(', ')}).`, where);
    }
    if (fn !== 'count' && spec.length !== 2) throw invalid(`${where}: ${fn} needs a path.`, where);
    return { alias, fn: fn as AggregateFunction, field: spec.length === 2 ? parseFieldRef(path, `${where}[1]`) : null };
  });

  const orderInput = input.order_by ?? [];
  if (!Array.isArray(orderInput) || orderInput.length > QUERY_LIMITS.maxOrderBy) {
    throw invalid(`order_by: at most ${QUERY_LIMITS.maxOrderBy} terms.`, 'order_by');
  }
  const orderBy = orderInput.map((term: unknown, i) => {
    const where = `order_by[${i}]`;
    const [name, direction = 'asc'] = Array.isArray(term) ? (term as unknown[]) : [term];
    if (typeof name !== 'string' || (direction !== 'asc' && direction !== 'desc')) {
      throw invalid(`${where}: [group_by path or aggregate alias, "asc" | "desc"].`, where);
    }
    const value = aggregates.findIndex((aggregate) => aggregate.alias === name);
    const key = names.indexOf(name);
    if (value < 0 && key < 0) throw invalid(`${where}: "${name}" is neither a group_by path nor an alias.`, where);
    return {
      target: value >= 0 ? { kind: 'value' as const, index: value } : { kind: 'key' as const, index: key },
      direction: direction as 'asc' | 'desc',
    };
  });

  const limit = input.limit ?? AGGREGATE_LIMITS.defaultLimit;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > AGGREGATE_LIMITS.maxLimit) {
    throw invalid(`limit: a whole number from 1 to ${AGGREGATE_LIMITS.maxLimit}.`, 'limit');
  }
  return { groupBy, aggregates, orderBy, limit };
}

/** A field as jsonb (the group key), missing and JSON null both 'null'. */
function keyExpr(field: FieldRef): string {
  if (field.kind === 'data') return `coalesce(${dataPathExpr(field.path)}, 'null'::jsonb)`;
  const column = `${ROW_ALIAS}.${quoteIdent(field.name)}`;
  if (field.name === 'created_at' || field.name === 'updated_at') {
    return `to_jsonb(to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))`;
  }
  return `coalesce(to_jsonb(${column}), 'null'::jsonb)`;
}

/**
 * The value at a path, read for an aggregate: a top-level field with `->` (an eighth less
 * time for an avg than `#>`). Group keys keep dataPathExpr, the expression an index on the
 * path has, whose statistics tell Postgres how few groups there are.
 */
function valueExpr(path: readonly string[]): string {
  return path.length === 1 ? dataFieldExpr(path[0] as string) : dataPathExpr(path);
}

/**
 * `fn` over a field's JSON numbers as numeric, other values skipped (fn(NULL) when the
 * field is a system one: none is a number); with `count`, how many numbers there are,
 * among the rows `only` (SQL) admits when given. The type test is the aggregate's FILTER,
 * which Postgres checks before it evaluates the argument, so a count needs no numeric at
 * all. Reading values out of jsonb is most of an aggregation's time, and Postgres does not
 * share one expression between aggregates — but it does run `sum(x)` and `avg(x)` of the
 * same argument and FILTER as one transition (both keep numeric's count and sum), so the
 * two read the value twice per row (the type test and the number), where a sum and a count
 * of numbers read it three times. (A LATERAL that reads the value once costs more per row
 * than it saves, or loses the parallel plan.)
 */
function numbersAggregate(fn: string, field: FieldRef, count = false, only: string | null = null): string {
  if (field.kind !== 'data') return `${fn}(NULL::numeric)`;
  const x = valueExpr(field.path);
  const isNumber = `jsonb_typeof(${x}) = 'number'`;
  return `${fn}(${count ? '*' : `(${x})::numeric`}) FILTER (WHERE ${only === null ? isNumber : `(${only}) AND ${isNumber}`})`;
}

function aggregateExpr(aggregate: Aggregate): string {
  if (aggregate.fn === 'count') {
    if (!aggregate.field) return 'count(*)';
    return `count(*) FILTER (WHERE ${keyExpr(aggregate.field)} <> 'null'::jsonb)`;
  }
  return numbersAggregate(aggregate.fn, aggregate.field as FieldRef);
}

/**
 * A grouped aggregation in two steps. The rows are grouped by each key as stored — the
 * very expression an index on that path has, so Postgres knows from the index's statistics
 * how few groups there are and hashes them in one pass (with parallel workers on a large
 * collection: each hashes its share, the leader merges), where `coalesce(key, 'null')` (an
 * expression it has no statistics for) made it expect a group per row and sort every row,
 * whole documents included, spilling to disk. The few groups this gives are then merged
 * into the wire's groups (a missing field and JSON null are one group), combining partial
 * results: counts and sums add up, min of mins, max of maxes.
 *
 * An avg is the inner group's own `avg` where a wire group is one inner group — always,
 * but for keys missing in some documents and JSON null in others. Only those are merged,
 * as sum / count, so the count of numbers is taken only in rows with such a key (a test of
 * the row's key, not a read of its value): avg and sum share one transition
 * (numbersAggregate), and no row but those pays for a count. Both are numeric's own
 * sum / count, so the value is the same either way.
 */
function compileGrouped(parsed: ParsedAggregation): { inner: { select: string; groupBy: string }; select: string } {
  const inner: string[] = [];
  const outer: string[] = [];
  const nullKeys: string[] = [];
  parsed.groupBy.forEach((field, i) => {
    if (field.kind === 'data') {
      const key = dataPathExpr(field.path);
      inner.push(`${key} AS r${i}`);
      outer.push(`coalesce(g.r${i}, 'null'::jsonb) AS k${i}`);
      nullKeys.push(`${key} IS NULL`, `jsonb_typeof(${key}) = 'null'`);
    } else {
      inner.push(`${keyExpr(field)} AS r${i}`);
      outer.push(`g.r${i} AS k${i}`);
    }
  });
  const merged = nullKeys.length > 0 ? nullKeys.join(' OR ') : null;
  parsed.aggregates.forEach((aggregate, i) => {
    if (aggregate.fn === 'avg') {
      const field = aggregate.field as FieldRef;
      inner.push(`${numbersAggregate('avg', field)} AS m${i}`);
      if (merged === null) {
        // Every wire group is one inner group.
        outer.push(`max(g.m${i}) AS v${i}`);
        return;
      }
      inner.push(
        `${numbersAggregate('sum', field)} AS a${i}`,
        `${numbersAggregate('count', field, true, merged)} AS b${i}`,
      );
      outer.push(`CASE WHEN count(*) = 1 THEN max(g.m${i}) ELSE sum(g.a${i}) / nullif(sum(g.b${i}), 0) END AS v${i}`);
      return;
    }
    inner.push(`${aggregateExpr(aggregate)} AS a${i}`);
    const merge = aggregate.fn === 'min' || aggregate.fn === 'max' ? aggregate.fn : 'sum';
    outer.push(`${merge}(g.a${i}) AS v${i}`);
  });
  const groupBy = parsed.groupBy.map((_, i) => `${i + 1}`).join(', ');
  return { inner: { select: inner.join(', '), groupBy }, select: outer.join(', ') };
}

/**
 * The statement parts of an aggregation; keys come out as k0…, values as v0…. With
 * group_by, `grouped` is the inner step (see compileGrouped) that `select` reads as `g`.
 */
export function compileAggregation(parsed: ParsedAggregation): {
  select: string;
  grouped: { select: string; groupBy: string } | null;
  groupBy: string | null;
  orderBy: string;
} {
  const keys = parsed.groupBy.map((field, i) => `${keyExpr(field)} AS k${i}`);
  const values = parsed.aggregates.map((aggregate, i) => `${aggregateExpr(aggregate)} AS v${i}`);
  const order = parsed.orderBy.map(
    (term) =>
      `${term.target.kind === 'key' ? 'k' : 'v'}${term.target.index} ${term.direction === 'asc' ? 'ASC' : 'DESC'} NULLS FIRST`,
  );
  // Ties (and no order_by) fall to the keys, so the answer's order is stable.
  for (let i = 0; i < parsed.groupBy.length; i++) order.push(`k${i} ASC`);
  const orderBy = order.length > 0 ? order.join(', ') : '1';
  if (parsed.groupBy.length === 0) {
    return { select: [...keys, ...values].join(', '), grouped: null, groupBy: null, orderBy };
  }
  const { inner, select } = compileGrouped(parsed);
  return { select, grouped: inner, groupBy: inner.groupBy, orderBy };
}

export interface AggregateGroup {
  key: Record<string, JsonValue>;
  values: Record<string, number | null>;
}

/** A result row as the wire's group. */
export function toGroup(parsed: ParsedAggregation, row: Record<string, unknown>): AggregateGroup {
  const key: Record<string, JsonValue> = {};
  parsed.groupBy.forEach((field, i) => {
    key[fieldRefName(field)] = (row[`k${i}`] ?? null) as JsonValue;
  });
  const values: Record<string, number | null> = {};
  parsed.aggregates.forEach((aggregate, i) => {
    const value = row[`v${i}`];
    values[aggregate.alias] = value === null || value === undefined ? null : Number(value);
  });
  return { key, values };
}
