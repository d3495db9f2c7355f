import { readFileSync } from 'node:fs';
import argon2 from 'argon2';
import { AppError } from '../../internal/errors.js';
import { serverFile } from '../../internal/paths.js';

export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 256;

const COMMON_PASSWORDS_FILE = serverFile('modules/auth/common-passwords.txt');

let commonPasswords: Set<string> | null = null;

/**
 * The 10,000 most common passwords of at least 8 characters (see docs/auth.md for the
 * source). Read on first use, not at import, and shared by every app in the process.
 */
function common(): Set<string> {
  commonPasswords ??= new Set(
    readFileSync(COMMON_PASSWORDS_FILE, 'utf8')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== ''),
  );
  return commonPasswords;
}

/**
 * NIST 800-63B style: a length range and a blocklist, no composition rules. Length counts
 * code points, so an emoji is one character. Throws WEAK_PASSWORD with the reason.
 */
export function assertAcceptablePassword(password: string): void {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH || length > PASSWORD_MAX_LENGTH) {
    throw new AppError(
      'WEAK_PASSWORD',
      `The password must be ${PASSWORD_MIN_LENGTH} to ${PASSWORD_MAX_LENGTH} characters long.`,
      { details: { reason: 'length', min: PASSWORD_MIN_LENGTH, max: PASSWORD_MAX_LENGTH } },
    );
  }
  if (common().has(password.toLowerCase())) {
    throw new AppError('WEAK_PASSWORD', 'This password is too common; choose another.', {
      details: { reason: 'common' },
    });
  }
}

export interface HashParams {
  memoryKib: number;
  timeCost: number;
}

/** argon2id in PHC string format; parameters come from config and may only grow. */
export class PasswordHasher {
  private dummy: Promise<string> | null = null;

  constructor(private readonly params: HashParams) {}

  private options() {
    return {
      type: argon2.argon2id,
      memoryCost: this.params.memoryKib,
      timeCost: this.params.timeCost,
      parallelism: 1,
    } as const;
  }

  hash(password: string): Promise<string> {
    return argon2.hash(password, this.options());
  }

  /**
   * Verifies; `rehash` is true when the stored hash used weaker parameters than the
   * current ones, so the caller can store a new hash while it knows the password.
   */
  async verify(hash: string, password: string): Promise<{ ok: boolean; rehash: boolean }> {
    let ok = false;
    try {
      ok = await argon2.verify(hash, password);
    } catch {
      ok = false;
    }
    return { ok, rehash: ok && argon2.needsRehash(hash, this.options()) };
  }

  /** Spends the same time as a real verification, for unknown accounts (no timing oracle). */
  async verifyDummy(password: string): Promise<void> {
    this.dummy ??= this.hash('basalt-dummy-password-for-timing');
    await this.verify(await this.dummy, password);
  }
}
