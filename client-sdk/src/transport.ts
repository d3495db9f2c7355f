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
  /** The fetch in use; storage calls it directly for streamed bodies and downloads. */
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

  /** `options.anonymous` sends no token: sign-in calls must not carry a stale one. */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    options: { anonymous?: boolean } = {},
  ): Promise<T> {
    const token = options.anonymous ? null : await this.accessToken();
    const init: RequestInit = {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    };
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, init);
    } catch (cause) {
      throw new BasaltError('UNAVAILABLE', 'The Basalt server could not be reached.', { status: 0, cause });
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (!response.ok) throw BasaltError.fromResponse(response.status, parsed);
    return parsed as T;
  }
}
