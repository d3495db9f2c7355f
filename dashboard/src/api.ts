/**
 * The dashboard's only way to the server: the documented HTTP API, with the service key
 * as a Bearer header. The key lives in sessionStorage (gone when the tab closes) and is
 * never put in a URL, so it stays out of logs, history and Referer headers.
 */

import type { Doc as SdkDoc, StorageObject, User as SdkUser } from '../../client-sdk/src/index.js';
// Admin-only shapes the SDK does not have come from the server modules that produce them
// (type-only imports: nothing of the server reaches the bundle).
import type { InvocationRecord } from '../../server/modules/functions/repository.js';
import type { RealtimeConnectionInfo } from '../../server/modules/realtime/service.js';

const KEY_STORAGE = 'basalt.dashboard.serviceKey';

export interface ErrorBody {
  error?: { code?: string; message?: string; details?: Record<string, unknown> };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function storedKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key: string | null): void {
  if (key === null) sessionStorage.removeItem(KEY_STORAGE);
  else sessionStorage.setItem(KEY_STORAGE, key);
}

/** Encodes a storage path segment by segment, keeping its slashes. */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export class Api {
  /** Called when the server refuses the key (401): the app signs out. */
  onUnauthorized: (error: ApiError) => void = () => undefined;

  constructor(readonly key: string) {}

  async raw(method: string, path: string, init: { body?: BodyInit; headers?: Record<string, string> } = {}) {
    const response = await fetch(path, {
      method,
      headers: { authorization: `Bearer ${this.key}`, ...init.headers },
      body: init.body ?? null,
      cache: 'no-store',
    });
    if (!response.ok) {
      const text = await response.text();
      let body: ErrorBody = {};
      try {
        body = JSON.parse(text) as ErrorBody;
      } catch {
        body = {};
      }
      const error = new ApiError(
        response.status,
        body.error?.code ?? `HTTP_${response.status}`,
        body.error?.message ?? (text.slice(0, 200) || response.statusText),
        body.error?.details ?? {},
      );
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return response;
  }

  async json<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const response = await this.raw(method, path, {
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      headers: body !== undefined ? { 'content-type': 'application/json', ...headers } : headers,
    });
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.json<T>('GET', path);
  }
}

/** Checks a key against an admin endpoint before keeping it. */
export async function verifyKey(key: string): Promise<void> {
  const api = new Api(key);
  try {
    await api.get('/v1/admin/realtime');
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      throw new Error('The server refused this key: it is not the service key.');
    }
    if (error instanceof ApiError && error.status === 403) {
      throw new Error('This is a user token, not the service key: the dashboard needs the service key.');
    }
    throw error;
  }
}

// ---- wire types (docs/*.md) ------------------------------------------------------------
// The shapes the SDK already declares are taken from it (type-only: nothing is bundled).

/** A user as the admin API shows it: the SDK's user plus its ban. */
export interface User extends SdkUser {
  banned_until: string | null;
}

export type RuleKind = 'read' | 'create' | 'update' | 'delete';

export interface Collection {
  name: string;
  rules: Partial<Record<RuleKind, string>>;
  schema: Record<string, unknown> | null;
  indexes: Array<string | string[]>;
  created_at: string;
  updated_at: string;
}

export type Doc = SdkDoc;

export interface Bucket {
  name: string;
  public: boolean;
  max_file_size: number | null;
  allowed_mime_types: string[] | null;
  rules: Partial<Record<'read' | 'write' | 'delete', string>>;
  created_at: string;
}

export type StoredObject = StorageObject;

export interface FunctionInfo {
  name: string;
  kind: string;
  file: string;
  trigger: Record<string, unknown>;
  options: Record<string, number>;
}

/** A function run as the admin API lists it (the server's own type). */
export type Invocation = InvocationRecord;

/** One websocket of an instance as `GET /v1/admin/realtime` lists it (the server's own type). */
export type RealtimeConnection = RealtimeConnectionInfo;
