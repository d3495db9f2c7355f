import type { StorageObject } from '../../../client-sdk/src/wire.js';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import { fromPostgresError } from '../../internal/errors.js';
import { ADVISORY_LOCKS } from '../../internal/advisory-locks.js';

export interface BucketRules {
  read?: string;
  write?: string;
  delete?: string;
}

export interface BucketRow {
  name: string;
  public: boolean;
  max_file_size: number | null;
  allowed_mime_types: string[] | null;
  rules: BucketRules;
  created_at: string;
  updated_at: string;
}

/** An object's row: what the API shows of it, and where its bytes are. */
export interface ObjectRow extends StorageObject {
  storage_key: string;
}

export interface NewObject {
  bucket: string;
  path: string;
  storageKey: string;
  size: number;
  contentType: string;
  etag: string;
  sha256: string;
  owner: string | null;
}

const ISO = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const BUCKET_COLUMNS =
  `name, public, max_file_size::float8 AS max_file_size, allowed_mime_types, rules, ` +
  `to_char(created_at AT TIME ZONE 'UTC', ${ISO}) AS created_at, to_char(updated_at AT TIME ZONE 'UTC', ${ISO}) AS updated_at`;
const OBJECT_COLUMNS =
  `o.id, o.bucket, o.path, o.storage_key, o.size::float8 AS size, o.content_type, o.etag, o.sha256, o.owner, ` +
  `to_char(o.created_at AT TIME ZONE 'UTC', ${ISO}) AS created_at, to_char(o.updated_at AT TIME ZONE 'UTC', ${ISO}) AS updated_at`;

export const OBJECT_ALIAS = 'o';

/** SQL of storage: buckets, object metadata and the pending-keys bookkeeping. */
export class StorageRepository {
  constructor(private readonly db: Database) {}

  get pool(): Queryable {
    return this.db.pool;
  }

  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(work).catch((error: unknown) => {
      throw fromPostgresError(error, 'The object');
    });
  }

  private async run<R extends object>(q: Queryable, text: string, values: unknown[], what?: string): Promise<R[]> {
    try {
      return (await q.query<R & Record<string, unknown>>(text, values)).rows;
    } catch (error) {
      throw fromPostgresError(error, what);
    }
  }

  // Buckets

  async insertBucket(bucket: Omit<BucketRow, 'created_at' | 'updated_at'>): Promise<BucketRow> {
    const rows = await this.run<BucketRow>(
      this.db.pool,
      `INSERT INTO basalt.buckets (name, public, max_file_size, allowed_mime_types, rules)
       VALUES ($1, $2, $3, $4, $5) RETURNING ${BUCKET_COLUMNS}`,
      [bucket.name, bucket.public, bucket.max_file_size, bucket.allowed_mime_types, JSON.stringify(bucket.rules)],
      `Bucket "${bucket.name}"`,
    );
    return rows[0] as BucketRow;
  }

  async bucket(name: string, q: Queryable = this.db.pool): Promise<BucketRow | null> {
    const rows = await this.run<BucketRow>(q, `SELECT ${BUCKET_COLUMNS} FROM basalt.buckets WHERE name = $1`, [name]);
    return rows[0] ?? null;
  }

  async buckets(): Promise<BucketRow[]> {
    return this.run<BucketRow>(this.db.pool, `SELECT ${BUCKET_COLUMNS} FROM basalt.buckets ORDER BY name`, []);
  }

  async updateBucket(bucket: Omit<BucketRow, 'created_at' | 'updated_at'>): Promise<BucketRow | null> {
    const rows = await this.run<BucketRow>(
      this.db.pool,
      `UPDATE basalt.buckets SET public = $2, max_file_size = $3, allowed_mime_types = $4, rules = $5, updated_at = now()
       WHERE name = $1 RETURNING ${BUCKET_COLUMNS}`,
      [bucket.name, bucket.public, bucket.max_file_size, bucket.allowed_mime_types, JSON.stringify(bucket.rules)],
    );
    return rows[0] ?? null;
  }

  async lockBucket(tx: Tx, name: string): Promise<boolean> {
    const rows = await this.run(tx, `SELECT name FROM basalt.buckets WHERE name = $1 FOR UPDATE`, [name]);
    return rows.length > 0;
  }

  async hasObjects(tx: Tx, bucket: string): Promise<boolean> {
    const rows = await this.run(tx, `SELECT 1 FROM basalt.objects WHERE bucket = $1 LIMIT 1`, [bucket]);
    return rows.length > 0;
  }

  /** Deletes every object row of a bucket, marking their keys for deletion; returns the keys. */
  async deleteAllObjects(tx: Tx, bucket: string): Promise<string[]> {
    const rows = await this.run<{ storage_key: string }>(
      tx,
      `WITH gone AS (DELETE FROM basalt.objects WHERE bucket = $1 RETURNING storage_key)
       INSERT INTO basalt.storage_pending (storage_key, reason) SELECT storage_key, 'delete' FROM gone
       RETURNING storage_key`,
      [bucket],
    );
    return rows.map((row) => row.storage_key);
  }

  async deleteBucket(tx: Tx, name: string): Promise<void> {
    await this.run(tx, `DELETE FROM basalt.buckets WHERE name = $1`, [name], `Bucket "${name}"`);
  }

  // Objects

  /** A bucket and one of its objects in one round trip (the hot path of downloads and uploads). */
  async bucketAndObject(bucket: string, path: string): Promise<{ bucket: BucketRow | null; object: ObjectRow | null }> {
    const rows = await this.run<{ bucket: BucketRow | null; object: ObjectRow | null }>(
      this.db.pool,
      `SELECT (SELECT row_to_json(b) FROM (SELECT ${BUCKET_COLUMNS} FROM basalt.buckets WHERE name = $1) b) AS bucket,
              (SELECT row_to_json(x) FROM (SELECT ${OBJECT_COLUMNS} FROM basalt.objects o
                 WHERE o.bucket = $1 AND o.path = $2) x) AS object`,
      [bucket, path],
    );
    return rows[0] ?? { bucket: null, object: null };
  }

  async lockObject(tx: Tx, bucket: string, path: string): Promise<ObjectRow | null> {
    const rows = await this.run<ObjectRow>(
      tx,
      `SELECT ${OBJECT_COLUMNS} FROM basalt.objects o WHERE o.bucket = $1 AND o.path = $2 FOR UPDATE`,
      [bucket, path],
    );
    return rows[0] ?? null;
  }

  /** Inserts unless the path is taken (then null: a concurrent upload won the race). */
  async insertObject(tx: Tx, object: NewObject): Promise<ObjectRow | null> {
    const rows = await this.run<ObjectRow>(
      tx,
      `INSERT INTO basalt.objects AS o (bucket, path, storage_key, size, content_type, etag, sha256, owner)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (bucket, path) DO NOTHING
       RETURNING ${OBJECT_COLUMNS}`,
      [
        object.bucket,
        object.path,
        object.storageKey,
        object.size,
        object.contentType,
        object.etag,
        object.sha256,
        object.owner,
      ],
      'The object',
    );
    return rows[0] ?? null;
  }

  /** Points an existing row at new bytes; the owner and created_at stay. */
  async replaceObject(tx: Tx, id: string, object: NewObject): Promise<ObjectRow> {
    const rows = await this.run<ObjectRow>(
      tx,
      `UPDATE basalt.objects AS o SET storage_key = $2, size = $3, content_type = $4, etag = $5, sha256 = $6,
         updated_at = now()
       WHERE o.id = $1 RETURNING ${OBJECT_COLUMNS}`,
      [id, object.storageKey, object.size, object.contentType, object.etag, object.sha256],
    );
    return rows[0] as ObjectRow;
  }

  async deleteObject(tx: Tx, id: string): Promise<void> {
    await this.run(tx, `DELETE FROM basalt.objects WHERE id = $1`, [id]);
  }

  /**
   * One page of a bucket's objects in path (byte) order. `filterSql` is a compiled rule
   * over alias `o` whose values are already in `params`.
   */
  async listObjects(options: {
    bucket: string;
    prefix: string;
    after: string | null;
    limit: number;
    filterSql: string | null;
    params: unknown[];
  }): Promise<ObjectRow[]> {
    const params = [...options.params];
    const param = (value: unknown): string => {
      params.push(value);
      return `$${params.length}`;
    };
    const where = [`o.bucket = ${param(options.bucket)}`];
    if (options.prefix !== '') {
      where.push(`o.path LIKE ${param(escapeLike(options.prefix) + '%')} ESCAPE '\\'`);
    }
    if (options.after !== null) where.push(`o.path > ${param(options.after)}`);
    if (options.filterSql !== null) where.push(`(${options.filterSql})`);
    return this.run<ObjectRow>(
      this.db.pool,
      `SELECT ${OBJECT_COLUMNS} FROM basalt.objects o WHERE ${where.join(' AND ')}
       ORDER BY o.path LIMIT ${param(options.limit)}`,
      params,
    );
  }

  // Pending keys

  async addPending(q: Queryable, key: string, reason: 'upload' | 'delete'): Promise<void> {
    await this.run(
      q,
      `INSERT INTO basalt.storage_pending (storage_key, reason) VALUES ($1, $2)
       ON CONFLICT (storage_key) DO UPDATE SET reason = EXCLUDED.reason, touched_at = now()`,
      [key, reason],
    );
  }

  async touchPending(key: string): Promise<void> {
    await this.run(this.db.pool, `UPDATE basalt.storage_pending SET touched_at = now() WHERE storage_key = $1`, [key]);
  }

  /** Removes a pending mark; false when there was none (the sweeper claimed it). */
  async removePending(q: Queryable, key: string): Promise<boolean> {
    const rows = await this.run(q, `DELETE FROM basalt.storage_pending WHERE storage_key = $1 RETURNING 1`, [key]);
    return rows.length > 0;
  }

  /** Pending keys not touched since `cutoff`, oldest first. */
  async stalePending(cutoff: Date, limit: number): Promise<string[]> {
    const rows = await this.run<{ storage_key: string }>(
      this.db.pool,
      `SELECT storage_key FROM basalt.storage_pending WHERE touched_at < $1 ORDER BY touched_at LIMIT $2`,
      [cutoff, limit],
    );
    return rows.map((row) => row.storage_key);
  }

  /**
   * Claims a stale pending key for deletion. Deleting the mark first is what makes the
   * sweep safe: an upload that finishes later finds its mark gone and does not commit.
   * Returns 'delete' when the bytes may go, 'keep' when a row references them.
   */
  async claimStalePending(key: string, cutoff: Date): Promise<'delete' | 'keep' | 'gone'> {
    const rows = await this.run<{ referenced: boolean }>(
      this.db.pool,
      `DELETE FROM basalt.storage_pending p WHERE p.storage_key = $1 AND p.touched_at < $2
       RETURNING EXISTS (SELECT 1 FROM basalt.objects o WHERE o.storage_key = p.storage_key) AS referenced`,
      [key, cutoff],
    );
    const row = rows[0];
    if (!row) return 'gone';
    return row.referenced ? 'keep' : 'delete';
  }

  async pendingTouchedSince(key: string, cutoff: Date): Promise<boolean> {
    const rows = await this.run(
      this.db.pool,
      `SELECT 1 FROM basalt.storage_pending WHERE storage_key = $1 AND touched_at >= $2`,
      [key, cutoff],
    );
    return rows.length > 0;
  }

  /** Of `keys`, those that an object row or a pending mark accounts for. */
  async knownKeys(keys: string[]): Promise<Set<string>> {
    const rows = await this.run<{ storage_key: string }>(
      this.db.pool,
      `SELECT storage_key FROM basalt.objects WHERE storage_key = ANY($1::text[])
       UNION SELECT storage_key FROM basalt.storage_pending WHERE storage_key = ANY($1::text[])`,
      [keys],
    );
    return new Set(rows.map((row) => row.storage_key));
  }

  /** Runs `work` only if no other instance holds the sweeper's lock; returns null when it was held. */
  async withSweeperLock<T>(work: () => Promise<T>): Promise<T | null> {
    const client = await this.db.pool.connect();
    try {
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [
        ADVISORY_LOCKS.storageSweeper,
      ]);
      if (!rows[0]?.locked) return null;
      try {
        return await work();
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [ADVISORY_LOCKS.storageSweeper]).catch(() => undefined);
      }
    } finally {
      client.release();
    }
  }
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}
