import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { AppError, fromPostgresError } from '../../internal/errors.js';
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
import type { CollectionRules, Document, IndexSpec, JsonObject } from './types.js';

/** Every instance LISTENs here; a trigger on basalt.collections NOTIFYs the changed name. */
export const COLLECTIONS_CHANNEL = 'basalt_collections';

/** Subscribes a listener's own session to collection metadata changes. */
export async function listenForCollectionChanges(client: pg.Client): Promise<void> {
  await client.query(`LISTEN ${COLLECTIONS_CHANNEL}`);
}

export interface CollectionRow {
  name: string;
  rules: CollectionRules;
  schema: JsonObject | null;
  indexes: IndexSpec[];
  revision: string;
  created_at: string;
  updated_at: string;
}

interface DocumentRow {
  id: string;
  owner: string | null;
  version: string;
  created_at: string;
  updated_at: string;
  data: JsonObject;
}

const ISO = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const COLLECTION_COLUMNS =
  `name, rules, schema, indexes, revision, ` +
  `to_char(created_at AT TIME ZONE 'UTC', ${ISO}) AS created_at, to_char(updated_at AT TIME ZONE 'UTC', ${ISO}) AS updated_at`;

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
function documentError(error: unknown, collection: string): AppError {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === '42P01') {
    return new AppError('NOT_FOUND', `Collection "${collection}" does not exist.`, { cause: error });
  }
  // Text Postgres cannot store (NUL, broken UTF-8) that slipped past validation.
  if (code === '22P05' || code === '22021') {
    return new AppError('INVALID_REQUEST', 'The request holds text that cannot be stored.', { cause: error });
  }
  return fromPostgresError(error, 'The document');
}

interface PreparedStatement {
  name: string;
  text: string;
}

const statements = new Map<string, PreparedStatement>();

/**
 * A named (prepared) statement for the fixed per-collection statements: each pooled
 * connection parses and plans it once. The name is a hash of the text, so a name never
 * stands for two texts; after DDL, Postgres re-plans prepared statements by itself.
 * Text and name are built once per collection and kind, not on every call.
 */
function prepared(
  kind: string,
  collection: string,
  build: () => string,
  values: unknown[],
): { name: string; text: string; values: unknown[] } {
  const key = `${kind} ${collection}`;
  let statement = statements.get(key);
  if (statement === undefined) {
    const text = build();
    statement = { name: `bd_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`, text };
    if (statements.size > 10_000) statements.clear();
    statements.set(key, statement);
  }
  return { name: statement.name, text: statement.text, values };
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

/** SQL of the collection tables and their documents. */
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
    const { rows } = await this.db.query<CollectionRow>(
      `SELECT ${COLLECTION_COLUMNS} FROM basalt.collections ORDER BY name`,
    );
    return rows;
  }

  async getCollection(name: string, q: Queryable = this.db.pool, forUpdate = false): Promise<CollectionRow | null> {
    const { rows } = await q.query<CollectionRow>(
      `SELECT ${COLLECTION_COLUMNS} FROM basalt.collections WHERE name = $1${forUpdate ? ' FOR UPDATE' : ''}`,
      [name],
    );
    return rows[0] ?? null;
  }

  /** Metadata row, table, triggers, change tracking and indexes, in the caller's transaction. */
  async createCollection(
    tx: Tx,
    input: { name: string; rules: CollectionRules; schema: JsonObject | null; indexes: IndexSpec[] },
  ): Promise<CollectionRow> {
    let row: CollectionRow | undefined;
    try {
      ({
        rows: [row],
      } = await tx.query<CollectionRow>(
        `INSERT INTO basalt.collections (name, rules, schema, indexes) VALUES ($1, $2::jsonb, $3::jsonb, $4::jsonb)
         RETURNING ${COLLECTION_COLUMNS}`,
        [
          input.name,
          JSON.stringify(input.rules),
          input.schema === null ? null : JSON.stringify(input.schema),
          JSON.stringify(input.indexes),
        ],
      ));
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
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code === '42P07') {
        throw new AppError('ALREADY_EXISTS', `A table named "${input.name}" already exists.`, { cause: error });
      }
      throw fromPostgresError(error, `Collection "${input.name}"`);
    }
    return row as CollectionRow;
  }

  async createIndex(tx: Tx, collection: string, spec: IndexSpec): Promise<void> {
    const paths = Array.isArray(spec) ? spec : [spec];
    const keys = paths.map((path) => indexKeyExpr(parseFieldRef(path, 'indexes')));
    await tx.query(
      `CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(collection, spec))} ON ${tableRef(collection)} (${keys.join(', ')})`,
    );
  }

  async dropIndex(tx: Tx, collection: string, spec: IndexSpec): Promise<void> {
    await tx.query(`DROP INDEX IF EXISTS ${DATA_SCHEMA}.${quoteIdent(indexName(collection, spec))}`);
  }

  async updateCollection(
    tx: Tx,
    name: string,
    input: { rules: CollectionRules; schema: JsonObject | null; indexes: IndexSpec[] },
  ): Promise<CollectionRow> {
    const { rows } = await tx.query<CollectionRow>(
      `UPDATE basalt.collections SET rules = $2::jsonb, schema = $3::jsonb, indexes = $4::jsonb,
         revision = revision + 1, updated_at = now()
       WHERE name = $1 RETURNING ${COLLECTION_COLUMNS}`,
      [
        name,
        JSON.stringify(input.rules),
        input.schema === null ? null : JSON.stringify(input.schema),
        JSON.stringify(input.indexes),
      ],
    );
    if (!rows[0]) throw new AppError('NOT_FOUND', `Collection "${name}" does not exist.`);
    return rows[0];
  }

  async dropCollection(tx: Tx, name: string): Promise<boolean> {
    const { rowCount } = await tx.query('DELETE FROM basalt.collections WHERE name = $1', [name]);
    if (!rowCount) return false;
    await tx.query(`DROP TABLE IF EXISTS ${tableRef(name)}`);
    return true;
  }

  // -- documents ----------------------------------------------------------------

  async now(q: Queryable): Promise<string> {
    const { rows } = await q.query<{ now: string }>(`SELECT to_char(now() AT TIME ZONE 'UTC', ${ISO}) AS now`);
    return (rows[0] as { now: string }).now;
  }

  async get(q: Queryable, collection: string, id: string): Promise<Document | null> {
    try {
      const { rows } = await q.query<DocumentRow>(
        prepared(
          'get',
          collection,
          () => `SELECT ${documentColumns()} FROM ${tableRef(collection)} ${ROW_ALIAS} WHERE ${ROW_ALIAS}.id = $1`,
          [id],
        ),
      );
      return rows[0] ? toDocument(collection, rows[0]) : null;
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  /** The document, locked until the transaction ends, with the transaction's time. */
  async getForUpdate(tx: Tx, collection: string, id: string): Promise<Document | null> {
    try {
      const { rows } = await tx.query<DocumentRow>(
        prepared(
          'getForUpdate',
          collection,
          () =>
            `SELECT ${documentColumns()} FROM ${tableRef(collection)} ${ROW_ALIAS} WHERE ${ROW_ALIAS}.id = $1 FOR UPDATE`,
          [id],
        ),
      );
      return rows[0] ? toDocument(collection, rows[0]) : null;
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  async insert(
    q: Queryable,
    collection: string,
    doc: { id: string; owner: string | null; data: JsonObject },
  ): Promise<Document> {
    try {
      const { rows } = await q.query<DocumentRow>(
        prepared(
          'insert',
          collection,
          () => `INSERT INTO ${tableRef(collection)} AS ${ROW_ALIAS} (id, owner, data) VALUES ($1, $2, $3::jsonb)
         RETURNING ${documentColumns()}`,
          [doc.id, doc.owner, dataJson(doc.data)],
        ),
      );
      return toDocument(collection, rows[0] as DocumentRow);
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  /** Inserts unless the id is taken (then null): lets a replace-or-create retry as a replace. */
  async insertIfAbsent(
    q: Queryable,
    collection: string,
    doc: { id: string; owner: string | null; data: JsonObject },
  ): Promise<Document | null> {
    try {
      const { rows } = await q.query<DocumentRow>(
        prepared(
          'insertIfAbsent',
          collection,
          () => `INSERT INTO ${tableRef(collection)} AS ${ROW_ALIAS} (id, owner, data) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (id) DO NOTHING RETURNING ${documentColumns()}`,
          [doc.id, doc.owner, dataJson(doc.data)],
        ),
      );
      return rows[0] ? toDocument(collection, rows[0]) : null;
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  /** Replace or create in one statement; an existing document keeps its owner. */
  async upsert(
    q: Queryable,
    collection: string,
    doc: { id: string; owner: string | null; data: JsonObject },
  ): Promise<{ doc: Document; created: boolean }> {
    try {
      const { rows } = await q.query<DocumentRow & { inserted: boolean }>(
        prepared(
          'upsert',
          collection,
          () => `INSERT INTO ${tableRef(collection)} AS ${ROW_ALIAS} (id, owner, data) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (id) DO UPDATE SET ${STAMPED_UPDATE} data = EXCLUDED.data
         RETURNING ${documentColumns()}, (${ROW_ALIAS}.xmax = 0) AS inserted`,
          [doc.id, doc.owner, dataJson(doc.data)],
        ),
      );
      const row = rows[0] as DocumentRow & { inserted: boolean };
      return { doc: toDocument(collection, row), created: row.inserted };
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  async updateData(q: Queryable, collection: string, id: string, data: JsonObject): Promise<Document | null> {
    try {
      const { rows } = await q.query<DocumentRow>(
        prepared(
          'updateData',
          collection,
          () => `UPDATE ${tableRef(collection)} AS ${ROW_ALIAS} SET ${STAMPED_UPDATE} data = $2::jsonb WHERE ${ROW_ALIAS}.id = $1
         RETURNING ${documentColumns()}`,
          [id, dataJson(data)],
        ),
      );
      return rows[0] ? toDocument(collection, rows[0]) : null;
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  async delete(q: Queryable, collection: string, id: string): Promise<boolean> {
    try {
      const { rowCount } = await q.query(
        prepared('delete', collection, () => `DELETE FROM ${tableRef(collection)} WHERE id = $1`, [id]),
      );
      return (rowCount ?? 0) > 0;
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  /** Runs a compiled query: `where` and `orderBy` are SQL built by sql.ts over `params`. */
  async query(
    collection: string,
    compiled: { where: string | null; orderBy: string; limit: number; params: SqlParams },
  ): Promise<Document[]> {
    const { params } = compiled;
    const limit = params.add(compiled.limit, 'int');
    const text =
      `SELECT ${documentColumns()} FROM ${tableRef(collection)} ${ROW_ALIAS}` +
      (compiled.where ? ` WHERE ${compiled.where}` : '') +
      ` ORDER BY ${compiled.orderBy} LIMIT ${limit}`;
    try {
      const { rows } = await this.db.query<DocumentRow>(text, params.values);
      return rows.map((row) => toDocument(collection, row));
    } catch (error) {
      throw documentError(error, collection);
    }
  }

  async count(collection: string, compiled: { where: string | null; params: SqlParams }): Promise<number> {
    const text =
      `SELECT count(*)::bigint AS count FROM ${tableRef(collection)} ${ROW_ALIAS}` +
      (compiled.where ? ` WHERE ${compiled.where}` : '');
    try {
      const { rows } = await this.db.query<{ count: string }>(text, compiled.params.values);
      return Number((rows[0] as { count: string }).count);
    } catch (error) {
      throw documentError(error, collection);
    }
  }
}
