import { createHash } from 'node:crypto';
import { asc, eq, sql } from 'drizzle-orm';
import type pg from 'pg';
import { collections } from '../../db/schema.js';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { AppError, fromPostgresError } from '../../internal/errors.js';
import { ISO_TIMESTAMP, isoTimestamp, mapDatabaseErrors, runQuery, type Statement } from '../../internal/repository.js';
import { dataJson } from './json.js';
import { parseFieldRef, type FieldRef } from './query.js';
import {
  DATA_SCHEMA,
  ROW_ALIAS,
  STAMPED_UPDATE,
  dataPathExpr,
  documentColumns,
  quoteIdent,
  tableRef,
  type SqlParams,
} from './sql.js';
import { SEARCH_COLUMN, searchVectorExpr } from './search.js';
import type {
  CollectionInfo,
  CollectionRules,
  CollectionSettings,
  Document,
  IndexSpec,
  JsonObject,
  RefSettings,
  SearchSettings,
} from './types.js';

/** Every instance LISTENs here; a trigger on basalt.collections NOTIFYs the changed name. */
export const COLLECTIONS_CHANNEL = 'basalt_collections';

/** Subscribes a listener's own session to collection metadata changes. */
export async function listenForCollectionChanges(client: pg.Client): Promise<void> {
  await runQuery(client, `LISTEN ${COLLECTIONS_CHANNEL}`);
}

/** A collection's metadata row in the wire's shape: timestamps as ISO text, revision as int8 text. */
export interface CollectionRow extends CollectionInfo {
  revision: string;
}

interface DocumentRow {
  id: string;
  owner: string | null;
  version: string;
  created_at: string;
  updated_at: string;
  data: JsonObject;
}

/** basalt.collections as the builder selects it into a CollectionRow. */
const COLLECTION_FIELDS = {
  name: collections.name,
  rules: sql<CollectionRules>`${collections.rules}`,
  schema: sql<JsonObject | null>`${collections.schema}`,
  indexes: sql<IndexSpec[]>`${collections.indexes}`,
  search: sql<SearchSettings | null>`${collections.search}`,
  refs: sql<RefSettings>`${collections.refs}`,
  // int8 as node-postgres reads it (text); live queries key their compiled rules on it.
  revision: sql<string>`${collections.revision}`,
  created_at: isoTimestamp(collections.createdAt),
  updated_at: isoTimestamp(collections.updatedAt),
};

function toDocument(collection: string, row: DocumentRow): Document {
  return {
    id: row.id,
    collection,
    owner: row.owner,
    version: Number(row.version),
    created_at: row.created_at,
    updated_at: row.updated_at,
    data: row.data,
  };
}

/** Maps errors of document statements; a missing table means the collection is gone. */
const documentError =
  (collection: string) =>
  (error: unknown): AppError => {
    const code = (error as { code?: unknown } | null)?.code;
    if (code === '42P01') {
      return new AppError('NOT_FOUND', `Collection "${collection}" does not exist.`, { cause: error });
    }
    // Text Postgres cannot store (NUL, broken UTF-8) that slipped past validation.
    if (code === '22P05' || code === '22021') {
      return new AppError('INVALID_REQUEST', 'The request holds text that cannot be stored.', { cause: error });
    }
    return fromPostgresError(error, 'The document');
  };

const statements = new Map<string, { name: string; text: string }>();

/**
 * A named (prepared) statement for the fixed per-collection statements: each pooled
 * connection parses and plans it once. The name is a hash of the text, so a name never
 * stands for two texts; after DDL, Postgres re-plans prepared statements by itself.
 * Text and name are built once per collection and kind, not on every call.
 */
function prepared(kind: string, collection: string, build: () => string): Statement {
  const key = `${kind} ${collection}`;
  let statement = statements.get(key);
  if (statement === undefined) {
    const text = build();
    statement = { name: `bd_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`, text };
    if (statements.size > 10_000) statements.clear();
    statements.set(key, statement);
  }
  return statement;
}

/** Deterministic index name: short, unique per collection and key list, valid as an identifier. */
export function indexName(collection: string, spec: IndexSpec): string {
  const hash = createHash('sha256')
    .update(JSON.stringify([collection, spec]))
    .digest('hex')
    .slice(0, 40);
  return `bx_${hash}`;
}

function indexKeyExpr(field: FieldRef): string {
  return field.kind === 'system' ? quoteIdent(field.name) : `(${dataPathExpr(field.path, null)})`;
}

/**
 * SQL of the collection tables and their documents. The metadata rows in basalt.collections
 * go through drizzle's builder; the per-collection tables are named at run time and read
 * on every request, so their statements are hand-written (named, where the text is fixed
 * per collection) as is the DDL that creates them.
 */
export class DocumentRepository {
  constructor(private readonly db: Database) {}

  get pool(): Queryable {
    return this.db.pool;
  }

  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(work);
  }

  // -- collections --------------------------------------------------------------

  async listCollections(): Promise<CollectionRow[]> {
    return mapDatabaseErrors(() =>
      this.db.drizzle.select(COLLECTION_FIELDS).from(collections).orderBy(asc(collections.name)),
    );
  }

  async getCollection(name: string, q: Queryable = this.db.pool, forUpdate = false): Promise<CollectionRow | null> {
    const query = this.db.builder(q).select(COLLECTION_FIELDS).from(collections).where(eq(collections.name, name));
    const rows = await mapDatabaseErrors(() => (forUpdate ? query.for('update') : query));
    return rows[0] ?? null;
  }

  /** Metadata row, table, triggers, change tracking and indexes, in the caller's transaction. */
  async createCollection(tx: Tx, input: CollectionSettings & { name: string }): Promise<CollectionRow> {
    // One mapping for the whole sequence: a table of that name already there is its own error.
    const tableTaken = (error: unknown): AppError =>
      (error as { code?: unknown } | null)?.code === '42P07'
        ? new AppError('ALREADY_EXISTS', `A table named "${input.name}" already exists.`, { cause: error })
        : fromPostgresError(error, `Collection "${input.name}"`);
    return mapDatabaseErrors(async () => {
      const [row] = await this.db
        .builder(tx)
        .insert(collections)
        .values({
          name: input.name,
          rules: { ...input.rules },
          schema: input.schema,
          indexes: input.indexes,
          search: input.search,
          refs: input.refs,
        })
        .returning(COLLECTION_FIELDS);
      const table = tableRef(input.name);
      await tx.query(`CREATE SCHEMA IF NOT EXISTS ${DATA_SCHEMA}`);
      // The id rule as a plain repeat plus a length: `{1,128}` in a Postgres regex cost
      // about 15 µs of CPU on every written row (see migration 0011).
      await tx.query(`CREATE TABLE ${table} (
        id text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]+$' AND length(id) <= 128),
        owner text COLLATE "C",
        version bigint NOT NULL DEFAULT 1,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        data jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(data) = 'object')
      )`);
      // Keeps version and the timestamps right for writes made with plain SQL (migration 0014).
      await tx.query('SELECT basalt.stamp_documents($1::regclass)', [table]);
      // Owner rules filter on owner; "newest first" is the most common order.
      await tx.query(`CREATE INDEX ${quoteIdent(indexName(input.name, '$owner'))} ON ${table} (owner)`);
      await tx.query(`CREATE INDEX ${quoteIdent(indexName(input.name, '$created'))} ON ${table} (created_at, id)`);
      await tx.query('SELECT basalt.track_changes($1::regclass)', [table]);
      for (const spec of input.indexes) await this.createIndex(tx, input.name, spec);
      if (input.search) await this.createSearchIndex(tx, input.name, input.search);
      return row as CollectionRow;
    }, tableTaken);
  }

  async createIndex(tx: Tx, collection: string, spec: IndexSpec): Promise<void> {
    const paths = Array.isArray(spec) ? spec : [spec];
    const keys = paths.map((path) => indexKeyExpr(parseFieldRef(path, 'indexes')));
    await runQuery(
      tx,
      `CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(collection, spec))} ON ${tableRef(collection)} (${keys.join(', ')})`,
    );
  }

  /** Whether Postgres knows this text search configuration (`simple`, `english` …). */
  async searchLanguageExists(q: Queryable, language: string): Promise<boolean> {
    const rows = await runQuery(q, 'SELECT 1 FROM pg_catalog.pg_ts_config WHERE cfgname = $1', [language]);
    return rows.length > 0;
  }

  /** The search fields' tsvector as a generated column with a GIN index (search.ts): Postgres keeps both current on every write. */
  async createSearchIndex(tx: Tx, collection: string, search: SearchSettings): Promise<void> {
    const table = tableRef(collection);
    await runQuery(
      tx,
      `ALTER TABLE ${table} ADD COLUMN ${quoteIdent(SEARCH_COLUMN)} tsvector GENERATED ALWAYS AS (${searchVectorExpr(search, null)}) STORED`,
    );
    await runQuery(
      tx,
      `CREATE INDEX ${quoteIdent(indexName(collection, '$search'))} ON ${table} USING gin (${quoteIdent(SEARCH_COLUMN)})`,
    );
  }

  async dropSearchIndex(tx: Tx, collection: string): Promise<void> {
    await runQuery(tx, `DROP INDEX IF EXISTS ${DATA_SCHEMA}.${quoteIdent(indexName(collection, '$search'))}`);
    await runQuery(tx, `ALTER TABLE ${tableRef(collection)} DROP COLUMN IF EXISTS ${quoteIdent(SEARCH_COLUMN)}`);
  }

  async dropIndex(tx: Tx, collection: string, spec: IndexSpec): Promise<void> {
    await runQuery(tx, `DROP INDEX IF EXISTS ${DATA_SCHEMA}.${quoteIdent(indexName(collection, spec))}`);
  }

  async updateCollection(tx: Tx, name: string, input: CollectionSettings): Promise<CollectionRow> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(tx)
        .update(collections)
        .set({
          rules: { ...input.rules },
          schema: input.schema,
          indexes: input.indexes,
          search: input.search,
          refs: input.refs,
          revision: sql`${collections.revision} + 1`,
          updatedAt: sql`now()`,
        })
        .where(eq(collections.name, name))
        .returning(COLLECTION_FIELDS),
    );
    if (!row) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
    return row;
  }

  async dropCollection(tx: Tx, name: string): Promise<boolean> {
    const dropped = await mapDatabaseErrors(() =>
      this.db.builder(tx).delete(collections).where(eq(collections.name, name)).returning({ name: collections.name }),
    );
    if (dropped.length === 0) return false;
    await runQuery(tx, `DROP TABLE IF EXISTS ${tableRef(name)}`);
    return true;
  }

  // -- documents ----------------------------------------------------------------

  async now(q: Queryable): Promise<string> {
    const rows = await runQuery<{ now: string }>(
      q,
      `SELECT to_char(now() AT TIME ZONE 'UTC', ${ISO_TIMESTAMP}) AS now`,
    );
    return (rows[0] as { now: string }).now;
  }

  async get(q: Queryable, collection: string, id: string): Promise<Document | null> {
    const rows = await runQuery<DocumentRow>(
      q,
      prepared(
        'get',
        collection,
        () => `SELECT ${documentColumns()} FROM ${tableRef(collection)} ${ROW_ALIAS} WHERE ${ROW_ALIAS}.id = $1`,
      ),
      [id],
      documentError(collection),
    );
    return rows[0] ? toDocument(collection, rows[0]) : null;
  }

  /** The document, locked until the transaction ends, with the transaction's time. */
  async getForUpdate(tx: Tx, collection: string, id: string): Promise<Document | null> {
    const rows = await runQuery<DocumentRow>(
      tx,
      prepared(
        'getForUpdate',
        collection,
        () =>
          `SELECT ${documentColumns()} FROM ${tableRef(collection)} ${ROW_ALIAS} WHERE ${ROW_ALIAS}.id = $1 FOR UPDATE`,
      ),
      [id],
      documentError(collection),
    );
    return rows[0] ? toDocument(collection, rows[0]) : null;
  }

  async insert(
    q: Queryable,
    collection: string,
    doc: { id: string; owner: string | null; data: JsonObject },
  ): Promise<Document> {
    const rows = await runQuery<DocumentRow>(
      q,
      prepared(
        'insert',
        collection,
        () => `INSERT INTO ${tableRef(collection)} AS ${ROW_ALIAS} (id, owner, data) VALUES ($1, $2, $3::jsonb)
         RETURNING ${documentColumns()}`,
      ),
      [doc.id, doc.owner, dataJson(doc.data)],
      documentError(collection),
    );
    return toDocument(collection, rows[0] as DocumentRow);
  }

  /** Inserts unless the id is taken (then null): lets a replace-or-create retry as a replace. */
  async insertIfAbsent(
    q: Queryable,
    collection: string,
    doc: { id: string; owner: string | null; data: JsonObject },
  ): Promise<Document | null> {
    const rows = await runQuery<DocumentRow>(
      q,
      prepared(
        'insertIfAbsent',
        collection,
        () => `INSERT INTO ${tableRef(collection)} AS ${ROW_ALIAS} (id, owner, data) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (id) DO NOTHING RETURNING ${documentColumns()}`,
      ),
      [doc.id, doc.owner, dataJson(doc.data)],
      documentError(collection),
    );
    return rows[0] ? toDocument(collection, rows[0]) : null;
  }

  /** Replace or create in one statement; an existing document keeps its owner. */
  async upsert(
    q: Queryable,
    collection: string,
    doc: { id: string; owner: string | null; data: JsonObject },
  ): Promise<{ doc: Document; created: boolean }> {
    const rows = await runQuery<DocumentRow & { inserted: boolean }>(
      q,
      prepared(
        'upsert',
        collection,
        () => `INSERT INTO ${tableRef(collection)} AS ${ROW_ALIAS} (id, owner, data) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (id) DO UPDATE SET ${STAMPED_UPDATE} data = EXCLUDED.data
         RETURNING ${documentColumns()}, (${ROW_ALIAS}.xmax = 0) AS inserted`,
      ),
      [doc.id, doc.owner, dataJson(doc.data)],
      documentError(collection),
    );
    const row = rows[0] as DocumentRow & { inserted: boolean };
    return { doc: toDocument(collection, row), created: row.inserted };
  }

  async updateData(q: Queryable, collection: string, id: string, data: JsonObject): Promise<Document | null> {
    const rows = await runQuery<DocumentRow>(
      q,
      prepared(
        'updateData',
        collection,
        () => `UPDATE ${tableRef(collection)} AS ${ROW_ALIAS} SET ${STAMPED_UPDATE} data = $2::jsonb WHERE ${ROW_ALIAS}.id = $1
         RETURNING ${documentColumns()}`,
      ),
      [id, dataJson(data)],
      documentError(collection),
    );
    return rows[0] ? toDocument(collection, rows[0]) : null;
  }

  async delete(q: Queryable, collection: string, id: string): Promise<boolean> {
    const rows = await runQuery(
      q,
      prepared('delete', collection, () => `DELETE FROM ${tableRef(collection)} WHERE id = $1 RETURNING 1`),
      [id],
      documentError(collection),
    );
    return rows.length > 0;
  }

  /** Runs a compiled query: `where` and `orderBy` are SQL built by sql.ts over `params`. */
  async query(
    collection: string,
    compiled: { where: string | null; orderBy: string; limit: number; params: SqlParams },
  ): Promise<Document[]> {
    return (await this.queryWithExtras(collection, { ...compiled, extras: [] })).map((row) => row.doc);
  }

  /**
   * A compiled query that also selects `extras` (SQL expressions over the same row: a
   * search rank), returned in order beside each document.
   *
   * With `pageFirst`, the page is chosen before the documents are read: an inner select
   * orders the matching rows, selecting only their id and extras, and keeps `limit` of them, and only
   * those are then read in full (their timestamps formatted, their data) and given `late`
   * (expressions over the row, e.g. highlights). A search orders thousands of matches to
   * keep 20; read whole, every match's timestamps were formatted and its data copied into
   * the sort — a third of a search's time (docs/documents.md#full-text-search).
   */
  async queryWithExtras(
    collection: string,
    compiled: {
      where: string | null;
      orderBy: string;
      limit: number;
      params: SqlParams;
      extras: string[];
      pageFirst?: { late: string[] };
    },
  ): Promise<Array<{ doc: Document; extras: unknown[]; late: unknown[] }>> {
    const { params, extras } = compiled;
    const late = compiled.pageFirst?.late ?? [];
    const limit = params.add(compiled.limit, 'int');
    const table = `${tableRef(collection)} ${ROW_ALIAS}`;
    const filtered =
      (compiled.where ? ` WHERE ${compiled.where}` : '') + ` ORDER BY ${compiled.orderBy} LIMIT ${limit}`;
    const selected = extras.map((expr, i) => `, ${expr} AS x${i}`).join('');
    let text: string;
    if (compiled.pageFirst) {
      const outer = extras.map((_, i) => `, p.x${i}`).join('') + late.map((expr, i) => `, ${expr} AS y${i}`).join('');
      // row_number() over the limited rows numbers them in the inner ORDER BY's order, which
      // the outer ORDER BY then keeps (the join by primary key reads 1 row per page row).
      text =
        `SELECT ${documentColumns()}${outer} FROM (SELECT q.*, row_number() OVER () AS page_position FROM ` +
        `(SELECT ${ROW_ALIAS}.id AS page_id${selected} FROM ${table}${filtered}) q) p ` +
        `JOIN ${table} ON ${ROW_ALIAS}.id = p.page_id ORDER BY p.page_position`;
    } else {
      text = `SELECT ${documentColumns()}${selected} FROM ${table}${filtered}`;
    }
    const rows = await runQuery<DocumentRow & Record<string, unknown>>(
      this.db.pool,
      text,
      params.values,
      documentError(collection),
    );
    return rows.map((row) => ({
      doc: toDocument(collection, row),
      extras: extras.map((_, i) => row[`x${i}`]),
      late: late.map((_, i) => row[`y${i}`]),
    }));
  }

  /**
   * Documents of several collections by id, in one statement: a UNION ALL of one select per
   * collection, each with its read filter (SQL over `params`, alias d) when it has one.
   */
  async getMany(
    parts: Array<{ collection: string; ids: string[]; readFilter: string | null }>,
    params: SqlParams,
  ): Promise<Document[]> {
    const selects = parts.map(
      ({ collection, ids, readFilter }) =>
        `SELECT ${params.add(collection, 'text')} AS collection, ${documentColumns()} FROM ${tableRef(collection)} ${ROW_ALIAS}` +
        ` WHERE ${ROW_ALIAS}.id = ANY(${params.add(ids, 'text[]')})` +
        (readFilter ? ` AND (${readFilter})` : ''),
    );
    const rows = await runQuery<DocumentRow & { collection: string }>(
      this.db.pool,
      selects.map((select) => `(${select})`).join(' UNION ALL '),
      params.values,
      (error) => fromPostgresError(error, 'The document'),
    );
    return rows.map((row) => toDocument(row.collection, row));
  }

  /**
   * Which of these data objects match a search: `vector` is the search expression over the
   * alias `e`, `query` its tsquery over `params`. Returns the matching positions.
   */
  async searchMatches(vector: string, query: string, datas: JsonObject[], params: SqlParams): Promise<Set<number>> {
    const list = params.add(JSON.stringify(datas), 'jsonb');
    const rows = await runQuery<{ i: number }>(
      this.db.pool,
      `SELECT (e.ord - 1)::int AS i FROM jsonb_array_elements(${list}) WITH ORDINALITY AS e(data, ord) WHERE ${vector} @@ ${query}`,
      params.values,
    );
    return new Set(rows.map((row) => row.i));
  }

  /** An aggregation compiled by aggregate.ts: rows of keys k0… and values v0…. */
  async aggregate(
    collection: string,
    compiled: {
      select: string;
      grouped: { select: string; groupBy: string } | null;
      where: string | null;
      groupBy: string | null;
      orderBy: string;
      limit: number;
      params: SqlParams;
    },
  ): Promise<Array<Record<string, unknown>>> {
    const { params } = compiled;
    const where = compiled.where ? ` WHERE ${compiled.where}` : '';
    // Grouped: the rows grouped by their stored keys first, then those groups merged (aggregate.ts).
    const from = compiled.grouped
      ? `(SELECT ${compiled.grouped.select} FROM ${tableRef(collection)} ${ROW_ALIAS}${where} GROUP BY ${compiled.grouped.groupBy}) g`
      : `${tableRef(collection)} ${ROW_ALIAS}${where}`;
    const text =
      `SELECT ${compiled.select} FROM ${from}` +
      (compiled.groupBy ? ` GROUP BY ${compiled.groupBy}` : '') +
      ` ORDER BY ${compiled.orderBy} LIMIT ${params.add(compiled.limit, 'int')}`;
    return runQuery(this.db.pool, text, params.values, documentError(collection));
  }

  async count(collection: string, compiled: { where: string | null; params: SqlParams }): Promise<number> {
    const text =
      `SELECT count(*)::bigint AS count FROM ${tableRef(collection)} ${ROW_ALIAS}` +
      (compiled.where ? ` WHERE ${compiled.where}` : '');
    const rows = await runQuery<{ count: string }>(
      this.db.pool,
      text,
      compiled.params.values,
      documentError(collection),
    );
    return Number((rows[0] as { count: string }).count);
  }
}
