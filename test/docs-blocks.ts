/**
 * The fenced blocks of the docs, as the docs-examples test walks them. Every `docs/*.md` is
 * read, whatever its name: a new page is walked like the others.
 *
 * An HTML comment on the line(s) right before a block steers the test:
 *   <!-- docs-test: skip <reason> -->        the block is a fragment that cannot run or compile
 *   <!-- docs-test: expect-status 404 409 --> the statuses its curls answer, in order, when errors are the point
 * A page that says, anywhere, `<!-- docs-test: generated <how it is checked> -->` holds generated
 * declarations rather than examples (the SDK reference) and is checked by its own test instead.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface DocBlock {
  /** The page, e.g. "docs/storage.md". */
  page: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The fence's language tag, lower-case ("" when none). */
  language: string;
  code: string;
  /** Why the block is skipped, from a `docs-test: skip` comment. */
  skip: string | null;
  /** Statuses the block's curls must answer, from a `docs-test: expect-status` comment. */
  expectStatus: number[] | null;
}

const GENERATED_PAGE = /^<!--\s*docs-test:\s*generated\b.*-->$/m;
const DIRECTIVE = /^<!--\s*docs-test:\s*(skip|expect-status)\b\s*(.*?)\s*-->$/;

export function readDocBlocks(docsDir: string): DocBlock[] {
  const blocks: DocBlock[] = [];
  const pages = readdirSync(docsDir)
    .filter((name) => name.endsWith('.md'))
    .sort();
  for (const name of pages) {
    const page = path.posix.join(path.basename(docsDir), name);
    const text = readFileSync(path.join(docsDir, name), 'utf8');
    if (GENERATED_PAGE.test(text)) continue;
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i] ?? '');
      if (!open) continue;
      const [, indent = '', fence = '```', language = ''] = open;
      const start = i;
      const body: string[] = [];
      for (i++; i < lines.length; i++) {
        const line = lines[i] ?? '';
        if (line.trim().startsWith(fence) && line.trim().replace(/[`~]/g, '') === '') break;
        body.push(line.startsWith(indent) ? line.slice(indent.length) : line);
      }
      // The comments right above the fence (blank lines between are allowed).
      let skip: string | null = null;
      let expectStatus: number[] | null = null;
      for (let j = start - 1; j >= 0; j--) {
        const above = (lines[j] ?? '').trim();
        if (above === '') continue;
        const directive = DIRECTIVE.exec(above);
        if (!directive) break;
        const [, kind, argument = ''] = directive;
        if (kind === 'skip') skip = argument || 'no reason given';
        else
          expectStatus = argument
            .split(/[\s,]+/)
            .filter(Boolean)
            .map(Number);
      }
      blocks.push({
        page,
        line: start + 1,
        language: language.toLowerCase(),
        code: body.join('\n'),
        skip,
        expectStatus,
      });
    }
  }
  return blocks;
}

const SHELL = new Set(['', 'sh', 'bash', 'shell', 'console', 'zsh']);
const CODE = new Set(['ts', 'typescript', 'js', 'javascript', 'mjs', 'tsx']);

/** A shell block that calls the API: one with a line that runs curl. */
export function isCurlBlock(block: DocBlock): boolean {
  return SHELL.has(block.language) && /^\s*(\$\s+)?([A-Z_]+=\S*\s+)*(\w+=\$\()?curl\s/m.test(block.code);
}

/** A TypeScript or JavaScript block: checked by the compiler against the SDK and the functions API. */
export function isCodeBlock(block: DocBlock): boolean {
  return CODE.has(block.language);
}
