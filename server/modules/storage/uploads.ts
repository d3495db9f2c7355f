/**
 * Resumable uploads (tus 1.0.0: core, creation, creation-with-upload, termination,
 * expiration), the domain side; routes.ts speaks the HTTP protocol.
 *
 * An upload's state is a row in Postgres (basalt.storage_uploads), so any instance can go on
 * with it. Creation runs the same checks as a PUT, with Upload-Length as the object's size
 * (bucket, path, type, size limit, write rule, existing object, quota reservation) and marks
 * the final key pending. Each PATCH appends under a lease (one writer per upload across
 * instances), makes its bytes durable, then records the new offset. The last byte completes
 * the backend write and commits the object row through the same path as a PUT
 * (StorageService.commitUpload): same consistency, same change-log event, so `onObject`
 * triggers fire exactly as for a PUT.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Caller } from '../../internal/caller.js';
import { isUser } from '../../internal/caller.js';
import { AppError, isAppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import type { PutResult, ResumableState, StorageBackend } from './backends/index.js';
import { ContentDigest } from './backends/digest.js';
import type { StorageRepository, UploadRow } from './repository.js';
import type { StorageObject, StorageService } from './service.js';
import { HashingStream, UploadHashes, type RunningHash } from './upload-hashes.js';

/** How long one append may hold an upload before another instance may take it over. */
const LEASE_SECONDS = 15;
const LEASE_RENEW_MS = 5000;
/** How long a PATCH waits for an append of the same upload on this instance to end before a 409. */
const LOCAL_HANDOVER_MS = 2000;
const ID = /^[A-Za-z0-9_-]{22,64}$/;

export interface ResumableUploadOptions {
  /** An unfinished upload expires this long after its last append. */
  expirySeconds: number;
}

export interface UploadStatus {
  id: string;
  offset: number;
  length: number;
  metadata: string;
  expiresAt: string;
  /** Set when this request completed the upload. */
  object: StorageObject | null;
}

/** `Upload-Metadata`: comma-separated `key base64(value)` pairs. */
export function parseUploadMetadata(header: string | undefined): Map<string, string> {
  const entries = new Map<string, string>();
  if (header === undefined || header.trim() === '') return entries;
  for (const pair of header.split(',')) {
    const [key, value, extra] = pair.trim().split(' ');
    if (!key || extra !== undefined || !/^[\x21-\x7e]+$/.test(key) || entries.has(key)) {
      throw new AppError('INVALID_REQUEST', 'Upload-Metadata is malformed.');
    }
    if (value !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
      throw new AppError('INVALID_REQUEST', `Upload-Metadata: the value of "${key}" is not base64.`);
    }
    entries.set(key, value === undefined ? '' : Buffer.from(value, 'base64').toString('utf8'));
  }
  return entries;
}

function creatorOf(caller: Caller): string {
  if (caller.role === 'service') return 'service';
  if (isUser(caller)) return `user:${caller.uid}`;
  return 'public';
}

export class ResumableUploads {
  private readonly hashes = new UploadHashes();
  /** Appends in progress on this instance, by upload id; each resolves once its lease is released. */
  private readonly appending = new Map<string, Promise<void>>();

  constructor(
    private readonly repo: StorageRepository,
    private readonly backend: StorageBackend,
    private readonly storage: StorageService,
    private readonly log: Logger,
    private readonly options: ResumableUploadOptions,
  ) {}

  /** POST: checks everything a PUT of `length` bytes would, then opens the upload. */
  async create(caller: Caller, length: number, rawMetadata: string | undefined): Promise<UploadStatus> {
    const metadata = parseUploadMetadata(rawMetadata);
    const bucket = metadata.get('bucket');
    const path = metadata.get('path') ?? metadata.get('objectName');
    if (!bucket || !path) {
      throw new AppError('INVALID_REQUEST', 'Upload-Metadata must name the bucket and the path.', {
        details: { required: ['bucket', 'path'] },
      });
    }
    const upsertRaw = metadata.get('upsert');
    if (upsertRaw !== undefined && upsertRaw !== 'true' && upsertRaw !== 'false') {
      throw new AppError('INVALID_REQUEST', 'Upload-Metadata: upsert must be "true" or "false".');
    }
    const prepared = await this.storage.beginUpload(caller, {
      bucket,
      rawPath: path,
      contentType: metadata.get('content_type') ?? metadata.get('contentType') ?? metadata.get('filetype'),
      upsert: upsertRaw === 'true',
      size: length,
    });
    try {
      const backendState = await this.backend.beginResumable(prepared.key, length);
      const row = await this.repo.insertUpload(this.repo.pool, {
        id: randomBytes(24).toString('base64url'),
        bucket: prepared.bucket.name,
        path: prepared.path,
        storageKey: prepared.key,
        contentType: prepared.contentType,
        upsert: prepared.upsert,
        owner: prepared.owner,
        creator: creatorOf(caller),
        length,
        metadata: rawMetadata ?? '',
        backendState,
        expiresInSeconds: this.options.expirySeconds,
      });
      return status(row, null);
    } catch (error) {
      await this.storage.abandonUpload(prepared.key);
      throw error;
    }
  }

  /** HEAD: where the upload stands. An upload whose bytes all arrived but did not commit (a crash) is finished here. */
  async status(caller: Caller, id: string): Promise<UploadStatus> {
    await this.visible(caller, id);
    // An append on this instance still storing what a dropped connection sent: the offset to
    // report is the one it ends with, not one it recorded on the way.
    await this.localAppendEnded(id);
    const row = await this.visible(caller, id);
    if (row.upload_offset === row.upload_length) {
      const finished = await this.append(caller, id, row.upload_offset, null).catch((error: unknown) => {
        // Another request holds the upload (and will finish it): report where it stands.
        if (isAppError(error) && error.code === 'VERSION_CONFLICT') return status(row, null);
        throw error;
      });
      return finished;
    }
    return status(row, null);
  }

  /**
   * PATCH: appends `body` at `offset` (which must be the upload's offset: VERSION_CONFLICT
   * otherwise, or while another request appends). Completes the upload with its last byte.
   */
  async append(caller: Caller, id: string, offset: number, body: Readable | null): Promise<UploadStatus> {
    await this.visible(caller, id);
    const token = randomBytes(16).toString('base64url');
    let row = await this.repo.leaseUpload(id, token, LEASE_SECONDS);
    if (!row && (await this.localAppendEnded(id))) row = await this.repo.leaseUpload(id, token, LEASE_SECONDS);
    if (!row) {
      if (await this.repo.upload(id)) {
        throw new AppError('VERSION_CONFLICT', 'Another request is writing to this upload; retry shortly.', {
          details: { reason: 'upload_busy' },
        });
      }
      throw notFound();
    }
    if (row.upload_offset !== offset) {
      await this.repo.releaseLease(id, token);
      throw new AppError('VERSION_CONFLICT', `Upload-Offset must be ${row.upload_offset}.`, {
        details: { reason: 'offset_mismatch', offset: row.upload_offset },
      });
    }
    let appended!: () => void;
    const ownAppend = new Promise<void>((resolve) => {
      appended = resolve;
    });
    this.appending.set(id, ownAppend);
    const renew = setInterval(() => {
      this.repo.renewLease(id, token, LEASE_SECONDS).catch((error: unknown) => {
        this.log.warn({ err: error, upload: id }, 'could not renew an upload lease');
      });
    }, LEASE_RENEW_MS);
    renew.unref();
    // The running SHA-256 of the bytes so far, when this instance received all of them in order.
    const hash = this.hashes.resume(id, row.upload_offset);
    let current: UploadRow & { held: Buffer | null } = row;
    let ended = false;
    let released = false;
    try {
      if (body !== null && row.upload_offset < row.upload_length) {
        const left = row.upload_length - row.upload_offset;
        // Progress is recorded as it becomes durable while the body goes on arriving (every
        // 8 MiB on disk, every part on S3): a crash (kill -9) in the middle of a long PATCH
        // loses at most the stretch in flight.
        const record = async (
          progress: { offset: number; state: ResumableState; held: Buffer | null },
          release = false,
        ) => {
          const recorded = await this.repo.recordProgress(id, token, {
            offset: progress.offset,
            backendState: progress.state,
            held: progress.held,
            expiresInSeconds: this.options.expirySeconds,
            release,
          });
          if (!recorded) {
            throw new AppError('VERSION_CONFLICT', 'The upload was taken over by another request; resume it.', {
              details: { reason: 'upload_busy' },
            });
          }
          return recorded;
        };
        let source = body;
        if (hash) {
          const hashing = new HashingStream(hash);
          // Either side failing (client gone, append stopped) ends the other.
          pipeline(body, hashing).catch(() => undefined);
          source = hashing;
        }
        const progress = await this.backend.appendResumable(
          current.storage_key,
          { state: current.backend_state, offset: current.upload_offset, held: current.held },
          source,
          left,
          async (durable) => {
            await record({ ...durable, held: null });
          },
        );
        // The last record of an append that leaves the upload unfinished also releases the lease.
        released = progress.offset < row.upload_length;
        current = { ...(await record(progress, released)), held: progress.held };
        const failure = progress.failure;
        if (isAppError(failure)) throw failure;
        // A body cut off: what arrived is kept; the client (gone) resumes from the new offset.
        if (failure !== null) return status(current, null);
      } else if (body !== null && (await bodyHasBytes(body))) {
        throw new AppError('PAYLOAD_TOO_LARGE', 'The upload already has all its bytes.');
      }
      if (current.upload_offset < current.upload_length) return status(current, null);
      ended = true;
      const object = await this.finish(caller, current, hash?.offset === current.upload_length ? hash : null);
      return status(current, object);
    } finally {
      clearInterval(renew);
      if (hash) {
        // Kept only if it covers exactly the bytes recorded: anything else falls back to reading them.
        if (!ended && hash.offset === current.upload_offset) await this.hashes.park(id, hash);
        else hash.discard();
      }
      if (!released) await this.repo.releaseLease(id, token).catch(() => undefined);
      if (this.appending.get(id) === ownAppend) this.appending.delete(id);
      appended();
    }
  }

  /**
   * Waits (up to LOCAL_HANDOVER_MS) for an append of upload `id` running on this instance,
   * typically one whose client just went away and that is storing what arrived, so that the
   * client's resume finds its final offset rather than a 409. False when there was none.
   */
  private async localAppendEnded(id: string): Promise<boolean> {
    const local = this.appending.get(id);
    if (!local) return false;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([local, new Promise((resolve) => (timer = setTimeout(resolve, LOCAL_HANDOVER_MS)))]);
    clearTimeout(timer);
    return true;
  }

  /** DELETE: the upload and its bytes go; later requests for it are 404. */
  async terminate(caller: Caller, id: string): Promise<void> {
    await this.visible(caller, id);
    const token = randomBytes(16).toString('base64url');
    const row = await this.repo.leaseUpload(id, token, LEASE_SECONDS);
    if (!row) {
      throw new AppError('VERSION_CONFLICT', 'Another request is writing to this upload; retry shortly.', {
        details: { reason: 'upload_busy' },
      });
    }
    await this.discard(row);
  }

  /** Lets go of the running hashes held between PATCHes (the server stops). */
  close(): void {
    this.hashes.close();
  }

  /** Removes uploads past their expiry (the sweeper calls this); returns how many. */
  async expire(limit = 100): Promise<number> {
    const rows = await this.repo.expiredUploads(limit);
    for (const row of rows) await this.discard(row);
    return rows.length;
  }

  private async discard(row: UploadRow): Promise<void> {
    this.hashes.forget(row.id);
    await this.backend.abortResumable(row.storage_key, row.backend_state);
    await this.repo.deleteUpload(this.repo.pool, row.id);
    await this.storage.abandonUpload(row.storage_key);
  }

  /**
   * Completes the backend write and commits the object's row with the upload's removal. The
   * SHA-256 is the running one when this instance received every byte in order; otherwise (the
   * upload moved between instances, or the server restarted) the stored object is read back once.
   */
  private async finish(
    caller: Caller,
    row: UploadRow & { held: Buffer | null },
    hash: RunningHash | null,
  ): Promise<StorageObject> {
    await this.backend.completeResumable(row.storage_key, row.backend_state, row.held);
    const stored =
      (hash ? await hash.result() : null) ?? (await this.readBackDigest(row.storage_key, row.upload_length));
    const bucket = await this.storage.bucketForUpload(row.bucket);
    return this.storage.commitUpload(
      caller,
      {
        bucket,
        path: row.path,
        contentType: row.content_type,
        owner: row.owner,
        ruleOwner: row.owner,
        upsert: row.upsert,
        limit: row.upload_length,
        key: row.storage_key,
      },
      stored,
      async (tx) => this.repo.deleteUpload(tx, row.id),
    );
  }

  /** The stored object's checksums, read back once (the fallback when no running hash covers it). */
  private async readBackDigest(key: string, length: number): Promise<PutResult> {
    const digest = new ContentDigest();
    let size = 0;
    try {
      if (length > 0) {
        for await (const chunk of await this.backend.get(key)) {
          const buffer = chunk as Buffer;
          size += buffer.length;
          await digest.update(buffer);
        }
      }
      const sha256 = await digest.digest();
      return { size, sha256, etag: `"${sha256}"` };
    } catch (error) {
      digest.discard();
      throw error;
    }
  }

  /** The upload, if it exists, has not expired and the caller is the one who created it; else NOT_FOUND. */
  private async visible(caller: Caller, id: string): Promise<UploadRow> {
    if (!ID.test(id)) throw notFound();
    const row = await this.repo.upload(id);
    if (!row) throw notFound();
    if (caller.role !== 'service' && row.creator !== creatorOf(caller)) throw notFound();
    return row;
  }
}

function notFound(): AppError {
  return new AppError('NOT_FOUND', 'No such upload: it finished, was terminated or expired.');
}

function status(row: UploadRow, object: StorageObject | null): UploadStatus {
  return {
    id: row.id,
    offset: row.upload_offset,
    length: row.upload_length,
    metadata: row.metadata,
    expiresAt: row.expires_at,
    object,
  };
}

async function bodyHasBytes(body: Readable): Promise<boolean> {
  for await (const chunk of body) if ((chunk as Buffer).length > 0) return true;
  return false;
}
