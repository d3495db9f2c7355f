import type { Caller } from '../../internal/caller.js';
import { ruleAuthFromCaller, type Expr, type Rule } from '../../internal/rules/index.js';

/** What of `auth` a rule reads: field paths, and whether it reads `auth` whole (beyond `auth == null`). */
interface AuthUse {
  paths: Array<readonly string[]>;
  whole: boolean;
}

const uses = new WeakMap<Rule, AuthUse | null>();

function isNullLiteral(expr: Expr): boolean {
  return expr.type === 'literal' && expr.value === null;
}

function collect(expr: Expr, use: AuthUse, comparedWithNull: boolean): void {
  switch (expr.type) {
    case 'literal':
      return;
    case 'var':
      if (expr.root !== 'auth') return;
      if (expr.path.length > 0) use.paths.push(expr.path);
      else if (!comparedWithNull) use.whole = true;
      return;
    case 'array':
      return expr.items.forEach((item) => collect(item, use, false));
    case 'not':
      return collect(expr.operand, use, false);
    case 'and':
    case 'or':
      return expr.operands.forEach((operand) => collect(operand, use, false));
    case 'compare': {
      const equality = expr.op === '==' || expr.op === '!=';
      collect(expr.left, use, equality && isNullLiteral(expr.right));
      return collect(expr.right, use, equality && isNullLiteral(expr.left));
    }
    case 'in':
      collect(expr.left, use, false);
      return collect(expr.right, use, false);
    case 'call':
      return expr.args.forEach((arg) => collect(arg, use, false));
  }
}

/** Null when verdicts may not be shared at all: a rule that reads `now` is judged at each delivery. */
function authUse(rule: Rule): AuthUse | null {
  let use = uses.get(rule);
  if (use === undefined) {
    if (rule.variables.has('now')) use = null;
    else {
      use = { paths: [], whole: false };
      collect(rule.expr, use, false);
    }
    uses.set(rule, use);
  }
  return use;
}

function valueAt(auth: Record<string, unknown>, path: readonly string[]): unknown {
  let current: unknown = auth;
  for (const key of path) {
    if (typeof current !== 'object' || current === null || Array.isArray(current)) return undefined;
    if (!Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/**
 * A key such that two callers with the same key get the same verdict from `rule` on any
 * document: it holds exactly what of `auth` the rule reads (for `auth != null`, only
 * whether there is a caller). Live-query fan-out evaluates a rule once per distinct key
 * and event rather than once per subscriber. Null when the verdict must not be shared
 * (the rule reads `now`).
 */
export function ruleCallerKey(rule: Rule, caller: Caller): string | null {
  const use = authUse(rule);
  if (use === null) return null;
  const auth = ruleAuthFromCaller(caller);
  if (auth === null) return 'public';
  if (use.whole) return `whole:${JSON.stringify(auth)}`;
  const record: Record<string, unknown> = {
    uid: auth.uid,
    email: auth.email,
    email_verified: auth.email_verified === true,
    role: auth.role,
    aal: auth.aal === 'aal2' ? 'aal2' : 'aal1',
    claims: auth.claims,
  };
  // A missing field and a null one differ (exists()); `!` and `=` keep them apart.
  return `some:${use.paths
    .map((path) => {
      const value = valueAt(record, path);
      return value === undefined ? '!' : `=${JSON.stringify(value)}`;
    })
    .join('\u0000')}`;
}
