import { BasaltError } from './errors.js';

/** Key-value storage for the session: localStorage in browsers, anything with the same three calls elsewhere. */
export interface SessionStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

export interface ClientOptions {
  storage?: SessionStorage;
  persistSession?: boolean;
  fetch?: typeof globalThis.fetch;
  WebSocket?: typeof globalThis.WebSocket;
}

/** The low-level HTTP layer every SDK module shares: base URL, JSON bodies, catalogue errors. */
export class HttpTransport {
  readonly baseUrl: string;
  private readonly fetchImpl: typeof globalThis.fetch;
  private accessToken: () => string | null = () => null;

  constructor(baseUrl: string, fetchImpl: typeof globalThis.fetch) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = fetchImpl;
  }

  /** The auth module installs the current access token's source here. */
  useAccessToken(source: () => string | null): void {
    this.accessToken = source;
  }

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const token = this.accessToken();
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

export interface BasaltClient {
  readonly url: string;
  readonly http: HttpTransport;
}

export function createClient(url: string, options: ClientOptions = {}): BasaltClient {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const http = new HttpTransport(url, fetchImpl);
  return { url: http.baseUrl, http };
}
