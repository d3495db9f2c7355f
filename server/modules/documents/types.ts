import type { Doc } from '../../../client-sdk/src/wire.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** A document as the API returns it (the wire shape, with JSON data). Timestamps are UTC ISO strings with microseconds. */
export type Document = Doc<JsonObject>;

export interface CollectionRules {
  read?: string;
  create?: string;
  update?: string;
  delete?: string;
}

export const RULE_KINDS = ['read', 'create', 'update', 'delete'] as const;
export type RuleKind = (typeof RULE_KINDS)[number];

/** An index entry as declared: one field path, or a list of them for a composite index. */
export type IndexSpec = string | string[];

/** Full-text search over some fields (docs/documents.md#full-text-search). */
export interface SearchSettings {
  /** Dotted field paths, most important first (their matches rank higher). */
  fields: string[];
  /** A Postgres text search configuration: `simple` (default), `english`, `french` … */
  language: string;
}

/** References: a field path that holds a document id (or a list of ids) → the collection it names. */
export type RefSettings = Record<string, string>;

/** What the admin API sets on a collection. */
export interface CollectionSettings {
  rules: CollectionRules;
  schema: JsonObject | null;
  indexes: IndexSpec[];
  search: SearchSettings | null;
  refs: RefSettings;
}

/** A collection's metadata as the admin API returns it. */
export interface CollectionInfo extends CollectionSettings {
  name: string;
  created_at: string;
  updated_at: string;
}
