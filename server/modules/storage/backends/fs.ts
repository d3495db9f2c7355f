import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, truncate, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError } from '../../../internal/errors.js';
import {
  assertKey,
  ByteLimit,
  DOWNLOAD_BUFFER_BYTES,
  MeteredStream,
  UPLOAD_BUFFER_BYTES,
  RESUMABLE_SYNC_BYTES,
  type BackendEntry,
  type ByteRange,
  type DurableProgress,
  type PutLimits,
  type PutResult,
  type ResumableProgress,
  type ResumableState,
  type StorageBackend,
} from './index.js';

/**
 * Objects as files under `<root>/objects/<key>`. A write goes to `<root>/tmp/` first and
 * is renamed into place after fsync, so a reader or a crash never sees a partial file
 * under a key; a crash leaves only a temporary file, which the sweeper removes.
 */
export class FsBackend implements StorageBackend {
  readonly kind = 'fs' as const;
  private readonly objectsDir: string;
  private readonly tmpDir: string;

  constructor(readonly root: string) {
    this.objectsDir = path.join(root, 'objects');
    this.tmpDir = path.join(root, 'tmp');
  }

  /** Directories known to exist, to spare a mkdir per upload; forgotten after any failed write. */
  private readonly dirs = new Set<string>();

  private async ensureDir(dir: string): Promise<void> {
    if (this.dirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    if (this.dirs.size > 10_000) this.dirs.clear();
    this.dirs.add(dir);
  }

  private file(key: string): string {
    assertKey(key);
    return path.join(this.objectsDir, ...key.split('/'));
  }

  async put(key: string, body: Readable, limits: PutLimits): Promise<PutResult> {
    const target = this.file(key);
    await this.ensureDir(this.tmpDir);
    await this.ensureDir(path.dirname(target));
    // The temporary name starts with the key's id, so the sweeper can tell whose it is.
    const temporary = path.join(this.tmpDir, `${key.replace('/', '~')}.${randomUUID()}`);
    const meter = new MeteredStream(limits.maxBytes);
    try {
      // A deep write buffer lets the socket's 64 KiB chunks reach the disk as few large writev
      // calls, instead of one thread-pool round trip per chunk with the body paused in between.
      await pipeline(
        body,
        meter,
        createWriteStream(temporary, { flags: 'wx', mode: 0o600, highWaterMark: UPLOAD_BUFFER_BYTES }),
      );
      // Durable before it becomes visible: a crash after the rename must not expose a truncated file.
      const handle = await open(temporary, 'r+');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, target).catch(async (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
        await mkdir(path.dirname(target), { recursive: true });
        await rename(temporary, target);
      });
    } catch (error) {
      this.dirs.clear();
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
    return meter.result();
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const file = this.file(key);
    // Open first, so a missing file is NOT_FOUND here rather than an error mid-response.
    const handle = await open(file, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw new AppError('NOT_FOUND', 'The object has no stored bytes.');
      throw error;
    });
    return handle.createReadStream({
      start: range?.start,
      end: range?.end,
      autoClose: true,
      highWaterMark: DOWNLOAD_BUFFER_BYTES,
    });
  }

  async head(key: string): Promise<{ size: number; lastModified: Date } | null> {
    try {
      const info = await stat(this.file(key));
      return { size: info.size, lastModified: info.mtime };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.file(key), { force: true });
  }

  async *list(prefix = ''): AsyncIterable<BackendEntry> {
    let buckets: string[];
    try {
      buckets = (await readdir(this.objectsDir)).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const bucket of buckets) {
      let names: string[];
      try {
        names = (await readdir(path.join(this.objectsDir, bucket))).sort();
      } catch {
        continue; // removed meanwhile, or not a directory
      }
      for (const name of names) {
        const key = `${bucket}/${name}`;
        if (!key.startsWith(prefix)) continue;
        const info = await stat(path.join(this.objectsDir, bucket, name)).catch(() => null);
        if (info?.isFile()) yield { key, size: info.size, lastModified: info.mtime };
      }
    }
  }

  async discardStaleWrites(olderThan: Date, inUse: (key: string) => Promise<boolean>): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.tmpDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw error;
    }
    let discarded = 0;
    for (const name of names) {
      const file = path.join(this.tmpDir, name);
      const info = await stat(file).catch(() => null);
      // mtime moves while a write is streaming, so only abandoned files are this old.
      if (!info || info.mtime >= olderThan) continue;
      const key = name.replace(/\.[^.]*$/, '').replace('~', '/');
      if (await inUse(key)) continue;
      await rm(file, { force: true });
      discarded++;
    }
    return discarded;
  }

  /** The file a resumable upload grows in, until complete renames it into place. */
  private partFile(key: string): string {
    assertKey(key);
    return path.join(this.root, 'uploads', key.replace('/', '~'));
  }

  async beginResumable(key: string): Promise<ResumableState> {
    const file = this.partFile(key);
    await this.ensureDir(path.dirname(file));
    const handle = await open(file, 'w', 0o600);
    await handle.close();
    return {};
  }

  async appendResumable(
    key: string,
    upload: { state: ResumableState; offset: number },
    body: Readable,
    maxBytes: number,
    onDurable?: (progress: DurableProgress) => Promise<void>,
  ): Promise<ResumableProgress> {
    const file = this.partFile(key);
    // Bytes past the acknowledged offset (a crash mid-append) were never acknowledged: drop them.
    await truncate(file, upload.offset).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw new AppError('NOT_FOUND', 'The upload has no stored bytes.');
      throw error;
    });
    const handle = await open(file, 'r+');
    let failure: unknown = null;
    let offset: number;
    try {
      const writer = new SyncingFileWriter(handle, upload.offset, async (durable) => {
        await onDurable?.({ state: upload.state, offset: durable });
      });
      try {
        await pipeline(body, new ByteLimit(maxBytes), writer);
      } catch (error) {
        if (writer.recordFailure) throw writer.recordFailure;
        failure = error;
      }
      await writer.settled();
      // Whatever reached the file counts, once it is durable.
      await handle.sync();
      offset = (await handle.stat()).size;
    } finally {
      await handle.close();
    }
    return { state: upload.state, held: null, offset, failure };
  }

  async completeResumable(key: string): Promise<void> {
    const target = this.file(key);
    await this.ensureDir(path.dirname(target));
    await rename(this.partFile(key), target).catch(async (error: NodeJS.ErrnoException) => {
      // Completed before (a crash before the commit was recorded): the file is in place.
      if (error.code === 'ENOENT' && (await this.head(key))) return;
      throw error;
    });
  }

  async abortResumable(key: string): Promise<void> {
    await rm(this.partFile(key), { force: true });
  }

  async ping(): Promise<boolean> {
    try {
      await mkdir(this.objectsDir, { recursive: true });
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {}
}

/**
 * Writes a resumable append at its offset and makes it durable as it goes: once
 * RESUMABLE_SYNC_BYTES more have been written, an fsync runs beside the writes that follow
 * (one at a time) and `onSynced` reports the offset it covers. The body is never paused for
 * an fsync or for the caller's record of it.
 */
class SyncingFileWriter extends Writable {
  /** The error of `onSynced`, which fails the append (not a body cut off). */
  recordFailure: unknown = null;
  private position: number;
  private synced: number;
  private syncing: Promise<void> | null = null;

  constructor(
    private readonly handle: FileHandle,
    start: number,
    private readonly onSynced: (offset: number) => Promise<void>,
  ) {
    super({ highWaterMark: UPLOAD_BUFFER_BYTES });
    this.position = start;
    this.synced = start;
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.writeAll(chunks.map((entry) => entry.chunk)).then(() => {
      this.syncIfDue();
      callback();
    }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.settled().then(() => callback(this.recordFailure as Error | null), callback);
  }

  /** Resolves once no fsync or record is in flight. */
  async settled(): Promise<void> {
    while (this.syncing) await this.syncing;
  }

  private async writeAll(buffers: Buffer[]): Promise<void> {
    const pending = buffers.filter((buffer) => buffer.length > 0);
    while (pending.length > 0) {
      const { bytesWritten } = await this.handle.writev(pending, this.position);
      if (bytesWritten === 0) throw new Error('The disk took no bytes of a write.');
      this.position += bytesWritten;
      // A short write (rare on a regular file): the rest goes again.
      let skip = bytesWritten;
      while (pending.length > 0 && skip >= pending[0]!.length) skip -= pending.shift()!.length;
      if (skip > 0) pending[0] = pending[0]!.subarray(skip);
    }
  }

  private syncIfDue(): void {
    if (this.syncing || this.recordFailure || this.position - this.synced < RESUMABLE_SYNC_BYTES) return;
    const covered = this.position;
    this.syncing = (async () => {
      try {
        await this.handle.sync();
        await this.onSynced(covered);
        this.synced = covered;
      } catch (error) {
        this.recordFailure = error;
        this.destroy(error as Error);
      } finally {
        this.syncing = null;
      }
      this.syncIfDue();
    })();
  }
}
