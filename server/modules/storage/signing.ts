import { createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '../../internal/errors.js';

/** Longest lifetime of a signed URL: 7 days, as S3 presigned URLs. */
export const MAX_SIGNED_URL_SECONDS = 7 * 86_400;

/**
 * Signs and checks download URLs: HMAC-SHA256 over the bucket, the (NFC) path, the
 * expiry and, for an image transform, its canonical parameters (so none can be changed or
 * added: a URL signed for a thumbnail cannot fetch the original, nor the reverse). Without a configured secret the key is derived from the service key, so
 * rotating the service key also revokes every outstanding signed URL.
 */
export class UrlSigner {
  private readonly key: Buffer;

  constructor(secret: string | null, serviceKey: string) {
    this.key =
      secret !== null
        ? Buffer.from(secret, 'utf8')
        : createHmac('sha256', serviceKey).update('basalt storage signed urls v1').digest();
  }

  signature(bucket: string, path: string, expires: number, transform = ''): string {
    // Length-prefixed fields: no choice of bucket and path can collide with another.
    let message = `v1\n${bucket.length}:${bucket}\n${Buffer.byteLength(path)}:${path}\n${expires}`;
    // Appended only for transforms, so URLs signed before transforms existed stay valid.
    if (transform !== '') message += `\ntransform:${transform}`;
    return createHmac('sha256', this.key).update(message).digest('base64url');
  }

  /** Throws FORBIDDEN unless `sig` signs this bucket, path and expiry and the expiry is in the future. */
  verify(
    bucket: string,
    path: string,
    expires: string | undefined,
    sig: string | undefined,
    now: Date,
    transform = '',
  ): void {
    if (expires === undefined || sig === undefined || !/^\d{1,12}$/.test(expires)) {
      throw new AppError('FORBIDDEN', 'The signed URL is malformed.');
    }
    const expected = Buffer.from(this.signature(bucket, path, Number(expires), transform));
    const given = Buffer.from(sig);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new AppError('FORBIDDEN', 'The signature of the URL is not valid.');
    }
    if (Number(expires) * 1000 <= now.getTime()) throw new AppError('FORBIDDEN', 'The signed URL has expired.');
  }
}
