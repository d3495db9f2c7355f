/**
 * The documents domain: every read and write of a document goes through here, from the
 * HTTP routes, the batch endpoint, realtime snapshots and functions (`ctx.db`, with the
 * service caller), so rules, limits and validation cannot drift apart.
 *
 * Rules: the service key bypasses them; otherwise a missing rule denies. Single
 * documents are checked in process (`doc` = stored, `incoming` = as it would be after
 * the write); queries and counts filter in the database with the `read` rule compiled
 * to SQL. A write the rules deny is 403, or 404 when the caller may not read the
 * document either (so a stranger cannot tell that it exists).
 *
 * A write to a stored document runs its checks in an order that leaks nothing: the version
 * (If-Match), the transforms ($increment …), the update rule, and only then the size limit
 * and the schema. Each of those answers depends on the stored data, so a caller who may not
 * read the document gets the 404 of a missing id from every step the update rule has not
 * yet allowed — otherwise `$increment` against a schema `minimum`, or a PATCH near the size
 * limit, would binary-search a hidden value. A caller the update rule allows but the read
 * rule does not (write-only) still learns whether their write fits, but never the stored
 * size or the schema issues.
 */
import { isUser, type Caller } from '../../internal/caller.js';
import type { Queryable, Tx } from '../../internal/db.js';
import { AppError, isAppError } from '../../internal/errors.js';
import { compileRuleToSql, evaluateRule, ruleAuthFromCaller } from '../../internal/rules/index.js';
import type { CollectionRegistry, CompiledCollection } from './collection-registry.js';
import {
  compileAggregation,
  parseAggregation,
  toGroup,
  type AggregateGroup,
  type AggregateInput,
} from './aggregate.js';
import { expandDocuments, parseExpandInput, planExpand, type LevelRequest } from './expand.js';
import { assertCollectionName, assertDocumentId, generateDocumentId } from './names.js';
import { encodeCursor, parsePage, parseQuery, parseWhere, projectData, type QueryInput } from './query.js';
import {
  compileRankAfter,
  compileSearch,
  compileSearchQuery,
  decodeRankCursor,
  encodeRankCursor,
  highlightsOf,
  isEmptyOrderBy,
  parseSearchText,
  searchVectorExpr,
  type CompiledSearch,
} from './search.js';
import type { DocumentRepository } from './repository.js';
import { compileAfter, compileFilter, compileOrderBy, ROW_ALIAS, SqlParams } from './sql.js';
import { applyPatch, dataBytes, hasServerTimestamp, materialize, parsePatch, type PatchObject } from './transforms.js';
import type { Document, JsonObject, RuleKind } from './types.js';

export const MAX_BATCH_OPS = 500;

export interface CreateInput {
  id?: unknown;
  data: unknown;
  /** Only the service key may choose the owner (imports, functions acting for a user). */
  owner?: unknown;
}
export interface DataInput {
  data: unknown;
}
export interface WriteOptions {
  /** The version the caller last saw (If-Match); a different stored version is VERSION_CONFLICT. */
  ifVersion?: number;
}
/** A query with the extensions of /v1/db/:collection/query: full-text search and expand. */
export interface DocumentQueryInput extends QueryInput {
  search?: unknown;
  highlight?: unknown;
  expand?: unknown;
}
export interface QueryResult {
  docs: Document[];
  /** The position after the page's last document, when documents follow it. */
  next_cursor: string | null;
  /** The position of the page's first document, when documents come before it (for `before`). */
  prev_cursor: string | null;
}
export interface BatchOp {
  op: 'create' | 'set' | 'update' | 'delete';
  collection: string;
  id?: string;
  data?: unknown;
  if_version?: number;
  /** create only, service key only. */
  owner?: string | null;
}
/**
 * A merge result the caller may not read back: a PATCH allowed by the update rule must
 * not reveal the rest of a document the read rule hides, so its data is withheld.
 */
export type RedactedDocument = Omit<Document, 'data'> & { data: null };
export type BatchResult = Document | RedactedDocument | null;

export interface DocumentServiceOptions {
  maxDocumentBytes: number;
  /** Counts reads and writes for the usage meter (docs/usage.md). */
  usage?: { documentsRead(count: number): void; documentsWritten(count: number): void };
}

/** Where a write runs: a transaction (or the pool for one-statement writes) and its clock. */
interface Scope {
  q: Queryable;
  /** The time $server_timestamp and rules see: the transaction's now() inside one. */
  now(): Promise<string>;
}

/** The wall clock in the documents' timestamp format (microseconds, UTC). */
function wallClock(): string {
  return new Date().toISOString().replace('Z', '000Z');
}

interface TxScope extends Scope {
  q: Tx;
}

function txScope(tx: Tx, repo: DocumentRepository): TxScope {
  let now: Promise<string> | null = null;
  return {
    q: tx,
    now: () => (now ??= repo.now(tx)),
  };
}

function versionConflict(expected: number, actual: number | null): AppError {
  return new AppError(
    'VERSION_CONFLICT',
    actual === null
      ? `Expected version ${expected}, but the document does not exist.`
      : `Expected version ${expected}, but the stored version is ${actual}.`,
    { details: { expected, actual } },
  );
}

/** The owner of a new document: the calling user, or whom the service key names. */
function ownerFor(caller: Caller, requested: unknown): string | null {
  if (requested === undefined) return isUser(caller) ? caller.uid : null;
  if (caller.role !== 'service') {
    throw new AppError('FORBIDDEN', 'Only the service key may choose the owner of a document.');
  }
  if (requested !== null && (typeof requested !== 'string' || requested.length === 0 || requested.length > 256)) {
    throw new AppError('INVALID_REQUEST', 'owner is a string of 1-256 characters, or null.', {
      details: { field: 'owner' },
    });
  }
  return requested;
}

/** The document a create would write, as the create rule sees it (version 1, both times `now`). */
function newDocument(
  collection: string,
  id: string,
  owner: string | null,
  now: string,
  data: Document['data'],
): Document {
  return { id, collection, owner, version: 1, created_at: now, updated_at: now, data };
}

function notFound(collection: string, id: string): AppError {
  return new AppError('NOT_FOUND', `Document "${id}" not found in "${collection}".`);
}

export class DocumentService {
  constructor(
    private readonly repo: DocumentRepository,
    readonly collections: CollectionRegistry,
    private readonly options: DocumentServiceOptions,
  ) {}

  // -- rules ---------------------------------------------------------------------

  /** Whether the caller may do `kind` with these values; the service key always may. */
  allows(
    meta: CompiledCollection,
    kind: RuleKind,
    caller: Caller,
    context: { doc?: Document | null; incoming?: Document | null },
  ): boolean {
    if (caller.role === 'service') return true;
    const rule = meta.rules[kind];
    if (!rule) return false;
    return evaluateRule(rule, {
      auth: ruleAuthFromCaller(caller),
      doc: context.doc ?? undefined,
      incoming: context.incoming ?? undefined,
      now: new Date(),
    });
  }

  /** Throws the denial of a write: 404 when the caller may not see the document, else 403. */
  private deny(meta: CompiledCollection, caller: Caller, stored: Document | null, kind: RuleKind): never {
    if (stored && !this.allows(meta, 'read', caller, { doc: stored })) throw notFound(meta.name, stored.id);
    throw new AppError('FORBIDDEN', `The ${kind} rule of "${meta.name}" denies this.`);
  }

  /**
   * The size limit and the schema. `reveal` false (data merged into a document the caller may
   * not read) keeps the stored size and the schema issues, which describe stored data, out of
   * the answer.
   */
  private checkData(meta: CompiledCollection, data: JsonObject, reveal = true): void {
    const maxBytes = this.options.maxDocumentBytes;
    const size = dataBytes(data);
    if (size > maxBytes) {
      throw reveal
        ? new AppError('PAYLOAD_TOO_LARGE', `The document's data is ${size} bytes; the limit is ${maxBytes}.`, {
            details: { size, max_bytes: maxBytes },
          })
        : new AppError('PAYLOAD_TOO_LARGE', `The document's data would exceed the limit of ${maxBytes} bytes.`, {
            details: { max_bytes: maxBytes },
          });
    }
    const issues = meta.validate?.(data) ?? [];
    if (issues.length > 0) {
      throw new AppError(
        'INVALID_REQUEST',
        `The data does not match the schema of "${meta.name}".`,
        reveal ? { details: { issues } } : {},
      );
    }
  }

  private meta(collection: string): Promise<CompiledCollection> {
    return this.collections.get(assertCollectionName(collection));
  }

  // -- reads ---------------------------------------------------------------------

  async get(caller: Caller, collection: string, id: string, options: { expand?: unknown } = {}): Promise<Document> {
    const meta = await this.meta(collection);
    assertDocumentId(id);
    const paths = parseExpandInput(options.expand);
    const doc = await this.repo.get(this.repo.pool, meta.name, id);
    if (!doc || !this.allows(meta, 'read', caller, { doc })) throw notFound(meta.name, id);
    this.options.usage?.documentsRead(1);
    if (paths.length === 0) return doc;
    return (await this.expandAll(caller, meta, [doc], paths))[0] as Document;
  }

  /**
   * Whether each document (as given, not as stored) matches a full-text search of the
   * collection: live queries ask this of the documents their events carry.
   */
  async searchMatches(collection: string, text: string, docs: Document[]): Promise<boolean[]> {
    const meta = await this.meta(collection);
    if (!meta.search) return docs.map(() => false);
    const params = new SqlParams();
    const matched = await this.repo.searchMatches(
      searchVectorExpr(meta.search, 'e'),
      compileSearchQuery(meta.search, parseSearchText(text) ?? '', params),
      docs.map((doc) => doc.data),
      params,
    );
    return docs.map((_, i) => matched.has(i));
  }

  // -- expand --------------------------------------------------------------------

  /** The documents with their references expanded (expand.ts), each level read in one statement. */
  async expandAll(caller: Caller, meta: CompiledCollection, docs: Document[], input: unknown): Promise<Document[]> {
    const paths = Array.isArray(input) && input.every((item) => typeof item === 'string') ? input : null;
    const requested = paths ?? parseExpandInput(input);
    if (requested.length === 0) return docs;
    const nodes = await planExpand(meta.name, meta.refs, parseExpandInput(requested), async (name) => {
      const target = await this.collections.get(name).catch(() => null);
      return target?.refs ?? null;
    });
    return expandDocuments(docs, nodes, (request) => this.fetchLevel(caller, request));
  }

  /** `expand` for documents read elsewhere (live queries' events), with the caller's read rules. */
  async expandFor(caller: Caller, collection: string, docs: Document[], input: unknown): Promise<Document[]> {
    return this.expandAll(caller, await this.meta(collection), docs, input);
  }

  /** The collections an `expand` reads (every level): live queries follow their changes too. */
  async expandTargets(collection: string, input: unknown): Promise<string[]> {
    const meta = await this.meta(collection);
    const nodes = await planExpand(meta.name, meta.refs, parseExpandInput(input), async (name) => {
      const target = await this.collections.get(name).catch(() => null);
      return target?.refs ?? null;
    });
    const targets = new Set<string>();
    const walk = (list: typeof nodes) => {
      for (const node of list) {
        targets.add(node.target);
        walk(node.children);
      }
    };
    walk(nodes);
    return [...targets];
  }

  /** One level of an expansion: the wanted documents of every collection the caller may read, in one statement. */
  private async fetchLevel(caller: Caller, request: LevelRequest): Promise<Map<string, Map<string, Document>>> {
    const params = new SqlParams();
    const parts: Array<{ collection: string; ids: string[]; readFilter: string | null }> = [];
    for (const [name, ids] of request) {
      if (ids.size === 0) continue;
      // A referenced collection that does not exist (yet) expands to nothing.
      const target = await this.collections.get(name).catch((error: unknown) => {
        if (isAppError(error) && error.code === 'NOT_FOUND') return null;
        throw error;
      });
      if (!target) continue;
      if (caller.role !== 'service' && !target.rules.read) continue;
      parts.push({ collection: target.name, ids: [...ids], readFilter: this.readFilter(target, caller, params) });
    }
    const found = new Map<string, Map<string, Document>>();
    if (parts.length === 0) return found;
    for (const doc of await this.repo.getMany(parts, params)) {
      const byId = found.get(doc.collection) ?? new Map<string, Document>();
      byId.set(doc.id, doc);
      found.set(doc.collection, byId);
    }
    return found;
  }

  /** The read rule as SQL over the row alias, or null for the service key. FORBIDDEN without a rule. */
  private readFilter(meta: CompiledCollection, caller: Caller, params: SqlParams): string | null {
    if (caller.role === 'service') return null;
    const rule = meta.rules.read;
    if (!rule) throw new AppError('FORBIDDEN', `"${meta.name}" has no read rule: only the service key may read it.`);
    return compileRuleToSql(rule, {
      auth: ruleAuthFromCaller(caller),
      now: new Date(),
      params: params.values,
      subject: 'doc',
      rowAlias: ROW_ALIAS,
    });
  }

  async query(caller: Caller, collection: string, input: DocumentQueryInput): Promise<QueryResult> {
    const meta = await this.meta(collection);
    const searchText = parseSearchText(input.search);
    const highlight = input.highlight ?? false;
    if (typeof highlight !== 'boolean') {
      throw new AppError('INVALID_REQUEST', 'highlight: true or false.', { details: { field: 'highlight' } });
    }
    if (highlight && searchText === null) {
      throw new AppError('INVALID_REQUEST', 'highlight needs a search.', { details: { field: 'highlight' } });
    }
    // Without order_by a search orders by relevance, with cursors of its own (search.ts).
    const byRelevance = searchText !== null && isEmptyOrderBy(input.order_by);
    const query = parseQuery(byRelevance ? { ...input, after: undefined } : input);
    const page = parsePage(byRelevance ? { ...input, before: undefined } : input, query);
    const params = new SqlParams();
    const clauses: string[] = [];
    const readFilter = this.readFilter(meta, caller, params);
    if (readFilter) clauses.push(`(${readFilter})`);
    if (query.filter) clauses.push(compileFilter(query.filter, params));
    let search: CompiledSearch | null = null;
    if (searchText !== null) {
      if (!meta.search) {
        throw new AppError('INVALID_REQUEST', `"${meta.name}" has no search fields (PATCH the collection's search).`, {
          details: { field: 'search' },
        });
      }
      search = compileSearch(meta.search, searchText, params, highlight);
      clauses.push(search.where);
    }
    let orderBy: string;
    let hasAfter: boolean;
    let hasBefore: boolean;
    if (byRelevance && search) {
      const after = input.after === undefined || input.after === null ? null : decodeRankCursor(input.after);
      const before =
        input.before === undefined || input.before === null ? null : decodeRankCursor(input.before, 'before');
      if (after) clauses.push(compileRankAfter(search.rank, after, params));
      if (before) clauses.push(compileRankAfter(search.rank, before, params, 'before'));
      orderBy = page.fromEnd ? `${search.rank} ASC, ${ROW_ALIAS}.id DESC` : `${search.rank} DESC, ${ROW_ALIAS}.id ASC`;
      hasAfter = after !== null;
      hasBefore = before !== null;
    } else {
      if (query.after) clauses.push(compileAfter(query.orderBy, query.after, params));
      if (page.before) clauses.push(compileAfter(query.orderBy, page.before, params, 'before'));
      orderBy = compileOrderBy(query.orderBy, page.fromEnd);
      hasAfter = query.after !== null;
      hasBefore = page.before !== null;
    }
    // One row more than asked tells whether another page exists (after the page, or before
    // it when the page is taken from the end, reading the order backwards).
    const rows = await this.repo.queryWithExtras(meta.name, {
      where: clauses.length > 0 ? clauses.join(' AND ') : null,
      orderBy,
      limit: page.limit + 1,
      params,
      extras: search ? [search.rank] : [],
      // A search chooses its page before reading documents, and highlights only that page.
      ...(search ? { pageFirst: { late: search.highlights } } : {}),
    });
    const more = rows.length > page.limit;
    const taken = rows.slice(0, page.limit);
    if (page.fromEnd) taken.reverse();
    const cursorOf = (row: (typeof taken)[number]): string =>
      byRelevance ? encodeRankCursor(Number(row.extras[0]), row.doc.id) : encodeCursor(query.orderBy, row.doc);
    const docs: Document[] = taken.map(({ doc, late }) =>
      search && highlight && meta.search
        ? { ...doc, highlights: highlightsOf(meta.search, late as Array<string | null>) }
        : doc,
    );
    // A query costs at least one read, like an empty page does elsewhere.
    this.options.usage?.documentsRead(Math.max(1, docs.length));
    const first = taken.at(0);
    const last = taken.at(-1);
    const moreAfter = page.fromEnd ? hasBefore : more;
    const moreBefore = page.fromEnd ? more : hasAfter;
    // Expanded before the projection: the references are read from the whole data.
    const expanded = await this.expandAll(caller, meta, docs, input.expand);
    const select = page.select;
    return {
      docs: select ? expanded.map((doc) => ({ ...doc, data: projectData(doc.data, select) })) : expanded,
      next_cursor: moreAfter && last ? cursorOf(last) : null,
      prev_cursor: moreBefore && first ? cursorOf(first) : null,
    };
  }

  /** The read rule and a `where`, ANDed, as SQL over `params` (null when neither applies). */
  private readableWhere(meta: CompiledCollection, caller: Caller, where: unknown, params: SqlParams): string | null {
    const filter = parseWhere(where);
    const clauses: string[] = [];
    const readFilter = this.readFilter(meta, caller, params);
    if (readFilter) clauses.push(`(${readFilter})`);
    if (filter) clauses.push(compileFilter(filter, params));
    return clauses.length > 0 ? clauses.join(' AND ') : null;
  }

  /** Groups and aggregates over the documents the caller may read (aggregate.ts). */
  async aggregate(caller: Caller, collection: string, input: AggregateInput): Promise<{ groups: AggregateGroup[] }> {
    const meta = await this.meta(collection);
    const parsed = parseAggregation(input);
    const params = new SqlParams();
    const where = this.readableWhere(meta, caller, input.where, params);
    const rows = await this.repo.aggregate(meta.name, {
      ...compileAggregation(parsed),
      where,
      limit: parsed.limit,
      params,
    });
    return { groups: rows.map((row) => toGroup(parsed, row)) };
  }

  async count(caller: Caller, collection: string, input: { where?: unknown }): Promise<{ count: number }> {
    const meta = await this.meta(collection);
    const params = new SqlParams();
    const count = await this.repo.count(meta.name, {
      where: this.readableWhere(meta, caller, input.where, params),
      params,
    });
    this.options.usage?.documentsRead(1);
    return { count };
  }

  // -- writes --------------------------------------------------------------------

  async create(caller: Caller, collection: string, input: CreateInput): Promise<Document> {
    const meta = await this.meta(collection);
    const patch = parsePatch(input.data);
    const doc = hasServerTimestamp(patch)
      ? // The stamp must be the transaction's time, the same as created_at.
        await this.repo.transaction((tx) => this.createIn(txScope(tx, this.repo), caller, meta, input, patch))
      : await this.createIn({ q: this.repo.pool, now: async () => wallClock() }, caller, meta, input, patch);
    this.options.usage?.documentsWritten(1);
    return doc;
  }

  private async createIn(
    scope: Scope,
    caller: Caller,
    meta: CompiledCollection,
    input: { id?: unknown; owner?: unknown },
    patch: PatchObject,
  ): Promise<Document> {
    const id = input.id === undefined || input.id === null ? generateDocumentId() : assertDocumentId(input.id);
    const owner = ownerFor(caller, input.owner);
    const ruled = caller.role !== 'service';
    if (ruled && !meta.rules.create) this.deny(meta, caller, null, 'create');
    // The clock is read only when something sees it: the create rule (through created_at)
    // or a $server_timestamp. The service key's plain creates skip it (in a batch, a round
    // trip for the transaction's time).
    const now = ruled || hasServerTimestamp(patch) ? await scope.now() : '';
    const data = materialize(patch, now);
    this.checkData(meta, data);
    if (ruled) {
      const incoming = newDocument(meta.name, id, owner, now, data);
      if (!this.allows(meta, 'create', caller, { incoming })) this.deny(meta, caller, null, 'create');
    }
    return this.repo.insert(scope.q, meta.name, { id, owner, data });
  }

  /** PUT: replaces the document's data, or creates it. */
  async set(
    caller: Caller,
    collection: string,
    id: string,
    input: DataInput,
    options: WriteOptions = {},
  ): Promise<{ doc: Document; created: boolean }> {
    const meta = await this.meta(collection);
    assertDocumentId(id);
    const patch = parsePatch(input.data);
    if (caller.role === 'service' && options.ifVersion === undefined && !hasServerTimestamp(patch)) {
      const data = materialize(patch, wallClock());
      this.checkData(meta, data);
      const result = await this.repo.upsert(this.repo.pool, meta.name, { id, owner: null, data });
      this.options.usage?.documentsWritten(1);
      return result;
    }
    const result = await this.repo.transaction((tx) =>
      this.setIn(txScope(tx, this.repo), caller, meta, id, patch, options),
    );
    this.options.usage?.documentsWritten(1);
    return result;
  }

  private async setIn(
    scope: TxScope,
    caller: Caller,
    meta: CompiledCollection,
    id: string,
    patch: PatchObject,
    options: WriteOptions,
  ): Promise<{ doc: Document; created: boolean }> {
    // A concurrent create between our read and our insert sends us round again, as a replace.
    for (let attempt = 0; attempt < 3; attempt++) {
      const stored = await this.repo.getForUpdate(scope.q, meta.name, id);
      if (stored) {
        const doc = await this.replaceIn(scope, caller, meta, stored, options, (_, now) => materialize(patch, now));
        return { doc, created: false };
      }
      if (options.ifVersion !== undefined) throw versionConflict(options.ifVersion, null);
      const now = await scope.now();
      const data = materialize(patch, now);
      this.checkData(meta, data);
      const owner = isUser(caller) ? caller.uid : null;
      const incoming = newDocument(meta.name, id, owner, now, data);
      if (!this.allows(meta, 'create', caller, { incoming })) this.deny(meta, caller, null, 'create');
      const doc = await this.repo.insertIfAbsent(scope.q, meta.name, { id, owner, data });
      if (doc) return { doc, created: true };
    }
    throw new AppError('UNAVAILABLE', 'The document changed concurrently; retry.');
  }

  /**
   * Writes new data over a stored, locked document: version, transforms, update rule, then
   * size and schema (the order the module comment explains).
   */
  private async replaceIn(
    scope: Scope,
    caller: Caller,
    meta: CompiledCollection,
    stored: Document,
    options: WriteOptions,
    compute: (stored: JsonObject, now: string) => JsonObject,
  ): Promise<Document> {
    const readable = this.allows(meta, 'read', caller, { doc: stored });
    if (options.ifVersion !== undefined && options.ifVersion !== stored.version) {
      if (!readable) throw notFound(meta.name, stored.id);
      throw versionConflict(options.ifVersion, stored.version);
    }
    const now = await scope.now();
    let data: JsonObject;
    try {
      data = compute(stored.data, now);
    } catch (error) {
      // A transform that cannot apply (an $increment past the number range) tells of the stored value.
      if (!readable) throw notFound(meta.name, stored.id);
      throw error;
    }
    const incoming: Document = { ...stored, version: stored.version + 1, updated_at: now, data };
    if (!this.allows(meta, 'update', caller, { doc: stored, incoming })) {
      if (!readable) throw notFound(meta.name, stored.id);
      throw new AppError('FORBIDDEN', `The update rule of "${meta.name}" denies this.`);
    }
    this.checkData(meta, data, readable);
    const doc = await this.repo.updateData(scope.q, meta.name, stored.id, data);
    if (!doc) throw notFound(meta.name, stored.id);
    return doc;
  }

  /** PATCH: deep-merges into the stored data, applying field transforms, under the row lock. */
  async update(
    caller: Caller,
    collection: string,
    id: string,
    input: DataInput,
    options: WriteOptions = {},
  ): Promise<Document | RedactedDocument> {
    const meta = await this.meta(collection);
    assertDocumentId(id);
    const patch = parsePatch(input.data);
    const doc = await this.repo.transaction((tx) =>
      this.updateIn(txScope(tx, this.repo), caller, meta, id, patch, options),
    );
    this.options.usage?.documentsWritten(1);
    return this.visible(meta, caller, doc);
  }

  private visible(meta: CompiledCollection, caller: Caller, doc: Document): Document | RedactedDocument {
    return this.allows(meta, 'read', caller, { doc }) ? doc : { ...doc, data: null };
  }

  private async updateIn(
    scope: TxScope,
    caller: Caller,
    meta: CompiledCollection,
    id: string,
    patch: PatchObject,
    options: WriteOptions,
  ): Promise<Document> {
    const stored = await this.repo.getForUpdate(scope.q, meta.name, id);
    if (!stored) throw notFound(meta.name, id);
    return this.replaceIn(scope, caller, meta, stored, options, (data, now) => applyPatch(data, patch, now));
  }

  async delete(caller: Caller, collection: string, id: string, options: WriteOptions = {}): Promise<void> {
    const meta = await this.meta(collection);
    assertDocumentId(id);
    if (caller.role === 'service' && options.ifVersion === undefined) {
      if (!(await this.repo.delete(this.repo.pool, meta.name, id))) throw notFound(meta.name, id);
    } else {
      await this.repo.transaction((tx) => this.deleteIn(tx, caller, meta, id, options));
    }
    this.options.usage?.documentsWritten(1);
  }

  private async deleteIn(
    tx: Tx,
    caller: Caller,
    meta: CompiledCollection,
    id: string,
    options: WriteOptions,
  ): Promise<void> {
    const stored = await this.repo.getForUpdate(tx, meta.name, id);
    if (!stored) throw notFound(meta.name, id);
    if (options.ifVersion !== undefined && options.ifVersion !== stored.version) {
      if (!this.allows(meta, 'read', caller, { doc: stored })) throw notFound(meta.name, id);
      throw versionConflict(options.ifVersion, stored.version);
    }
    if (!this.allows(meta, 'delete', caller, { doc: stored })) this.deny(meta, caller, stored, 'delete');
    await this.repo.delete(tx, meta.name, id);
  }

  // -- batch ---------------------------------------------------------------------

  /**
   * Runs up to 500 writes in one transaction, each checked as if sent alone: all
   * commit or none does. A failure names the op: details {index, code, ...}.
   */
  async batch(caller: Caller, input: { ops: unknown }): Promise<{ results: BatchResult[] }> {
    const ops = input.ops;
    if (!Array.isArray(ops) || ops.length === 0 || ops.length > MAX_BATCH_OPS) {
      throw new AppError('INVALID_REQUEST', `ops: a list of 1 to ${MAX_BATCH_OPS} operations.`, {
        details: { field: 'ops', max: MAX_BATCH_OPS },
      });
    }
    // Metadata and bodies are checked before the transaction opens, so bad input costs no locks.
    const prepared: Array<{ op: BatchOp; meta: CompiledCollection; patch: PatchObject | null }> = [];
    for (const [index, op] of (ops as BatchOp[]).entries()) {
      try {
        if (op === null || typeof op !== 'object') throw new AppError('INVALID_REQUEST', 'An op is an object.');
        const meta = await this.meta(op.collection);
        if (op.op !== 'create' || (op.id !== undefined && op.id !== null)) assertDocumentId(op.id);
        const patch = op.op === 'delete' ? null : parsePatch(op.data);
        if (op.if_version !== undefined && (!Number.isSafeInteger(op.if_version) || op.if_version < 1)) {
          throw new AppError('INVALID_REQUEST', 'if_version is a whole number from 1.');
        }
        if (op.op === 'create' && op.if_version !== undefined) {
          throw new AppError('INVALID_REQUEST', 'if_version does not apply to create.');
        }
        if (op.op !== 'create' && op.owner !== undefined) {
          throw new AppError('INVALID_REQUEST', 'owner applies to create only.');
        }
        prepared.push({ op, meta, patch });
      } catch (error) {
        throw batchError(error, index);
      }
    }
    const committed = await this.repo.transaction(async (tx) => {
      const scope = txScope(tx, this.repo);
      const results: BatchResult[] = [];
      for (const [index, { op, meta, patch }] of prepared.entries()) {
        const options: WriteOptions = op.if_version === undefined ? {} : { ifVersion: op.if_version };
        try {
          switch (op.op) {
            case 'create':
              results.push(await this.createIn(scope, caller, meta, op, patch as PatchObject));
              break;
            case 'set':
              results.push((await this.setIn(scope, caller, meta, op.id as string, patch as PatchObject, options)).doc);
              break;
            case 'update':
              results.push(
                this.visible(
                  meta,
                  caller,
                  await this.updateIn(scope, caller, meta, op.id as string, patch as PatchObject, options),
                ),
              );
              break;
            case 'delete':
              await this.deleteIn(tx, caller, meta, op.id as string, options);
              results.push(null);
              break;
            default:
              throw new AppError('INVALID_REQUEST', 'op is one of create, set, update, delete.');
          }
        } catch (error) {
          throw batchError(error, index);
        }
      }
      return { results };
    });
    this.options.usage?.documentsWritten(prepared.length);
    return committed;
  }
}

/** Names the failing op of a batch while keeping its code, status and details. */
function batchError(error: unknown, index: number): AppError {
  if (!isAppError(error)) return new AppError('INTERNAL', undefined, { cause: error, details: { index } });
  return new AppError(error.code, `ops[${index}]: ${error.message}`, {
    details: { ...error.details, index, code: error.code },
    cause: error,
    headers: error.headers,
  });
}
