import { createHash, randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import {
  ContentDigest,
  openContentDigests,
  stopHashingWorkerForTests,
} from '../server/modules/storage/backends/digest.js';
import { MeteredStream } from '../server/modules/storage/backends/index.js';
import { isAppError } from '../server/internal/errors.js';
import { generatedBytes } from './storage-helpers.js';

const MIB = 1024 * 1024;
const sha256 = (content: Buffer): string => createHash('sha256').update(content).digest('hex');

/** `content` cut into pieces of the given sizes, cycling through them. */
function pieces(content: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0, index = 0; offset < content.length; index++) {
    const size = sizes[index % sizes.length]!;
    out.push(content.subarray(offset, offset + size));
    offset += size;
  }
  return out;
}

async function digestOf(chunks: Buffer[]): Promise<string> {
  const digest = new ContentDigest();
  for (const chunk of chunks) await digest.update(chunk);
  return digest.digest();
}

describe('ContentDigest (SHA-256 of an upload, large ones on a worker thread)', () => {
  it.each([
    ['empty', 0],
    ['one byte', 1],
    ['one byte under a slice', MIB - 1],
    ['exactly one slice', MIB],
    ['one byte over a slice', MIB + 1],
    ['several slices and a tail', 5 * MIB + 7],
  ])('matches node:crypto for %s content', async (_name, size) => {
    const content = randomBytes(size);
    expect(await digestOf(pieces(content, [65_536, 1, 3 * MIB, 12_345]))).toBe(sha256(content));
    expect(openContentDigests()).toBe(0);
  });

  it('keeps concurrent contents apart', async () => {
    const contents = Array.from({ length: 6 }, (_, index) => randomBytes(2 * MIB + index * 1000));
    const digests = contents.map(() => new ContentDigest());
    const chunked = contents.map((content) => pieces(content, [70_000]));
    // Interleaved: one chunk of each content in turn, as concurrent uploads arrive.
    for (let index = 0; chunked.some((chunks) => index < chunks.length); index++) {
      await Promise.all(
        chunked.map((chunks, which) => (chunks[index] ? digests[which]!.update(chunks[index]!) : null)),
      );
    }
    const results = await Promise.all(digests.map((digest) => digest.digest()));
    expect(results).toEqual(contents.map(sha256));
    expect(openContentDigests()).toBe(0);
  });

  it('leaves nothing open when a content is discarded half-way, and keeps working', async () => {
    const digest = new ContentDigest();
    for (const chunk of pieces(randomBytes(3 * MIB), [65_536])) await digest.update(chunk);
    expect(openContentDigests()).toBe(1);
    digest.discard();
    expect(openContentDigests()).toBe(0);
    await expect(digest.digest()).rejects.toThrow();
    const content = randomBytes(2 * MIB);
    expect(await digestOf([content])).toBe(sha256(content));
  });

  it('fails the contents in progress when the worker dies, and starts a new one for the next', async () => {
    const digest = new ContentDigest();
    await digest.update(randomBytes(2 * MIB));
    await stopHashingWorkerForTests();
    await expect(
      (async () => {
        for (const chunk of pieces(randomBytes(8 * MIB), [MIB])) await digest.update(chunk);
        return digest.digest();
      })(),
    ).rejects.toThrow(/hashing worker/);
    expect(openContentDigests()).toBe(0);
    const content = randomBytes(3 * MIB);
    expect(await digestOf([content])).toBe(sha256(content));
  });
});

describe('MeteredStream', () => {
  it('reports the size and SHA-256 of a large body once it has ended', async () => {
    const content = randomBytes(4 * MIB + 3);
    const meter = new MeteredStream(8 * MIB);
    const sink = new PassThrough();
    sink.resume();
    await pipeline(pieces(content, [65_536]).values(), meter, sink);
    const hex = sha256(content);
    expect(meter.result()).toEqual({ size: content.length, sha256: hex, etag: `"${hex}"` });
  });

  it('leaves no digest open after a body over the limit or a body that fails', async () => {
    const overLimit = new MeteredStream(3 * MIB);
    const tooLarge = await pipeline(generatedBytes(6 * MIB), overLimit, new PassThrough().resume()).catch(
      (error: unknown) => error,
    );
    expect(isAppError(tooLarge) && tooLarge.code).toBe('PAYLOAD_TOO_LARGE');

    const cutOff = new MeteredStream(64 * MIB);
    const failed = await pipeline(
      generatedBytes(16 * MIB, { failAfter: 5 * MIB }),
      cutOff,
      new PassThrough().resume(),
    ).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(Error);
    expect(openContentDigests()).toBe(0);
    expect(() => cutOff.result()).toThrow();
  });
});
