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
 * The service key: BASALT_SERVICE_KEY when set, else one generated on first start
 * (256 random bits) and kept in the data dir with mode 0600, so it survives restarts.
 */
export async function resolveServiceKey(configured: string | null, dataDir: string): Promise<ResolvedServiceKey> {
  if (configured !== null) return { key: configured, source: 'env', file: null };
  const file = path.join(dataDir, SERVICE_KEY_FILE);
  if (!existsSync(file)) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const key = `bsk_${randomBytes(32).toString('base64url')}`;
    // Written aside, then linked into place: the key file appears whole or not at all,
    // and when instances start together the first link wins and the others read it.
    const pending = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    await writeFile(pending, `${key}\n`, { mode: 0o600, flag: 'wx' });
    try {
      await link(pending, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      await unlink(pending);
    }
  }
  await chmod(file, 0o600);
  const key = (await readFile(file, 'utf8')).trim();
  if (key.length < 32)
    throw new Error(`the service key in ${file} is too short; delete the file to generate a new one`);
  return { key, source: 'file', file };
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
