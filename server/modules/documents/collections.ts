/**
 * Collections: the admin service (create, list, change, drop) and the in-process cache
 * of each collection's compiled metadata (parsed rules, compiled JSON Schema).
 *
 * Several instances share one database, so a cached copy must not outlive a change
 * made elsewhere: a trigger on basalt.collections NOTIFYs `basalt_collections` with the
 * name, and every instance LISTENs and drops that entry. NOTIFY is only a hint (a
 * listener can be reconnecting when it is sent), so entries also expire after
 * `maxAgeMs` and the whole cache is dropped whenever the listener reconnects.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import * as addFormatsModule from 'ajv-formats';
import type { Caller } from '../../internal/caller.js';
import { AppError } from '../../internal/errors.js';
import { requireService } from '../../internal/guards.js';
import { createLogger, type Logger } from '../../internal/log.js';
import { ReconnectingClient } from '../../internal/reconnecting-client.js';
import { parseRule, type Rule } from '../../internal/rules/index.js';
import { assertCollectionName, parseFieldPath } from './names.js';
import { SYSTEM_FIELDS } from './query.js';
import {
  COLLECTIONS_CHANNEL,
  listenForCollectionChanges,
  type CollectionRow,
  type DocumentRepository,
} from './repository.js';
import {
  RULE_KINDS,
  type CollectionInfo,
  type CollectionRules,
  type IndexSpec,
  type JsonObject,
  type RuleKind,
} from './types.js';

// ajv-formats is CommonJS with a default export; under NodeNext the callable sits on .default.
const addFormats = addFormatsModule.default.default;

export const MAX_INDEXES = 32;
export const MAX_INDEX_FIELDS = 8;

/** A collection ready for requests: rules parsed, schema compiled. */
export interface CompiledCollection {
  name: string;
  revision: string;
  rules: Record<RuleKind, Rule | null>;
  ruleSources: CollectionRules;
  schema: JsonObject | null;
  validate: DataValidator | null;
  indexes: IndexSpec[];
}

/** One way data fails a collection's schema, as the API reports it. */
export interface SchemaIssue {
  path: string;
  message: string;
  params: Record<string, unknown>;
}

/** Checks data against a collection's schema: the issues (at most 20), none when it conforms. */
export type DataValidator = (data: JsonObject) => SchemaIssue[];

export interface CreateCollectionInput {
  name: unknown;
  rules?: unknown;
  schema?: unknown;
  indexes?: unknown;
}

export interface UpdateCollectionInput {
  rules?: unknown;
  schema?: unknown;
  indexes?: unknown;
}

function toInfo(row: CollectionRow): CollectionInfo {
  return {
    name: row.name,
    rules: row.rules,
    schema: row.schema,
    indexes: row.indexes,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
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
    let rule: Rule;
    try {
      rule = parseRule(source);
    } catch (error) {
      if (error instanceof AppError && error.code === 'INVALID_RULE') {
        throw new AppError('INVALID_RULE', `rules.${kind}: ${error.message}`, {
          details: { ...error.details, rule: kind },
          cause: error,
        });
      }
      throw error;
    }
    const misplaced = [...rule.variables].find(
      (root) => root === 'object' || (root === 'incoming' && (kind === 'read' || kind === 'delete')),
    );
    if (misplaced) {
      throw new AppError('INVALID_RULE', `rules.${kind}: \`${misplaced}\` is not available in a ${kind} rule.`, {
        details: { rule: kind, variable: misplaced },
      });
    }
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

const MAX_SCHEMA_ISSUES = 20;

function schemaError(message: string, cause?: unknown): AppError {
  return new AppError('INVALID_REQUEST', `schema: ${message}`, { details: { field: 'schema' }, cause });
}

/** Where `$async` appears in a schema (its JSON pointer), or null. Iterative: schemas come from requests. */
function findAsyncKeyword(schema: unknown): string | null {
  const stack: Array<{ value: unknown; pointer: string }> = [{ value: schema, pointer: '#' }];
  while (stack.length > 0) {
    const { value, pointer } = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    for (const [key, inner] of Object.entries(value)) {
      const innerPointer = `${pointer}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`;
      if (key === '$async' && !Array.isArray(value)) return innerPointer;
      stack.push({ value: inner, pointer: innerPointer });
    }
  }
  return null;
}

/**
 * Compiles JSON Schemas for document data. Two Ajv instances: a strict one checks a schema
 * when an admin saves it, a lenient one compiles stored schemas for requests.
 *
 * The strict check refuses what Ajv would accept but never enforce, so a schema that is
 * saved is a schema that runs: unknown keywords (typos such as `minimun`, and keywords of
 * later drafts such as `unevaluatedProperties` that this draft-07 validator skips), unknown
 * formats, keywords ignored in their position, and `$async` — an asynchronous validator
 * returns a promise, which writes cannot wait on (the promise would read as "valid" and its
 * rejection would go unhandled). Stored schemas are compiled leniently so that one saved
 * before these checks keeps loading; one with `$async` fails closed (see `load`).
 */
export class SchemaCompiler {
  private readonly lenient: Ajv;
  private readonly strict: Ajv;

  constructor() {
    // No logger: Ajv would otherwise warn on the console about what the lenient instance skips.
    this.lenient = new Ajv({ allErrors: true, strict: false, addUsedSchema: false, logger: false });
    this.strict = new Ajv({ allErrors: true, strict: false, strictSchema: true, addUsedSchema: false, logger: false });
    addFormats(this.lenient);
    addFormats(this.strict);
  }

  /** Checks a schema an admin is saving; a schema that cannot run as written is 400 with the reason. */
  check(schema: unknown): void {
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
      throw schemaError('a JSON Schema object.');
    }
    const asyncAt = findAsyncKeyword(schema);
    if (asyncAt) {
      throw schemaError(
        `"$async" (at ${asyncAt}) makes validation asynchronous, which document writes cannot wait for; remove it.`,
      );
    }
    try {
      this.strict.compile(schema);
    } catch (error) {
      throw schemaError(error instanceof Error ? error.message : 'not a valid JSON Schema', error);
    } finally {
      this.strict.removeSchema(schema);
    }
  }

  /** Compiles a stored schema into a validator for writes. */
  load(schema: JsonObject): DataValidator {
    let validate: ValidateFunction;
    try {
      validate = this.lenient.compile(schema);
    } catch (error) {
      throw schemaError(error instanceof Error ? error.message : 'not a valid JSON Schema', error);
    } finally {
      // Ajv caches every compiled schema by object, and the registry compiles a fresh row on
      // every reload: without this the cache would grow for as long as the process runs.
      this.lenient.removeSchema(schema);
    }
    if (schema.$async === true) {
      // Saved before `$async` was refused: no write is checked against it, so none is let through.
      return () => [
        {
          path: 'data',
          message: 'the collection schema uses "$async", which Basalt cannot run; an admin must replace it',
          params: {},
        },
      ];
    }
    return (data) => {
      if (validate(data)) return [];
      return (validate.errors ?? []).slice(0, MAX_SCHEMA_ISSUES).map((error) => ({
        path: `data${error.instancePath}`,
        message: error.message ?? 'is invalid',
        params: error.params,
      }));
    };
  }
}

export interface RegistryOptions {
  /** How long a cached entry is trusted without a notification; the safety net for lost NOTIFYs. */
  maxAgeMs?: number;
  /** Listens for changes made by other instances; null disables (one-instance tests). */
  databaseUrl?: string | null;
  log?: Logger;
}

interface CacheEntry {
  loadedAt: number;
  value: Promise<CompiledCollection>;
}

/** The in-process cache of compiled collections (see the module comment). */
export class CollectionRegistry {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly maxAgeMs: number;
  private listener: ReconnectingClient | null = null;

  constructor(
    private readonly repo: DocumentRepository,
    private readonly schemas: SchemaCompiler,
    private readonly options: RegistryOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? 30_000;
  }

  /** The compiled collection; NOT_FOUND when it does not exist. */
  get(name: string): Promise<CompiledCollection> {
    const now = Date.now();
    const entry = this.cache.get(name);
    if (entry && now - entry.loadedAt < this.maxAgeMs) return entry.value;
    const value = this.load(name);
    this.cache.set(name, { loadedAt: now, value });
    value.catch(() => {
      // A failed load (absent collection, database down) is not cached.
      if (this.cache.get(name)?.value === value) this.cache.delete(name);
    });
    return value;
  }

  invalidate(name?: string): void {
    if (name === undefined) this.cache.clear();
    else this.cache.delete(name);
  }

  compile(row: CollectionRow): CompiledCollection {
    const rules = {} as Record<RuleKind, Rule | null>;
    for (const kind of RULE_KINDS) {
      const source = row.rules[kind];
      rules[kind] = typeof source === 'string' ? parseRule(source) : null;
    }
    return {
      name: row.name,
      revision: row.revision,
      rules,
      ruleSources: row.rules,
      schema: row.schema,
      validate: row.schema ? this.schemas.load(row.schema) : null,
      indexes: row.indexes,
    };
  }

  private async load(name: string): Promise<CompiledCollection> {
    const row = await this.repo.getCollection(name);
    if (!row) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
    return this.compile(row);
  }

  /** Starts listening for metadata changes made by any instance. */
  async start(): Promise<void> {
    const { databaseUrl, log } = this.options;
    if (!databaseUrl || this.listener) return;
    this.listener = new ReconnectingClient({
      url: databaseUrl,
      applicationName: 'basalt-collections',
      log: log ?? createLogger('silent', { pretty: false }),
      onConnect: async (client) => {
        await listenForCollectionChanges(client);
        // Anything cached before this point may have missed a notification.
        this.invalidate();
      },
      // While disconnected, changes made elsewhere go unannounced: trust nothing cached.
      onLost: () => this.invalidate(),
      onNotification: (message) => {
        if (message.channel === COLLECTIONS_CHANNEL) this.invalidate(message.payload || undefined);
      },
    });
    await this.listener.start();
  }

  async stop(): Promise<void> {
    const listener = this.listener;
    this.listener = null;
    await listener?.stop();
  }
}

/** The admin API's logic: /v1/admin/collections. Service key only. */
export class CollectionService {
  constructor(
    private readonly repo: DocumentRepository,
    private readonly registry: CollectionRegistry,
    private readonly schemas: SchemaCompiler,
  ) {}

  async create(caller: Caller, input: CreateCollectionInput): Promise<CollectionInfo> {
    requireService(caller);
    const name = assertCollectionName(input.name);
    const rules = parseRules(input.rules);
    const schema = input.schema === undefined || input.schema === null ? null : (input.schema as JsonObject);
    if (schema) this.schemas.check(schema);
    const indexes = parseIndexes(input.indexes);
    const row = await this.repo.transaction((tx) => this.repo.createCollection(tx, { name, rules, schema, indexes }));
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
   * built). Existing documents are not re-validated against a new schema.
   */
  async update(caller: Caller, name: string, input: UpdateCollectionInput): Promise<CollectionInfo> {
    requireService(caller);
    assertCollectionName(name);
    const schema = input.schema === undefined ? undefined : input.schema === null ? null : (input.schema as JsonObject);
    if (schema) this.schemas.check(schema);
    const indexes = input.indexes === undefined ? undefined : parseIndexes(input.indexes);
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
      return this.repo.updateCollection(tx, name, {
        rules,
        schema: schema === undefined ? current.schema : schema,
        indexes: indexes ?? current.indexes,
      });
    });
    this.registry.invalidate(name);
    return toInfo(row);
  }

  async delete(caller: Caller, name: string): Promise<void> {
    requireService(caller);
    assertCollectionName(name);
    const dropped = await this.repo.transaction((tx) => this.repo.dropCollection(tx, name));
    this.registry.invalidate(name);
    if (!dropped) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
  }
}
