import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ADVISORY_LOCK_NAMESPACES, ADVISORY_LOCKS } from '../server/internal/advisory-locks.js';

const ROOT = path.resolve(import.meta.dirname, '..');

function filesUnder(dir: string, extension: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return filesUnder(full, extension);
    return full.endsWith(extension) ? [full] : [];
  });
}

describe('advisory lock registry', () => {
  it('gives every lock its own key', () => {
    const keys = [...Object.values(ADVISORY_LOCKS), ...Object.values(ADVISORY_LOCK_NAMESPACES)];
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('is the only place server code writes a lock key', () => {
    // A literal key in a lock call means someone picked a number outside the registry.
    const literal = /pg_(?:try_)?advisory_(?:xact_)?(?:un)?lock(?:_shared)?\(\s*\d/;
    const offenders = filesUnder(path.join(ROOT, 'server'), '.ts').filter((file) =>
      literal.test(readFileSync(file, 'utf8')),
    );
    expect(offenders).toEqual([]);
  });

  it('lists every key the SQL migrations take', () => {
    const registered = new Set<number>(Object.values(ADVISORY_LOCKS));
    const inMigrations = filesUnder(path.join(ROOT, 'migrations'), '.sql').flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(/pg_(?:try_)?advisory_(?:xact_)?lock\((\d+)\)/g)].map((m) =>
        Number(m[1]),
      ),
    );
    expect(inMigrations.length).toBeGreaterThan(0);
    for (const key of inMigrations) expect(registered.has(key), `migration key ${key}`).toBe(true);
  });
});
