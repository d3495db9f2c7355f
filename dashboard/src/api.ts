/**
 * The dashboard's only way to the server: the documented HTTP API, with the service key
 * as a Bearer header. The key lives in sessionStorage (gone when the tab closes) and is
 * never put in a URL, so it stays out of logs, history and Referer headers.
 */

import {
  BasaltError,
  HttpTransport,
  type Doc as SdkDoc,
  type MfaFactor,
  type Passkey,
  type StorageObject,
  type User as SdkUser,
} from '../../client-sdk/src/index.js';
// Admin-only shapes the SDK does not have come from the server modules that produce them
// (type-only imports: nothing of the server reaches the bundle).
import type { AuditRecord } from '../../server/modules/audit/events.js';
import type { InvocationRecord } from '../../server/modules/functions/repository.js';
import type { RealtimeConnectionInfo } from '../../server/modules/realtime/service.js';
import type { TopicSummary as ServerTopicSummary } from '../../server/modules/events/service.js';

const KEY_STORAGE = 'basalt.dashboard.serviceKey';

/** What every failed call rejects with: the SDK's error, carrying the catalogue code, status and details. */
export { BasaltError };

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

/**
 * The admin API through the SDK's transport (the same errors and token handling as apps get),
 * with the service key as the token; responses are never taken from the browser's cache.
 */
export class Api {
  /** Called when the server refuses the key (401): the app signs out. */
  onUnauthorized: (error: BasaltError) => void = () => undefined;
  private readonly transport: HttpTransport;

  constructor(readonly key: string) {
    this.transport = new HttpTransport(location.origin, (input, init) => fetch(input, { ...init, cache: 'no-store' }));
    this.transport.useAccessToken(() => key);
  }

  /** A request whose body or answer is not JSON (uploads, downloads, metrics). */
  raw(
    method: string,
    path: string,
    init: { body?: BodyInit; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    return this.watch(this.transport.send(method, path, init));
  }

  json<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    return this.watch(this.transport.request<T>(method, path, body, headers));
  }

  get<T>(path: string): Promise<T> {
    return this.json<T>('GET', path);
  }

  private async watch<T>(call: Promise<T>): Promise<T> {
    try {
      return await call;
    } catch (error) {
      if (error instanceof BasaltError && error.status === 401) this.onUnauthorized(error);
      throw error;
    }
  }
}

/** Checks a key against an admin endpoint before keeping it. */
export async function verifyKey(key: string): Promise<void> {
  const api = new Api(key);
  try {
    await api.get('/v1/admin/realtime');
  } catch (error) {
    if (error instanceof BasaltError && error.status === 401) {
      throw new Error('The server refused this key: it is not the service key.');
    }
    if (error instanceof BasaltError && error.status === 403) {
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
  /** Full-text search settings, or null when the collection has none. */
  search: { fields: string[]; language: string } | null;
  /** Reference fields: path → the collection whose ids it holds. */
  refs: Record<string, string>;
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
  max_total_bytes: number | null;
  max_bytes_per_user: number | null;
  usage: { bytes: number; objects: number };
  created_at: string;
}

export type StoredObject = StorageObject;

export interface FunctionInfo {
  name: string;
  kind: string;
  file: string;
  trigger: Record<string, unknown>;
  options: Record<string, number>;
  version: number;
  source: 'api' | 'folder';
  deployed_at: string;
}

export interface FunctionVersion {
  version: number;
  deployed_at: string;
  active: boolean;
  source: 'api' | 'folder';
}

export interface SecretInfo {
  name: string;
  updated_at: string;
}

/** A function run as the admin API lists it (the server's own type). */
export type Invocation = InvocationRecord;

/** One websocket of an instance as `GET /v1/admin/realtime` lists it (the server's own type). */
export type RealtimeConnection = RealtimeConnectionInfo;

/** A topic as `GET /v1/admin/topics` lists it (the server's own type). */
export type TopicSummary = ServerTopicSummary;

/** One event of the audit log as `GET /v1/admin/audit` lists it (the server's own type). */
export type AuditEvent = AuditRecord;

/** A user's second factors as `GET /v1/admin/users/:id/factors` lists them: never a secret or a key. */
export interface UserFactors {
  factors: MfaFactor[];
  passkeys: Passkey[];
  recovery_codes_left: number;
}

/** A session an admin started as a user (`POST /v1/admin/users/:id/impersonate`). */
export interface ImpersonatedSession {
  user: SdkUser;
  session: { access_token: string; token_type: 'bearer'; expires_in: number; expires_at: number; refresh_token: null };
  impersonated_by: string;
}
