import { parseJson, type HttpTransport } from './transport.js';
import { BasaltError } from './errors.js';

import type { ErrorCode } from './errors.js';
import type { StorageObject } from './wire.js';
import { ResumableUpload, type ResumableUploadOptions } from './resumable.js';

export type { StorageObject };

/**
 * What upload() takes: a Blob or File, bytes, a web ReadableStream, or any async iterable of
 * byte chunks — a Node stream such as `fs.createReadStream(file)` or a `Readable`. Streams
 * are sent as they are read, never buffered whole.
 */
export type UploadBody =
  Blob | ReadableStream<Uint8Array> | Uint8Array | ArrayBuffer | AsyncIterable<Uint8Array | string>;

/** A signed URL and when it stops working (ISO 8601, UTC). */
export interface SignedUrl {
  url: string;
  expires_at: string;
}

export interface SignedUrlOptions {
  /** Resolve with `{ url, expires_at }` instead of the URL alone. */
  withExpiry?: boolean;
  /** Sign a resized or re-encoded variant of the image instead of the original. */
  transform?: ImageTransform;
}

/** One path's outcome in remove([...]): deleted, or the catalogue error that path got. */
export type RemoveResult =
  { path: string; deleted: true } | { path: string; deleted: false; error: { code: ErrorCode; message: string } };

export interface TransferOptions {
  /** The destination bucket; default: this bucket. */
  toBucket?: string;
  /** Replace an object at the destination instead of failing with ALREADY_EXISTS. */
  upsert?: boolean;
}

export interface UploadOptions {
  /** Overwrite an existing object instead of failing with ALREADY_EXISTS. */
  upsert?: boolean;
  /** Default: the Blob's type, else application/octet-stream. */
  contentType?: string;
  /** Bytes sent so far and the total (null when a stream's length is unknown). */
  onProgress?: (sent: number, total: number | null) => void;
  /**
   * Send with tus, resumable after a dropped connection or a reload (browsers remember the
   * upload by fingerprint). Default: above 6 MiB for a Blob or bytes; `false` never.
   */
  resumable?: boolean;
}

/** An image transform (server: width/height ≤ 2500 by default). */
export interface ImageTransform {
  width?: number;
  height?: number;
  fit?: 'cover' | 'contain' | 'inside';
  format?: 'webp' | 'avif' | 'jpeg' | 'png';
  quality?: number;
}

/** Uploads larger than this go resumable unless `resumable: false`. */
export const RESUMABLE_THRESHOLD_BYTES = 6 * 1024 * 1024;

function transformQuery(transform: ImageTransform | undefined): string {
  if (!transform) return '';
  const query = new URLSearchParams();
  for (const name of ['width', 'height', 'fit', 'format', 'quality'] as const) {
    const value = transform[name];
    if (value !== undefined) query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `?${text}` : '';
}

export interface ListOptions {
  prefix?: string;
  limit?: number;
  /** `nextCursor` of the previous page. */
  after?: string | null;
}

export interface ListResult {
  objects: StorageObject[];
  nextCursor: string | null;
}

const MAX_PATH_BYTES = 1024;
// C0 and C1 control characters, DEL included.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why the server would refuse an object path (API.md, "Storage"), or null when it takes it.
 * Checked before the request: fetch would resolve `a/../b` to `b` and write elsewhere.
 */
function pathProblem(path: string): string | null {
  if (UNPAIRED_SURROGATE.test(path)) return 'it is not valid UTF-8';
  const normalized = path.normalize('NFC');
  const bytes = new TextEncoder().encode(normalized).byteLength;
  if (bytes < 1) return 'it is empty';
  if (bytes > MAX_PATH_BYTES) return `it is longer than ${MAX_PATH_BYTES} bytes`;
  if (CONTROL_CHARACTER.test(normalized)) return 'it contains a control character';
  if (normalized.startsWith('/')) return 'it starts with "/"';
  const segments = normalized.split('/');
  if (segments.includes('')) return 'it has an empty segment ("//" or a trailing "/")';
  if (segments.some((segment) => segment === '.' || segment === '..')) return 'it has a "." or ".." segment';
  return null;
}

/** The path's segments, percent-encoded; throws INVALID_PATH, as the server would answer, for a path it refuses. */
function encodePath(path: string): string {
  const problem = pathProblem(path);
  if (problem !== null) {
    throw new BasaltError('INVALID_PATH', `The object path is not valid: ${problem}.`, { details: { path } });
  }
  return path.split('/').map(encodeURIComponent).join('/');
}

function bodySize(body: UploadBody): number | null {
  if (body instanceof Uint8Array) return body.byteLength;
  if (body instanceof ArrayBuffer) return body.byteLength;
  if (body instanceof Blob) return body.size;
  return null;
}

/** A web stream over an async iterable's chunks (strings as UTF-8), pulled as the request reads it. */
function iterableStream(source: AsyncIterable<Uint8Array | string>): ReadableStream<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await iterator.next();
      if (done) controller.close();
      else controller.enqueue(typeof value === 'string' ? encoder.encode(value) : value);
    },
    async cancel(reason) {
      await iterator.return?.(reason);
    },
  });
}

function isStreamLike(body: UploadBody): body is ReadableStream<Uint8Array> | AsyncIterable<Uint8Array | string> {
  return (
    body instanceof ReadableStream ||
    !(body instanceof Blob || body instanceof Uint8Array || body instanceof ArrayBuffer)
  );
}

function toStream(body: UploadBody): ReadableStream<Uint8Array> {
  if (body instanceof Blob) return body.stream();
  if (body instanceof Uint8Array || body instanceof ArrayBuffer) {
    const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
    // Slices keep progress reports meaningful for one large buffer.
    const slice = 256 * 1024;
    let offset = 0;
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        if (offset >= bytes.byteLength) {
          controller.close();
          return;
        }
        controller.enqueue(bytes.subarray(offset, offset + slice));
        offset += slice;
      },
    });
  }
  return body instanceof ReadableStream ? body : iterableStream(body);
}

/** Reports each chunk as the request body pulls it: progress of bytes handed to the network. */
function withProgress(
  source: ReadableStream<Uint8Array>,
  total: number | null,
  onProgress: (sent: number, total: number | null) => void,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      sent += value.byteLength;
      controller.enqueue(value);
      onProgress(sent, total);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/** One bucket's objects. */
export class BucketRef {
  constructor(
    private readonly http: HttpTransport,
    readonly bucket: string,
  ) {}

  private objectPath(path: string): string {
    return `/v1/storage/${encodeURIComponent(this.bucket)}/${encodePath(path)}`;
  }

  private objectUrl(path: string): string {
    return `${this.http.baseUrl}${this.objectPath(path)}`;
  }

  /**
   * Uploads with a streamed PUT. With `onProgress` in a browser, a Blob or bytes go
   * through XMLHttpRequest to get real upload progress; elsewhere progress is counted
   * as the body stream is consumed.
   */
  async upload(path: string, body: UploadBody, options: UploadOptions = {}): Promise<StorageObject> {
    const contentType =
      options.contentType || (body instanceof Blob && body.type ? body.type : 'application/octet-stream');
    const headers: Record<string, string> = { 'content-type': contentType };
    if (options.upsert) headers['x-upsert'] = 'true';
    const total = bodySize(body);
    const resumable = options.resumable ?? (total !== null && total > RESUMABLE_THRESHOLD_BYTES);
    if (resumable && !isStreamLike(body)) {
      return this.createResumableUpload(path, body, { ...options, contentType }).start();
    }

    if (options.onProgress && typeof XMLHttpRequest !== 'undefined' && !isStreamLike(body)) {
      const token = await this.http.getAccessToken();
      if (token) headers.authorization = `Bearer ${token}`;
      return this.uploadWithXhr(this.objectUrl(path), headers, body, options.onProgress);
    }

    let payload: BodyInit;
    let streaming = false;
    if (options.onProgress) {
      payload = withProgress(toStream(body), total, options.onProgress);
      streaming = true;
    } else if (isStreamLike(body)) {
      payload = toStream(body);
      streaming = true;
    } else {
      payload = body as Blob | ArrayBuffer;
      if (body instanceof Uint8Array) payload = body as unknown as BodyInit;
    }
    // Streaming request bodies need half-duplex in fetch (Node, Chromium).
    const response = await this.http.send('PUT', this.objectPath(path), {
      headers,
      body: payload,
      ...(streaming ? { duplex: 'half' as const } : {}),
    });
    return (await response.json()) as StorageObject;
  }

  private uploadWithXhr(
    url: string,
    headers: Record<string, string>,
    body: Blob | Uint8Array | ArrayBuffer,
    onProgress: (sent: number, total: number | null) => void,
  ): Promise<StorageObject> {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', url);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : null);
      xhr.onerror = () =>
        reject(new BasaltError('UNAVAILABLE', 'The Basalt server could not be reached.', { status: 0 }));
      xhr.onload = () => {
        const parsed = parseJson(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300) resolve(parsed as StorageObject);
        else reject(BasaltError.fromResponse(xhr.status, parsed));
      };
      xhr.send(body instanceof Uint8Array ? new Blob([body as Uint8Array<ArrayBuffer>]) : body);
    });
  }

  /**
   * A tus upload to start, pause and resume by hand (`upload` with `resumable: true` starts
   * one and waits for it).
   */
  createResumableUpload(
    path: string,
    body: Blob | Uint8Array | ArrayBuffer,
    options: ResumableUploadOptions = {},
  ): ResumableUpload {
    encodePath(path);
    return new ResumableUpload(this.http, this.bucket, path.normalize('NFC'), body, options);
  }

  /** The object's bytes; with `transform`, the image resized or re-encoded. */
  async download(path: string, options: { transform?: ImageTransform } = {}): Promise<Blob> {
    const response = await this.http.send('GET', this.objectPath(path) + transformQuery(options.transform));
    return response.blob();
  }

  /** The URL of an object in a public bucket (no token needed), or of a transform of it. Makes no request. */
  getPublicUrl(path: string, options: { transform?: ImageTransform } = {}): string {
    return this.objectUrl(path) + transformQuery(options.transform);
  }

  /**
   * A URL that downloads the object (or, with `transform`, a transform of it) without a token
   * for `expiresIn` seconds. With `{ withExpiry: true }` it resolves with `{ url, expires_at }`.
   */
  createSignedUrl(
    path: string,
    expiresIn: number,
    options: SignedUrlOptions & { withExpiry: true },
  ): Promise<SignedUrl>;
  createSignedUrl(path: string, expiresIn: number, options?: SignedUrlOptions): Promise<string>;
  async createSignedUrl(path: string, expiresIn: number, options: SignedUrlOptions = {}): Promise<string | SignedUrl> {
    const result = await this.http.request<SignedUrl>(
      'POST',
      `/v1/sign/${encodeURIComponent(this.bucket)}/${encodePath(path)}`,
      { expires_in: expiresIn, ...(options.transform ? { transform: options.transform } : {}) },
    );
    return options.withExpiry ? { url: result.url, expires_at: result.expires_at } : result.url;
  }

  /** Objects the caller may read, in path order, one page at a time. */
  async list(options: ListOptions = {}): Promise<ListResult> {
    const query = new URLSearchParams();
    if (options.prefix) query.set('prefix', options.prefix);
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.after) query.set('after', options.after);
    const suffix = query.toString() ? `?${query.toString()}` : '';
    const result = await this.http.request<{ objects: StorageObject[]; next_cursor: string | null }>(
      'GET',
      `/v1/storage/${encodeURIComponent(this.bucket)}${suffix}`,
    );
    return { objects: result.objects, nextCursor: result.next_cursor };
  }

  /**
   * Deletes one object, or several in one call: `remove(['a.png', 'b.png'])` (up to 1000)
   * resolves with one result per path, in order — deleted, or the error that path got
   * (NOT_FOUND, FORBIDDEN, INVALID_PATH, ...) — and rejects only when the call as a whole fails.
   */
  remove(path: string): Promise<void>;
  remove(paths: readonly string[]): Promise<RemoveResult[]>;
  async remove(pathOrPaths: string | readonly string[]): Promise<void | RemoveResult[]> {
    if (typeof pathOrPaths === 'string') {
      await this.http.request<void>(
        'DELETE',
        `/v1/storage/${encodeURIComponent(this.bucket)}/${encodePath(pathOrPaths)}`,
      );
      return;
    }
    const result = await this.http.request<{ results: RemoveResult[] }>(
      'DELETE',
      `/v1/storage/${encodeURIComponent(this.bucket)}`,
      { paths: pathOrPaths },
    );
    return result.results;
  }

  /**
   * Moves an object to another path (or bucket with `toBucket`), atomically: it is at one
   * place or the other, never both. Needs read and delete on the source, write on the
   * destination. Resolves with the object at its new place.
   */
  move(from: string, to: string, options: TransferOptions = {}): Promise<StorageObject> {
    return this.transfer('move', from, to, options);
  }

  /** Copies an object to another path (or bucket) as a new object of the caller. Needs read on the source, write on the destination. */
  copy(from: string, to: string, options: TransferOptions = {}): Promise<StorageObject> {
    return this.transfer('copy', from, to, options);
  }

  private async transfer(
    kind: 'move' | 'copy',
    from: string,
    to: string,
    options: TransferOptions,
  ): Promise<StorageObject> {
    // Checked here as for every other call, so a bad path fails the same way.
    encodePath(from);
    encodePath(to);
    return this.http.request<StorageObject>('POST', `/v1/storage/${kind}`, {
      bucket: this.bucket,
      from,
      to,
      ...(options.toBucket !== undefined ? { to_bucket: options.toBucket } : {}),
      ...(options.upsert !== undefined ? { upsert: options.upsert } : {}),
    });
  }
}

/** `basalt.storage`: files in buckets. */
export class StorageClient {
  constructor(private readonly http: HttpTransport) {}

  from(bucket: string): BucketRef {
    return new BucketRef(this.http, bucket);
  }
}
