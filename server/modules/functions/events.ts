import { createHash } from 'node:crypto';
import type { StorageObject } from '../../../client-sdk/src/wire.js';
import type { Change } from '../../internal/changes/feed.js';
import type { LoadedFunction } from './loader.js';

/** The schema of collection tables (see the documents module). */
export const COLLECTION_SCHEMA = 'basalt_data';

export interface FunctionEvent {
  id: string;
  type: string;
  at: string;
  collection?: string;
  before?: Record<string, unknown> | null;
  after?: Record<string, unknown> | null;
  bucket?: string;
  object?: StorageObject | null;
  user?: Record<string, unknown> | null;
}

type Row = Record<string, unknown>;

function documentOf(collection: string, row: Row | null): Row | null {
  if (!row) return null;
  return {
    id: row.id,
    collection,
    owner: row.owner ?? null,
    version: row.version,
    created_at: row.created_at,
    updated_at: row.updated_at,
    data: row.data ?? {},
  };
}

const JSON_TIMESTAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * A timestamp of a change-log row (Postgres JSON: `…T14:13:56.799656+00:00`) as the storage
 * API writes it: UTC with `Z` and six digits of microseconds. Postgres' JSON drops trailing
 * zeros of the fraction (`.38908`, or none at all on a whole second); the API never does.
 */
function apiTimestamp(value: unknown): string {
  const text = String(value);
  const match = JSON_TIMESTAMP.exec(text);
  if (!match) return text;
  const [, seconds, fraction = '', offset] = match;
  const utc =
    offset === 'Z' || offset === '+00:00' ? seconds : new Date(`${seconds}${offset}`).toISOString().slice(0, 19);
  return `${utc}.${fraction.slice(1).padEnd(6, '0')}Z`;
}

/** An object as the storage API shows it (the wire type): no storage key of the backend. */
function objectOf(row: Row | null): StorageObject | null {
  if (!row) return null;
  return {
    id: String(row.id),
    bucket: String(row.bucket),
    path: String(row.path),
    size: Number(row.size),
    content_type: String(row.content_type),
    etag: String(row.etag),
    sha256: String(row.sha256),
    owner: typeof row.owner === 'string' ? row.owner : null,
    created_at: apiTimestamp(row.created_at),
    updated_at: apiTimestamp(row.updated_at),
  };
}

function userOf(row: Row | null): Row | null {
  if (!row) return null;
  return {
    id: row.id,
    email: row.email ?? null,
    email_confirmed_at: row.email_confirmed_at ?? null,
    is_anonymous: row.is_anonymous ?? false,
    created_at: row.created_at,
    updated_at: row.updated_at,
    user_metadata: row.user_metadata ?? {},
    app_metadata: row.app_metadata ?? {},
  };
}

function eventId(change: Change): string {
  return `evt_${change.id}`;
}

/**
 * The event a change means to `fn`, or null when `fn` does not react to it. Built from
 * the change-log row alone, so a change made with plain SQL fires functions too.
 */
export function eventFor(fn: Pick<LoadedFunction, 'kind' | 'options'>, change: Change): FunctionEvent | null {
  const base = { id: eventId(change), at: change.committedAt };
  const on = fn.options.on;
  if (fn.kind === 'document' && change.schema === COLLECTION_SCHEMA && fn.options.collection === change.table) {
    const action = change.op === 'insert' ? 'create' : change.op;
    if (on !== action && on !== 'write') return null;
    return {
      ...base,
      type: `document.${action}`,
      collection: change.table,
      before: documentOf(change.table, change.oldRow),
      after: documentOf(change.table, change.newRow),
    };
  }
  if (fn.kind === 'object' && change.schema === 'basalt' && change.table === 'objects') {
    const row = change.newRow ?? change.oldRow;
    if (!row || row.bucket !== fn.options.bucket) return null;
    // An overwrite (upsert) is an upload too: the object's bytes changed.
    const action = change.op === 'delete' ? 'delete' : 'upload';
    if (change.op === 'update' && change.oldRow?.etag === change.newRow?.etag) return null;
    if (on !== action) return null;
    return {
      ...base,
      type: `object.${action}`,
      bucket: String(row.bucket),
      object: objectOf(change.op === 'delete' ? change.oldRow : change.newRow),
    };
  }
  if (fn.kind === 'auth' && change.schema === 'basalt' && change.table === 'users') {
    const type = change.op === 'insert' ? 'user.created' : change.op === 'delete' ? 'user.deleted' : null;
    if (!type || on !== type) return null;
    return { ...base, type, user: userOf(change.op === 'delete' ? change.oldRow : change.newRow) };
  }
  return null;
}

/** The same job id whenever one change is dispatched to one function, so a re-dispatch cannot duplicate it. */
export function jobIdFor(changeId: string, functionName: string): string {
  const hex = createHash('sha256').update(`${changeId}\u0000${functionName}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
