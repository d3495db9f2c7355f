import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface ResolvedServiceKey {
  key: string;
  /** Where the key came from: the environment, or the file in the data dir. */
  source: 'env' | 'file';
  file: string | null;
}

export const SERVICE_KEY_FILE = 'service-key';

/**
 * A key kept in the data dir: read it, or generate it on first start with mode 0600, so it
 * survives restarts. Written aside, then linked into place: the file appears whole or not
 * at all, and when instances start together the first link wins and the others read it.
 */
async function keyFile(dataDir: string, name: string, generate: () => string): Promise<{ key: string; file: string }> {
  const file = path.join(dataDir, name);
  if (!existsSync(file)) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const pending = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await writeFile(pending, `${generate()}\n`, { mode: 0o600, flag: 'wx' });
    try {
      await link(pending, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      await unlink(pending);
    }
  }
  await chmod(file, 0o600);
  return { key: (await readFile(file, 'utf8')).trim(), file };
}

/**
 * The service key: BASALT_SERVICE_KEY when set, else one generated on first start
 * (256 random bits) and kept in the data dir.
 */
export async function resolveServiceKey(configured: string | null, dataDir: string): Promise<ResolvedServiceKey> {
  if (configured !== null) return { key: configured, source: 'env', file: null };
  const { key, file } = await keyFile(dataDir, SERVICE_KEY_FILE, () => `bsk_${randomBytes(32).toString('base64url')}`);
  if (key.length < 32)
    throw new Error(`the service key in ${file} is too short; delete the file to generate a new one`);
  return { key, source: 'file', file };
}

export const SECRETS_KEY_FILE = 'secrets-key';

/** The secrets key as configured: 64 hex digits, or 32 bytes in base64 / base64url. */
export function parseSecretsKey(text: string): Buffer | null {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed)) {
    const bytes = Buffer.from(trimmed.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    return bytes.length === 32 ? bytes : null;
  }
  return null;
}

/**
 * The key of function secrets at rest: BASALT_SECRETS_KEY when set, else 256 random bits
 * generated on first start and kept in the data dir (like the service key). Instances that
 * share a database must share this key: set it in the environment when they do not share
 * a data dir.
 */
export async function resolveSecretsKey(configured: string | null, dataDir: string): Promise<string> {
  if (configured !== null) return configured;
  const { key, file } = await keyFile(dataDir, SECRETS_KEY_FILE, () => randomBytes(32).toString('hex'));
  if (!parseSecretsKey(key)) throw new Error(`the secrets key in ${file} is not 32 bytes; restore it from a backup`);
  return key;
}

let expectedBytes: { key: string; bytes: Buffer } | null = null;

/** The expected key's bytes, kept: it is the same on every request. */
function bytesOfExpected(expected: string): Buffer {
  if (expectedBytes?.key !== expected) expectedBytes = { key: expected, bytes: Buffer.from(expected, 'utf8') };
  return expectedBytes.bytes;
}

/**
 * Compares in constant time whatever the lengths: the given string is copied into a
 * buffer of the expected key's length (cut or zero-padded) and compared whole, and the
 * lengths are compared apart. Time depends only on the given string's length and the
 * key's, never on where they differ. Cheaper than hashing both on every request.
 */
export function safeEqual(given: string, expected: string): boolean {
  const want = bytesOfExpected(expected);
  const got = Buffer.alloc(want.length);
  got.write(given, 'utf8');
  const sameBytes = timingSafeEqual(got, want);
  return Buffer.byteLength(given, 'utf8') === want.length && sameBytes;
}
