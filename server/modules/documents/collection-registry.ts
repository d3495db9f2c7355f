/**
 * The in-process cache of each collection's compiled metadata (parsed rules, compiled
 * JSON Schema).
 *
 * Several instances share one database, so a cached copy must not outlive a change
 * made elsewhere: a trigger on basalt.collections NOTIFYs `basalt_collections` with the
 * name, and every instance LISTENs and drops that entry. NOTIFY is only a hint (a
 * listener can be reconnecting when it is sent), so entries also expire after
 * `maxAgeMs` and the whole cache is dropped whenever the listener reconnects.
 */
import { AppError } from '../../internal/errors.js';
import { createLogger, type Logger } from '../../internal/log.js';
import { ReconnectingClient } from '../../internal/reconnecting-client.js';
import { parseRule, type Rule } from '../../internal/rules/index.js';
import {
  COLLECTIONS_CHANNEL,
  listenForCollectionChanges,
  type CollectionRow,
  type DocumentRepository,
} from './repository.js';
import type { DataValidator, SchemaCompiler } from './schema-compiler.js';
import {
  RULE_KINDS,
  type CollectionRules,
  type IndexSpec,
  type JsonObject,
  type RefSettings,
  type RuleKind,
  type SearchSettings,
} from './types.js';

/** A collection ready for requests: rules parsed, schema compiled. */
export interface CompiledCollection {
  name: string;
  revision: string;
  rules: Record<RuleKind, Rule | null>;
  ruleSources: CollectionRules;
  schema: JsonObject | null;
  validate: DataValidator | null;
  indexes: IndexSpec[];
  search: SearchSettings | null;
  refs: RefSettings;
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

/** The in-process cache of compiled collections (see the file's comment). */
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
      search: row.search,
      refs: row.refs,
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
