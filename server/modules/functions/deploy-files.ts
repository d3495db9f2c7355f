import { randomUUID } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../../internal/errors.js';

/** Files of one deploy, at most. */
export const MAX_DEPLOY_FILES = 200;
/** The sources of one deploy together, in bytes (UTF-8). */
export const MAX_DEPLOY_SOURCE_BYTES = 5 * 1024 * 1024;
/** A built bundle (with its inline source map), in bytes. */
export const MAX_BUNDLE_BYTES = 10 * 1024 * 1024;
/** The request body of a deploy: the sources as JSON strings, escapes included. */
export const DEPLOY_BODY_LIMIT = 12 * 1024 * 1024;

/**
 * A deployed file's path: relative, `/`-separated, each segment starting with a letter,
 * digit or `_` (so no `.`, `..` or hidden segments), at most 255 characters.
 */
const FILE_PATH = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}(?:\/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99})*$/;
const ENTRY = /\.(ts|mts|cts|js|mjs|cjs)$/;

export interface DeployFiles {
  files: Record<string, string>;
  entry: string;
}

function invalid(message: string, field: string, file?: string): AppError {
  return new AppError('INVALID_REQUEST', message, { details: { field, ...(file === undefined ? {} : { file }) } });
}

/** Checks a deploy's files and entry; INVALID_REQUEST or PAYLOAD_TOO_LARGE naming the problem. */
export function checkDeployFiles(files: unknown, entry: unknown): DeployFiles {
  if (typeof files !== 'object' || files === null || Array.isArray(files)) {
    throw invalid('"files" must be an object of paths to sources.', 'files');
  }
  const entries = Object.entries(files as Record<string, unknown>);
  if (entries.length === 0) throw invalid('"files" holds no file.', 'files');
  if (entries.length > MAX_DEPLOY_FILES) {
    throw new AppError('PAYLOAD_TOO_LARGE', `A deploy holds at most ${MAX_DEPLOY_FILES} files.`, {
      details: { field: 'files', limit: MAX_DEPLOY_FILES },
    });
  }
  let bytes = 0;
  const checked: Record<string, string> = {};
  for (const [name, source] of entries) {
    if (name.length > 255 || !FILE_PATH.test(name)) {
      throw invalid(
        'A file path must be relative, "/"-separated, without "." or ".." segments or hidden files.',
        'files',
        name.slice(0, 300),
      );
    }
    if (typeof source !== 'string') throw invalid("A file's source must be a string.", 'files', name);
    bytes += Buffer.byteLength(source, 'utf8');
    checked[name] = source;
  }
  if (bytes > MAX_DEPLOY_SOURCE_BYTES) {
    throw new AppError('PAYLOAD_TOO_LARGE', `A deploy's sources are at most ${MAX_DEPLOY_SOURCE_BYTES} bytes.`, {
      details: { field: 'files', limit: MAX_DEPLOY_SOURCE_BYTES },
    });
  }
  if (typeof entry !== 'string' || !(entry in checked)) {
    throw invalid('"entry" must name one of the files.', 'entry');
  }
  if (!ENTRY.test(entry)) throw invalid('"entry" must be a .ts, .mts, .cts, .js, .mjs or .cjs file.', 'entry');
  return { files: checked, entry };
}

/**
 * Writes a deploy's files into a fresh folder under `workDir` for the bundler, and removes
 * them when `work` is done. The paths were checked: none leaves the folder.
 */
export async function withDeployFiles<T>(
  workDir: string,
  deploy: DeployFiles,
  work: (root: string, entry: string) => Promise<T>,
): Promise<T> {
  const root = path.join(workDir, randomUUID());
  try {
    for (const [name, source] of Object.entries(deploy.files)) {
      const file = path.join(root, ...name.split('/'));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, source);
    }
    return await work(root, path.join(root, ...deploy.entry.split('/')));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
