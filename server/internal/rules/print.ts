import type { Expr } from './ast.js';

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const KEYWORDS = new Set(['true', 'false', 'null', 'in']);

/** Rule source for an expression; parsing it gives the same tree back. */
export function formatExpression(expr: Expr): string {
  switch (expr.type) {
    case 'literal':
      return typeof expr.value === 'string' ? JSON.stringify(expr.value) : String(expr.value);
    case 'array':
      return `[${expr.items.map(formatExpression).join(', ')}]`;
    case 'var':
      return [
        expr.root,
        ...expr.path.map((key, i) =>
          i === 0 || (IDENT.test(key) && !KEYWORDS.has(key)) ? `.${key}` : `[${JSON.stringify(key)}]`,
        ),
      ].join('');
    case 'not':
      return `!${wrap(expr.operand)}`;
    case 'and':
      return expr.operands.map(wrap).join(' && ');
    case 'or':
      return expr.operands.map(wrap).join(' || ');
    case 'compare':
      return `${wrap(expr.left)} ${expr.op} ${wrap(expr.right)}`;
    case 'in':
      return `${wrap(expr.left)} in ${wrap(expr.right)}`;
    case 'call':
      return `${expr.fn}(${expr.args.map(formatExpression).join(', ')})`;
  }
}

function wrap(expr: Expr): string {
  const text = formatExpression(expr);
  return expr.type === 'literal' || expr.type === 'array' || expr.type === 'var' || expr.type === 'call'
    ? text
    : `(${text})`;
}
