/**
 * The rules engine: one parser, two evaluators (in process and SQL) that give the same
 * answer for every rule, document and caller. See docs/rules.md for the language.
 */
import type { Caller } from '../caller.js';
import type { Expr, Root } from './ast.js';
import { evaluate, type Env } from './evaluate.js';
import { parseExpression } from './parser.js';
import { SqlCompiler } from './sql.js';

export { LIMITS } from './ast.js';
export type { Expr, Root } from './ast.js';
export { formatExpression } from './print.js';

export type RuleAuth = {
  uid: string;
  email: string | null;
  /** Whether the owner proved `email` (absent: no). Rules that grant by address should check it. */
  email_verified?: boolean;
  role: string;
  /** The session's assurance level (absent: `aal1`). Rules that need a second factor check it. */
  aal?: 'aal1' | 'aal2';
  claims: Record<string, unknown>;
} | null;

export interface Rule {
  readonly source: string;
  readonly expr: Expr;
  /** The variables the rule mentions, e.g. to refuse `incoming` in a read rule. */
  readonly variables: ReadonlySet<Root>;
}

/** Parses a rule; throws AppError('INVALID_RULE', message, { details: { position, expected, source } }). */
export function parseRule(source: string): Rule {
  const expr = parseExpression(source);
  const variables = new Set<Root>();
  collectVariables(expr, variables);
  return Object.freeze({ source, expr, variables });
}

function collectVariables(expr: Expr, into: Set<Root>): void {
  switch (expr.type) {
    case 'literal':
      return;
    case 'var':
      into.add(expr.root);
      return;
    case 'array':
      return expr.items.forEach((item) => collectVariables(item, into));
    case 'not':
      return collectVariables(expr.operand, into);
    case 'and':
    case 'or':
      return expr.operands.forEach((operand) => collectVariables(operand, into));
    case 'compare':
    case 'in':
      collectVariables(expr.left, into);
      return collectVariables(expr.right, into);
    case 'call':
      return expr.args.forEach((arg) => collectVariables(arg, into));
  }
}

/** public -> null; user -> {uid, email, email_verified, role, aal, claims}; service -> role 'service' (which normally bypasses rules). */
export function ruleAuthFromCaller(caller: Caller): RuleAuth {
  switch (caller.role) {
    case 'public':
      return null;
    case 'service':
      return { uid: '', email: null, email_verified: false, role: 'service', aal: 'aal1', claims: {} };
    default:
      return {
        uid: caller.uid,
        email: caller.email,
        email_verified: caller.emailVerified === true,
        role: caller.role,
        aal: caller.aal === 'aal2' ? 'aal2' : 'aal1',
        claims: caller.claims,
      };
  }
}

export interface RuleScope {
  auth: RuleAuth;
  /** The stored document: {id, owner, version, created_at, updated_at, data}; timestamps as Date or ISO string. */
  doc?: unknown;
  /** The document as it would be after the write, same shape as `doc`. */
  incoming?: unknown;
  /** A storage object: {path, size, content_type, owner, bucket}. */
  object?: unknown;
  /** An event's payload (a topic's publish rule): any JSON value. */
  payload?: unknown;
  now: Date;
}

function environment(auth: RuleAuth, now: Date, scope?: RuleScope): Env {
  return { auth, doc: scope?.doc, incoming: scope?.incoming, object: scope?.object, payload: scope?.payload, now };
}

/** In-process evaluation: true only when the rule's value is exactly `true`; never throws. */
export function evaluateRule(rule: Rule, scope: RuleScope): boolean {
  try {
    return evaluate(rule.expr, environment(scope.auth, scope.now, scope)) === true;
  } catch {
    return false;
  }
}

/**
 * Compiles to a parameterised SQL boolean expression over one table row. Values are
 * appended to `params` and referenced as $n; no value from the rule, the caller or the
 * data is ever part of the SQL text. Variables other than the subject (and `incoming`,
 * which a stored row cannot have) fail, exactly as evaluateRule fails without them.
 */
export function compileRuleToSql(
  rule: Rule,
  options: { auth: RuleAuth; now: Date; params: unknown[]; subject: 'doc' | 'object'; rowAlias: string },
): string {
  const env = environment(options.auth, options.now);
  return new SqlCompiler(env, options.subject, options.rowAlias, options.params).compileRule(rule.expr);
}
