/**
 * The running SHA-256 of resumable uploads, kept in process between their requests.
 *
 * An object's SHA-256 (its ETag) covers every byte in order. While the PATCHes of an upload
 * land on this instance one after the other, each body is hashed as it arrives (on the hashing
 * worker, beside the event loop, as a PUT is) and the hash waits here, parked, for the next
 * one: the last PATCH then has the digest at once instead of reading the whole object back.
 * Whenever the hash cannot be trusted to cover exactly the bytes recorded — the upload moved
 * to another instance and back, the server restarted, a body was cut off between hashing and
 * storing, the hashing worker failed, the hash waited too long — it is dropped, and the upload
 * falls back to reading its stored bytes back once when it completes (uploads.ts, finish). So
 * the running hash only ever saves work; it never decides the result on its own.
 */
import { Transform, type TransformCallback } from 'node:stream';
import type { PutResult } from './backends/index.js';
import { ContentDigest } from './backends/digest.js';

/**
 * How long a parked hash waits for its upload's next PATCH; past it, the upload falls back to
 * reading its bytes back. Long enough for a phone's pause, short enough that abandoned uploads
 * do not keep the hashing worker alive for long.
 */
const PARKED_HASH_SECONDS = 15 * 60;
/**
 * Parked hashes at most (the oldest goes first). A parked hash holds no buffer, only its
 * state in the worker (a few hundred bytes), so this bounds a small amount of memory.
 */
const MAX_PARKED_HASHES = 10_000;

/** The SHA-256 of an upload's first `offset` bytes, fed in order. */
export class RunningHash {
  private readonly digest = new ContentDigest();
  /** Bytes hashed from the upload's start; -1 once the hash is lost (the worker failed). */
  offset: number;

  constructor(offset = 0) {
    this.offset = offset;
  }

  async update(chunk: Buffer): Promise<void> {
    if (this.offset < 0) return;
    try {
      await this.digest.update(chunk);
      this.offset += chunk.length;
    } catch {
      this.lose();
    }
  }

  /** Digest of every byte hashed; null when the hash was lost. Ends the hash. */
  async result(): Promise<PutResult | null> {
    if (this.offset < 0) return null;
    const size = this.offset;
    this.offset = -1;
    try {
      const sha256 = await this.digest.digest();
      return { size, sha256, etag: `"${sha256}"` };
    } catch {
      return null;
    }
  }

  async park(): Promise<void> {
    await this.digest.park();
    if (this.digest.failed) this.lose();
  }

  discard(): void {
    this.lose();
  }

  private lose(): void {
    this.offset = -1;
    this.digest.discard();
  }
}

/** Passes a body on unchanged, feeding it to a running hash on the way. */
export class HashingStream extends Transform {
  constructor(private readonly hash: RunningHash) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    // update never rejects: a lost hash only means the fallback.
    void this.hash.update(chunk).then(() => callback(null, chunk));
  }
}

/** The parked hashes of this instance, by upload id. */
export class UploadHashes {
  private readonly parked = new Map<string, { hash: RunningHash; timer: NodeJS.Timeout }>();

  /**
   * The hash to feed the next body of upload `id`, which stands at `offset`: the parked one if
   * it covers exactly that much, a new one at the upload's start, else none (the upload will
   * be read back when it completes).
   */
  resume(id: string, offset: number): RunningHash | null {
    const entry = this.parked.get(id);
    if (entry) {
      this.parked.delete(id);
      clearTimeout(entry.timer);
      if (entry.hash.offset === offset) return entry.hash;
      entry.hash.discard();
    }
    return offset === 0 ? new RunningHash() : null;
  }

  /** Keeps `hash` for the upload's next PATCH, holding no buffer meanwhile. */
  async park(id: string, hash: RunningHash): Promise<void> {
    await hash.park();
    if (hash.offset < 0) return;
    if (this.parked.size >= MAX_PARKED_HASHES) {
      const [oldest] = this.parked.keys();
      if (oldest !== undefined) this.drop(oldest);
    }
    const timer = setTimeout(() => this.drop(id), PARKED_HASH_SECONDS * 1000);
    timer.unref();
    this.parked.set(id, { hash, timer });
  }

  /** Lets the parked hash of upload `id` go (the upload was terminated or expired). */
  forget(id: string): void {
    this.drop(id);
  }

  /** How many hashes are parked (tests, metrics). */
  size(): number {
    return this.parked.size;
  }

  /** Lets every parked hash go (the server stops). */
  close(): void {
    for (const id of [...this.parked.keys()]) this.drop(id);
  }

  private drop(id: string): void {
    const entry = this.parked.get(id);
    if (!entry) return;
    this.parked.delete(id);
    clearTimeout(entry.timer);
    entry.hash.discard();
  }
}
