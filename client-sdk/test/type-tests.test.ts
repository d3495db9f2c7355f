// The SDK's type tests (types.test.ts, typed-api.test.ts) are assertions for the compiler:
// vitest alone would run them without checking a single `expectTypeOf` or `@ts-expect-error`.
// This compiles them with the repository's strict settings, so a typing that regresses (a
// misspelt field that compiles again, a payload that turns `unknown`) fails the test run too,
// not only `npm run typecheck`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TYPE_TESTS = ['types.test.ts', 'typed-api.test.ts'].map((file) => path.join(ROOT, 'client-sdk', 'test', file));

/** The repository's compiler options (strict, noUncheckedIndexedAccess, ...), for the given files only. */
function compile(files: string[]): string[] {
  const parsed = ts.getParsedCommandLineOfConfigFile(
    path.join(ROOT, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
      },
    },
  );
  if (!parsed) throw new Error('tsconfig.json could not be read');
  expect(parsed.options.strict).toBe(true);
  const program = ts.createProgram(files, parsed.options);
  return ts.getPreEmitDiagnostics(program).map((diagnostic) => {
    const where = diagnostic.file
      ? `${path.relative(ROOT, diagnostic.file.fileName)}:${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0).line + 1}`
      : '';
    return `${where} TS${diagnostic.code}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ')}`;
  });
}

describe('the SDK type tests', () => {
  it('compile under the strict settings, every @ts-expect-error meeting its error', { timeout: 180_000 }, () => {
    expect(compile(TYPE_TESTS)).toEqual([]);
  });

  it('would fail: an @ts-expect-error that meets no error is reported', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'basalt-type-tests-'));
    try {
      // .mts: an ES module wherever it lies, as the SDK's test files are under the repository's package.json.
      const file = path.join(dir, 'stale.mts');
      writeFileSync(file, "// @ts-expect-error\nexport const fine: string = 'no error here';\n");
      expect(compile([file])).toEqual([expect.stringContaining('TS2578')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
