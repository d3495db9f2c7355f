/**
 * Checks for JSON that came from a user (request bodies, query values, websocket frames,
 * metadata) before it goes anywhere else. Postgres text and jsonb cannot hold NUL or unpaired
 * surrogates, and a value nested thousands deep overflows recursive code (the rule evaluator,
 * the SQL compiler, JSON.stringify), so both are refused at the edge with a catalogue error.
 */
import { AppError } from './errors.js';

/** The deepest nesting accepted anywhere user JSON enters (documents have their own, lower limit). */
export const MAX_USER_JSON_DEPTH = 64;

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether a string can be stored in Postgres text or jsonb: no NUL, no unpaired surrogate. */
export function isStorableString(value: string): boolean {
  return !value.includes('\u0000') && !LONE_SURROGATE.test(value);
}

export type UserJsonProblem = { kind: 'depth'; path: string } | { kind: 'string'; path: string };

/**
 * The first problem in a parsed JSON value, or null: nesting beyond `maxDepth` or a string
 * (key or value) Postgres cannot store. Iterative, so hostile depth cannot overflow the stack.
 */
export function findUserJsonProblem(value: unknown, maxDepth = MAX_USER_JSON_DEPTH): UserJsonProblem | null {
  const stack: Array<{ value: unknown; path: string; depth: number }> = [{ value, path: '', depth: 0 }];
  while (stack.length > 0) {
    const item = stack.pop()!;
    if (typeof item.value === 'string') {
      if (!isStorableString(item.value)) return { kind: 'string', path: item.path };
      continue;
    }
    if (item.value === null || typeof item.value !== 'object') continue;
    if (item.depth >= maxDepth) return { kind: 'depth', path: item.path };
    if (Array.isArray(item.value)) {
      item.value.forEach((inner, index) =>
        stack.push({ value: inner, path: `${item.path}[${index}]`, depth: item.depth + 1 }),
      );
      continue;
    }
    for (const [key, inner] of Object.entries(item.value)) {
      const path = item.path ? `${item.path}.${key}` : key;
      if (!isStorableString(key)) return { kind: 'string', path };
      stack.push({ value: inner, path, depth: item.depth + 1 });
    }
  }
  return null;
}

/** Whether a JSON value holds only storable strings and nests no deeper than `maxDepth`. */
export function isStorableJson(value: unknown, maxDepth = MAX_USER_JSON_DEPTH): boolean {
  return findUserJsonProblem(value, maxDepth) === null;
}

/** Throws INVALID_REQUEST naming the field when a user JSON value is too deep or unstorable. */
export function assertUserJson(value: unknown, what: string, maxDepth = MAX_USER_JSON_DEPTH): void {
  const problem = findUserJsonProblem(value, maxDepth);
  if (!problem) return;
  const field = problem.path ? `${what}.${problem.path}` : what;
  throw new AppError(
    'INVALID_REQUEST',
    problem.kind === 'depth'
      ? `${what} nests deeper than ${maxDepth} levels.`
      : `${what} holds a string with NUL or an unpaired surrogate.`,
    { details: problem.kind === 'depth' ? { field, max_depth: maxDepth } : { field } },
  );
}
