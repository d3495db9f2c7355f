/**
 * Checks a rule as it is saved, for every owner of rules (collections, buckets): one error
 * shape whichever owner refused it (docs/rules.md#errors). `details` always has `rule` (the
 * kind: read, create, write …), `position`, `reason` and `source`; a parse error adds
 * `expected`, a variable the kind cannot see adds `variable`.
 */
import { AppError, isAppError } from '../errors.js';
import type { Expr, Root } from './ast.js';
import { parseRule, type Rule } from './index.js';
import type { RuleErrorReason } from './parser.js';

export interface RuleSavingScope {
  /** The variables a rule of this kind is evaluated with. */
  available: ReadonlySet<Root>;
  /** How the message names the rule's owner and kind, e.g. "a bucket rule", "a read rule". */
  describedAs: string;
  /** What the message adds, e.g. "bucket rules see auth, object and now". */
  hint?: string;
}

/** Parses `source` as the `kind` rule, or throws INVALID_RULE in the one shape. */
export function parseRuleForSaving(
  kind: string,
  source: string,
  scope: RuleSavingScope,
  parse: (source: string) => Rule = parseRule,
): Rule {
  let rule: Rule;
  try {
    rule = parse(source);
  } catch (error) {
    if (isAppError(error) && error.code === 'INVALID_RULE') {
      throw new AppError('INVALID_RULE', `rules.${kind}: ${error.message}`, {
        details: { rule: kind, ...error.details },
        cause: error,
      });
    }
    throw error;
  }
  const unavailable = [...rule.variables].find((root) => !scope.available.has(root));
  if (unavailable !== undefined) {
    const position = variablePosition(rule.expr, unavailable) ?? 0;
    const reason: RuleErrorReason = 'variable_not_available';
    throw new AppError(
      'INVALID_RULE',
      `rules.${kind}: \`${unavailable}\` is not available in ${scope.describedAs}${scope.hint ? `; ${scope.hint}` : ''}.`,
      { details: { rule: kind, reason, position, variable: unavailable, source } },
    );
  }
  return rule;
}

/** Where `root` is first used in the rule (0-based offset), for the error's `position`. */
function variablePosition(expr: Expr, root: Root): number | undefined {
  switch (expr.type) {
    case 'literal':
      return undefined;
    case 'var':
      return expr.root === root ? expr.pos : undefined;
    case 'not':
      return variablePosition(expr.operand, root);
    case 'compare':
    case 'in':
      return variablePosition(expr.left, root) ?? variablePosition(expr.right, root);
    case 'array':
      return firstOf(expr.items, root);
    case 'and':
    case 'or':
      return firstOf(expr.operands, root);
    case 'call':
      return firstOf(expr.args, root);
  }
}

function firstOf(exprs: readonly Expr[], root: Root): number | undefined {
  for (const expr of exprs) {
    const position = variablePosition(expr, root);
    if (position !== undefined) return position;
  }
  return undefined;
}
