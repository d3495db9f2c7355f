/**
 * Collections' admin service (create, list, change, drop: /v1/admin/collections): input
 * checks, then the metadata row and the collection's table in one transaction, then the
 * registry's cached copy dropped. The cache is collection-registry.ts; JSON Schemas are
 * checked and compiled by schema-compiler.ts.
 */
import type { Caller } from '../../internal/caller.js';
import type { AuditEvent } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import type { Root } from '../../internal/rules/index.js';
import { parseRuleForSaving, type RuleSavingScope } from '../../internal/rules/saving.js';
import type { CollectionRegistry } from './collection-registry.js';
import { assertCollectionName, parseFieldPath } from './names.js';
import { SYSTEM_FIELDS } from './query.js';
import type { CollectionRow, DocumentRepository } from './repository.js';
import type { SchemaCompiler } from './schema-compiler.js';
import { parseSearchSettings } from './search.js';
import {
  RULE_KINDS,
  type CollectionInfo,
  type CollectionRules,
  type IndexSpec,
  type JsonObject,
  type RefSettings,
  type RuleKind,
  type SearchSettings,
} from './types.js';

export const MAX_INDEXES = 32;
export const MAX_INDEX_FIELDS = 8;
export const MAX_REFS = 32;

export interface CreateCollectionInput {
  name: unknown;
  rules?: unknown;
  schema?: unknown;
  indexes?: unknown;
  search?: unknown;
  refs?: unknown;
}

export interface UpdateCollectionInput {
  rules?: unknown;
  schema?: unknown;
  indexes?: unknown;
  search?: unknown;
  refs?: unknown;
}

/**
 * `refs`: `{"<path>": "<collection>"}`. The target need not exist yet (it may be created
 * later); until it does, its references expand to null.
 */
function parseRefs(input: unknown): RefSettings {
  if (input === undefined || input === null) return {};
  if (typeof input !== 'object' || Array.isArray(input) || Object.keys(input).length > MAX_REFS) {
    throw new AppError('INVALID_REQUEST', `refs: {"<path>": "<collection>"}, at most ${MAX_REFS} of them.`, {
      details: { field: 'refs' },
    });
  }
  const refs: RefSettings = {};
  for (const [path, target] of Object.entries(input)) {
    const where = `refs.${path}`;
    const normalised = parseFieldPath(path, where).join('.');
    if (typeof target !== 'string') {
      throw new AppError('INVALID_REQUEST', `${where}: the name of the referenced collection.`, {
        details: { field: where },
      });
    }
    refs[normalised] = assertCollectionName(target);
  }
  return refs;
}

/** The wire's view of a collection: its row without the revision, which is the cache's business. */
function toInfo({ revision: _revision, ...info }: CollectionRow): CollectionInfo {
  return info;
}

/** A collection rule sees auth, doc and now; create and update also see incoming. */
function collectionRuleScope(kind: RuleKind): RuleSavingScope {
  const available = new Set<Root>(['auth', 'doc', 'now']);
  if (kind === 'create' || kind === 'update') available.add('incoming');
  return { available, describedAs: `a ${kind} rule` };
}

function parseRules(input: unknown, base: CollectionRules = {}): CollectionRules {
  if (input === undefined) return base;
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new AppError('INVALID_REQUEST', 'rules: expected {read?, create?, update?, delete?}.', {
      details: { field: 'rules' },
    });
  }
  const out: CollectionRules = { ...base };
  for (const [kind, source] of Object.entries(input)) {
    if (!(RULE_KINDS as readonly string[]).includes(kind)) {
      throw new AppError('INVALID_REQUEST', `rules: unknown rule "${kind}" (read, create, update, delete).`, {
        details: { field: `rules.${kind}` },
      });
    }
    if (source === null) {
      delete out[kind as RuleKind];
      continue;
    }
    if (typeof source !== 'string') {
      throw new AppError('INVALID_REQUEST', `rules.${kind}: a rule is a string expression.`, {
        details: { field: `rules.${kind}` },
      });
    }
    parseRuleForSaving(kind, source, collectionRuleScope(kind as RuleKind));
    out[kind as RuleKind] = source;
  }
  return out;
}

function parseIndexes(input: unknown): IndexSpec[] {
  if (input === undefined || input === null) return [];
  if (!Array.isArray(input) || input.length > MAX_INDEXES) {
    throw new AppError('INVALID_REQUEST', `indexes: a list of at most ${MAX_INDEXES} field paths or path lists.`, {
      details: { field: 'indexes' },
    });
  }
  const seen = new Set<string>();
  return input.map((spec: unknown, i) => {
    const where = `indexes[${i}]`;
    const paths = Array.isArray(spec) ? spec : [spec];
    if (paths.length === 0 || paths.length > MAX_INDEX_FIELDS) {
      throw new AppError('INVALID_REQUEST', `${where}: a composite index has 1 to ${MAX_INDEX_FIELDS} fields.`, {
        details: { field: where },
      });
    }
    for (const path of paths) {
      if (typeof path === 'string' && (SYSTEM_FIELDS as readonly string[]).includes(path)) continue;
      parseFieldPath(path, where);
    }
    const key = JSON.stringify(spec);
    if (seen.has(key)) throw new AppError('INVALID_REQUEST', `${where}: listed twice.`, { details: { field: where } });
    seen.add(key);
    return spec as IndexSpec;
  });
}

/**
 * The admin API's logic: /v1/admin/collections. Service key only. Each change takes the
 * admin event that records it (`audit`, built by the route) and writes it in the change's
 * transaction, so the change and its event commit together or not at all.
 */
export class CollectionService {
  constructor(
    private readonly repo: DocumentRepository,
    private readonly registry: CollectionRegistry,
    private readonly schemas: SchemaCompiler,
    private readonly audit: AuditLog,
  ) {}

  /** Search settings from the admin API, the language checked against the database. */
  private async searchSettings(input: unknown): Promise<SearchSettings | null> {
    const search = input === undefined ? null : parseSearchSettings(input);
    if (search && !(await this.repo.searchLanguageExists(this.repo.pool, search.language))) {
      throw new AppError(
        'INVALID_REQUEST',
        `search.language: Postgres has no text search configuration "${search.language}".`,
        {
          details: { field: 'search.language' },
        },
      );
    }
    return search;
  }

  async create(caller: Caller, input: CreateCollectionInput, audit?: AuditEvent): Promise<CollectionInfo> {
    requireService(caller);
    const name = assertCollectionName(input.name);
    const rules = parseRules(input.rules);
    const schema = input.schema === undefined || input.schema === null ? null : (input.schema as JsonObject);
    if (schema) this.schemas.check(schema);
    const indexes = parseIndexes(input.indexes);
    const search = await this.searchSettings(input.search);
    const refs = parseRefs(input.refs);
    const row = await this.repo.transaction(async (tx) => {
      const created = await this.repo.createCollection(tx, { name, rules, schema, indexes, search, refs });
      if (audit) await this.audit.record(audit, { tx });
      return created;
    });
    this.registry.invalidate(name);
    return toInfo(row);
  }

  async list(caller: Caller): Promise<CollectionInfo[]> {
    requireService(caller);
    return (await this.repo.listCollections()).map(toInfo);
  }

  async get(caller: Caller, name: string): Promise<CollectionInfo> {
    requireService(caller);
    const row = await this.repo.getCollection(assertCollectionName(name));
    if (!row) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
    return toInfo(row);
  }

  /**
   * Changes rules (merged per kind; null removes one), schema (replaced; null removes)
   * and indexes (the list is replaced: indexes no longer listed are dropped, new ones
   * built). Existing documents are not re-validated against a new schema. `search` (null
   * removes) and `refs` (the map is replaced) take effect at once.
   */
  async update(
    caller: Caller,
    name: string,
    input: UpdateCollectionInput,
    audit?: AuditEvent,
  ): Promise<CollectionInfo> {
    requireService(caller);
    assertCollectionName(name);
    const schema = input.schema === undefined ? undefined : input.schema === null ? null : (input.schema as JsonObject);
    if (schema) this.schemas.check(schema);
    const indexes = input.indexes === undefined ? undefined : parseIndexes(input.indexes);
    const search = input.search === undefined ? undefined : await this.searchSettings(input.search);
    const refs = input.refs === undefined ? undefined : parseRefs(input.refs);
    const row = await this.repo.transaction(async (tx) => {
      const current = await this.repo.getCollection(name, tx, true);
      if (!current) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
      const rules = parseRules(input.rules, current.rules);
      if (indexes !== undefined) {
        const next = new Set(indexes.map((spec) => JSON.stringify(spec)));
        const prior = new Set(current.indexes.map((spec) => JSON.stringify(spec)));
        for (const spec of current.indexes) {
          if (!next.has(JSON.stringify(spec))) await this.repo.dropIndex(tx, name, spec);
        }
        for (const spec of indexes) {
          if (!prior.has(JSON.stringify(spec))) await this.repo.createIndex(tx, name, spec);
        }
      }
      // A change of search settings rebuilds the index (in this transaction: writes wait for it).
      if (search !== undefined && JSON.stringify(search) !== JSON.stringify(current.search)) {
        await this.repo.dropSearchIndex(tx, name);
        if (search) await this.repo.createSearchIndex(tx, name, search);
      }
      const updated = await this.repo.updateCollection(tx, name, {
        rules,
        schema: schema === undefined ? current.schema : schema,
        indexes: indexes ?? current.indexes,
        search: search === undefined ? current.search : search,
        refs: refs ?? current.refs,
      });
      if (audit) await this.audit.record(audit, { tx });
      return updated;
    });
    this.registry.invalidate(name);
    return toInfo(row);
  }

  async delete(caller: Caller, name: string, audit?: AuditEvent): Promise<void> {
    requireService(caller);
    assertCollectionName(name);
    const dropped = await this.repo.transaction(async (tx) => {
      const found = await this.repo.dropCollection(tx, name);
      // Nothing dropped, nothing to record: the caller gets NOT_FOUND.
      if (found && audit) await this.audit.record(audit, { tx });
      return found;
    });
    this.registry.invalidate(name);
    if (!dropped) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
  }
}
