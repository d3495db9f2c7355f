import { AppError } from '../errors.js';
import type { CompareOp, Expr, JsonValue } from './ast.js';
import { compareValues, evaluate, sizeOf, type Env } from './evaluate.js';
import { BOTTOM, jsonType, type Value } from './values.js';

/**
 * A compiled sub-expression. Every kind encodes the failure value as SQL NULL, except
 * a typed column whose SQL NULL is the JSON value null (a document without owner).
 */
type Node =
  /** Known at compile time: everything that does not read the row (auth, now, literals). */
  | { k: 'const'; v: Value }
  | { k: 'json'; sql: string; cheap: boolean }
  /** `total`: provably never NULL, so it needs no COALESCE and stays usable by an index. */
  | { k: 'bool'; sql: string; total?: boolean }
  | { k: 'typed'; type: 'number' | 'string'; sql: string; nullIsJsonNull: boolean; cheap: boolean };

type Subject = 'doc' | 'object';

const ISO_FORMAT = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`;
const ALIAS = /^[A-Za-z][A-Za-z0-9_]{0,62}$/;

const DOC_COLUMNS: Record<string, (alias: string) => Node> = {
  id: (a) => typed('string', `${a}.id`),
  owner: (a) => typed('string', `${a}.owner`),
  version: (a) => typed('number', `${a}.version`),
  created_at: (a) => typed('string', `to_char(${a}.created_at AT TIME ZONE 'UTC', ${ISO_FORMAT})`),
  updated_at: (a) => typed('string', `to_char(${a}.updated_at AT TIME ZONE 'UTC', ${ISO_FORMAT})`),
};

const OBJECT_COLUMNS: Record<string, (alias: string) => Node> = {
  path: (a) => typed('string', `${a}.path`),
  size: (a) => typed('number', `${a}.size`),
  content_type: (a) => typed('string', `${a}.content_type`),
  owner: (a) => typed('string', `${a}.owner`),
  bucket: (a) => typed('string', `${a}.bucket`),
};

function isTotal(node: Node): boolean {
  return node.k === 'bool' && node.total === true;
}

function typed(type: 'number' | 'string', sql: string): Node {
  return { k: 'typed', type, sql, nullIsJsonNull: true, cheap: true };
}

const FAIL: Node = { k: 'const', v: BOTTOM };
const SQL_OPS: Record<Exclude<CompareOp, '==' | '!='>, string> = { '<': '<', '<=': '<=', '>': '>', '>=': '>=' };

/**
 * Compiles a rule to a boolean SQL expression over one row, by partial evaluation:
 * every sub-expression that does not read the row is evaluated here, by the same code
 * as evaluateRule, and enters the SQL only as a bind parameter. What reads the row is
 * translated operator by operator, with type guards, so no input can make the query
 * fail and every failure is SQL NULL exactly where the in-process evaluator fails.
 */
export class SqlCompiler {
  private aliases = 0;
  private readonly values: unknown[] = [];

  constructor(
    private readonly env: Env,
    private readonly subject: Subject,
    private readonly alias: string,
    private readonly params: unknown[],
  ) {
    if (!ALIAS.test(alias)) throw new AppError('INTERNAL', `Invalid row alias for a rule: ${JSON.stringify(alias)}`);
  }

  compileRule(expr: Expr): string {
    const node = this.compile(expr);
    if (node.k === 'const') return node.v === true ? 'true' : 'false';
    // Every predicate that can be NULL is wrapped, so a failure is false even under the
    // caller's NOT; a provably total one is left bare, where Postgres can use indexes.
    const predicate = isTotal(node) ? node.sql : `COALESCE(${this.asBool(node)}, false)`;
    const numbers = new Map<string, number>();
    return predicate.replace(/§(\d+)§/g, (_, index: string) => {
      let n = numbers.get(index);
      if (n === undefined) {
        this.params.push(this.values[Number(index)]);
        n = this.params.length;
        numbers.set(index, n);
      }
      return `$${n}`;
    });
  }

  private readsRow(expr: Expr): boolean {
    switch (expr.type) {
      case 'literal':
        return false;
      case 'var':
        return expr.root === this.subject;
      case 'array':
        return expr.items.some((item) => this.readsRow(item));
      case 'not':
        return this.readsRow(expr.operand);
      case 'and':
      case 'or':
        return expr.operands.some((operand) => this.readsRow(operand));
      case 'compare':
      case 'in':
        return this.readsRow(expr.left) || this.readsRow(expr.right);
      case 'call':
        return expr.args.some((arg) => this.readsRow(arg));
    }
  }

  /**
   * Values become placeholders first and `$n` only in the final text, so a value whose
   * SQL a simplification dropped is not left behind as an unused parameter (Postgres
   * refuses those), and a repeated operand reuses its parameter.
   */
  private param(value: string | string[]): string {
    this.values.push(value);
    return `§${this.values.length - 1}§`;
  }

  private jsonParam(value: JsonValue): string {
    if (value === null || typeof value === 'boolean') return `'${JSON.stringify(value)}'::jsonb`;
    return `${this.param(JSON.stringify(value))}::jsonb`;
  }

  private asJson(node: Node): string {
    switch (node.k) {
      case 'const':
        return node.v === BOTTOM ? 'NULL::jsonb' : this.jsonParam(node.v);
      case 'json':
        return node.sql;
      case 'bool':
        return `to_jsonb(${node.sql})`;
      case 'typed':
        return node.nullIsJsonNull ? `COALESCE(to_jsonb(${node.sql}), 'null'::jsonb)` : `to_jsonb(${node.sql})`;
    }
  }

  private isCheap(node: Node): boolean {
    return node.k === 'const' || (node.k !== 'bool' && node.cheap);
  }

  private asBool(node: Node): string {
    switch (node.k) {
      case 'const':
        return node.v === true ? 'true' : node.v === false ? 'false' : 'NULL::boolean';
      case 'bool':
        return node.sql;
      case 'json':
        // A simple CASE evaluates its operand once.
        return `(CASE ${node.sql} WHEN 'true'::jsonb THEN true WHEN 'false'::jsonb THEN false END)`;
      case 'typed':
        return 'NULL::boolean';
    }
  }

  /**
   * Gives `build` SQL for each operand that may be repeated: cheap operands (parameters,
   * columns, field paths) as they are, others bound once in a scalar subquery, so the
   * SQL text grows linearly with the rule however the operands nest.
   */
  private bound(operands: { sql: string; cheap: boolean }[], build: (sqls: string[]) => string): string {
    const expensive = operands.filter((o) => !o.cheap);
    if (expensive.length === 0) return build(operands.map((o) => o.sql));
    const table = `_rb${++this.aliases}`;
    const columns: string[] = [];
    const sqls = operands.map((o) => {
      if (o.cheap) return o.sql;
      columns.push(`${o.sql} AS v${columns.length}`);
      return `${table}.v${columns.length - 1}`;
    });
    // OFFSET 0 keeps the planner from pulling the subquery up, which would paste each
    // operand back into every place that uses it: exponential in the nesting.
    return `(SELECT ${build(sqls)} FROM (SELECT ${columns.join(', ')} OFFSET 0) AS ${table})`;
  }

  private jsonOperand(node: Node): { sql: string; cheap: boolean } {
    return { sql: this.asJson(node), cheap: this.isCheap(node) };
  }

  private compile(expr: Expr): Node {
    if (!this.readsRow(expr)) return { k: 'const', v: evaluate(expr, this.env) };
    switch (expr.type) {
      case 'literal':
        return { k: 'const', v: expr.value };
      case 'var':
        return this.variable(expr.path);
      case 'array':
        return this.array(expr.items.map((item) => this.compile(item)));
      case 'not': {
        const operand = this.compile(expr.operand);
        return { k: 'bool', sql: `(NOT ${this.asBool(operand)})`, total: isTotal(operand) };
      }
      case 'and':
      case 'or':
        return this.logic(
          expr.type,
          expr.operands.map((operand) => this.compile(operand)),
        );
      case 'compare': {
        const left = this.compile(expr.left);
        const right = this.compile(expr.right);
        if (expr.op === '==') return this.equal(left, right);
        if (expr.op === '!=') {
          const eq = this.equal(left, right);
          if (eq.k === 'const') return { k: 'const', v: eq.v === BOTTOM ? BOTTOM : !eq.v };
          return { k: 'bool', sql: `(NOT ${this.asBool(eq)})`, total: isTotal(eq) };
        }
        return this.order(expr.op, left, right);
      }
      case 'in':
        return this.membership(this.compile(expr.left), this.compile(expr.right));
      case 'call': {
        const args = expr.args.map((arg) => this.compile(arg));
        switch (expr.fn) {
          case 'size':
            return this.size(args[0] as Node);
          case 'exists':
            return this.exists(args[0] as Node);
          case 'starts_with':
            return this.startsWith(args[0] as Node, args[1] as Node);
        }
      }
    }
  }

  private variable(path: readonly string[]): Node {
    const field = path[0] as string;
    const a = this.alias;
    if (this.subject === 'object') return (OBJECT_COLUMNS[field] as (alias: string) => Node)(a);
    if (field !== 'data') return (DOC_COLUMNS[field] as (alias: string) => Node)(a);
    let sql = `${a}.data`;
    for (const key of path.slice(1)) sql = `(${sql} -> ${this.param(key)}::text)`;
    return { k: 'json', sql, cheap: true };
  }

  private array(items: Node[]): Node {
    if (items.some((item) => item.k === 'const' && item.v === BOTTOM)) return FAIL;
    const operands = items.map((item) => this.jsonOperand(item));
    const nullable = items.map((item) => item.k !== 'const' && !(item.k === 'typed' && item.nullIsJsonNull));
    const sql = this.bound(operands, (sqls) => {
      const build = `jsonb_build_array(${sqls.join(', ')})`;
      const checks = sqls.filter((_, i) => nullable[i]).map((s) => `${s} IS NOT NULL`);
      return checks.length === 0 ? build : `(CASE WHEN ${checks.join(' AND ')} THEN ${build} END)`;
    });
    return { k: 'json', sql, cheap: false };
  }

  private logic(kind: 'and' | 'or', operands: Node[]): Node {
    // Kleene logic, as SQL's AND/OR: the decisive value wins over a failure.
    const decisive = kind === 'or';
    const parts: string[] = [];
    let failed = false;
    let total = true;
    for (const operand of operands) {
      if (operand.k === 'const') {
        if (operand.v === decisive) return { k: 'const', v: decisive };
        if (operand.v !== !decisive) failed = true;
        continue;
      }
      parts.push(this.asBool(operand));
      total &&= isTotal(operand);
    }
    if (failed) parts.push('NULL::boolean');
    if (parts.length === 0) return { k: 'const', v: failed ? BOTTOM : !decisive };
    return { k: 'bool', sql: `(${parts.join(kind === 'and' ? ' AND ' : ' OR ')})`, total: total && !failed };
  }

  private equal(left: Node, right: Node): Node {
    if (left.k === 'const' && right.k === 'const') return { k: 'const', v: compareValues('==', left.v, right.v) };
    if ((left.k === 'const' && left.v === BOTTOM) || (right.k === 'const' && right.v === BOTTOM)) return FAIL;
    if (left.k === 'const') [left, right] = [right, left];
    if (left.k === 'typed' && right.k === 'const') {
      const value = right.v as JsonValue;
      const x = left.sql;
      // A column's NULL is JSON null (a document without owner); a computed NULL is a failure.
      const falseUnlessFailed: Node = { k: 'bool', sql: `(CASE WHEN ${x} IS NOT NULL THEN false END)` };
      if (value === null) {
        return left.nullIsJsonNull ? { k: 'bool', sql: `(${x} IS NULL)`, total: true } : falseUnlessFailed;
      }
      if (jsonType(value) !== left.type) return left.nullIsJsonNull ? { k: 'const', v: false } : falseUnlessFailed;
      const p =
        left.type === 'string'
          ? `${this.param(value as string)}::text`
          : `${this.param(JSON.stringify(value))}::numeric`;
      const cast = left.type === 'string' ? `${x}::text` : x;
      if (!left.nullIsJsonNull) return { k: 'bool', sql: `(${cast} = ${p})` };
      return { k: 'bool', sql: `(${x} IS NOT NULL AND ${cast} = ${p})`, total: true };
    }
    return { k: 'bool', sql: `(${this.asJson(left)} = ${this.asJson(right)})` };
  }

  private knownType(node: Node): string | undefined {
    switch (node.k) {
      case 'const':
        return node.v === BOTTOM ? undefined : jsonType(node.v);
      case 'typed':
        return node.type;
      case 'bool':
        return 'boolean';
      case 'json':
        return undefined;
    }
  }

  private order(op: Exclude<CompareOp, '==' | '!='>, left: Node, right: Node): Node {
    if ((left.k === 'const' && left.v === BOTTOM) || (right.k === 'const' && right.v === BOTTOM)) return FAIL;
    const tl = this.knownType(left);
    const tr = this.knownType(right);
    const orderable = (t: string | undefined) => t === undefined || t === 'number' || t === 'string';
    if (!orderable(tl) || !orderable(tr) || (tl !== undefined && tr !== undefined && tl !== tr)) return FAIL;
    const sqlOp = SQL_OPS[op];
    const known = tl ?? tr;
    if (known !== undefined) {
      const type = known as 'number' | 'string';
      const sql = this.bound(
        [left, right].map((n) => (n.k === 'json' ? this.jsonOperand(n) : { sql: '', cheap: true })),
        (sqls) => {
          const guards: string[] = [];
          const side = (n: Node, i: number): string => {
            if (n.k === 'const') {
              return type === 'number'
                ? `${this.param(JSON.stringify(n.v))}::numeric`
                : `${this.param(n.v as string)}::text`;
            }
            if (n.k === 'typed') return n.type === 'string' ? `(${n.sql})::text` : n.sql;
            const j = sqls[i] as string;
            guards.push(`jsonb_typeof(${j}) = '${type}'`);
            return type === 'number' ? `(${j})::numeric` : `(${j} #>> '{}')`;
          };
          const a = side(left, 0);
          const b = side(right, 1);
          const cmp = type === 'number' ? `${a} ${sqlOp} ${b}` : `${a} COLLATE "C" ${sqlOp} ${b} COLLATE "C"`;
          return guards.length === 0 ? `(${cmp})` : `(CASE WHEN ${guards.join(' AND ')} THEN ${cmp} END)`;
        },
      );
      return { k: 'bool', sql };
    }
    const sql = this.bound([this.jsonOperand(left), this.jsonOperand(right)], ([a, b]) => {
      return (
        `(CASE WHEN jsonb_typeof(${a}) = 'number' AND jsonb_typeof(${b}) = 'number' THEN (${a})::numeric ${sqlOp} (${b})::numeric` +
        ` WHEN jsonb_typeof(${a}) = 'string' AND jsonb_typeof(${b}) = 'string'` +
        ` THEN (${a} #>> '{}') COLLATE "C" ${sqlOp} (${b} #>> '{}') COLLATE "C" END)`
      );
    });
    return { k: 'bool', sql };
  }

  private membership(item: Node, list: Node): Node {
    if ((item.k === 'const' && item.v === BOTTOM) || (list.k === 'const' && list.v === BOTTOM)) return FAIL;
    if (list.k === 'typed' || list.k === 'bool') return FAIL;
    const itemMayFail = !(item.k === 'const' || (item.k === 'typed' && item.nullIsJsonNull));
    if (list.k === 'const') {
      if (!Array.isArray(list.v)) return FAIL;
      if (item.k === 'typed' && item.nullIsJsonNull) return this.columnIn(item, list.v);
      const x = this.asJson(item);
      if (list.v.length === 0)
        return itemMayFail
          ? { k: 'bool', sql: `(CASE WHEN ${x} IS NOT NULL THEN false END)` }
          : { k: 'const', v: false };
      // NULL IN (non-empty set without NULLs) is NULL: a failed item stays a failure.
      return { k: 'bool', sql: `(${x} IN (SELECT jsonb_array_elements(${this.jsonParam(list.v)})))` };
    }
    const element = `_re${++this.aliases}`;
    // A scalar item (all but a value read from the document) is in the list exactly when
    // the list contains [item]: jsonb containment finds a scalar among an array's top-level
    // elements, with jsonb's equality. It is a plain operator, where the EXISTS over the
    // elements is a subquery per row, which keeps Postgres from planning parallel workers
    // for the statement (docs/documents.md#aggregations).
    const scalarItem = item.k === 'const' ? !(typeof item.v === 'object' && item.v !== null) : item.k !== 'json';
    const itemSql =
      item.k === 'const' && scalarItem ? { sql: this.jsonParam([item.v as JsonValue]), cheap: true } : null;
    const sql = this.bound([itemSql ?? this.jsonOperand(item), this.jsonOperand(list)], ([x, a]) => {
      const guard = itemMayFail ? `jsonb_typeof(${a}) = 'array' AND ${x} IS NOT NULL` : `jsonb_typeof(${a}) = 'array'`;
      if (itemSql) return `(CASE WHEN ${guard} THEN ${a} @> ${x} END)`;
      if (scalarItem) return `(CASE WHEN ${guard} THEN ${a} @> jsonb_build_array(${x}) END)`;
      return `(CASE WHEN ${guard} THEN EXISTS (SELECT 1 FROM jsonb_array_elements(${a}) AS ${element}(v) WHERE ${element}.v = ${x}) END)`;
    });
    return { k: 'bool', sql };
  }

  /**
   * A column in a list of constants, as `= ANY(array)`, which an index on the column can
   * serve. The column's NULL (JSON null) matches a null element; elements of another
   * type than the column's can never match.
   */
  private columnIn(column: Extract<Node, { k: 'typed' }>, list: JsonValue[]): Node {
    const x = column.sql;
    const values = list.filter((value) => jsonType(value) === column.type);
    const hasNull = list.includes(null);
    let any: string | null = null;
    if (values.length > 0) {
      const array = this.param(
        values.map((value) => (column.type === 'string' ? (value as string) : JSON.stringify(value))),
      );
      any = column.type === 'string' ? `${x}::text = ANY(${array}::text[])` : `${x} = ANY(${array}::numeric[])`;
    }
    if (hasNull) return { k: 'bool', sql: any ? `(${x} IS NULL OR ${any})` : `(${x} IS NULL)`, total: true };
    return any ? { k: 'bool', sql: `(${x} IS NOT NULL AND ${any})`, total: true } : { k: 'const', v: false };
  }

  private size(arg: Node): Node {
    if (arg.k === 'const') return { k: 'const', v: sizeOf(arg.v) };
    if (arg.k === 'bool') return FAIL;
    if (arg.k === 'typed') {
      if (arg.type !== 'string') return FAIL;
      return { k: 'typed', type: 'number', sql: `length(${arg.sql})`, nullIsJsonNull: false, cheap: arg.cheap };
    }
    const sql = this.bound([this.jsonOperand(arg)], ([j]) => {
      return (
        `(CASE jsonb_typeof(${j}) WHEN 'string' THEN length(${j} #>> '{}') WHEN 'array' THEN jsonb_array_length(${j})` +
        ` WHEN 'object' THEN (SELECT count(*) FROM jsonb_object_keys(${j})) END)`
      );
    });
    return { k: 'typed', type: 'number', sql, nullIsJsonNull: false, cheap: false };
  }

  private exists(arg: Node): Node {
    if (arg.k === 'const') return { k: 'const', v: arg.v !== BOTTOM };
    if (arg.k === 'typed' && arg.nullIsJsonNull) return { k: 'const', v: true };
    return { k: 'bool', sql: `(${arg.sql} IS NOT NULL)`, total: true };
  }

  private startsWith(value: Node, prefix: Node): Node {
    if ((value.k === 'const' && value.v === BOTTOM) || (prefix.k === 'const' && prefix.v === BOTTOM)) return FAIL;
    const tv = this.knownType(value);
    const tp = this.knownType(prefix);
    if ((tv !== undefined && tv !== 'string') || (tp !== undefined && tp !== 'string')) return FAIL;
    const nodes = [value, prefix];
    const sql = this.bound(
      nodes.map((n) => (n.k === 'json' ? this.jsonOperand(n) : { sql: '', cheap: true })),
      (sqls) => {
        const guards: string[] = [];
        const side = (n: Node, i: number): string => {
          if (n.k === 'const') return `${this.param(n.v as string)}::text`;
          if (n.k === 'typed') return `(${n.sql})::text`;
          const j = sqls[i] as string;
          guards.push(`jsonb_typeof(${j}) = 'string'`);
          return `(${j} #>> '{}')`;
        };
        // Explicitly "C", as for ordering: two columns of different collations would leave
        // Postgres unable to choose one (42P22), and bytes are what the JS evaluator compares.
        const call = `starts_with(${side(value, 0)} COLLATE "C", ${side(prefix, 1)} COLLATE "C")`;
        return guards.length === 0 ? call : `(CASE WHEN ${guards.join(' AND ')} THEN ${call} END)`;
      },
    );
    return { k: 'bool', sql };
  }
}
