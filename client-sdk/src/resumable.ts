import { BasaltError } from './errors.js';
import { parseJson, type HttpTransport } from './transport.js';
import type { StorageObject } from './wire.js';

/** Bytes per PATCH: a piece lost to a dropped connection is sent again, so not too large. */
const CHUNK_BYTES = 8 * 1024 * 1024;
const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 8000];
const TUS = { 'tus-resumable': '1.0.0' };

export interface ResumableUploadOptions {
  upsert?: boolean;
  contentType?: string;
  onProgress?: (sent: number, total: number | null) => void;
  /** Bytes per request; default 8 MiB. */
  chunkSize?: number;
  /** Where upload URLs are remembered by fingerprint, so an upload resumes after a reload (browsers: localStorage). */
  urlStorage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
}

function defaultUrlStorage(): ResumableUploadOptions['urlStorage'] {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null; // storage disabled (privacy settings)
  }
}

function metadata(entries: Record<string, string>): string {
  const base64 = (value: string): string => {
    let binary = '';
    for (const byte of new TextEncoder().encode(value)) binary += String.fromCharCode(byte);
    return btoa(binary);
  };
  return Object.entries(entries)
    .map(([key, value]) => `${key} ${base64(value)}`)
    .join(',');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A tus 1.0.0 upload to Basalt (`/v1/storage/uploads`), small enough to live in the SDK. The
 * upload URL is remembered by a fingerprint of the file (bucket, path, name, size, modified
 * time), so `start()` after a page reload resumes where the last one stopped. `pause()`
 * stops sending (what reached the server is kept); `start()` again resumes.
 */
export class ResumableUpload {
  /** The upload's URL, once created. */
  url: string | null = null;
  private controller: AbortController | null = null;
  private paused = false;
  private readonly blob: Blob;
  private readonly urlStorage: ResumableUploadOptions['urlStorage'];

  constructor(
    private readonly http: HttpTransport,
    private readonly bucket: string,
    private readonly path: string,
    body: Blob | Uint8Array | ArrayBuffer,
    private readonly options: ResumableUploadOptions = {},
  ) {
    this.blob = body instanceof Blob ? body : new Blob([body as Uint8Array<ArrayBuffer>]);
    this.urlStorage = options.urlStorage === undefined ? defaultUrlStorage() : options.urlStorage;
  }

  private get fingerprint(): string {
    const file = this.blob as Blob & { name?: string; lastModified?: number };
    return `basalt-upload:${this.http.baseUrl}:${this.bucket}/${this.path}:${this.blob.size}:${file.name ?? ''}:${file.lastModified ?? ''}`;
  }

  /** Stops sending; the bytes the server has are kept. `start()` resumes. */
  pause(): void {
    this.paused = true;
    this.controller?.abort();
  }

  /** Sends the file (or what the server lacks of it); resolves to the object once complete. */
  async start(): Promise<StorageObject> {
    this.paused = false;
    const total = this.blob.size;
    this.url ??= this.urlStorage?.getItem(this.fingerprint) ?? null;
    let offset = this.url ? await this.offset() : null;
    if (offset === null) {
      const created = await this.call('POST', `${this.http.baseUrl}/v1/storage/uploads`, {
        'upload-length': String(total),
        'upload-metadata': metadata({
          bucket: this.bucket,
          path: this.path,
          content_type: this.options.contentType || this.blob.type || 'application/octet-stream',
          upsert: this.options.upsert ? 'true' : 'false',
        }),
      });
      this.url = new URL(created.headers.get('location') ?? '', `${this.http.baseUrl}/`).toString();
      this.urlStorage?.setItem(this.fingerprint, this.url);
      offset = 0;
    }
    const chunkSize = this.options.chunkSize ?? CHUNK_BYTES;
    const url = this.url as string;
    for (let failures = 0; ;) {
      if (this.paused) throw new BasaltError('UNAVAILABLE', 'The upload is paused.', { details: { paused: true } });
      let response: Response;
      try {
        response = await this.call(
          'PATCH',
          url,
          {
            'upload-offset': String(offset),
            'content-type': 'application/offset+octet-stream',
            // The last PATCH then answers 200 with the object rather than tus's bare 204.
            prefer: 'return=representation',
          },
          this.blob.slice(offset, offset + chunkSize),
        );
      } catch (error) {
        const retryable =
          error instanceof BasaltError && (error.status === 0 || error.status >= 500 || error.status === 409);
        if (this.paused || !retryable || failures >= RETRY_DELAYS_MS.length) throw error;
        await sleep(RETRY_DELAYS_MS[failures++] ?? 0);
        // Where the server stands now (a cut-off request may have left part of its bytes).
        const now = await this.offset();
        if (now === null) throw new BasaltError('NOT_FOUND', 'The upload expired or was terminated; start it again.');
        offset = now;
        continue;
      }
      failures = 0;
      offset = Number(response.headers.get('upload-offset') ?? offset);
      this.options.onProgress?.(offset, total);
      if (response.status === 200) {
        this.urlStorage?.removeItem(this.fingerprint);
        return (await response.json()) as StorageObject;
      }
    }
  }

  /** The server's offset for this upload, or null when it no longer knows it (finished, expired, terminated). */
  private async offset(): Promise<number | null> {
    try {
      const response = await this.call('HEAD', this.url as string, {});
      return Number(response.headers.get('upload-offset'));
    } catch (error) {
      if (error instanceof BasaltError && (error.status === 404 || error.status === 403)) {
        this.urlStorage?.removeItem(this.fingerprint);
        this.url = null;
        return null;
      }
      throw error;
    }
  }

  private async call(method: string, url: string, headers: Record<string, string>, body?: Blob): Promise<Response> {
    const token = await this.http.getAccessToken();
    this.controller = new AbortController();
    let response: Response;
    try {
      response = await this.http.fetchImpl(url, {
        method,
        headers: { ...TUS, ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        body: body ?? null,
        signal: this.controller.signal,
      });
    } catch (cause) {
      throw new BasaltError('UNAVAILABLE', 'The Basalt server could not be reached.', { status: 0, cause });
    }
    if (!response.ok) throw BasaltError.fromResponse(response.status, parseJson(await response.text()));
    return response;
  }
}
