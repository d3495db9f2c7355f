/**
 * Image transforms: resize and re-encode an image object on the way out, with sharp
 * (libvips). sharp decodes and encodes on libuv's thread pool, never on the event loop; a
 * semaphore bounds how many run at once, and every input is bounded (bytes and pixels) and
 * every output too (width and height), so one request cannot take the server down.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import sharp from 'sharp';
import type { ImageTransformConfig } from '../../config.js';
import { AppError } from '../../internal/errors.js';

export const TRANSFORM_FITS = ['cover', 'contain', 'inside'] as const;
export const TRANSFORM_FORMATS = ['webp', 'avif', 'jpeg', 'png'] as const;
export type TransformFit = (typeof TRANSFORM_FITS)[number];
export type TransformFormat = (typeof TRANSFORM_FORMATS)[number];

/** A transform as asked for; what is left out takes its default when the image is made. */
export interface ImageTransform {
  width?: number;
  height?: number;
  fit?: TransformFit;
  format?: TransformFormat;
  quality?: number;
}

/** The query parameters of a transform, as they arrive (strings). */
export type TransformQuery = Partial<Record<keyof ImageTransform, string>>;

export const TRANSFORM_PARAMS = ['width', 'height', 'fit', 'format', 'quality'] as const;

/** Content types sharp decodes that Basalt transforms. SVG is left out on purpose (scripts, entities). */
const TRANSFORMABLE = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/avif', 'image/gif', 'image/tiff']);
const DEFAULT_QUALITY = 80;

/** True when the query asks for a transform at all. */
export function hasTransform(query: TransformQuery): boolean {
  return TRANSFORM_PARAMS.some((name) => query[name] !== undefined);
}

function invalid(message: string, details: Record<string, unknown>): AppError {
  return new AppError('INVALID_REQUEST', message, { details });
}

function whole(name: string, raw: string | undefined, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d{1,6}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw invalid(`${name} must be a whole number from ${min} to ${max}.`, { param: name, min, max });
  }
  return Number(raw);
}

function oneOf<T extends string>(name: string, raw: string | undefined, allowed: readonly T[]): T | undefined {
  if (raw === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw invalid(`${name} must be one of ${allowed.join(', ')}.`, { param: name, allowed });
  }
  return raw as T;
}

/** Validates a transform's parameters (INVALID_REQUEST naming the first bad one). */
export function parseTransform(query: TransformQuery | ImageTransform, maxDimension: number): ImageTransform {
  const text = (value: string | number | undefined): string | undefined =>
    value === undefined ? undefined : String(value);
  const transform: ImageTransform = {
    width: whole('width', text(query.width), 1, maxDimension),
    height: whole('height', text(query.height), 1, maxDimension),
    fit: oneOf('fit', text(query.fit), TRANSFORM_FITS),
    format: oneOf('format', text(query.format), TRANSFORM_FORMATS),
    quality: whole('quality', text(query.quality), 1, 100),
  };
  for (const name of TRANSFORM_PARAMS) if (transform[name] === undefined) delete transform[name];
  return transform;
}

/** The transform as one string, its parameters in a fixed order: what signatures and variant keys cover. */
export function canonicalTransform(transform: ImageTransform): string {
  return TRANSFORM_PARAMS.filter((name) => transform[name] !== undefined)
    .map((name) => `${name}=${String(transform[name])}`)
    .join('&');
}

/** The storage key of a variant: in the original's bucket, a hash of its (versioned) key and the transform. */
export function variantKey(objectKey: string, canonical: string): string {
  const bucket = objectKey.slice(0, objectKey.indexOf('/'));
  const hash = createHash('sha256').update(`${objectKey}\n${canonical}`).digest('base64url');
  return `${bucket}/t${hash}`;
}

/** A variant's entity tag: derived from the original's content and the transform, so equal everywhere. */
export function variantEtag(objectEtag: string, canonical: string): string {
  return `"${createHash('sha256').update(`${objectEtag}\n${canonical}`).digest('hex')}"`;
}

export function transformable(contentType: string): boolean {
  return TRANSFORMABLE.has(contentType.split(';')[0]?.trim().toLowerCase() ?? '');
}

const OUTPUT_TYPES: Record<TransformFormat, string> = {
  webp: 'image/webp',
  avif: 'image/avif',
  jpeg: 'image/jpeg',
  png: 'image/png',
};

/** The format an image keeps when the transform names none: its own when it is one Basalt writes, else PNG. */
export function outputFormat(transform: ImageTransform, contentType: string): TransformFormat {
  if (transform.format) return transform.format;
  const own = contentType.split(';')[0]?.trim().toLowerCase();
  const found = (Object.keys(OUTPUT_TYPES) as TransformFormat[]).find((format) => OUTPUT_TYPES[format] === own);
  return found ?? 'png';
}

export function outputContentType(format: TransformFormat): string {
  return OUTPUT_TYPES[format];
}

/** Waits for one of `limit` slots; run() releases its slot however the work ends. */
class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

export class ImageTransformer {
  private readonly slots: Semaphore;

  constructor(readonly config: ImageTransformConfig) {
    this.slots = new Semaphore(config.concurrency);
  }

  /**
   * Decodes `input` (at most maxInputBytes, maxInputPixels), resizes it and encodes it. Errors:
   * PAYLOAD_TOO_LARGE over a bound, UNSUPPORTED_MEDIA_TYPE when the bytes are no image sharp reads.
   */
  async transform(input: Readable, transform: ImageTransform, format: TransformFormat): Promise<Buffer> {
    return this.slots.run(async () => {
      const source = await readBounded(input, this.config.maxInputBytes);
      const quality = transform.quality ?? DEFAULT_QUALITY;
      let pipeline = sharp(source, { limitInputPixels: this.config.maxInputPixels, failOn: 'error' }).rotate();
      if (transform.width !== undefined || transform.height !== undefined) {
        pipeline = pipeline.resize({
          width: transform.width,
          height: transform.height,
          fit: transform.fit ?? 'cover',
          withoutEnlargement: true,
          // contain pads; transparent where the format has alpha, white where it has not.
          background: format === 'jpeg' ? { r: 255, g: 255, b: 255, alpha: 1 } : { r: 0, g: 0, b: 0, alpha: 0 },
        });
      } else {
        // No size asked for: still never more than the bound on either side.
        const max = this.config.maxDimension;
        pipeline = pipeline.resize({ width: max, height: max, fit: 'inside', withoutEnlargement: true });
      }
      if (format === 'jpeg') pipeline = pipeline.flatten({ background: '#ffffff' }).jpeg({ quality, mozjpeg: true });
      else if (format === 'webp') pipeline = pipeline.webp({ quality });
      else if (format === 'avif') pipeline = pipeline.avif({ quality, effort: 2 });
      else pipeline = pipeline.png({ compressionLevel: 6 });
      try {
        return await pipeline.toBuffer();
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        if (/pixel limit/i.test(message)) {
          throw new AppError('PAYLOAD_TOO_LARGE', `The image has more than ${this.config.maxInputPixels} pixels.`, {
            details: { max_input_pixels: this.config.maxInputPixels },
            cause: error,
          });
        }
        throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'The object is not an image that can be transformed.', {
          cause: error,
        });
      }
    });
  }
}

async function readBounded(input: Readable, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of input) {
    const buffer = chunk as Buffer;
    total += buffer.length;
    if (total > maxBytes) {
      input.destroy();
      throw new AppError('PAYLOAD_TOO_LARGE', `Images over ${maxBytes} bytes are not transformed.`, {
        details: { max_input_bytes: maxBytes },
      });
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}
