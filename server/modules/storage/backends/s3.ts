import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError, isAppError } from '../../../internal/errors.js';
import {
  assertKey,
  ByteLimit,
  MeteredStream,
  type BackendEntry,
  type ByteRange,
  type DurableProgress,
  type PutLimits,
  type PutResult,
  type ResumableProgress,
  type ResumableState,
  type StorageBackend,
} from './index.js';

export interface S3BackendOptions {
  endpoint: string | null;
  region: string;
  bucket: string;
  accessKeyId: string | null;
  secretAccessKey: string | null;
  forcePathStyle: boolean;
  /** Bytes per multipart part; bodies smaller than one part go up in a single PutObject. */
  partSize: number;
}

/**
 * Parts of one upload in flight at once (lib-storage's queueSize). An upload holds about
 * (queue + 2) parts: those in flight, the small chunks of the next one and lib-storage's copy
 * of them into one buffer, plus parts already sent that the garbage collector has not freed
 * yet. Measured on a 1 GiB upload with 5 MiB parts, the server's buffers peaked near 56 MiB
 * with 2 in flight and 76–86 MiB with 4, for no faster upload to a local S3 server: 2 keeps an upload's memory
 * growth under 64 MiB. Larger S3_PART_SIZE values grow it in proportion.
 */
export const S3_UPLOAD_QUEUE_SIZE = 2;

/** Commands whose body is an upload's bytes; see createS3Client. */
const BYTES_COMMANDS = new Set(['UploadPartCommand', 'PutObjectCommand']);

/**
 * The S3 client of the backend (and of the storage benchmark's direct side, so both talk to S3
 * the same way). Part bodies are sent with `x-amz-content-sha256: UNSIGNED-PAYLOAD`: otherwise
 * the signer hashes every part with SHA-256 a second time (Basalt already hashes the whole
 * object for its `sha256`), one of the largest CPU costs of an upload. The parts' integrity is
 * still checked by S3 itself: the SDK sends each part's CRC32 (`x-amz-checksum-crc32`, a signed
 * header) and S3 refuses a part whose bytes do not match; over HTTPS, TLS protects them too.
 */
export function createS3Client(
  options: Pick<S3BackendOptions, 'region' | 'endpoint' | 'forcePathStyle' | 'accessKeyId' | 'secretAccessKey'>,
): S3Client {
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint ?? undefined,
    forcePathStyle: options.forcePathStyle,
    credentials:
      options.accessKeyId && options.secretAccessKey
        ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
        : undefined,
    // A retried streaming body cannot be replayed; lib-storage retries parts itself.
    maxAttempts: 3,
  });
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string> } | undefined;
      if (BYTES_COMMANDS.has(context.commandName ?? '') && request?.headers) {
        request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      }
      return next(args);
    },
    { step: 'build', name: 'basaltUnsignedPayload' },
  );
  return client;
}

function isMissing(error: unknown): boolean {
  if (!(error instanceof S3ServiceException)) return false;
  return error.name === 'NoSuchKey' || error.name === 'NotFound' || error.$metadata.httpStatusCode === 404;
}

function isNotImplemented(error: unknown): boolean {
  return (
    error instanceof S3ServiceException && (error.name === 'NotImplemented' || error.$metadata.httpStatusCode === 501)
  );
}

/**
 * Objects in one S3 bucket (AWS, MinIO, R2, ...). Uploads stream through lib-storage's
 * multipart `Upload`, which S3 only makes visible on completion and which is aborted
 * on any failure, so a key never holds partial content.
 */
export class S3Backend implements StorageBackend {
  readonly kind = 's3' as const;
  readonly client: S3Client;

  constructor(private readonly options: S3BackendOptions) {
    this.client = createS3Client(options);
  }

  async put(key: string, body: Readable, limits: PutLimits): Promise<PutResult> {
    assertKey(key);
    const meter = new MeteredStream(limits.maxBytes);
    let sourceError: unknown = null;
    // pipeline forwards a source failure (client gone) into the meter, which fails the upload.
    const pumped = pipeline(body, meter).catch((error: unknown) => {
      sourceError = error;
    });
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.options.bucket, Key: key, Body: meter },
      // S3 takes at most 10,000 parts: larger parts when the limit allows a larger object.
      partSize: Math.max(this.options.partSize, Math.ceil(limits.maxBytes / 10_000)),
      queueSize: S3_UPLOAD_QUEUE_SIZE,
      // lib-storage would abort the multipart upload itself, but a failed abort would then hide
      // the upload's own error; abortMultipart below sends the abort instead.
      leavePartsOnError: true,
    });
    try {
      await upload.done();
      await pumped;
      if (sourceError) throw sourceError;
    } catch (error) {
      meter.destroy();
      // Stops parts still in flight; it sends nothing to S3 by itself.
      await upload.abort().catch(() => undefined);
      await this.abortMultipart(key, upload.uploadId);
      await pumped;
      // A completed single-part PutObject cannot be aborted: remove it.
      await this.delete(key).catch(() => undefined);
      // The limit's own error (or the client's) when the body failed, else the store's.
      throw isAppError(sourceError) ? sourceError : error;
    }
    return meter.result();
  }

  /**
   * Discards the parts of a failed multipart upload. If S3 cannot be reached (or does not
   * support the call), the upload stays unfinished and the sweeper aborts it once it is older
   * than the grace period (discardStaleWrites).
   */
  private async abortMultipart(key: string, uploadId: string | undefined): Promise<void> {
    if (uploadId === undefined) return;
    await this.client
      .send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId }))
      .catch(() => undefined);
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    assertKey(key);
    try {
      const response = await this.client.send(
        new GetObjectCommand({
          Bucket: this.options.bucket,
          Key: key,
          Range: range ? `bytes=${range.start}-${range.end}` : undefined,
        }),
      );
      if (!(response.Body instanceof Readable)) throw new Error('S3 returned no body stream');
      // The S3 response itself, its chunks never copied: every extra buffer or stream stage of a
      // download is memory outside the JavaScript heap or work per 64 KiB chunk, and the memory
      // is what keeps V8's collector busy during a large transfer (storage.md, Large transfers).
      // The S3 socket's receive buffer reads ahead while the client's socket drains. When the
      // client goes away, Fastify destroys this stream, which closes the S3 connection.
      return response.Body;
    } catch (error) {
      if (isMissing(error)) throw new AppError('NOT_FOUND', 'The object has no stored bytes.', { cause: error });
      throw error;
    }
  }

  async head(key: string): Promise<{ size: number; lastModified: Date } | null> {
    assertKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key }));
      return { size: response.ContentLength ?? 0, lastModified: response.LastModified ?? new Date(0) };
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    assertKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: key }));
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }

  async *list(prefix = ''): AsyncIterable<BackendEntry> {
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        yield { key: item.Key, size: item.Size ?? 0, lastModified: item.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async discardStaleWrites(olderThan: Date, inUse: (key: string) => Promise<boolean>): Promise<number> {
    let discarded = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.options.bucket,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
      } catch (error) {
        // Some S3-compatible stores (e.g. s3rver) cannot list multipart uploads.
        if (isNotImplemented(error)) return discarded;
        throw error;
      }
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated) continue;
        if (upload.Initiated >= olderThan) continue;
        if (await inUse(upload.Key)) continue;
        await this.client.send(
          new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: upload.Key, UploadId: upload.UploadId }),
        );
        discarded++;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return discarded;
  }

  /**
   * A resumable upload is one S3 multipart upload on the final key. S3 parts are at least
   * 5 MiB except the last, so the bytes of a part not yet full are handed back as `held`: the
   * caller keeps them in Postgres (atomically with the offset) and passes them to the next
   * append, which stores them as the start of the next part.
   */
  async beginResumable(key: string, length: number): Promise<ResumableState> {
    assertKey(key);
    const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.options.bucket, Key: key }));
    if (!created.UploadId) throw new Error('S3 returned no multipart upload id');
    // S3 takes at most 10,000 parts.
    const partSize = Math.max(this.options.partSize, Math.ceil(length / 10_000));
    return { uploadId: created.UploadId, partSize, parts: [] };
  }

  async appendResumable(
    key: string,
    upload: { state: ResumableState; offset: number; held: Buffer | null },
    body: Readable,
    maxBytes: number,
    onDurable?: (progress: DurableProgress) => Promise<void>,
  ): Promise<ResumableProgress> {
    assertKey(key);
    const partSize = upload.state.partSize ?? this.options.partSize;
    const parts = new PartPipeline(
      upload.state.parts ?? [],
      (number, body) => this.uploadPart(key, upload.state.uploadId, number, body),
      onDurable && ((parts) => onDurable(progressOf(upload.state, parts))),
    );
    let chunks: Buffer[] = upload.held ? [upload.held] : [];
    let buffered = upload.held?.length ?? 0;
    let failure: unknown = null;
    const limited = new ByteLimit(maxBytes);
    // A body that fails (client gone) fails `limited` too, which ends the loop below.
    const pumped = pipeline(body, limited).catch(() => undefined);
    try {
      for await (const chunk of limited) {
        const buffer = chunk as Buffer;
        chunks.push(buffer);
        buffered += buffer.length;
        while (buffered >= partSize) {
          // One copy per part: the socket's chunks into the part's own buffer.
          const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, buffered);
          chunks = buffered > partSize ? [all.subarray(partSize)] : [];
          buffered -= partSize;
          await parts.send(all.subarray(0, partSize));
        }
      }
    } catch (error) {
      // The parts' own error (S3 refused one, or the record of one failed) fails the append.
      if (parts.failure === null && !(error instanceof S3ServiceException)) {
        failure = error;
        body.destroy();
      } else {
        limited.destroy();
        await parts.settled().catch(() => undefined);
        await pumped;
        throw parts.failure ?? error;
      }
    }
    await pumped;
    // A body cut off keeps what arrived: the parts in flight land first.
    const done = await parts.settled();
    const held = buffered > 0 ? Buffer.concat(chunks, buffered) : null;
    const progress = progressOf(upload.state, done);
    return { state: progress.state, held, offset: progress.offset + buffered, failure };
  }

  private async uploadPart(
    key: string,
    uploadId: string | undefined,
    number: number,
    body: Buffer,
  ): Promise<{ number: number; etag: string; size: number }> {
    const sent = await this.client.send(
      new UploadPartCommand({
        Bucket: this.options.bucket,
        Key: key,
        UploadId: uploadId,
        PartNumber: number,
        Body: body,
        ContentLength: body.length,
      }),
    );
    return { number, etag: sent.ETag ?? '', size: body.length };
  }

  async completeResumable(key: string, state: ResumableState, held: Buffer | null): Promise<void> {
    assertKey(key);
    const parts = [...(state.parts ?? [])];
    if (parts.length === 0 && (held === null || held.length === 0)) {
      // An empty object: S3 completes no multipart upload without a part, so it is a plain put.
      await this.abortResumable(key, state);
      await this.client.send(new PutObjectCommand({ Bucket: this.options.bucket, Key: key, Body: Buffer.alloc(0) }));
      return;
    }
    const expected = parts.reduce((sum, part) => sum + part.size, 0) + (held?.length ?? 0);
    if ((await this.head(key))?.size === expected) return; // completed before (see below)
    if (held && held.length > 0) {
      const number = parts.length + 1;
      const sent = await this.client.send(
        new UploadPartCommand({
          Bucket: this.options.bucket,
          Key: key,
          UploadId: state.uploadId,
          PartNumber: number,
          Body: held,
          ContentLength: held.length,
        }),
      );
      parts.push({ number, etag: sent.ETag ?? '', size: held.length });
    }
    try {
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.options.bucket,
          Key: key,
          UploadId: state.uploadId,
          MultipartUpload: { Parts: parts.map((part) => ({ PartNumber: part.number, ETag: part.etag })) },
        }),
      );
    } catch (error) {
      // Completed before (a crash after S3 answered, before Basalt recorded it): the object is there.
      const total = parts.reduce((sum, part) => sum + part.size, 0);
      if ((await this.head(key).catch(() => null))?.size === total) return;
      throw error;
    }
  }

  async abortResumable(key: string, state: ResumableState): Promise<void> {
    await this.abortMultipart(key, state.uploadId);
  }

  async ping(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }));
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

type StoredPart = { number: number; etag: string; size: number };

function progressOf(state: ResumableState, parts: StoredPart[]): DurableProgress {
  return { state: { ...state, parts }, offset: parts.reduce((sum, part) => sum + part.size, 0) };
}

/**
 * The parts of one resumable append: up to S3_UPLOAD_QUEUE_SIZE in flight while the body goes
 * on arriving (so an append holds at most that many parts, plus the one filling), and the
 * stored prefix reported in order — a part that lands before an earlier one waits for it,
 * since the upload's offset only covers contiguous parts.
 */
class PartPipeline {
  failure: unknown = null;
  private readonly stored: StoredPart[];
  private readonly landed = new Map<number, StoredPart>();
  private readonly inFlight = new Set<Promise<void>>();
  private nextNumber: number;
  private recording: Promise<void> = Promise.resolve();
  private reportedCount: number;

  constructor(
    stored: StoredPart[],
    private readonly upload: (number: number, body: Buffer) => Promise<StoredPart>,
    private readonly onStored: ((parts: StoredPart[]) => Promise<void>) | undefined,
  ) {
    this.stored = [...stored];
    this.nextNumber = stored.length + 1;
    this.reportedCount = stored.length;
  }

  /** Starts the next part once there is room; rejects with the first failure of any part. */
  async send(body: Buffer): Promise<void> {
    while (this.inFlight.size >= S3_UPLOAD_QUEUE_SIZE && this.failure === null) await Promise.race(this.inFlight);
    if (this.failure !== null) throw this.failure;
    const number = this.nextNumber++;
    const flight: Promise<void> = this.upload(number, body).then(
      (part) => {
        this.inFlight.delete(flight);
        this.landed.set(number, part);
        for (let next = this.landed.get(this.stored.length + 1); next; next = this.landed.get(this.stored.length + 1)) {
          this.landed.delete(next.number);
          this.stored.push(next);
        }
        this.report();
      },
      (error: unknown) => {
        this.inFlight.delete(flight);
        this.failure ??= error;
      },
    );
    this.inFlight.add(flight);
  }

  /** Waits for the parts in flight and their record; the parts stored, or the first failure. */
  async settled(): Promise<StoredPart[]> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    await this.recording;
    if (this.failure !== null) throw this.failure;
    return [...this.stored];
  }

  /** Records the stored prefix, one record at a time; parts landing meanwhile join the next one. */
  private report(): void {
    if (!this.onStored) return;
    const onStored = this.onStored;
    this.recording = this.recording.then(async () => {
      if (this.failure !== null || this.stored.length === this.reportedCount) return;
      const parts = [...this.stored];
      try {
        await onStored(parts);
        this.reportedCount = parts.length;
      } catch (error) {
        this.failure ??= error;
      }
    });
  }
}
