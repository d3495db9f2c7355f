import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Database, Tx } from '../../internal/db.js';
import { AppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import type { AuditEvent } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { SecretRepository } from './secret-repository.js';

export { parseSecretsKey } from '../../internal/service-key.js';

export const SECRET_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;
/** A secret's value, at most (bytes of UTF-8). */
export const MAX_SECRET_BYTES = 64 * 1024;

export interface SecretSummary {
  name: string;
  updated_at: string;
}

/**
 * Function secrets: AES-256-GCM at rest (a fresh IV per write, the name as associated data),
 * opened in memory on each instance for the functions that declare them. Values never leave
 * the server through the API. A change made on another instance is picked up by refresh(),
 * which the module calls every few seconds when the fingerprint moves. A change takes the
 * admin event that records it (`audit`, built by the route, its value redacted) and writes it
 * in the change's transaction.
 */
export class SecretStore {
  private readonly repo: SecretRepository;
  private values = new Map<string, string>();
  private fingerprint: string | null = null;

  constructor(
    db: Database,
    private readonly key: Buffer,
    private readonly log: Logger,
    private readonly audit: AuditLog,
  ) {
    if (key.length !== 32) throw new Error('the secrets key must be 32 bytes');
    this.repo = new SecretRepository(db);
  }

  static checkName(name: string): void {
    if (!SECRET_NAME.test(name)) {
      throw new AppError(
        'INVALID_REQUEST',
        'A secret name is 1–64 characters of A–Z, 0–9 and _, starting with a letter.',
        {
          details: { field: 'name' },
        },
      );
    }
  }

  async set(name: string, value: unknown, audit?: AuditEvent): Promise<void> {
    SecretStore.checkName(name);
    if (typeof value !== 'string') {
      throw new AppError('INVALID_REQUEST', '"value" must be a string.', { details: { field: 'value' } });
    }
    if (Buffer.byteLength(value, 'utf8') > MAX_SECRET_BYTES) {
      throw new AppError('PAYLOAD_TOO_LARGE', `A secret is at most ${MAX_SECRET_BYTES} bytes.`, {
        details: { field: 'value', limit: MAX_SECRET_BYTES },
      });
    }
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(name, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()]);
    await this.repo.put({ name, iv, ciphertext, tag: cipher.getAuthTag() }, this.auditWriter(audit));
    await this.refresh();
  }

  async delete(name: string, audit?: AuditEvent): Promise<void> {
    SecretStore.checkName(name);
    if (!(await this.repo.delete(name, this.auditWriter(audit))))
      throw new AppError('NOT_FOUND', `No secret named "${name}".`);
    await this.refresh();
  }

  /** Writes `audit` in the transaction it is handed, if there is an event to record. */
  private auditWriter(audit: AuditEvent | undefined): ((tx: Tx) => Promise<void>) | undefined {
    return audit && ((tx) => this.audit.record(audit, { tx }));
  }

  async list(): Promise<SecretSummary[]> {
    const rows = await this.repo.all();
    return rows.map((row) => ({ name: row.name, updated_at: row.updatedAt.toISOString() }));
  }

  /** Reads every secret again when something changed since the last read (or always, when forced). */
  async refresh(force = true): Promise<boolean> {
    const fingerprint = await this.repo.fingerprint();
    if (!force && fingerprint === this.fingerprint) return false;
    const opened = new Map<string, string>();
    for (const row of await this.repo.all()) {
      try {
        const decipher = createDecipheriv('aes-256-gcm', this.key, row.iv);
        decipher.setAAD(Buffer.from(row.name, 'utf8'));
        decipher.setAuthTag(row.tag);
        opened.set(row.name, Buffer.concat([decipher.update(row.ciphertext), decipher.final()]).toString('utf8'));
      } catch {
        // Another key (an instance started with a different BASALT_SECRETS_KEY): unusable here.
        this.log.error({ secret: row.name }, "a secret could not be decrypted with this instance's secrets key");
      }
    }
    this.values = opened;
    this.fingerprint = fingerprint;
    return true;
  }

  /** The declared secrets that exist, by name. */
  pick(names: readonly string[]): Record<string, string> {
    const picked: Record<string, string> = {};
    for (const name of names) {
      const value = this.values.get(name);
      if (value !== undefined) picked[name] = value;
    }
    return picked;
  }

  /** allValues() of the current `values`, kept until a refresh replaces them. */
  private sortedValues: { of: Map<string, string>; values: readonly string[] } | null = null;

  /**
   * Every secret value, longest first, for scrubbing logs: the same array until the secrets
   * change (every function run asks, before and after it runs).
   */
  allValues(): readonly string[] {
    if (this.sortedValues?.of !== this.values) {
      const values = [...this.values.values()].filter((value) => value.length > 0).sort((a, b) => b.length - a.length);
      this.sortedValues = { of: this.values, values };
    }
    return this.sortedValues.values;
  }
}

/** Replaces every occurrence of each value in `text` with `[secret]`. */
export function redact(text: string, values: readonly string[]): string {
  let result = text;
  for (const value of values) if (result.includes(value)) result = result.split(value).join('[secret]');
  return result;
}
