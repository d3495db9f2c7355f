import { AppError } from '../errors.js';
import {
  FUNCTION_ARITY,
  LIMITS,
  OPEN_FIELDS,
  ROOT_FIELDS,
  type CompareOp,
  type Expr,
  type FunctionName,
  type Root,
} from './ast.js';

type Token =
  | { kind: 'punct'; value: string; pos: number }
  | { kind: 'string'; value: string; pos: number; end: number }
  | { kind: 'number'; value: number; pos: number; end: number }
  | { kind: 'ident'; value: string; pos: number }
  | { kind: 'eof'; pos: number };

const PUNCTS = ['==', '!=', '<=', '>=', '&&', '||', '<', '>', '!', '(', ')', '[', ']', ',', '.'] as const;
const COMPARE_OPS: ReadonlySet<string> = new Set(['==', '!=', '<', '<=', '>', '>=']);
const ROOTS: ReadonlySet<string> = new Set(['auth', 'doc', 'incoming', 'object', 'now', 'payload']);
const FUNCTIONS: ReadonlySet<string> = new Set(Object.keys(FUNCTION_ARITY));
const IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
const NUMBER = /-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

/** Shown in error messages; long or multi-line fragments are cut so the message stays readable. */
function describe(token: Token): string {
  switch (token.kind) {
    case 'eof':
      return 'the end of the rule';
    case 'punct':
      return `'${token.value}'`;
    case 'ident':
      return `'${token.value.length > 40 ? `${token.value.slice(0, 40)}…` : token.value}'`;
    case 'string':
      return 'a string';
    case 'number':
      return 'a number';
  }
}

/** Why a rule was refused (docs/rules.md#errors): `details.reason` of INVALID_RULE. */
export type RuleErrorReason =
  'syntax' | 'not_a_string' | 'too_long' | 'too_deep' | 'too_many_items' | 'path_too_long' | 'variable_not_available';

export function ruleError(
  source: string,
  position: number,
  expected: string,
  message: string,
  reason: RuleErrorReason = 'syntax',
): AppError {
  return new AppError('INVALID_RULE', message, {
    details: {
      reason,
      position,
      expected,
      source: source.length > LIMITS.maxBytes ? `${source.slice(0, LIMITS.maxBytes)}…` : source,
    },
  });
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const ANY_SURROGATE = /[\uD800-\uDFFF]/;

export function hasLoneSurrogate(value: string): boolean {
  return ANY_SURROGATE.test(value) && LONE_SURROGATE.test(value);
}

class Lexer {
  private pos = 0;

  constructor(private readonly source: string) {}

  fail(position: number, expected: string, found: string): never {
    throw ruleError(
      this.source,
      position,
      expected,
      `Invalid rule at position ${position}: expected ${expected}, found ${found}.`,
    );
  }

  next(): Token {
    const src = this.source;
    while (this.pos < src.length && ' \t\n\r'.includes(src[this.pos] as string)) this.pos++;
    const start = this.pos;
    if (start >= src.length) return { kind: 'eof', pos: start };
    const ch = src[start] as string;
    if (ch === '"' || ch === "'") return this.string(ch);
    if (ch === '-' || (ch >= '0' && ch <= '9')) {
      NUMBER.lastIndex = start;
      const match = NUMBER.exec(src);
      if (!match) this.fail(start, 'a number', `'${ch}'`);
      const value = Number(match[0]);
      if (!Number.isFinite(value)) this.fail(start, 'a finite number', `'${match[0]}'`);
      this.pos = start + match[0].length;
      return { kind: 'number', value: Object.is(value, -0) ? 0 : value, pos: start, end: this.pos };
    }
    IDENT.lastIndex = start;
    const ident = IDENT.exec(src);
    if (ident) {
      this.pos = start + ident[0].length;
      return { kind: 'ident', value: ident[0], pos: start };
    }
    for (const p of PUNCTS) {
      if (src.startsWith(p, start)) {
        this.pos = start + p.length;
        return { kind: 'punct', value: p, pos: start };
      }
    }
    const hints: Record<string, string> = { '=': "'=='", '&': "'&&'", '|': "'||'" };
    const codePoint = src.codePointAt(start) as number;
    const shown =
      codePoint >= 0x20 && codePoint !== 0x7f
        ? `'${String.fromCodePoint(codePoint)}'`
        : `U+${codePoint.toString(16).toUpperCase().padStart(4, '0')}`;
    return this.fail(start, hints[ch] ?? 'an operator, a value or a name', shown);
  }

  private string(quote: string): Token {
    const src = this.source;
    const start = this.pos;
    let i = start + 1;
    let out = '';
    for (;;) {
      if (i >= src.length) this.fail(i, `a closing ${quote}`, 'the end of the rule');
      const ch = src[i] as string;
      if (ch === quote) break;
      if (ch === '\\') {
        const esc = src[i + 1];
        if (esc === undefined) this.fail(i + 1, 'an escape character', 'the end of the rule');
        if (esc === 'u') {
          const hex = src.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail(i, 'four hex digits after \\u', `'${hex}'`);
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
          continue;
        }
        const simple = SIMPLE_ESCAPES[esc];
        if (simple === undefined)
          this.fail(i, `one of the escapes \\" \\' \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX`, `'\\${esc}'`);
        out += simple;
        i += 2;
        continue;
      }
      if (ch.charCodeAt(0) < 0x20)
        this.fail(i, 'a printable character (escape control characters)', 'a control character');
      out += ch;
      i++;
    }
    // Postgres text cannot hold NUL or unpaired surrogates: such a literal could never
    // match stored data, and would make the SQL form fail, so it is refused up front.
    if (out.includes('\u0000')) this.fail(start, 'a string without the NUL character', 'a string with \\u0000');
    if (hasLoneSurrogate(out)) this.fail(start, 'a string of valid Unicode', 'an unpaired surrogate');
    this.pos = i + 1;
    return { kind: 'string', value: out, pos: start, end: this.pos };
  }
}

class Parser {
  private readonly lexer: Lexer;
  private token: Token;
  private depth = 0;

  constructor(private readonly source: string) {
    this.lexer = new Lexer(source);
    this.token = this.lexer.next();
  }

  fail(token: Token, expected: string): never {
    return this.lexer.fail(token.pos, expected, describe(token));
  }

  private current(): Token {
    return this.token;
  }

  private advance(): Token {
    const current = this.token;
    this.token = this.lexer.next();
    return current;
  }

  private isPunct(value: string): boolean {
    return this.token.kind === 'punct' && this.token.value === value;
  }

  private expectPunct(value: string): Token {
    if (!this.isPunct(value)) this.fail(this.token, `'${value}'`);
    return this.advance();
  }

  private enter(token: Token): void {
    if (++this.depth > LIMITS.maxDepth) {
      throw ruleError(
        this.source,
        token.pos,
        `at most ${LIMITS.maxDepth} levels of nesting`,
        `Invalid rule at position ${token.pos}: nesting is deeper than ${LIMITS.maxDepth} levels.`,
        'too_deep',
      );
    }
  }

  parseRule(): Expr {
    if (this.token.kind === 'eof') this.fail(this.token, 'an expression');
    const expr = this.or();
    const rest = this.current();
    if (rest.kind !== 'eof') {
      if (rest.kind === 'punct' && COMPARE_OPS.has(rest.value)) {
        this.fail(rest, "'&&', '||' or the end of the rule (comparisons do not chain; use parentheses)");
      }
      this.fail(rest, "an operator ('==', '&&', '||', ...) or the end of the rule");
    }
    return expr;
  }

  private or(): Expr {
    const pos = this.token.pos;
    const operands = [this.and()];
    while (this.isPunct('||')) {
      this.advance();
      operands.push(this.and());
    }
    return operands.length === 1 ? (operands[0] as Expr) : { type: 'or', operands, pos };
  }

  private and(): Expr {
    const pos = this.token.pos;
    const operands = [this.comparison()];
    while (this.isPunct('&&')) {
      this.advance();
      operands.push(this.comparison());
    }
    return operands.length === 1 ? (operands[0] as Expr) : { type: 'and', operands, pos };
  }

  private comparison(): Expr {
    const left = this.unary();
    const token = this.token;
    if (token.kind === 'punct' && COMPARE_OPS.has(token.value)) {
      this.advance();
      const right = this.unary();
      return { type: 'compare', op: token.value as CompareOp, left, right, pos: token.pos };
    }
    if (token.kind === 'ident' && token.value === 'in') {
      this.advance();
      const right = this.unary();
      return { type: 'in', left, right, pos: token.pos };
    }
    return left;
  }

  private unary(): Expr {
    const token = this.token;
    if (this.isPunct('!')) {
      this.advance();
      this.enter(token);
      const operand = this.unary();
      this.depth--;
      return { type: 'not', operand, pos: token.pos };
    }
    return this.primary();
  }

  private primary(): Expr {
    const token = this.token;
    switch (token.kind) {
      case 'string':
      case 'number':
        this.advance();
        return { type: 'literal', value: token.value, pos: token.pos };
      case 'punct':
        if (token.value === '(') {
          this.advance();
          this.enter(token);
          const inner = this.or();
          this.depth--;
          this.expectPunct(')');
          return inner;
        }
        if (token.value === '[') return this.array();
        return this.fail(token, 'an expression');
      case 'ident':
        return this.identifier();
      case 'eof':
        return this.fail(token, 'an expression');
    }
  }

  private array(): Expr {
    const open = this.advance();
    this.enter(open);
    const items: Expr[] = [];
    if (!this.isPunct(']')) {
      for (;;) {
        if (items.length >= LIMITS.maxArrayItems) {
          throw ruleError(
            this.source,
            this.token.pos,
            `at most ${LIMITS.maxArrayItems} array elements`,
            `Invalid rule at position ${this.token.pos}: an array literal may have at most ${LIMITS.maxArrayItems} elements.`,
            'too_many_items',
          );
        }
        items.push(this.or());
        if (this.isPunct(',')) {
          this.advance();
          continue;
        }
        if (!this.isPunct(']')) this.fail(this.token, "',' or ']'");
        break;
      }
    }
    this.advance();
    this.depth--;
    return { type: 'array', items, pos: open.pos };
  }

  private identifier(): Expr {
    const token = this.advance() as Extract<Token, { kind: 'ident' }>;
    const name = token.value;
    if (name === 'true' || name === 'false') return { type: 'literal', value: name === 'true', pos: token.pos };
    if (name === 'null') return { type: 'literal', value: null, pos: token.pos };
    if (FUNCTIONS.has(name)) {
      const fn = name as FunctionName;
      this.expectPunct('(');
      this.enter(token);
      const args: Expr[] = [];
      const arity = FUNCTION_ARITY[fn];
      while (args.length < arity) {
        if (args.length > 0) {
          if (!this.isPunct(',')) this.fail(this.token, `',' (${fn} takes ${arity} arguments)`);
          this.advance();
        }
        args.push(this.or());
      }
      if (!this.isPunct(')')) {
        this.fail(this.token, `')' (${fn} takes ${arity} argument${arity === 1 ? '' : 's'})`);
      }
      this.advance();
      this.depth--;
      return { type: 'call', fn, args, pos: token.pos };
    }
    if (ROOTS.has(name)) return this.variable(name as Root, token.pos);
    return this.lexer.fail(
      token.pos,
      'a value, a variable (auth, doc, incoming, object, now, payload) or a function (size, starts_with, exists)',
      describe(token),
    );
  }

  private variable(root: Root, pos: number): Expr {
    const fields = ROOT_FIELDS[root];
    const path: string[] = [];
    // `payload` is free JSON from its root on: `payload`, `payload.a.b`, `payload["a-b"]`.
    if (root === 'payload') return this.openPath(root, path, pos);
    if (root === 'auth' || root === 'now') {
      if (root === 'now' || !this.isPunct('.')) return { type: 'var', root, path, pos };
    } else if (!this.isPunct('.')) {
      return this.fail(this.token, `'.' and a field of ${root} (${fields.join(', ')})`);
    }
    this.advance();
    const field = this.token;
    if (field.kind !== 'ident' || !fields.includes(field.value)) {
      return this.fail(field, `a field of ${root} (${fields.join(', ')})`);
    }
    this.advance();
    path.push(field.value);
    if (!OPEN_FIELDS.has(field.value)) return { type: 'var', root, path, pos };
    return this.openPath(root, path, pos);
  }

  /** The free part of a path (`.name` or `["any key"]` segments), after `data`, `claims` or `payload`. */
  private openPath(root: Root, path: string[], pos: number): Expr {
    for (;;) {
      let segment: string;
      if (this.isPunct('.')) {
        this.advance();
        const key = this.token;
        if (key.kind !== 'ident') return this.fail(key, 'a field name (use ["..."] for other keys)');
        segment = key.value;
      } else if (this.isPunct('[')) {
        this.advance();
        const key = this.token;
        if (key.kind !== 'string') return this.fail(key, 'a quoted field name');
        this.advance();
        if (!this.isPunct(']')) return this.fail(this.token, "']'");
        segment = key.value;
      } else {
        return { type: 'var', root, path, pos };
      }
      const segmentToken = this.token;
      this.advance();
      if (path.length >= LIMITS.maxPathSegments) {
        throw ruleError(
          this.source,
          segmentToken.pos,
          `at most ${LIMITS.maxPathSegments} path segments`,
          `Invalid rule at position ${segmentToken.pos}: a field path may have at most ${LIMITS.maxPathSegments} segments.`,
          'path_too_long',
        );
      }
      path.push(segment);
    }
  }
}

export function parseExpression(source: string): Expr {
  if (typeof source !== 'string') {
    throw ruleError('', 0, 'a string', 'A rule must be a string.', 'not_a_string');
  }
  const bytes = Buffer.byteLength(source, 'utf8');
  if (bytes > LIMITS.maxBytes) {
    // The position is the first character that does not fit.
    let position = 0;
    for (let used = 0; position < source.length;) {
      const width = Buffer.byteLength(String.fromCodePoint(source.codePointAt(position) as number), 'utf8');
      if (used + width > LIMITS.maxBytes) break;
      used += width;
      position += width === 4 ? 2 : 1;
    }
    throw ruleError(
      source,
      position,
      `at most ${LIMITS.maxBytes} bytes`,
      `Invalid rule: it is ${bytes} bytes long (UTF-8); the limit is ${LIMITS.maxBytes}.`,
      'too_long',
    );
  }
  return new Parser(source).parseRule();
}
