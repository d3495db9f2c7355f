// The "team notes" example app: it compiles under strict TypeScript without a single cast, and
// it works, end to end, against a real server (documents, live queries, channels, storage,
// functions, typed errors).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import WebSocket from 'ws';
import { beforeAll, describe, expect, it } from 'vitest';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import { createBucket, createCollection, useTestApp } from '../../test/helpers.js';
import { runTeamNotes } from '../examples/team-notes/app.js';
import { createClient } from '../src/index.js';

const sdkDir = fileURLToPath(new URL('..', import.meta.url));
const appFile = path.join(sdkDir, 'examples', 'team-notes', 'app.ts');

const WORD_COUNT = `
import { http } from 'basalt/functions';
export default http(async (request) => {
  const text = (request.body as { text?: unknown } | null)?.text;
  return { words: typeof text === 'string' ? text.split(/\\s+/).filter(Boolean).length : 0 };
});
`;

const server = useTestApp({ functions: { 'word-count.ts': WORD_COUNT } });

beforeAll(async () => {
  await createCollection(server, {
    name: 'notes',
    rules: { read: 'auth != null', create: 'auth != null', update: 'auth != null && doc.owner == auth.uid' },
  });
  await createBucket(server, {
    name: 'attachments',
    max_file_size: 1000,
    rules: {
      read: 'auth != null && object.owner == auth.uid',
      write: 'auth != null && object.owner == auth.uid',
    },
  });
});

/** Casts, non-null assertions, `any` and ts-comments in a file: what "no cast" rules out. */
function escapeHatches(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    const at = () =>
      `${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${node.getText().slice(0, 60)}`;
    if (ts.isAsExpression(node) && node.type.getText() !== 'const') found.push(`cast ${at()}`);
    if (ts.isTypeAssertionExpression(node)) found.push(`cast ${at()}`);
    if (ts.isNonNullExpression(node)) found.push(`non-null assertion ${at()}`);
    if (node.kind === ts.SyntaxKind.AnyKeyword) found.push(`any ${at()}`);
    ts.forEachChild(node, visit);
  };
  visit(source);
  if (/@ts-(ignore|expect-error|nocheck)/.test(source.text)) found.push('a @ts- comment');
  return found;
}

describe('the team notes example app', () => {
  it('compiles under strict TypeScript, as its own project, with no cast', { timeout: 120_000 }, () => {
    const tsc = path.join(sdkDir, '..', 'node_modules', 'typescript', 'bin', 'tsc');
    const result = spawnSync(process.execPath, [tsc, '-p', path.join(sdkDir, 'examples', 'tsconfig.json')], {
      encoding: 'utf8',
    });
    expect(result.status, result.stdout + result.stderr).toBe(0);
    expect(escapeHatches(appFile)).toEqual([]);
  });

  it('runs against a real server: pages, live query, like, room, attachment, function, errors', async () => {
    const teammate = createClient(server.url, { WebSocket, persistSession: false, autoRefreshToken: false });
    await teammate.auth.signUp({ email: uniqueEmail('mate'), password: STRONG_PASSWORD });
    try {
      const report = await runTeamNotes(
        server.url,
        { email: uniqueEmail('notes'), password: STRONG_PASSWORD, name: 'ada' },
        teammate,
      );
      expect(report.firstPage).toEqual(['Note 1', 'Note 2', 'Note 3']);
      expect(report.secondPage).toEqual(['Note 4', 'Note 5']);
      expect(report.liveTitles).toEqual(['Note 5']);
      expect(report.likes).toBe(1);
      expect(report.heardTyping).toEqual(['teammate']);
      expect(report.members).toEqual(['ada', 'teammate']);
      expect(report.attachmentSize).toBe('first draft'.length);
      expect(report.wordCount).toBe(3);
      expect(report.errors).toEqual([
        'Someone else changed this note (now version 2); reload it.',
        'That is too large (at most 1000 bytes).',
      ]);
    } finally {
      teammate.realtime.disconnect();
    }
  });
});
