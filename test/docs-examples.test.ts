/**
 * The docs cannot drift from the server: every curl example in docs/*.md runs against a
 * real server, and every TypeScript/JavaScript example compiles against the SDK
 * (`@basalt/client`) and the functions API (`basalt/functions`). Pages are found by listing
 * docs/ (and client-sdk/, for the SDK's README), so a new page is walked without being named
 * here. test/docs-blocks.ts says how a block is marked as a fragment
 * (`<!-- docs-test: skip <reason> -->`) or as an example of an error
 * (`<!-- docs-test: expect-status 404 -->`).
 *
 * What a curl block may use, each a fresh value of the page's own server:
 *   $BASALT_URL                                   the server
 *   $BASALT_SERVICE_KEY, $SERVICE_KEY             the service key
 *   $ACCESS_TOKEN, $TOKEN, $USER_TOKEN            a signed-in user's access token
 *   $REFRESH_TOKEN, $USER_ID, $USER_EMAIL         that user's refresh token, id and email
 *   $EMAIL, $PASSWORD                             an address not yet signed up, a good password
 * `http://localhost:8080` (or 127.0.0.1) is taken as $BASALT_URL, and `<access_token>`,
 * `<refresh_token>`, `<service_key>` as the variables of the same meaning.
 * Each page gets its own server and database; a page's blocks run in order, so one block
 * may create what the next one reads. A curl that answers 4xx or 5xx fails the block unless
 * the block expects it.
 *
 * In a code block, `basalt` (a client) and `createClient` are there without an import, and a
 * name the block uses without declaring it (`email`, `file`, `cursor` …) is taken as a
 * placeholder of any type; everything called on the SDK is checked.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { signUp, STRONG_PASSWORD, uniqueEmail } from './auth-helpers.js';
import { isCodeBlock, isCurlBlock, readDocBlocks, type DocBlock } from './docs-blocks.js';
import { createTestDatabase, startTestApp } from './helpers.js';

const ROOT = path.resolve(import.meta.dirname, '..');
// The SDK's README is the first page its users read: its examples are held to the same test.
const BLOCKS = [...readDocBlocks(path.join(ROOT, 'docs')), ...readDocBlocks(path.join(ROOT, 'client-sdk'))];

const where = (block: DocBlock) => `${block.page}:${block.line}`;

describe('reading a page’s blocks', () => {
  it('finds fences of any length, their language, line and the directives above them', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'basalt-docs-blocks-'));
    try {
      await writeFile(
        path.join(dir, 'page.md'),
        [
          '# A page',
          '',
          '<!-- docs-test: expect-status 404 409 -->',
          '',
          '```sh',
          'curl "$BASALT_URL/nothing"',
          '```',
          '<!-- docs-test: skip a sketch of a signature -->',
          '````TS',
          'basalt.auth.signIn(…)',
          '```',
          '````',
          '~~~js',
          'fetch(url)',
          '~~~',
        ].join('\n'),
      );
      await writeFile(path.join(dir, 'notes.txt'), '```sh\ncurl x\n```\n');
      const blocks = readDocBlocks(dir);
      expect(blocks.map(({ line, language, skip, expectStatus }) => ({ line, language, skip, expectStatus }))).toEqual([
        { line: 5, language: 'sh', skip: null, expectStatus: [404, 409] },
        { line: 9, language: 'ts', skip: 'a sketch of a signature', expectStatus: null },
        { line: 13, language: 'js', skip: null, expectStatus: null },
      ]);
      expect(blocks[1]?.code).toBe('basalt.auth.signIn(…)\n```');
      expect(blocks.map(isCurlBlock)).toEqual([true, false, false]);
      expect(blocks.map(isCodeBlock)).toEqual([false, true, true]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the docs’ fenced blocks', () => {
  it('are found on every page, and skips are few and give a reason', () => {
    expect(BLOCKS.length).toBeGreaterThan(20);
    const skipped = BLOCKS.filter((block) => block.skip !== null);
    for (const block of skipped) expect(block.skip, where(block)).not.toBe('no reason given');
    const runnable = BLOCKS.filter((block) => isCurlBlock(block) || isCodeBlock(block));
    // Fragments are the exception: most examples are checked.
    expect(skipped.length, skipped.map(where).join(', ')).toBeLessThanOrEqual(Math.max(4, runnable.length / 4));
  });
});

// ---------------------------------------------------------------------------------------------
// curl examples

const STATUS_MARK = '@@docs-test-status';

interface CurlRun {
  statuses: number[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Placeholders the docs write instead of a variable: the default address, and a token or
 * key in angle brackets (`<access_token>`, `<service-key>`), become the variables above.
 */
function withPlaceholders(code: string): string {
  return code
    .replace(/https?:\/\/(?:localhost|127\.0\.0\.1):8080/g, '$BASALT_URL')
    .replace(/<(?:access[_-]?token|token|jwt)>/gi, '$ACCESS_TOKEN')
    .replace(/<(?:refresh[_-]?token)>/gi, '$REFRESH_TOKEN')
    .replace(/<(?:service[_-]?key)>/gi, '$BASALT_SERVICE_KEY');
}

/** Runs a shell block with bash; each curl reports its status on stderr, out of $(…) and pipes. */
function runShell(code: string, env: Record<string, string>, cwd: string): Promise<CurlRun> {
  const script = [
    'set -e -o pipefail',
    `curl() { command curl --silent --show-error --max-time 30 --write-out '%{stderr}${STATUS_MARK} %{http_code}\\n' "$@"; }`,
    // A console transcript's prompts.
    withPlaceholders(code).replace(/^\s*\$ /gm, ''),
  ].join('\n');
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['-c', script],
      { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const statuses = [...stderr.matchAll(new RegExp(`${STATUS_MARK} (\\d+)`, 'g'))].map((match) =>
          Number(match[1]),
        );
        const exitCode = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ statuses, exitCode, stdout, stderr: stderr.replace(new RegExp(`${STATUS_MARK} \\d+\\n`, 'g'), '') });
      },
    );
  });
}

const curlPages = [...new Set(BLOCKS.filter((block) => isCurlBlock(block) && block.skip === null).map((b) => b.page))];

describe('curl examples run against a real server', () => {
  for (const page of curlPages) {
    it(
      page,
      async () => {
        const database = await createTestDatabase();
        const server = await startTestApp(database);
        const cwd = await mkdtemp(path.join(tmpdir(), 'basalt-docs-test-'));
        try {
          const user = await signUp(server.url);
          if (!user.session) throw new Error('sign-up gave no session');
          const env = {
            BASALT_URL: server.url,
            BASALT_SERVICE_KEY: server.serviceKey,
            SERVICE_KEY: server.serviceKey,
            ACCESS_TOKEN: user.session.access_token,
            TOKEN: user.session.access_token,
            USER_TOKEN: user.session.access_token,
            REFRESH_TOKEN: user.session.refresh_token,
            USER_ID: user.user.id,
            USER_EMAIL: user.user.email ?? '',
            EMAIL: uniqueEmail('docs'),
            PASSWORD: STRONG_PASSWORD,
          };
          const failures: string[] = [];
          for (const block of BLOCKS.filter((b) => b.page === page && isCurlBlock(b) && b.skip === null)) {
            const run = await runShell(block.code, env, cwd);
            const output = `${run.stdout.slice(0, 600)}${run.stderr ? `\nstderr: ${run.stderr.slice(0, 400)}` : ''}`;
            if (run.statuses.length === 0) failures.push(`${where(block)}: no curl answered\n${output}`);
            else if (block.expectStatus !== null) {
              if (run.statuses.join(' ') !== block.expectStatus.join(' ')) {
                failures.push(
                  `${where(block)}: answered ${run.statuses.join(' ')}, the doc expects ${block.expectStatus.join(' ')}\n${output}`,
                );
              }
            } else if (run.statuses.some((status) => status === 0 || status >= 400)) {
              failures.push(`${where(block)}: answered ${run.statuses.join(' ')}\n${output}`);
            }
            if (run.exitCode !== 0) failures.push(`${where(block)}: the block exited ${run.exitCode}\n${output}`);
          }
          expect(failures).toEqual([]);
        } finally {
          await server.close();
          await database.drop();
          await rm(cwd, { recursive: true, force: true });
        }
      },
      120_000,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// TypeScript and JavaScript examples

const CHECK_DIR = path.join(ROOT, 'docs', '.docs-test');
const PRELUDE = `import type * as Sdk from '@basalt/client';
declare global {
  const basalt: Sdk.BasaltClient;
  const createClient: typeof Sdk.createClient;
}
export {};
`;
/** "Cannot find name" (2304), with a suggestion (2552), and its shorthand-property form (18004). */
const UNDECLARED = new Set([2304, 2552, 18004]);

/** Names no type alias may take. */
const RESERVED_TYPE_NAMES = new Set([
  'any',
  'unknown',
  'never',
  'object',
  'string',
  'number',
  'boolean',
  'symbol',
  'bigint',
  'void',
  'undefined',
  'null',
]);

const COMPILER_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ['lib.es2023.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
  types: ['node'],
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  esModuleInterop: true,
  allowJs: true,
  checkJs: true,
  resolveJsonModule: true,
  baseUrl: ROOT,
  paths: {
    '@basalt/client': ['client-sdk/src/index.ts'],
    '@basalt/client/offline': ['client-sdk/src/offline/index.ts'],
    'basalt/functions': ['server/functions-api.ts'],
  },
};

interface CheckedFile {
  block: DocBlock;
  file: string;
  /** Lines put above the block's code (placeholder declarations). */
  offset: number;
  source: string;
}

function fileOf(block: DocBlock): string {
  const slug = block.page.replace(/^docs\//, '').replace(/\W+/g, '-');
  const js = block.language === 'js' || block.language === 'javascript' || block.language === 'mjs';
  return path.join(CHECK_DIR, `${slug}-L${block.line}.${js ? 'mjs' : 'mts'}`);
}

function compile(files: CheckedFile[]): ts.Diagnostic[] {
  const virtual = new Map<string, string>([[path.join(CHECK_DIR, 'prelude.d.mts'), PRELUDE]]);
  for (const file of files) virtual.set(file.file, file.source);
  const host = ts.createCompilerHost(COMPILER_OPTIONS);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, language, onError, create) => {
    const text = virtual.get(path.resolve(name));
    return text !== undefined
      ? ts.createSourceFile(name, text, language, true)
      : getSourceFile(name, language, onError, create);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => virtual.has(path.resolve(name)) || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => virtual.get(path.resolve(name)) ?? readFile(name);
  const program = ts.createProgram([...virtual.keys()], COMPILER_OPTIONS, host);
  return ts.getPreEmitDiagnostics(program).filter((d) => d.file && virtual.has(path.resolve(d.file.fileName)));
}

describe('code examples compile against the SDK and the functions API', () => {
  it('every ts/js block type-checks', () => {
    const blocks = BLOCKS.filter((block) => isCodeBlock(block) && block.skip === null);
    expect(blocks.length).toBeGreaterThan(0);
    const files = blocks.map((block): CheckedFile => ({
      block,
      file: fileOf(block),
      offset: 0,
      source: `${block.code}\nexport {};\n`,
    }));

    // First pass: names a block uses without declaring them are its placeholders.
    const placeholders = new Map<string, Set<string>>();
    for (const diagnostic of compile(files)) {
      if (!UNDECLARED.has(diagnostic.code) || !diagnostic.file || diagnostic.start === undefined) continue;
      const name = /'([\w$]+)'/.exec(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'))?.[1];
      if (!name) continue;
      const set = placeholders.get(path.resolve(diagnostic.file.fileName)) ?? new Set<string>();
      set.add(name);
      placeholders.set(path.resolve(diagnostic.file.fileName), set);
    }
    for (const file of files) {
      const names = [...(placeholders.get(file.file) ?? [])];
      // A value and a type of the same name: a placeholder may stand for either.
      const declarations = names.map(
        (name) => `declare const ${name}: any;${RESERVED_TYPE_NAMES.has(name) ? '' : ` type ${name} = any;`}`,
      );
      file.offset = declarations.length;
      file.source = `${declarations.join('\n')}${declarations.length ? '\n' : ''}${file.block.code}\nexport {};\n`;
    }

    const errors = compile(files).map((diagnostic) => {
      const file = files.find((f) => f.file === path.resolve(diagnostic.file?.fileName ?? ''));
      const { line } = diagnostic.file?.getLineAndCharacterOfPosition(diagnostic.start ?? 0) ?? { line: 0 };
      const docLine = file ? file.block.line + 1 + line - file.offset : 0;
      return `${file?.block.page}:${docLine}: TS${diagnostic.code} ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`;
    });
    expect(errors).toEqual([]);
  }, 120_000);
});
