import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * AES-256-GCM at rest for the auth module's secrets (the signing keys' private halves, TOTP
 * secrets), with a key derived from BASALT_AUTH_KEY_ENCRYPTION_KEY per `purpose`, so one
 * kind of sealed value can never be opened as another. Without a configured key, values are
 * stored as `plain:` in server-only tables (docs/production.md says when to set one).
 */
export class SecretSealer {
  private readonly key: Buffer | null;

  constructor(
    secret: string | null,
    private readonly purpose: string,
  ) {
    this.key = secret === null ? null : createHash('sha256').update(`basalt-${purpose}:${secret}`).digest();
  }

  seal(plain: string): string {
    if (!this.key) return `plain:${plain}`;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return [
      'gcm',
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      body.toString('base64url'),
    ].join(':');
  }

  open(stored: string): string {
    if (stored.startsWith('plain:')) return stored.slice('plain:'.length);
    const [scheme, iv, tag, body] = stored.split(':');
    if (scheme !== 'gcm' || !iv || !tag || !body) throw new Error(`unknown sealed ${this.purpose} format`);
    if (!this.key)
      throw new Error(`a sealed ${this.purpose} value exists but BASALT_AUTH_KEY_ENCRYPTION_KEY is not set`);
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
  }
}
