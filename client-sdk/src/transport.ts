import { BasaltError } from './errors.js';

/** Key-value storage for the session: localStorage in browsers, anything with the same three calls elsewhere. */
export interface SessionStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

/** The low-level HTTP layer every SDK module shares: base URL, JSON bodies, catalogue errors. */
export class HttpTransport {
  readonly baseUrl: string;
  /** The fetch in use (the one given to createClient, or the global one). */
  readonly fetchImpl: typeof globalThis.fetch;
  private accessToken: () => string | null | Promise<string | null> = () => null;

  constructor(baseUrl: string, fetchImpl: typeof globalThis.fetch) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = fetchImpl;
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
   */
  async send(
    method: string,
    path: string,
    init: { body?: BodyInit | null; headers?: Record<string, string>; anonymous?: boolean; duplex?: 'half' } = {},
  ): Promise<Response> {
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
    if (!response.ok) throw BasaltError.fromResponse(response.status, parseJson(await response.text().catch(() => '')));
    return response;
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
