import type { CompareOp, Expr, JsonValue, Root } from './ast.js';
import {
  BOTTOM,
  asNumber,
  asValue,
  canonicalTimestamp,
  codePointLength,
  compareStrings,
  isPlainObject,
  jsonEqual,
  jsonType,
  sanitizeJson,
  type Value,
} from './values.js';

/** What the variables are bound to; an absent variable evaluates to the failure value. */
export interface Env {
  /** The caller as given (a RuleAuth); only the parts a rule reads are checked, when read. */
  auth: unknown;
  doc: unknown;
  incoming: unknown;
  object: unknown;
  /** An event's payload (topic publish rules); absent elsewhere. */
  payload?: unknown;
  now: Date;
  /** `now` as a canonical ISO string, computed on first use. */
  nowValue?: Value;
}

function descendRaw(value: unknown, keys: readonly string[], from: number): unknown {
  let current = value;
  for (let i = from; i < keys.length; i++) {
    const key = keys[i] as string;
    if (!isPlainObject(current) || !Object.hasOwn(current, key)) return BOTTOM;
    current = current[key];
  }
  return current;
}

function descend(value: unknown, keys: readonly string[], from: number): Value {
  return asValue(descendRaw(value, keys, from));
}

/**
 * `auth` and its fields. Token claims are foreign values: the value read is sanitised
 * (see sanitizeJson) when read, which gives what sanitising the whole of `auth` first
 * would give, at the cost of the part the rule reads only.
 */
function authVar(raw: unknown, path: readonly string[]): Value {
  if (raw === null || raw === undefined) return path.length === 0 ? null : BOTTOM;
  if (!isPlainObject(raw)) return BOTTOM;
  // email_verified is true only when given as true: a caller without it has proven nothing.
  const auth = {
    uid: raw.uid,
    email: raw.email,
    email_verified: raw.email_verified === true,
    role: raw.role,
    // Likewise aal2 only when given: a caller that does not say proved no second factor.
    aal: raw.aal === 'aal2' ? 'aal2' : 'aal1',
    claims: raw.claims ?? {},
  };
  return sanitizeJson(path.length === 0 ? auth : descendRaw(auth, path, 0));
}

function textOrNull(value: unknown): Value {
  return value === null || typeof value === 'string' ? value : BOTTOM;
}

/** Reads a field of `doc`, `incoming` or `object` from the value the caller passed. */
function recordField(record: unknown, path: readonly string[]): Value {
  if (!isPlainObject(record)) return BOTTOM;
  const field = path[0] as string;
  if (!Object.hasOwn(record, field)) return BOTTOM;
  const raw = record[field];
  switch (field) {
    case 'data':
      return descend(raw, path, 1);
    case 'created_at':
    case 'updated_at':
      return canonicalTimestamp(raw);
    case 'version':
    case 'size':
      return asNumber(raw);
    default:
      return textOrNull(raw);
  }
}

export function evalVar(root: Root, path: readonly string[], env: Env): Value {
  switch (root) {
    case 'now':
      return (env.nowValue ??= canonicalTimestamp(env.now));
    case 'auth':
      return authVar(env.auth, path);
    case 'doc':
      return recordField(env.doc, path);
    case 'incoming':
      return recordField(env.incoming, path);
    case 'object':
      return recordField(env.object, path);
    case 'payload':
      return env.payload === undefined ? BOTTOM : descend(env.payload, path, 0);
  }
}

/** true, false, or the failure value for anything that is not a boolean. */
export function truth(value: Value): boolean | typeof BOTTOM {
  return typeof value === 'boolean' ? value : BOTTOM;
}

export function compareValues(op: CompareOp, a: Value, b: Value): Value {
  if (a === BOTTOM || b === BOTTOM) return BOTTOM;
  if (op === '==') return jsonEqual(a, b);
  if (op === '!=') return !jsonEqual(a, b);
  const type = jsonType(a);
  if (type !== jsonType(b)) return BOTTOM;
  let order: number;
  if (type === 'number') order = (a as number) - (b as number);
  else if (type === 'string') order = compareStrings(a as string, b as string);
  else return BOTTOM;
  switch (op) {
    case '<':
      return order < 0;
    case '<=':
      return order <= 0;
    case '>':
      return order > 0;
    case '>=':
      return order >= 0;
  }
}

export function membership(item: Value, list: Value): Value {
  if (item === BOTTOM || !Array.isArray(list)) return BOTTOM;
  return list.some((element) => jsonEqual(item, element));
}

export function sizeOf(value: Value): Value {
  if (typeof value === 'string') return codePointLength(value);
  if (Array.isArray(value)) return value.length;
  if (isPlainObject(value)) return Object.keys(value).length;
  return BOTTOM;
}

export function startsWith(value: Value, prefix: Value): Value {
  if (typeof value !== 'string' || typeof prefix !== 'string') return BOTTOM;
  return value.startsWith(prefix);
}

/**
 * Evaluates an expression. Never throws for data reasons: failures are BOTTOM, which
 * `&&` and `||` absorb as SQL's three-valued logic does (false && failure is false,
 * true || failure is true), and which everything else propagates.
 */
export function evaluate(expr: Expr, env: Env): Value {
  switch (expr.type) {
    case 'literal':
      return expr.value;
    case 'array': {
      const items: JsonValue[] = [];
      for (const item of expr.items) {
        const value = evaluate(item, env);
        if (value === BOTTOM) return BOTTOM;
        items.push(value);
      }
      return items;
    }
    case 'var':
      return evalVar(expr.root, expr.path, env);
    case 'not': {
      const value = truth(evaluate(expr.operand, env));
      return value === BOTTOM ? BOTTOM : !value;
    }
    case 'and':
    case 'or': {
      // `&&` stops at the first false, `||` at the first true.
      const decisive = expr.type === 'or';
      let failed = false;
      for (const operand of expr.operands) {
        const value = truth(evaluate(operand, env));
        if (value === decisive) return decisive;
        if (value === BOTTOM) failed = true;
      }
      return failed ? BOTTOM : !decisive;
    }
    case 'compare':
      return compareValues(expr.op, evaluate(expr.left, env), evaluate(expr.right, env));
    case 'in':
      return membership(evaluate(expr.left, env), evaluate(expr.right, env));
    case 'call': {
      const [first, second] = expr.args as [Expr, Expr | undefined];
      switch (expr.fn) {
        case 'size':
          return sizeOf(evaluate(first, env));
        case 'exists':
          return evaluate(first, env) !== BOTTOM;
        case 'starts_with':
          return startsWith(evaluate(first, env), evaluate(second as Expr, env));
      }
    }
  }
}
