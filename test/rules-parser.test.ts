import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Caller } from '../server/internal/caller.js';
import { AppError } from '../server/internal/errors.js';
import {
  LIMITS,
  evaluateRule,
  formatExpression,
  parseRule,
  ruleAuthFromCaller,
  type Expr,
  type RuleAuth,
  type RuleScope,
} from '../server/internal/rules/index.js';

function parseError(source: string): AppError {
  try {
    parseRule(source);
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error(`expected ${JSON.stringify(source)} to be refused`);
}

/** The tree without positions, to compare parses. */
function shape(expr: Expr): unknown {
  return JSON.parse(JSON.stringify(expr, (key, value: unknown) => (key === 'pos' ? undefined : value)));
}

describe('parseRule accepts the language', () => {
  const good = [
    'true',
    'auth != null && doc.owner == auth.uid',
    'doc.data.public == true || auth.claims.role == "admin"',
    'incoming.owner == auth.uid && size(incoming.data.title) <= 200',
    "starts_with(object.path, 'public/') && object.size < 1048576",
    'object.content_type in ["image/png", "image/jpeg"] && object.bucket == "avatars"',
    'doc.data["odd key"]["it\'s"] == "x\\ty\\u00e9\\"\\\\"',
    'doc.data.tags in [[1, 2], [3]] || "a" in doc.data.tags',
    '!exists(doc.data.deleted_at) && doc.version >= 1 && doc.created_at < now',
    '-1.5e3 < doc.data.n && doc.data.n <= 0.25',
    '!!true',
    '(((auth == null)))',
    'doc.data.true == doc.data.in',
    '  doc.id\n==\t"x"  ',
  ];
  for (const source of good) {
    it(`parses ${JSON.stringify(source)}`, () => {
      const rule = parseRule(source);
      expect(rule.source).toBe(source);
      // Printing and parsing again gives the same tree.
      expect(shape(parseRule(formatExpression(rule.expr)).expr)).toEqual(shape(rule.expr));
    });
  }

  it('gives precedence ! > comparison > && > ||', () => {
    const rule = parseRule('!doc.data.a == 1');
    expect(rule.expr.type).toBe('compare');
    const mixed = parseRule('true || false && false');
    expect(mixed.expr.type).toBe('or');
    expect(evaluateRule(mixed, { auth: null, now: new Date() })).toBe(true);
    expect(evaluateRule(parseRule('(true || false) && false'), { auth: null, now: new Date() })).toBe(false);
  });

  it('lists the variables a rule mentions', () => {
    expect([...parseRule('auth != null && incoming.owner == doc.owner').variables].sort()).toEqual([
      'auth',
      'doc',
      'incoming',
    ]);
    expect([...parseRule('now > "2020"').variables]).toEqual(['now']);
  });
});

describe('parseRule refuses bad rules with position and expectation', () => {
  const bad: [string, number, RegExp][] = [
    ['', 0, /an expression/],
    ['doc.owner ==', 12, /an expression/],
    ['doc.owner = "x"', 10, /'=='/],
    ['auth != null & true', 13, /'&&'/],
    ['auth != null | true', 13, /'\|\|'/],
    ['(true', 5, /'\)'/],
    ['true)', 4, /end of the rule/],
    ['1 == 1 == 1', 7, /comparisons do not chain/],
    ['doc.foo == 1', 4, /a field of doc/],
    ['doc == null', 4, /'\.' and a field of doc/],
    ['object.data == 1', 7, /a field of object/],
    ['user.id == 1', 0, /a variable \(auth, doc, incoming, object, now, payload\)/],
    ['size(doc.data.a, 1)', 15, /size takes 1 argument/],
    ['starts_with(doc.id)', 18, /starts_with takes 2 arguments/],
    ['exists doc.id', 7, /'\('/],
    ['"unterminated', 13, /closing "/],
    ["'it\\'s", 6, /closing '/],
    ['"bad \\x escape"', 5, /escapes/],
    ['"\\u12"', 1, /four hex digits/],
    ['"\\u0000" == doc.id', 0, /without the NUL/],
    ['"\\ud800" == doc.id', 0, /valid Unicode/],
    ['[1, 2', 5, /',' or '\]'/],
    ['[1 2]', 3, /',' or '\]'/],
    ['doc.data. == 1', 10, /a field name/],
    ['doc.data[1] == 1', 9, /quoted field name/],
    ['1e999 == 1', 0, /finite number/],
    ['doc.id == #', 10, /an operator, a value or a name/],
    ['doc.id == "a"\u0007', 13, /U\+0007/],
    ['auth.uid.x == 1', 8, /an operator/],
    ['now.x', 3, /an operator/],
  ];
  for (const [source, position, expected] of bad) {
    it(`refuses ${JSON.stringify(source)} at ${position}`, () => {
      const error = parseError(source);
      expect(error.code).toBe('INVALID_RULE');
      expect(error.status).toBe(400);
      expect(error.details).toMatchObject({ position, source });
      expect(typeof error.details?.expected).toBe('string');
      expect(error.message).toContain(`position ${position}`);
      expect(error.message).toMatch(expected);
    });
  }

  it('limits the length of a rule to 4 KiB of UTF-8', () => {
    const long = `doc.id == "${'x'.repeat(LIMITS.maxBytes)}"`;
    const error = parseError(long);
    expect(error.code).toBe('INVALID_RULE');
    expect(error.details).toMatchObject({ position: LIMITS.maxBytes, expected: 'at most 4096 bytes' });
    expect(error.message).toMatch(/the limit is 4096/);
    expect(() => parseRule(`doc.id == "${'x'.repeat(LIMITS.maxBytes - 20)}"`)).not.toThrow();
    // 1100 emoji are 2200 UTF-16 units but 4400 bytes: the first that does not fit is at 11 + 2 * 1021.
    const wide = parseError(`doc.id == "${'😀'.repeat(1100)}"`);
    expect(wide.details).toMatchObject({ position: 11 + 2 * 1021 });
    expect((wide.details?.source as string).length).toBeLessThanOrEqual(LIMITS.maxBytes + 1);
  });

  it('limits nesting depth', () => {
    const deep = `${'('.repeat(LIMITS.maxDepth + 1)}true${')'.repeat(LIMITS.maxDepth + 1)}`;
    expect(parseError(deep).message).toMatch(/nesting is deeper than 32/);
    expect(parseError(`${'!'.repeat(40)}true`).message).toMatch(/nesting/);
    expect(parseError(`${'['.repeat(40)}${']'.repeat(40)} == doc.data.a`).message).toMatch(/nesting/);
    expect(parseError(`${'size('.repeat(40)}"x"${')'.repeat(40)} == 1`).message).toMatch(/nesting/);
    const ok = `${'('.repeat(LIMITS.maxDepth)}true${')'.repeat(LIMITS.maxDepth)}`;
    expect(evaluateRule(parseRule(ok), { auth: null, now: new Date() })).toBe(true);
  });

  it('limits array literals and field paths', () => {
    const items = Array.from({ length: LIMITS.maxArrayItems + 1 }, (_, i) => i).join(',');
    expect(parseError(`doc.data.a in [${items}]`).message).toMatch(/at most 256 elements/);
    const path = Array.from({ length: LIMITS.maxPathSegments + 1 }, () => 'k').join('.');
    expect(parseError(`doc.data.${path} == 1`).message).toMatch(/at most 32 segments/);
  });

  it('keeps long chains of && and || flat', () => {
    const chain = Array.from({ length: 220 }, (_, i) => `doc.data.a==${i}`).join('||');
    const rule = parseRule(chain);
    expect(rule.expr.type).toBe('or');
    const scope = { auth: null, now: new Date(), doc: { data: { a: 219 } } };
    expect(evaluateRule(rule, scope)).toBe(true);
  });

  it('refuses a rule that is not a string', () => {
    expect(parseError(42 as unknown as string).code).toBe('INVALID_RULE');
  });
});

describe('ruleAuthFromCaller', () => {
  it('maps each kind of caller', () => {
    expect(ruleAuthFromCaller({ role: 'public' })).toBeNull();
    expect(ruleAuthFromCaller({ role: 'service' })).toEqual({
      uid: '',
      email: null,
      email_verified: false,
      role: 'service',
      aal: 'aal1',
      claims: {},
    });
    const user: Caller = {
      role: 'authenticated',
      uid: 'u1',
      email: 'a@example.com',
      sessionId: 's',
      emailVerified: true,
      claims: { plan: 'pro' },
      expiresAt: 0,
    };
    expect(ruleAuthFromCaller(user)).toEqual({
      uid: 'u1',
      email: 'a@example.com',
      email_verified: true,
      role: 'authenticated',
      aal: 'aal1',
      claims: { plan: 'pro' },
    });
    expect(ruleAuthFromCaller({ ...user, aal: 'aal2' })?.aal).toBe('aal2');
    // A caller that does not say has proven nothing.
    expect(ruleAuthFromCaller({ ...user, emailVerified: undefined })?.email_verified).toBe(false);
  });

  it('exposes auth.email_verified, false unless the caller proved the address', () => {
    const rule = parseRule('auth.email_verified && auth.email == "a@example.com"');
    const now = new Date();
    const base = { uid: 'u1', email: 'a@example.com', role: 'authenticated', claims: {} };
    expect(evaluateRule(rule, { auth: { ...base, email_verified: true }, now })).toBe(true);
    expect(evaluateRule(rule, { auth: { ...base, email_verified: false }, now })).toBe(false);
    expect(evaluateRule(rule, { auth: base, now })).toBe(false);
    expect(evaluateRule(rule, { auth: null, now })).toBe(false);
  });
});

describe('auth.aal', () => {
  it('is aal2 only for a caller that proved a second factor', () => {
    const rule = parseRule('auth.aal == "aal2" && auth.uid == "u1"');
    const now = new Date();
    const base = { uid: 'u1', email: null, role: 'authenticated', claims: {} };
    expect(evaluateRule(rule, { auth: { ...base, aal: 'aal2' }, now })).toBe(true);
    expect(evaluateRule(rule, { auth: { ...base, aal: 'aal1' }, now })).toBe(false);
    // A caller that does not say is aal1.
    expect(evaluateRule(rule, { auth: base, now })).toBe(false);
    expect(evaluateRule(parseRule('auth.aal == "aal1"'), { auth: base, now })).toBe(true);
    expect(evaluateRule(rule, { auth: null, now })).toBe(false);
  });
});

describe('evaluateRule semantics', () => {
  const user: RuleAuth = { uid: 'u1', email: 'a@example.com', role: 'authenticated', claims: { role: 'admin', n: 2 } };
  const doc = {
    id: 'd1',
    owner: 'u1',
    version: 3,
    created_at: '2024-05-01T12:00:00.123456Z',
    updated_at: new Date('2024-05-02T00:00:00.000Z'),
    data: { s: 'héllo', n: 10, f: 1.5, b: true, z: null, list: [1, 'a', null, { k: 1 }], o: { a: { b: 'deep' } } },
  };
  const scope = (extra: Partial<RuleScope> = {}): RuleScope => ({
    auth: user,
    doc,
    now: new Date('2024-06-01T00:00:00Z'),
    ...extra,
  });
  const cases: [string, boolean, Partial<RuleScope>?][] = [
    ['doc.owner == auth.uid', true],
    ['auth != null', true],
    ['auth == null', true, { auth: null }],
    ['auth.uid == null', false, { auth: null }],
    ['!(auth.uid == null)', false, { auth: null }],
    ['exists(auth.uid)', false, { auth: null }],
    ['auth.claims.role == "admin" && auth.claims.n == 2', true],
    ['auth.claims.missing == null', false],
    // Missing vs null: a missing field is a failure, not null.
    ['doc.data.z == null', true],
    ['exists(doc.data.z)', true],
    ['doc.data.missing == null', false],
    ['doc.data.missing != null', false],
    ['!exists(doc.data.missing)', true],
    ['exists(doc.data.s.x)', false],
    ['doc.data.o.a.b == "deep"', true],
    ['doc.data.o.a == doc.data.o.a && doc.data.o != doc.data.o.a', true],
    // Types never mix.
    ['doc.data.n == "10"', false],
    ['doc.data.n != "10"', true],
    ['doc.data.n < "11"', false],
    ['!(doc.data.n < "11")', false],
    ['doc.data.n >= 10 && doc.data.f > 1 && doc.data.f < 2', true],
    ['doc.data.b < true', false],
    ['doc.data.z <= null', false],
    ['"a" < "b" && "B" < "a" && "abc" > "ab" && "\\uffff" < "\\ud83d\\ude00"', true],
    ['doc.data.list == [1, "a", null, doc.data.o.a]', false],
    ['1 in doc.data.list && "a" in doc.data.list && null in doc.data.list', true],
    ['2 in doc.data.list', false],
    ['"1" in doc.data.list', false],
    ['doc.data.o.a in [1, doc.data.o.a]', true],
    ['1 in doc.data.s', false],
    ['!(1 in doc.data.s)', false],
    ['doc.data.missing in [1]', false],
    ['!(doc.data.missing in [])', false],
    ['[1, [2]] == [1, [2]] && [1, 2] != [2, 1]', true],
    ['[doc.data.missing] == [null]', false],
    ['size(doc.data.s) == 5 && size(doc.data.list) == 4 && size(doc.data.o) == 1 && size(doc.data) == 7', true],
    ['size("😀") == 1', true],
    ['size(doc.data.n) == 1 || true', true],
    ['exists(size(doc.data.n))', false],
    ['starts_with(doc.data.s, "hé") && !starts_with(doc.data.s, "x") && starts_with("", "")', true],
    ['starts_with(doc.data.n, "1")', false],
    ['!doc.data.s', false],
    ['!doc.data.b == false', true],
    ['doc.data.s && true', false],
    ['doc.data.s || true', true],
    ['true || doc.data.s', true],
    ['false && doc.data.s', false],
    ['doc.data.missing && false', false],
    ['!(doc.data.missing && false)', true],
    ['!(doc.data.missing || false)', false],
    ['doc.data.b', true],
    ['doc.data.s', false],
    ['doc.version == 3 && doc.id == "d1"', true],
    ['doc.created_at == "2024-05-01T12:00:00.123Z" && doc.updated_at == "2024-05-02T00:00:00.000Z"', true],
    ['doc.created_at < doc.updated_at && doc.updated_at < now && now == "2024-06-01T00:00:00.000Z"', true],
    ['doc.created_at > "2024-05"', true],
    ['incoming.owner == auth.uid', false],
    ['exists(incoming.id)', false],
    ['incoming.data.title == "t"', true, { incoming: { data: { title: 't' } } }],
    ['object.size < 10 && starts_with(object.path, "a/")', true, { object: { path: 'a/b', size: '5' } }],
    [
      'object.owner == null && object.content_type == "text/plain" && object.bucket == "b"',
      true,
      {
        object: { path: 'a', size: 1, content_type: 'text/plain', owner: null, bucket: 'b' },
      },
    ],
    ['exists(object.path)', false],
  ];
  for (const [source, expected, extra] of cases) {
    it(`${source} is ${expected}`, () => {
      expect(evaluateRule(parseRule(source), scope(extra))).toBe(expected);
    });
  }

  it('never throws, whatever the scope holds', () => {
    const rule = parseRule('doc.data.a.b == 1 && size(doc.data) > 0 && doc.created_at < now');
    for (const weird of [undefined, null, 42, 'x', [], { data: 'x' }, { data: { a: () => 1 } }, { created_at: 7 }]) {
      expect(evaluateRule(rule, { auth: null, doc: weird, now: new Date('invalid') })).toBe(false);
    }
    const claims: Record<string, unknown> = { bad: 'a\u0000b', big: 10n };
    const withBadClaims: RuleAuth = { uid: 'u', email: null, role: 'anon', claims };
    expect(
      evaluateRule(parseRule('exists(auth.claims.bad) || exists(auth.claims.big)'), {
        auth: withBadClaims,
        now: new Date(),
      }),
    ).toBe(false);
  });
});

describe('parser fuzzing', () => {
  const TOKENS = [
    'auth',
    'doc',
    'incoming',
    'object',
    'now',
    '.',
    'data',
    'claims',
    'uid',
    'owner',
    'path',
    'size',
    'exists',
    'starts_with',
    '(',
    ')',
    '[',
    ']',
    ',',
    '==',
    '!=',
    '<',
    '<=',
    '>',
    '>=',
    '&&',
    '||',
    '!',
    'in',
    'true',
    'false',
    'null',
    '1',
    '-2.5e3',
    '"s"',
    "'t'",
    '"\\u00e9"',
    '["k"]',
    'x',
    '=',
    '&',
    '|',
    '#',
    '"',
    '\\',
  ];

  const checkParse = (source: string) => {
    let rule;
    try {
      rule = parseRule(source);
    } catch (error) {
      expect(error).toBeInstanceOf(AppError);
      const appError = error as AppError;
      expect(appError.code).toBe('INVALID_RULE');
      const position = appError.details?.position as number;
      expect(Number.isInteger(position) && position >= 0 && position <= source.length).toBe(true);
      expect(typeof appError.details?.expected).toBe('string');
      return;
    }
    // Whatever parses evaluates without throwing and prints back to the same tree.
    expect(typeof evaluateRule(rule, { auth: null, now: new Date(), doc: { data: {} } })).toBe('boolean');
    expect(shape(parseRule(formatExpression(rule.expr)).expr)).toEqual(shape(rule.expr));
  };

  it('never fails with anything but INVALID_RULE on random text', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 60 }), checkParse), { numRuns: 2000 });
  });

  it('never fails with anything but INVALID_RULE on random token sequences', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...TOKENS), { maxLength: 20 }), (tokens) => checkParse(tokens.join(' '))),
      { numRuns: 5000 },
    );
  });
});
