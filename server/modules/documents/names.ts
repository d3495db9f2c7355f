import { randomFillSync } from 'node:crypto';
import { AppError } from '../../internal/errors.js';

/** Collection names become quoted table names, so they are held to a strict pattern. */
export const COLLECTION_NAME = /^[a-z][a-z0-9_]{0,62}$/;
export const COLLECTION_NAME_PATTERN = '^[a-z][a-z0-9_]{0,62}$';
/** Names a collection may not take: `batch` would shadow POST /v1/db/batch. */
export const RESERVED_COLLECTION_NAMES: ReadonlySet<string> = new Set(['batch']);

export const DOCUMENT_ID = /^[A-Za-z0-9_-]{1,128}$/;
export const DOCUMENT_ID_PATTERN = '^[A-Za-z0-9_-]{1,128}$';

/**
 * One segment of a queryable or indexable field path. The set is narrow on purpose:
 * segments are written into SQL as path literals (so an expression index and the
 * query use the same expression), and no character here can end a literal. A leading
 * `-` is refused because Postgres reads `-1` as "last array element" and JavaScript
 * would not.
 */
export const PATH_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$/;
export const MAX_PATH_DEPTH = 20;

export function isCollectionName(name: string): boolean {
  return COLLECTION_NAME.test(name) && !RESERVED_COLLECTION_NAMES.has(name);
}

export function assertCollectionName(name: unknown): string {
  if (typeof name !== 'string' || !isCollectionName(name)) {
    throw new AppError(
      'INVALID_REQUEST',
      'A collection name is 1-63 characters of a-z, 0-9 and _, starting with a letter (and not "batch").',
      { details: { field: 'collection' } },
    );
  }
  return name;
}

export function assertDocumentId(id: unknown): string {
  if (typeof id !== 'string' || !DOCUMENT_ID.test(id)) {
    throw new AppError('INVALID_REQUEST', 'A document id is 1-128 characters of A-Z, a-z, 0-9, _ and -.', {
      details: { field: 'id' },
    });
  }
  return id;
}

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * Random bytes taken from the CSPRNG 4 KiB at a time (as Node's randomUUID does): one
 * call per id cost a few percent of a create's CPU.
 */
const RANDOM_POOL_SIZE = 4096;
const randomPool = Buffer.alloc(RANDOM_POOL_SIZE);
let randomPoolOffset = RANDOM_POOL_SIZE;

function nextRandomByte(): number {
  if (randomPoolOffset === RANDOM_POOL_SIZE) {
    randomFillSync(randomPool);
    randomPoolOffset = 0;
  }
  return randomPool[randomPoolOffset++] as number;
}

/** A 20-character URL-safe random id (~119 bits), as Firestore's auto ids. */
export function generateDocumentId(): string {
  let id = '';
  while (id.length < 20) {
    const byte = nextRandomByte();
    // Rejection sampling keeps every character equally likely (248 = 4 * 62).
    if (byte < 248) id += ID_ALPHABET[byte % 62];
  }
  return id;
}

/** Splits and checks a dotted path; throws INVALID_REQUEST naming the path. */
export function parseFieldPath(path: unknown, where: string): string[] {
  if (typeof path !== 'string' || path.length === 0) {
    throw new AppError('INVALID_REQUEST', `${where}: a field path must be a non-empty string.`, {
      details: { field: where },
    });
  }
  const segments = path.split('.');
  if (segments.length > MAX_PATH_DEPTH) {
    throw new AppError('INVALID_REQUEST', `${where}: a field path may have at most ${MAX_PATH_DEPTH} segments.`, {
      details: { field: where, path, max_depth: MAX_PATH_DEPTH },
    });
  }
  for (const segment of segments) {
    if (!PATH_SEGMENT.test(segment)) {
      throw new AppError(
        'INVALID_REQUEST',
        `${where}: "${path.slice(0, 200)}" is not a valid field path (segments of A-Z, a-z, 0-9, _ and -, not starting with -).`,
        { details: { field: where, path: path.slice(0, 200) } },
      );
    }
  }
  return segments;
}

export { isStorableJson, isStorableString } from '../../internal/user-json.js';
