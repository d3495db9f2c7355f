import { and, asc, eq, gte, lt, sql } from 'drizzle-orm';
import { buckets, objects, storagePending } from '../../db/schema.js';
import type { StorageObject } from '../../../client-sdk/src/wire.js';
import type { Database, Queryable, Tx } from '../../internal/db.js';
import type { ResumableState } from './backends/index.js';
import { ADVISORY_LOCKS } from '../../internal/advisory-locks.js';
import { ISO_TIMESTAMP, isoTimestamp, mapDatabaseErrors, runQuery } from '../../internal/repository.js';

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
  /** Quota on the bytes of every object of the bucket together; null = none. */
  max_total_bytes: number | null;
  /** Quota on the bytes of each owner's objects; null = none. */
  max_bytes_per_user: number | null;
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

const ISO = ISO_TIMESTAMP;
const BUCKET_COLUMNS =
  `name, public, max_file_size::float8 AS max_file_size, allowed_mime_types, rules, ` +
  `max_total_bytes::float8 AS max_total_bytes, max_bytes_per_user::float8 AS max_bytes_per_user, ` +
  `to_char(created_at AT TIME ZONE 'UTC', ${ISO}) AS created_at, to_char(updated_at AT TIME ZONE 'UTC', ${ISO}) AS updated_at`;
const OBJECT_COLUMNS =
  `o.id, o.bucket, o.path, o.storage_key, o.size::float8 AS size, o.content_type, o.etag, o.sha256, o.owner, ` +
  `to_char(o.created_at AT TIME ZONE 'UTC', ${ISO}) AS created_at, to_char(o.updated_at AT TIME ZONE 'UTC', ${ISO}) AS updated_at`;

export const OBJECT_ALIAS = 'o';

export interface UploadRow {
  id: string;
  bucket: string;
  path: string;
  storage_key: string;
  content_type: string;
  upsert: boolean;
  owner: string | null;
  creator: string;
  upload_length: number;
  upload_offset: number;
  metadata: string;
  backend_state: ResumableState;
  expires_at: string;
}

export interface NewUpload {
  id: string;
  bucket: string;
  path: string;
  storageKey: string;
  contentType: string;
  upsert: boolean;
  owner: string | null;
  creator: string;
  length: number;
  metadata: string;
  backendState: ResumableState;
  expiresInSeconds: number;
}

const UPLOAD_COLUMNS =
  `u.id, u.bucket, u.path, u.storage_key, u.content_type, u.upsert, u.owner, u.creator, ` +
  `u.upload_length::float8 AS upload_length, u.upload_offset::float8 AS upload_offset, u.metadata, u.backend_state, ` +
  `to_char(u.expires_at AT TIME ZONE 'UTC', ${ISO}) AS expires_at`;

export interface Usage {
  bytes: number;
  objects: number;
}

/** Bytes an upload holds against its bucket's quotas while it streams. */
export interface Reservation {
  bucket: string;
  owner: string | null;
  bytes: number;
}

/** A write of `bytes` more, charged to a bucket and an owner, under the bucket's quotas. */
export interface QuotaCharge extends Reservation {
  maxTotalBytes: number | null;
  maxBytesPerUser: number | null;
}

export interface QuotaBreach {
  quota: 'max_total_bytes' | 'max_bytes_per_user';
  /** Bytes stored and reserved when the write was refused. */
  used: number;
  limit: number;
}

/** A bucket as the builder selects it: the wire's shape (BucketRow), timestamps as ISO text. */
const BUCKET_FIELDS = {
  name: buckets.name,
  public: buckets.public,
  max_file_size: buckets.maxFileSize,
  allowed_mime_types: buckets.allowedMimeTypes,
  rules: sql<BucketRules>`${buckets.rules}`,
  max_total_bytes: buckets.maxTotalBytes,
  max_bytes_per_user: buckets.maxBytesPerUser,
  created_at: isoTimestamp(buckets.createdAt),
  updated_at: isoTimestamp(buckets.updatedAt),
};

type BucketFields = Omit<BucketRow, 'created_at' | 'updated_at'>;

function bucketColumns(bucket: BucketFields): Omit<typeof buckets.$inferInsert, 'name'> {
  return {
    public: bucket.public,
    maxFileSize: bucket.max_file_size,
    allowedMimeTypes: bucket.allowed_mime_types,
    rules: { ...bucket.rules },
    maxTotalBytes: bucket.max_total_bytes,
    maxBytesPerUser: bucket.max_bytes_per_user,
  };
}

/**
 * SQL of storage: buckets, object metadata and the pending-keys bookkeeping. Bucket admin
 * and the sweeper's plain reads use drizzle's builder; the statements of uploads,
 * downloads and deletes stay hand-written (they run on every request, and the builder
 * would add its own cost to each), as do listings (a compiled rule filter), the lock and
 * the multi-table statements.
 */
export class StorageRepository {
  constructor(private readonly db: Database) {}

  get pool(): Queryable {
    return this.db.pool;
  }

  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return mapDatabaseErrors(() => this.db.transaction(work), 'The object');
  }

  // Buckets

  async insertBucket(tx: Tx, bucket: BucketFields): Promise<BucketRow> {
    const rows = await mapDatabaseErrors(
      () =>
        this.db
          .builder(tx)
          .insert(buckets)
          .values({ name: bucket.name, ...bucketColumns(bucket) })
          .returning(BUCKET_FIELDS),
      `Bucket "${bucket.name}"`,
    );
    return rows[0] as BucketRow;
  }

  async bucket(name: string): Promise<BucketRow | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle.select(BUCKET_FIELDS).from(buckets).where(eq(buckets.name, name)),
    );
    return rows[0] ?? null;
  }

  async buckets(): Promise<BucketRow[]> {
    return mapDatabaseErrors(() => this.db.drizzle.select(BUCKET_FIELDS).from(buckets).orderBy(asc(buckets.name)));
  }

  async updateBucket(tx: Tx, bucket: BucketFields): Promise<BucketRow | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(tx)
        .update(buckets)
        .set({ ...bucketColumns(bucket), updatedAt: sql`now()` })
        .where(eq(buckets.name, bucket.name))
        .returning(BUCKET_FIELDS),
    );
    return rows[0] ?? null;
  }

  async lockBucket(tx: Tx, name: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db.builder(tx).select({ name: buckets.name }).from(buckets).where(eq(buckets.name, name)).for('update'),
    );
    return rows.length > 0;
  }

  async hasObjects(tx: Tx, bucket: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db.builder(tx).select({ id: objects.id }).from(objects).where(eq(objects.bucket, bucket)).limit(1),
    );
    return rows.length > 0;
  }

  /** Deletes every object row of a bucket, marking their keys for deletion; returns the keys. */
  async deleteAllObjects(tx: Tx, bucket: string): Promise<string[]> {
    const rows = await runQuery<{ storage_key: string }>(
      tx,
      `WITH gone AS (DELETE FROM basalt.objects WHERE bucket = $1 RETURNING storage_key)
       INSERT INTO basalt.storage_pending (storage_key, reason) SELECT storage_key, 'delete' FROM gone
       RETURNING storage_key`,
      [bucket],
    );
    return rows.map((row) => row.storage_key);
  }

  async deleteBucket(tx: Tx, name: string): Promise<void> {
    await mapDatabaseErrors(
      () => this.db.builder(tx).delete(buckets).where(eq(buckets.name, name)),
      `Bucket "${name}"`,
    );
  }

  // Objects

  /** A bucket and one of its objects in one round trip (the hot path of downloads and uploads). */
  async bucketAndObject(bucket: string, path: string): Promise<{ bucket: BucketRow | null; object: ObjectRow | null }> {
    const rows = await runQuery<{ bucket: BucketRow | null; object: ObjectRow | null }>(
      this.db.pool,
      `SELECT (SELECT row_to_json(b) FROM (SELECT ${BUCKET_COLUMNS} FROM basalt.buckets WHERE name = $1) b) AS bucket,
              (SELECT row_to_json(x) FROM (SELECT ${OBJECT_COLUMNS} FROM basalt.objects o
                 WHERE o.bucket = $1 AND o.path = $2) x) AS object`,
      [bucket, path],
    );
    return rows[0] ?? { bucket: null, object: null };
  }

  async lockObject(tx: Tx, bucket: string, path: string): Promise<ObjectRow | null> {
    const rows = await runQuery<ObjectRow>(
      tx,
      `SELECT ${OBJECT_COLUMNS} FROM basalt.objects o WHERE o.bucket = $1 AND o.path = $2 FOR UPDATE`,
      [bucket, path],
    );
    return rows[0] ?? null;
  }

  /** Inserts unless the path is taken (then null: a concurrent upload won the race). */
  async insertObject(tx: Tx, object: NewObject): Promise<ObjectRow | null> {
    const rows = await runQuery<ObjectRow>(
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
    const rows = await runQuery<ObjectRow>(
      tx,
      `UPDATE basalt.objects AS o SET storage_key = $2, size = $3, content_type = $4, etag = $5, sha256 = $6,
         updated_at = now()
       WHERE o.id = $1 RETURNING ${OBJECT_COLUMNS}`,
      [id, object.storageKey, object.size, object.contentType, object.etag, object.sha256],
    );
    return rows[0] as ObjectRow;
  }

  async deleteObject(tx: Tx, id: string): Promise<void> {
    await runQuery(tx, `DELETE FROM basalt.objects WHERE id = $1`, [id]);
  }

  /** Locks the objects at `paths` of a bucket (those that exist), in path order so that concurrent calls cannot deadlock. */
  async lockObjects(tx: Tx, bucket: string, paths: string[]): Promise<ObjectRow[]> {
    return runQuery<ObjectRow>(
      tx,
      `SELECT ${OBJECT_COLUMNS} FROM basalt.objects o WHERE o.bucket = $1 AND o.path = ANY($2::text[])
       ORDER BY o.path FOR UPDATE`,
      [bucket, paths],
    );
  }

  /** Deletes object rows and marks their keys pending deletion, in the caller's transaction. */
  async deleteObjectsMarkingKeys(tx: Tx, rows: readonly ObjectRow[]): Promise<void> {
    if (rows.length === 0) return;
    await runQuery(
      tx,
      `WITH gone AS (DELETE FROM basalt.objects WHERE id = ANY($1::uuid[]) RETURNING storage_key)
       INSERT INTO basalt.storage_pending (storage_key, reason) SELECT storage_key, 'delete' FROM gone
       ON CONFLICT (storage_key) DO UPDATE SET reason = EXCLUDED.reason, touched_at = now()`,
      [rows.map((row) => row.id)],
    );
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
    return runQuery<ObjectRow>(
      this.db.pool,
      `SELECT ${OBJECT_COLUMNS} FROM basalt.objects o WHERE ${where.join(' AND ')}
       ORDER BY o.path LIMIT ${param(options.limit)}`,
      params,
    );
  }

  // Pending keys

  /** Marks a key pending; an upload's mark may hold a quota reservation (see reserve in the service). */
  async addPending(q: Queryable, key: string, reason: 'upload' | 'delete', reservation?: Reservation): Promise<void> {
    await runQuery(
      q,
      `INSERT INTO basalt.storage_pending (storage_key, reason, bucket, owner, reserved_bytes) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (storage_key) DO UPDATE SET reason = EXCLUDED.reason, touched_at = now(), reserved_bytes = 0`,
      [key, reason, reservation?.bucket ?? null, reservation?.owner ?? null, reservation?.bytes ?? 0],
    );
  }

  // Resumable uploads

  async insertUpload(q: Queryable, upload: NewUpload): Promise<UploadRow> {
    const rows = await runQuery<UploadRow>(
      q,
      `INSERT INTO basalt.storage_uploads AS u (id, bucket, path, storage_key, content_type, upsert, owner, creator,
         upload_length, metadata, backend_state, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12))
       RETURNING ${UPLOAD_COLUMNS}`,
      [
        upload.id,
        upload.bucket,
        upload.path,
        upload.storageKey,
        upload.contentType,
        upload.upsert,
        upload.owner,
        upload.creator,
        upload.length,
        upload.metadata,
        JSON.stringify(upload.backendState),
        upload.expiresInSeconds,
      ],
    );
    return rows[0] as UploadRow;
  }

  /** An upload that has not expired, or null. */
  async upload(id: string): Promise<UploadRow | null> {
    const rows = await runQuery<UploadRow>(
      this.db.pool,
      `SELECT ${UPLOAD_COLUMNS} FROM basalt.storage_uploads u WHERE u.id = $1 AND u.expires_at > now()`,
      [id],
    );
    return rows[0] ?? null;
  }

  /**
   * Takes the upload's lease for `seconds` when no one holds it (or the holder's ran out); null
   * when it is held. Returns the row as it is under the lease, `held` bytes included.
   */
  async leaseUpload(id: string, token: string, seconds: number): Promise<(UploadRow & { held: Buffer | null }) | null> {
    const rows = await runQuery<UploadRow & { held: Buffer | null }>(
      this.db.pool,
      `UPDATE basalt.storage_uploads AS u SET lease_token = $2, lease_until = now() + make_interval(secs => $3)
        WHERE u.id = $1 AND u.expires_at > now() AND (u.lease_until IS NULL OR u.lease_until < now())
        RETURNING ${UPLOAD_COLUMNS}, u.held`,
      [id, token, seconds],
    );
    return rows[0] ?? null;
  }

  async renewLease(id: string, token: string, seconds: number): Promise<void> {
    await runQuery(
      this.db.pool,
      `UPDATE basalt.storage_uploads SET lease_until = now() + make_interval(secs => $3)
        WHERE id = $1 AND lease_token = $2`,
      [id, token, seconds],
    );
  }

  async releaseLease(id: string, token: string): Promise<void> {
    await runQuery(
      this.db.pool,
      `UPDATE basalt.storage_uploads SET lease_token = NULL, lease_until = NULL WHERE id = $1 AND lease_token = $2`,
      [id, token],
    );
  }

  /**
   * Records an append's progress, pushing the expiry back and keeping the lease (the caller
   * releases it), or releasing it with `release` (an append's last record, in the same round
   * trip); null when the lease was lost (it ran out and another instance took over).
   */
  async recordProgress(
    id: string,
    token: string,
    progress: {
      offset: number;
      backendState: ResumableState;
      held: Buffer | null;
      expiresInSeconds: number;
      release?: boolean;
    },
  ): Promise<UploadRow | null> {
    const rows = await runQuery<UploadRow>(
      this.db.pool,
      `WITH updated AS (
         UPDATE basalt.storage_uploads SET upload_offset = $3, backend_state = $4, held = $5,
           expires_at = now() + make_interval(secs => $6), updated_at = now(),
           lease_token = CASE WHEN $7 THEN NULL ELSE lease_token END,
           lease_until = CASE WHEN $7 THEN NULL ELSE lease_until END
          WHERE id = $1 AND lease_token = $2
          RETURNING *),
       touched AS (UPDATE basalt.storage_pending p SET touched_at = now()
          FROM updated WHERE p.storage_key = updated.storage_key)
       SELECT ${UPLOAD_COLUMNS.replaceAll('u.', 'updated.')} FROM updated`,
      [
        id,
        token,
        progress.offset,
        JSON.stringify(progress.backendState),
        progress.held,
        progress.expiresInSeconds,
        progress.release === true,
      ],
    );
    return rows[0] ?? null;
  }

  async deleteUpload(q: Queryable, id: string): Promise<void> {
    await runQuery(q, `DELETE FROM basalt.storage_uploads WHERE id = $1`, [id]);
  }

  /** Expired uploads no one holds a lease on, oldest first. */
  async expiredUploads(limit: number): Promise<UploadRow[]> {
    return runQuery<UploadRow>(
      this.db.pool,
      `SELECT ${UPLOAD_COLUMNS} FROM basalt.storage_uploads u
        WHERE u.expires_at <= now() AND (u.lease_until IS NULL OR u.lease_until < now())
        ORDER BY u.expires_at LIMIT $1`,
      [limit],
    );
  }

  // Image transform variants

  async variant(storageKey: string): Promise<{ size: number; content_type: string } | null> {
    const rows = await runQuery<{ size: number; content_type: string }>(
      this.db.pool,
      `SELECT size::float8 AS size, content_type FROM basalt.storage_variants WHERE storage_key = $1`,
      [storageKey],
    );
    return rows[0] ?? null;
  }

  /** Records a variant whose bytes are stored; a concurrent writer of the same variant makes this a no-op. */
  async insertVariant(variant: {
    storageKey: string;
    objectKey: string;
    params: string;
    size: number;
    contentType: string;
  }): Promise<void> {
    await runQuery(
      this.db.pool,
      `INSERT INTO basalt.storage_variants (storage_key, object_key, params, size, content_type)
       VALUES ($1, $2, $3, $4, $5) ON CONFLICT (storage_key) DO NOTHING`,
      [variant.storageKey, variant.objectKey, variant.params, variant.size, variant.contentType],
    );
  }

  /** Forgets the variants of an original's bytes; returns their keys, whose bytes the caller deletes. */
  async deleteVariantsOf(objectKey: string): Promise<string[]> {
    const rows = await runQuery<{ storage_key: string }>(
      this.db.pool,
      `DELETE FROM basalt.storage_variants WHERE object_key = $1 RETURNING storage_key`,
      [objectKey],
    );
    return rows.map((row) => row.storage_key);
  }

  /**
   * Forgets up to `limit` variants older than `cutoff` whose original's bytes no object row
   * references any more (left behind by a crash between an overwrite and its cleanup, or made
   * while the original was being replaced); returns their keys.
   */
  async deleteStaleVariants(cutoff: Date, limit: number): Promise<string[]> {
    const rows = await runQuery<{ storage_key: string }>(
      this.db.pool,
      `DELETE FROM basalt.storage_variants v WHERE v.storage_key IN (
         SELECT s.storage_key FROM basalt.storage_variants s
          WHERE s.created_at < $1
            AND NOT EXISTS (SELECT 1 FROM basalt.objects o WHERE o.storage_key = s.object_key)
          LIMIT $2)
       RETURNING v.storage_key`,
      [cutoff, limit],
    );
    return rows.map((row) => row.storage_key);
  }

  // Quotas

  /**
   * Locks the usage rows a write of `bytes` more is charged to (the bucket's total first, then
   * the owner's: one order everywhere, so writers never deadlock) and returns the first quota
   * it would pass, or null. Bytes reserved by other uploads in flight count as used. The lock
   * is held until `tx` ends, so the caller's reservation or commit is decided alone.
   */
  async quotaBreach(tx: Tx, charge: QuotaCharge): Promise<QuotaBreach | null> {
    const scopes: Array<{ owner: string; quota: QuotaBreach['quota']; limit: number }> = [];
    if (charge.maxTotalBytes !== null)
      scopes.push({ owner: '', quota: 'max_total_bytes', limit: charge.maxTotalBytes });
    if (charge.maxBytesPerUser !== null && charge.owner !== null && charge.owner !== '') {
      scopes.push({ owner: charge.owner, quota: 'max_bytes_per_user', limit: charge.maxBytesPerUser });
    }
    if (scopes.length === 0) return null;
    const owners = scopes.map((scope) => scope.owner);
    await runQuery(
      tx,
      `INSERT INTO basalt.storage_usage (bucket, owner) SELECT $1, o FROM unnest($2::text[]) AS o
       ON CONFLICT (bucket, owner) DO NOTHING`,
      [charge.bucket, owners],
    );
    await runQuery(
      tx,
      `SELECT 1 FROM basalt.storage_usage WHERE bucket = $1 AND owner = ANY($2::text[]) ORDER BY owner FOR UPDATE`,
      [charge.bucket, owners],
    );
    // A statement of its own, after the lock: its snapshot sees every commit made before it.
    const rows = await runQuery<{ owner: string; used: number }>(
      tx,
      `SELECT u.owner, (u.bytes + coalesce((SELECT sum(p.reserved_bytes) FROM basalt.storage_pending p
           WHERE p.reserved_bytes > 0 AND p.bucket = u.bucket AND (u.owner = '' OR p.owner = u.owner)), 0))::float8 AS used
         FROM basalt.storage_usage u WHERE u.bucket = $1 AND u.owner = ANY($2::text[])`,
      [charge.bucket, owners],
    );
    for (const scope of scopes) {
      const used = rows.find((row) => row.owner === scope.owner)?.used ?? 0;
      if (used + charge.bytes > scope.limit) return { quota: scope.quota, used, limit: scope.limit };
    }
    return null;
  }

  /** The committed bytes and objects of each bucket, by name (buckets without objects are absent). */
  async bucketUsage(bucket?: string): Promise<Map<string, Usage>> {
    const rows = await runQuery<{ bucket: string; bytes: number; objects: number }>(
      this.db.pool,
      `SELECT bucket, bytes::float8 AS bytes, objects::float8 AS objects FROM basalt.storage_usage
        WHERE owner = '' AND ($1::text IS NULL OR bucket = $1)`,
      [bucket ?? null],
    );
    return new Map(rows.map((row) => [row.bucket, { bytes: row.bytes, objects: row.objects }]));
  }

  /** Bytes reserved by uploads in flight in a bucket. */
  async reservedBytes(bucket: string): Promise<number> {
    const rows = await runQuery<{ reserved: number }>(
      this.db.pool,
      `SELECT coalesce(sum(reserved_bytes), 0)::float8 AS reserved FROM basalt.storage_pending
        WHERE bucket = $1 AND reserved_bytes > 0`,
      [bucket],
    );
    return rows[0]?.reserved ?? 0;
  }

  /** Per-owner usage of a bucket in owner order, one page; `owner` narrows it to one. */
  async ownerUsage(options: {
    bucket: string;
    owner: string | null;
    after: string | null;
    limit: number;
  }): Promise<Array<{ owner: string } & Usage>> {
    return runQuery<{ owner: string } & Usage>(
      this.db.pool,
      `SELECT owner, bytes::float8 AS bytes, objects::float8 AS objects FROM basalt.storage_usage
        WHERE bucket = $1 AND owner <> '' AND ($2::text IS NULL OR owner = $2) AND ($3::text IS NULL OR owner > $3)
          AND (objects > 0 OR bytes > 0)
        ORDER BY owner LIMIT $4`,
      [options.bucket, options.owner, options.after, options.limit],
    );
  }

  async touchPending(key: string): Promise<void> {
    await runQuery(this.db.pool, `UPDATE basalt.storage_pending SET touched_at = now() WHERE storage_key = $1`, [key]);
  }

  /** Removes a pending mark; false when there was none (the sweeper claimed it). */
  async removePending(q: Queryable, key: string): Promise<boolean> {
    const rows = await runQuery(q, `DELETE FROM basalt.storage_pending WHERE storage_key = $1 RETURNING 1`, [key]);
    return rows.length > 0;
  }

  /** Pending keys not touched since `cutoff`, oldest first. */
  async stalePending(cutoff: Date, limit: number): Promise<string[]> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select({ storageKey: storagePending.storageKey })
        .from(storagePending)
        .where(lt(storagePending.touchedAt, cutoff))
        .orderBy(asc(storagePending.touchedAt))
        .limit(limit),
    );
    return rows.map((row) => row.storageKey);
  }

  /**
   * Claims a stale pending key for deletion. Deleting the mark first is what makes the
   * sweep safe: an upload that finishes later finds its mark gone and does not commit.
   * Returns 'delete' when the bytes may go, 'keep' when a row references them.
   */
  async claimStalePending(key: string, cutoff: Date): Promise<'delete' | 'keep' | 'gone'> {
    const rows = await runQuery<{ referenced: boolean }>(
      this.db.pool,
      `DELETE FROM basalt.storage_pending p WHERE p.storage_key = $1 AND p.touched_at < $2
         AND NOT EXISTS (SELECT 1 FROM basalt.storage_uploads u WHERE u.storage_key = p.storage_key)
       RETURNING EXISTS (SELECT 1 FROM basalt.objects o WHERE o.storage_key = p.storage_key) AS referenced`,
      [key, cutoff],
    );
    const row = rows[0];
    if (!row) return 'gone';
    return row.referenced ? 'keep' : 'delete';
  }

  /** True while an upload writes to `key`: its mark was touched since `cutoff`, or a resumable upload owns it. */
  async pendingTouchedSince(key: string, cutoff: Date): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .select({ storageKey: storagePending.storageKey })
        .from(storagePending)
        .where(and(eq(storagePending.storageKey, key), gte(storagePending.touchedAt, cutoff))),
    );
    if (rows.length > 0) return true;
    const uploads = await runQuery(this.db.pool, `SELECT 1 FROM basalt.storage_uploads WHERE storage_key = $1`, [key]);
    return uploads.length > 0;
  }

  /** Of `keys`, those that an object row or a pending mark accounts for. */
  async knownKeys(keys: string[]): Promise<Set<string>> {
    const rows = await runQuery<{ storage_key: string }>(
      this.db.pool,
      `SELECT storage_key FROM basalt.objects WHERE storage_key = ANY($1::text[])
       UNION SELECT storage_key FROM basalt.storage_pending WHERE storage_key = ANY($1::text[])
       UNION SELECT storage_key FROM basalt.storage_variants WHERE storage_key = ANY($1::text[])`,
      [keys],
    );
    return new Set(rows.map((row) => row.storage_key));
  }

  /** Runs `work` only if no other instance holds the sweeper's lock; returns null when it was held. */
  async withSweeperLock<T>(work: () => Promise<T>): Promise<T | null> {
    const client = await mapDatabaseErrors(() => this.db.pool.connect());
    try {
      const rows = await runQuery<{ locked: boolean }>(client, 'SELECT pg_try_advisory_lock($1) AS locked', [
        ADVISORY_LOCKS.storageSweeper,
      ]);
      if (!rows[0]?.locked) return null;
      try {
        return await work();
      } finally {
        await runQuery(client, 'SELECT pg_advisory_unlock($1)', [ADVISORY_LOCKS.storageSweeper]).catch(() => undefined);
      }
    } finally {
      client.release();
    }
  }
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}
