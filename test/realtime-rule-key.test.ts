import { describe, expect, it } from 'vitest';
import { PUBLIC_CALLER, type Caller } from '../server/internal/caller.js';
import { evaluateRule, parseRule, ruleAuthFromCaller } from '../server/internal/rules/index.js';
import { ruleCallerKey } from '../server/modules/realtime/rule-key.js';

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)] as T;
}

const UIDS = ['u1', 'u2', 'u3'];

function callerOf(next: () => number): Caller {
  if (next() < 0.2) return PUBLIC_CALLER;
  const claims: Record<string, unknown> = {};
  if (next() < 0.5) claims.team = pick(next, ['a', 'b', null]);
  if (next() < 0.3) claims.admin = next() < 0.5;
  return {
    role: next() < 0.5 ? 'anon' : 'authenticated',
    uid: pick(next, UIDS),
    email: next() < 0.5 ? null : `${pick(next, UIDS)}@example.com`,
    sessionId: `s${Math.floor(next() * 1000)}`,
    emailVerified: next() < 0.5,
    aal: next() < 0.5 ? 'aal2' : 'aal1',
    claims,
    expiresAt: 2_000_000_000,
  };
}

function docOf(next: () => number) {
  return {
    id: `d${Math.floor(next() * 10)}`,
    collection: 'c',
    owner: next() < 0.2 ? null : pick(next, UIDS),
    version: 1,
    created_at: '2026-01-01T00:00:00.000Z',
    updated_at: '2026-01-01T00:00:00.000Z',
    data: { team: pick(next, ['a', 'b', null]), public: next() < 0.5 },
  };
}

const RULES = [
  'true',
  'auth != null',
  'auth == null || doc.data.public == true',
  'null != auth && auth.role == "authenticated"',
  'auth != null && doc.owner == auth.uid',
  'doc.data.team == auth.claims.team',
  'exists(auth.claims.team) && auth.claims.admin == true',
  'auth.email != null',
  'auth.email_verified && auth.email != null',
  'auth.aal == "aal2"',
  'size(auth) > 3',
  'auth == auth',
  '[auth] != [null]',
];

describe('ruleCallerKey', () => {
  it('gives callers the same key only when the rule gives them the same verdict on every document', () => {
    const next = random(20261128);
    for (const source of RULES) {
      const rule = parseRule(source);
      const callers = Array.from({ length: 60 }, () => callerOf(next));
      const docs = Array.from({ length: 30 }, () => docOf(next));
      const now = new Date();
      const byKey = new Map<string, boolean[]>();
      for (const caller of callers) {
        const key = ruleCallerKey(rule, caller);
        expect(key, source).not.toBeNull();
        const verdicts = docs.map((doc) => evaluateRule(rule, { auth: ruleAuthFromCaller(caller), doc, now }));
        const seen = byKey.get(key as string);
        if (seen) expect(verdicts, `${source} with key ${String(key)}`).toEqual(seen);
        else byKey.set(key as string, verdicts);
      }
    }
  });

  it('lets every signed-in caller share one verdict for `auth != null`, and keeps users apart when the rule reads the uid', () => {
    const a: Caller = { role: 'anon', uid: 'a', email: null, sessionId: 's1', claims: {}, expiresAt: 2e9 };
    const b: Caller = { role: 'authenticated', uid: 'b', email: 'b@x.io', sessionId: 's2', claims: {}, expiresAt: 2e9 };
    const signedIn = parseRule('auth != null');
    expect(ruleCallerKey(signedIn, a)).toBe(ruleCallerKey(signedIn, b));
    expect(ruleCallerKey(signedIn, PUBLIC_CALLER)).not.toBe(ruleCallerKey(signedIn, a));
    const owner = parseRule('doc.owner == auth.uid');
    expect(ruleCallerKey(owner, a)).not.toBe(ruleCallerKey(owner, b));
  });

  it('shares nothing for a rule that reads `now`', () => {
    const rule = parseRule('auth != null && doc.updated_at < now');
    expect(ruleCallerKey(rule, PUBLIC_CALLER)).toBeNull();
  });
});
