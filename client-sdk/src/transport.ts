import { BasaltError } from './errors.js';

/** Key-value storage for the session: localStorage in browsers, anything with the same three calls elsewhere. */
export interface SessionStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

/** Retries of idempotent calls (GET, HEAD, PUT, DELETE) the server answered 503 or 429. */
export interface RetryOptions {
  /** Attempts in all, the first included; default 3. */
  attempts?: number;
  /** The longest wait between attempts, in ms; a `Retry-After` beyond it is not waited for. Default 5000. */
  maxDelayMs?: number;
}

const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);
const RETRIED_STATUSES = new Set([429, 503]);
const FIRST_BACKOFF_MS = 250;

/**
 * How long to wait before the next attempt: what `Retry-After` asks (seconds or an HTTP
 * date), else exponential backoff with jitter.
 */
function retryDelay(retryAfter: string | null, attempt: number, maxDelayMs: number): number {
  if (retryAfter !== null && retryAfter.trim() !== '') {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
    const at = Date.parse(retryAfter);
    if (!Number.isNaN(at)) return Math.max(0, at - Date.now());
  }
  const step = Math.min(maxDelayMs, FIRST_BACKOFF_MS * 2 ** (attempt - 1));
  return step / 2 + Math.random() * (step / 2);
}

/** The low-level HTTP layer every SDK module shares: base URL, JSON bodies, catalogue errors. */
export class HttpTransport {
  readonly baseUrl: string;
  /** The fetch in use (the one given to createClient, or the global one). */
  readonly fetchImpl: typeof globalThis.fetch;
  private accessToken: () => string | null | Promise<string | null> = () => null;
  private readonly retry: Required<RetryOptions>;

  /** `retry: false` sends every request once. */
  constructor(baseUrl: string, fetchImpl: typeof globalThis.fetch, retry: RetryOptions | false = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = fetchImpl;
    this.retry =
      retry === false
        ? { attempts: 1, maxDelayMs: 0 }
        : { attempts: Math.max(1, retry.attempts ?? 3), maxDelayMs: retry.maxDelayMs ?? 5_000 };
  }

  /** The auth module installs the current access token's source here; it may refresh the token first. */
  useAccessToken(source: () => string | null | Promise<string | null>): void {
    this.accessToken = source;
  }

  /** The token the next request would carry (e.g. for a websocket's auth message). */
  async getAccessToken(): Promise<string | null> {
    return this.accessToken();
  }

  /**
   * Sends a request with the current token and returns the response; rejects with UNAVAILABLE
   * when the server cannot be reached and with the catalogue error of any non-2xx answer.
   * For bodies and answers that are not JSON (uploads, downloads, metrics); `request` is the
   * JSON form. `options.anonymous` sends no token: sign-in calls must not carry a stale one.
   * An idempotent call answered 503 or 429 is tried again (see RetryOptions), unless its body
   * is a stream, which cannot be sent twice; a POST never is.
   */
  async send(
    method: string,
    path: string,
    init: { body?: BodyInit | null; headers?: Record<string, string>; anonymous?: boolean; duplex?: 'half' } = {},
  ): Promise<Response> {
    const replayable = IDEMPOTENT_METHODS.has(method.toUpperCase()) && !(init.body instanceof ReadableStream);
    for (let attempt = 1; ; attempt++) {
      const token = init.anonymous ? null : await this.accessToken();
      const request: RequestInit & { duplex?: 'half' } = {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers },
        body: init.body ?? null,
        ...(init.duplex ? { duplex: init.duplex } : {}),
      };
      let response: Response;
      try {
        response = await this.fetchImpl(`${this.baseUrl}${path}`, request);
      } catch (cause) {
        throw new BasaltError('UNAVAILABLE', 'The Basalt server could not be reached.', { status: 0, cause });
      }
      if (response.ok) return response;
      if (replayable && attempt < this.retry.attempts && RETRIED_STATUSES.has(response.status)) {
        const delay = retryDelay(response.headers.get('retry-after'), attempt, this.retry.maxDelayMs);
        if (delay <= this.retry.maxDelayMs) {
          await response.body?.cancel().catch(() => undefined);
          await new Promise((resolve) => setTimeout(resolve, delay));
          continue;
        }
      }
      throw BasaltError.fromResponse(response.status, parseJson(await response.text().catch(() => '')));
    }
  }

  /** A JSON request: the body is sent as JSON and the answer parsed (undefined for 204). */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    options: { anonymous?: boolean } = {},
  ): Promise<T> {
    const response = await this.send(method, path, {
      body: body !== undefined ? JSON.stringify(body) : null,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      anonymous: options.anonymous,
    });
    if (response.status === 204) return undefined as T;
    return parseJson(await response.text()) as T;
  }
}

/** The JSON value of a response text, or undefined when it is empty or not JSON. */
export function parseJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
