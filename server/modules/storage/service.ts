/**
 * Storage: buckets, uploads, downloads, listings and signed URLs.
 *
 * Metadata and bytes agree because bytes are never written under a user's path: each
 * upload streams to a fresh key (`<bucket>/<uuid>`) that is marked pending in Postgres
 * before its first byte. Only when the backend holds every byte does one transaction
 * clear the mark and insert (or repoint) the object row; an overwritten or deleted
 * object's old key is marked pending in that same transaction and removed after
 * commit. So a key is always accounted for by a row or a mark, a crash at any point
 * leaves at most a marked or unreferenced key, and the sweeper removes those.
 */
import { randomUUID } from 'node:crypto';
import type { StorageObject } from '../../../client-sdk/src/wire.js';
import { Readable } from 'node:stream';
import { isUser, type Caller } from '../../internal/caller.js';
import { AppError, isAppError, type ErrorCode } from '../../internal/errors.js';
import { parseRuleForSaving, type RuleSavingScope } from '../../internal/rules/saving.js';
import { requireService } from '../../internal/guards.js';
import type { Tx } from '../../internal/db.js';
import type { Logger } from '../../internal/log.js';
import type { AuditEvent } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import {
  compileRuleToSql,
  evaluateRule,
  parseRule,
  ruleAuthFromCaller,
  type Root,
  type Rule,
} from '../../internal/rules/index.js';
import type { ByteRange, PutResult, StorageBackend } from './backends/index.js';
import {
  assertBucketName,
  assertMimePattern,
  encodeObjectPath,
  mimeAllowed,
  normalizeContentType,
  normalizeObjectPath,
  normalizePrefix,
  objectPathFromUrl,
} from './paths.js';
import {
  OBJECT_ALIAS,
  type BucketRow,
  type BucketRules,
  type ObjectRow,
  type QuotaBreach,
  type StorageRepository,
  type Usage,
} from './repository.js';
import { MAX_SIGNED_URL_SECONDS, type UrlSigner } from './signing.js';
import {
  canonicalTransform,
  outputContentType,
  outputFormat,
  transformable,
  variantEtag,
  variantKey,
  parseTransform,
  type ImageTransform,
  type ImageTransformer,
  type TransformFormat,
  type TransformQuery,
} from './transforms.js';

const DEFAULT_MAX_DIMENSION = 2500;

export type { StorageObject };

export type Bucket = BucketRow;

export interface BucketInput {
  name?: string;
  public?: boolean;
  max_file_size?: number | null;
  allowed_mime_types?: string[] | null;
  rules?: BucketRules;
  max_total_bytes?: number | null;
  max_bytes_per_user?: number | null;
}

/** A bucket as the admin API shows it: its settings and what it holds. */
export type BucketWithUsage = Bucket & { usage: Usage };

export interface BucketUsageReport {
  bucket: string;
  bytes: number;
  objects: number;
  /** Bytes held by uploads still in flight: they count against the quotas until they finish or fail. */
  reserved_bytes: number;
  users: Array<{ owner: string } & Usage>;
  next_cursor: string | null;
}

export interface UploadInput {
  bucket: string;
  /** The path as decoded from the URL, before validation. */
  rawPath: string;
  body: Readable;
  /** The Content-Type as sent (undefined when absent); stored normalized, see normalizeContentType. */
  contentType: string | undefined;
  upsert: boolean;
  /** Content-Length when the client sent one: lets an oversized upload fail before any byte is read. */
  declaredSize: number | null;
}

export interface ObjectAccess {
  /** `expires` and `sig` of a signed URL, when the request carries them. */
  signature?: { expires: string | undefined; sig: string | undefined };
  /** The image transform the request asks for: a signature must cover it. */
  transform?: ImageTransform;
}

/** A transformed image, ready to send: from the variant cache, or just made. */
export interface TransformedImage {
  etag: string;
  contentType: string;
  size: number;
  body: Readable | Buffer;
}

export interface StorageServiceOptions {
  /** Upper bound for every bucket, in bytes. */
  maxFileSize: number;
  publicUrl: string;
  /** How often an upload in progress refreshes its pending mark, in ms. */
  heartbeatMs: number;
  /** Age after which the sweeper treats an unfinished upload as abandoned. */
  orphanGraceSeconds: number;
  metrics?: StorageMetrics;
  /** Makes image transforms; without one, transform requests are refused. */
  transformer?: ImageTransformer;
  /** Where bucket changes record their admin event, in the change's transaction. */
  audit: AuditLog;
}

/** Counts for /metrics; the module wires them to Prometheus counters. */
export interface StorageMetrics {
  upload(result: 'stored' | 'rejected' | 'failed', bytes: number): void;
  download(bytes: number): void;
  /** Objects were deleted (one, several, a bucket's, or one replaced by a move). */
  remove?(): void;
}

const RULE_KINDS = ['read', 'write', 'delete'] as const;
type RuleKind = (typeof RULE_KINDS)[number];
const RULE_CACHE_LIMIT = 1000;
/** What a bucket rule is evaluated with (see `allowed` and `list`). */
const BUCKET_RULE_SCOPE: RuleSavingScope = {
  available: new Set<Root>(['auth', 'object', 'now']),
  describedAs: 'a bucket rule',
  hint: 'bucket rules see auth, object and now',
};

function toObject(row: ObjectRow): StorageObject {
  return {
    id: row.id,
    bucket: row.bucket,
    path: row.path,
    size: row.size,
    content_type: row.content_type,
    etag: row.etag,
    sha256: row.sha256,
    owner: row.owner,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

/** Backend failures that are not the client's doing become UNAVAILABLE: the store may be down. */
function backendError(error: unknown): AppError {
  if (isAppError(error)) return error;
  return new AppError('UNAVAILABLE', 'The storage backend failed; retry the request.', { cause: error });
}

export class StorageService {
  private readonly ruleCache = new Map<string, Rule>();
  /** Variants being made on this instance: concurrent requests for one share the work. */
  private readonly making = new Map<string, Promise<Buffer>>();
  readonly orphanGraceSeconds: number;

  constructor(
    private readonly repo: StorageRepository,
    readonly backend: StorageBackend,
    private readonly signer: UrlSigner,
    private readonly log: Logger,
    private readonly options: StorageServiceOptions,
  ) {
    this.orphanGraceSeconds = options.orphanGraceSeconds;
  }

  // Buckets (service key only)

  /**
   * Bucket changes take the admin event that records them (`audit`, built by the route) and
   * write it in the change's transaction: the change and its event commit together.
   */
  async createBucket(caller: Caller, input: BucketInput, audit?: AuditEvent): Promise<BucketWithUsage> {
    requireService(caller);
    const name = input.name ?? '';
    assertBucketName(name);
    const fields = this.bucketFields(input, {
      public: false,
      max_file_size: null,
      allowed_mime_types: null,
      rules: {},
      max_total_bytes: null,
      max_bytes_per_user: null,
    });
    const created = await this.repo.transaction(async (tx) => {
      const row = await this.repo.insertBucket(tx, { name, ...fields });
      if (audit) await this.options.audit.record(audit, { tx });
      return row;
    });
    return { ...created, usage: { bytes: 0, objects: 0 } };
  }

  async listBuckets(caller: Caller): Promise<BucketWithUsage[]> {
    requireService(caller);
    const [buckets, usage] = await Promise.all([this.repo.buckets(), this.repo.bucketUsage()]);
    return buckets.map((bucket) => ({ ...bucket, usage: usage.get(bucket.name) ?? { bytes: 0, objects: 0 } }));
  }

  async getBucket(caller: Caller, name: string): Promise<BucketWithUsage> {
    requireService(caller);
    const bucket = await this.bucket(name);
    return this.withUsage(bucket);
  }

  private async withUsage(bucket: Bucket): Promise<BucketWithUsage> {
    const usage = await this.repo.bucketUsage(bucket.name);
    return { ...bucket, usage: usage.get(bucket.name) ?? { bytes: 0, objects: 0 } };
  }

  async updateBucket(caller: Caller, name: string, input: BucketInput, audit?: AuditEvent): Promise<BucketWithUsage> {
    requireService(caller);
    const current = await this.bucket(name);
    const fields = this.bucketFields(input, current);
    const updated = await this.repo.transaction(async (tx) => {
      const row = await this.repo.updateBucket(tx, { name, ...fields });
      if (!row) throw new AppError('NOT_FOUND', `Bucket "${name}" does not exist.`);
      if (audit) await this.options.audit.record(audit, { tx });
      return row;
    });
    return this.withUsage(updated);
  }

  /** A bucket's usage, with one page of its owners' (or one owner's) usage, in owner order. */
  async bucketUsage(
    caller: Caller,
    name: string,
    query: { owner?: string; after?: string; limit?: number },
  ): Promise<BucketUsageReport> {
    requireService(caller);
    const bucket = await this.bucket(name);
    const limit = query.limit ?? 100;
    const [usage, reserved, users] = await Promise.all([
      this.repo.bucketUsage(bucket.name),
      this.repo.reservedBytes(bucket.name),
      this.repo.ownerUsage({
        bucket: bucket.name,
        owner: query.owner ?? null,
        after: query.after ?? null,
        limit: limit + 1,
      }),
    ]);
    const total = usage.get(bucket.name) ?? { bytes: 0, objects: 0 };
    const page = users.slice(0, limit);
    const last = page[page.length - 1];
    return {
      bucket: bucket.name,
      ...total,
      reserved_bytes: reserved,
      users: page,
      next_cursor: users.length > limit && last ? last.owner : null,
    };
  }

  /** Refuses a bucket that holds objects unless `force`, which deletes them with it. */
  async deleteBucket(caller: Caller, name: string, force: boolean, audit?: AuditEvent): Promise<void> {
    requireService(caller);
    const keys = await this.repo.transaction(async (tx) => {
      if (!(await this.repo.lockBucket(tx, name))) throw new AppError('NOT_FOUND', `Bucket "${name}" does not exist.`);
      let removed: string[] = [];
      if (force) removed = await this.repo.deleteAllObjects(tx, name);
      else if (await this.repo.hasObjects(tx, name)) {
        throw new AppError(
          'ALREADY_EXISTS',
          `Bucket "${name}" is not empty; delete with ?force=true to remove its objects.`,
          {
            details: { reason: 'bucket_not_empty' },
          },
        );
      }
      await this.repo.deleteBucket(tx, name);
      if (audit) await this.options.audit.record(audit, { tx });
      return removed;
    });
    if (keys.length > 0) this.options.metrics?.remove?.();
    for (const key of keys) await this.discardBytes(key);
  }

  private bucketFields(
    input: BucketInput,
    base: Omit<Bucket, 'name' | 'created_at' | 'updated_at'>,
  ): Omit<Bucket, 'name' | 'created_at' | 'updated_at'> {
    const allowed = input.allowed_mime_types === undefined ? base.allowed_mime_types : input.allowed_mime_types;
    if (allowed) for (const pattern of allowed) assertMimePattern(pattern);
    const rules = input.rules === undefined ? base.rules : input.rules;
    for (const kind of RULE_KINDS) {
      const source = rules[kind];
      if (source !== undefined) this.checkedRule(kind, source);
    }
    const maxFileSize = input.max_file_size === undefined ? base.max_file_size : input.max_file_size;
    if (maxFileSize !== null && maxFileSize > this.options.maxFileSize) {
      throw new AppError(
        'INVALID_REQUEST',
        `max_file_size cannot exceed the server's limit of ${this.options.maxFileSize} bytes (BASALT_STORAGE_MAX_FILE_SIZE).`,
      );
    }
    return {
      public: input.public ?? base.public,
      max_file_size: maxFileSize,
      allowed_mime_types: allowed && allowed.length > 0 ? allowed.map((m) => m.toLowerCase()) : null,
      rules,
      max_total_bytes: input.max_total_bytes === undefined ? base.max_total_bytes : input.max_total_bytes,
      max_bytes_per_user: input.max_bytes_per_user === undefined ? base.max_bytes_per_user : input.max_bytes_per_user,
    };
  }

  private async bucket(name: string): Promise<Bucket> {
    assertBucketName(name);
    const bucket = await this.repo.bucket(name);
    if (!bucket) throw new AppError('NOT_FOUND', `Bucket "${name}" does not exist.`);
    return bucket;
  }

  /**
   * Parses a rule as it is saved. A bucket rule is evaluated with `auth`, `object` and `now`
   * only, so a rule naming `doc` or `incoming` could never be true: it is refused here
   * rather than saved to deny every request.
   */
  private checkedRule(kind: RuleKind, source: string): Rule {
    return parseRuleForSaving(kind, source, BUCKET_RULE_SCOPE, (text) => this.rule(text));
  }

  private rule(source: string): Rule {
    let rule = this.ruleCache.get(source);
    if (!rule) {
      rule = parseRule(source);
      if (this.ruleCache.size >= RULE_CACHE_LIMIT) this.ruleCache.clear();
      this.ruleCache.set(source, rule);
    }
    return rule;
  }

  /** Rules see `object` as {path, size, content_type, owner, bucket}. */
  private allowed(caller: Caller, bucket: Bucket, kind: RuleKind, object: ObjectRow | CandidateObject): boolean {
    if (caller.role === 'service') return true;
    if (kind === 'read' && bucket.public) return true;
    const source = bucket.rules[kind];
    if (source === undefined) return false;
    return evaluateRule(this.rule(source), {
      auth: ruleAuthFromCaller(caller),
      object: {
        path: object.path,
        size: object.size,
        content_type: object.content_type,
        owner: object.owner,
        bucket: object.bucket,
      },
      now: new Date(),
    });
  }

  private assertAllowed(caller: Caller, bucket: Bucket, kind: RuleKind, object: ObjectRow | CandidateObject): void {
    if (this.allowed(caller, bucket, kind, object)) return;
    if (caller.role === 'public' && bucket.rules[kind] === undefined) {
      throw new AppError('UNAUTHENTICATED', `This bucket's objects need a token to ${kind}.`);
    }
    throw new AppError('FORBIDDEN', `The bucket's ${kind} rule does not allow this.`);
  }

  // Uploads

  async upload(caller: Caller, input: UploadInput): Promise<StorageObject> {
    return this.metered(() => {
      assertBucketName(input.bucket);
      return this.store(caller, { ...input, path: objectPathFromUrl(input.rawPath) });
    });
  }

  /** Counts a store (an upload or a copy) for /metrics. */
  private async metered(work: () => Promise<StorageObject>): Promise<StorageObject> {
    try {
      const object = await work();
      this.options.metrics?.upload('stored', object.size);
      return object;
    } catch (error) {
      this.options.metrics?.upload(isAppError(error) && error.status < 500 ? 'rejected' : 'failed', 0);
      throw error;
    }
  }

  /** Streams `input.body` to a new key and commits its row at `input.path` (already checked). */
  private async store(caller: Caller, input: Omit<UploadInput, 'rawPath'> & { path: string }): Promise<StorageObject> {
    const prepared = await this.prepareUpload(caller, { ...input, size: input.declaredSize });
    const heartbeat = setInterval(() => {
      this.repo
        .touchPending(prepared.key)
        .catch((error: unknown) => this.log.warn({ err: error, key: prepared.key }, 'pending touch failed'));
    }, this.options.heartbeatMs);
    heartbeat.unref();
    let stored;
    try {
      stored = await this.backend.put(prepared.key, input.body, { maxBytes: prepared.limit });
    } catch (error) {
      await this.discardBytes(prepared.key);
      throw backendError(error);
    } finally {
      clearInterval(heartbeat);
    }
    return this.commitUpload(caller, prepared, stored);
  }

  /**
   * Everything an upload checks before its first byte (bucket, path, type, size, rules with the
   * declared size, existing object, quotas), then a fresh key marked pending, with the declared
   * growth reserved against the quotas. `size` null: not known yet (checked at commit).
   */
  async beginUpload(
    caller: Caller,
    input: { bucket: string; rawPath: string; contentType: string | undefined; upsert: boolean; size: number | null },
  ): Promise<PreparedUpload> {
    return this.prepareUpload(caller, { ...input, path: objectPathFromUrl(input.rawPath) });
  }

  /** beginUpload for a path already decoded and normalized (uploads, copies). */
  private async prepareUpload(
    caller: Caller,
    input: { bucket: string; path: string; contentType: string | undefined; upsert: boolean; size: number | null },
  ): Promise<PreparedUpload> {
    assertBucketName(input.bucket);
    const path = input.path;
    const contentType = normalizeContentType(input.contentType);
    const found = await this.repo.bucketAndObject(input.bucket, path);
    const bucket = found.bucket;
    if (!bucket) throw new AppError('NOT_FOUND', `Bucket "${input.bucket}" does not exist.`);
    const limit = Math.min(bucket.max_file_size ?? this.options.maxFileSize, this.options.maxFileSize);
    if (!mimeAllowed(contentType, bucket.allowed_mime_types)) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Bucket "${bucket.name}" does not accept ${contentType}.`, {
        details: { allowed_mime_types: bucket.allowed_mime_types },
      });
    }
    if (input.size !== null && input.size > limit) {
      throw new AppError('PAYLOAD_TOO_LARGE', `The file is larger than the limit of ${limit} bytes.`, {
        details: { max_file_size: limit },
      });
    }
    const owner = isUser(caller) ? caller.uid : null;
    const existing = found.object;
    if (existing && !input.upsert) throw this.exists(bucket.name, path);
    const prepared: PreparedUpload = {
      bucket,
      path,
      contentType,
      owner,
      ruleOwner: existing ? existing.owner : owner,
      upsert: input.upsert,
      limit,
      key: `${bucket.name}/${randomUUID()}`,
    };
    // Checked before any byte is stored (with the declared size), and again with the real one.
    if (existing) this.assertAllowed(caller, bucket, 'write', existing);
    this.assertAllowed(caller, bucket, 'write', candidateOf(prepared, existing, input.size ?? 0));
    // A declared size is reserved against the quotas before the first byte; an undeclared one is
    // checked when the upload commits (commitUpload), which is what makes both exact under concurrency.
    const charged = existing ? existing.owner : owner;
    const expectedGrowth = input.size === null ? 0 : input.size - (existing?.size ?? 0);
    await this.reserve(bucket, charged, prepared.key, expectedGrowth);
    return prepared;
  }

  /**
   * Makes stored bytes an object: in one transaction, clears the key's pending mark and inserts
   * (or repoints) the object row, checking rules and quotas against the object as it is now;
   * `alsoInTx` joins that transaction. On failure the bytes are discarded.
   */
  async commitUpload(
    caller: Caller,
    prepared: PreparedUpload,
    stored: PutResult,
    alsoInTx?: (tx: Tx) => Promise<void>,
  ): Promise<StorageObject> {
    const { bucket, path, key } = prepared;
    let previousKey: string | null = null;
    let row: ObjectRow;
    try {
      this.assertAllowed(caller, bucket, 'write', candidateOf(prepared, null, stored.size));
      const fields = {
        bucket: bucket.name,
        path,
        storageKey: key,
        size: stored.size,
        contentType: prepared.contentType,
        etag: stored.etag,
        sha256: stored.sha256,
        owner: prepared.owner,
      };
      row = await this.repo.transaction(async (tx) => {
        if (!(await this.repo.removePending(tx, key))) {
          throw new AppError('UNAVAILABLE', 'The upload took too long and was discarded; retry it.');
        }
        for (;;) {
          const current = await this.repo.lockObject(tx, bucket.name, path);
          await this.assertWithinQuota(
            tx,
            bucket,
            current ? current.owner : prepared.owner,
            stored.size - (current?.size ?? 0),
          );
          if (current) {
            if (!prepared.upsert) throw this.exists(bucket.name, path);
            this.assertAllowed(caller, bucket, 'write', current);
            await this.repo.addPending(tx, current.storage_key, 'delete');
            previousKey = current.storage_key;
            const replaced = await this.repo.replaceObject(tx, current.id, fields);
            if (alsoInTx) await alsoInTx(tx);
            return replaced;
          }
          const inserted = await this.repo.insertObject(tx, fields);
          if (inserted) {
            if (alsoInTx) await alsoInTx(tx);
            return inserted;
          }
          // A concurrent upload inserted the path since the lock attempt: decide again against it.
        }
      });
    } catch (error) {
      await this.discardBytes(key);
      throw error;
    }
    if (previousKey !== null) await this.discardBytes(previousKey);
    return toObject(row);
  }

  /** The bucket an upload goes to, as it is now (NOT_FOUND when it was deleted meanwhile). */
  async bucketForUpload(name: string): Promise<Bucket> {
    return this.bucket(name);
  }

  /** Gives up an upload begun with beginUpload: its bytes (if any) and its mark go. */
  async abandonUpload(key: string): Promise<void> {
    await this.discardBytes(key);
  }

  /**
   * Marks an upload's key pending, holding `bytes` against the bucket's quotas while it streams
   * (QUOTA_EXCEEDED, and nothing marked, when they would pass a limit). The reservation ends with
   * the mark: when the upload commits, fails, or is swept.
   */
  private async reserve(bucket: Bucket, owner: string | null, key: string, bytes: number): Promise<void> {
    if (!hasQuota(bucket) || bytes <= 0) {
      await this.repo.addPending(this.repo.pool, key, 'upload');
      return;
    }
    await this.repo.transaction(async (tx) => {
      const breach = await this.repo.quotaBreach(tx, { ...quotaLimits(bucket), bucket: bucket.name, owner, bytes });
      if (breach) throw quotaExceeded(breach);
      await this.repo.addPending(tx, key, 'upload', { bucket: bucket.name, owner, bytes });
    });
  }

  /** In a commit's transaction: QUOTA_EXCEEDED when growing the bucket by `growth` bytes passes a quota. */
  async assertWithinQuota(tx: Tx, bucket: Bucket, owner: string | null, growth: number): Promise<void> {
    if (!hasQuota(bucket) || growth <= 0) return;
    const breach = await this.repo.quotaBreach(tx, {
      ...quotaLimits(bucket),
      bucket: bucket.name,
      owner,
      bytes: growth,
    });
    if (breach) throw quotaExceeded(breach);
  }

  private exists(bucket: string, path: string): AppError {
    return new AppError(
      'ALREADY_EXISTS',
      `"${path}" already exists in bucket "${bucket}"; send x-upsert: true to overwrite.`,
    );
  }

  /**
   * Deletes a key's bytes, then its pending mark. If either fails (crash, store down)
   * the mark, or the unreferenced key, stays for the sweeper.
   */
  private async discardBytes(key: string): Promise<void> {
    try {
      for (const variant of await this.repo.deleteVariantsOf(key)) await this.backend.delete(variant);
      await this.backend.delete(key);
      await this.repo.removePending(this.repo.pool, key);
    } catch (error) {
      this.log.warn({ err: error, key }, 'could not discard bytes now; the sweeper will');
    }
  }

  // Reads

  /** The object a GET or HEAD may serve: by a valid signature, a public bucket, or the read rule. */
  async objectForRead(
    caller: Caller,
    bucketName: string,
    rawPath: string,
    access: ObjectAccess = {},
  ): Promise<StorageObject & { storage_key: string; public: boolean }> {
    const path = objectPathFromUrl(rawPath);
    assertBucketName(bucketName);
    if (access.signature) {
      const transform = access.transform ? canonicalTransform(access.transform) : '';
      this.signer.verify(bucketName, path, access.signature.expires, access.signature.sig, new Date(), transform);
    }
    const { bucket, object: row } = await this.repo.bucketAndObject(bucketName, path);
    if (!bucket) throw new AppError('NOT_FOUND', `Bucket "${bucketName}" does not exist.`);
    if (!row) throw new AppError('NOT_FOUND', `"${path}" does not exist in bucket "${bucket.name}".`);
    if (!access.signature) this.assertAllowed(caller, bucket, 'read', row);
    return { ...toObject(row), storage_key: row.storage_key, public: bucket.public };
  }

  async openBytes(storageKey: string, range?: ByteRange, length = 0): Promise<Readable> {
    try {
      const stream = await this.backend.get(storageKey, range);
      this.options.metrics?.download(length);
      return stream;
    } catch (error) {
      throw backendError(error);
    }
  }

  /** A transform's parameters validated against this server's bounds (INVALID_REQUEST). */
  parseTransform(query: TransformQuery | ImageTransform): ImageTransform {
    return parseTransform(query, this.options.transformer?.config.maxDimension ?? DEFAULT_MAX_DIMENSION);
  }

  /**
   * The object's image transformed: the cached variant when there is one, else made now
   * (UNSUPPORTED_MEDIA_TYPE for objects that are not images). A variant is cached under a key
   * derived from the original's storage key, which every overwrite changes, so a stale one is
   * never found. Two instances making one variant at once write the same bytes to the same key:
   * the write is idempotent, and on each instance concurrent requests share one computation.
   */
  async transformedImage(
    object: StorageObject & { storage_key: string },
    transform: ImageTransform,
  ): Promise<TransformedImage> {
    const { transformer, format, canonical, etag } = this.variantOf(object, transform);
    if (object.size > transformer.config.maxInputBytes) {
      throw new AppError(
        'PAYLOAD_TOO_LARGE',
        `Images over ${transformer.config.maxInputBytes} bytes are not transformed.`,
        {
          details: { max_input_bytes: transformer.config.maxInputBytes },
        },
      );
    }
    const key = variantKey(object.storage_key, canonical);
    const contentType = outputContentType(format);
    const cached = await this.repo.variant(key);
    if (cached) {
      try {
        return { etag, contentType, size: cached.size, body: await this.backend.get(key) };
      } catch (error) {
        // Its bytes are gone (swept, or a store that lost them): make it again below.
        if (!isAppError(error) || error.code !== 'NOT_FOUND') throw backendError(error);
      }
    }
    let making = this.making.get(key);
    if (!making) {
      making = this.makeVariant(object, transform, format, key, canonical).finally(() => this.making.delete(key));
      this.making.set(key, making);
    }
    const bytes = await making;
    return { etag, contentType, size: bytes.length, body: bytes };
  }

  /**
   * What a transform of this object makes: its format, canonical parameters and entity tag,
   * known without any work (so If-None-Match is answered without making the image).
   * UNSUPPORTED_MEDIA_TYPE when the object is not an image.
   */
  variantOf(
    object: StorageObject,
    transform: ImageTransform,
  ): { transformer: ImageTransformer; format: TransformFormat; canonical: string; etag: string } {
    const transformer = this.options.transformer;
    if (!transformer || !transformable(object.content_type)) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Only images can be transformed; this is ${object.content_type}.`, {
        details: { content_type: object.content_type },
      });
    }
    const format = outputFormat(transform, object.content_type);
    const canonical = canonicalTransform({ ...transform, format });
    return { transformer, format, canonical, etag: variantEtag(object.etag, canonical) };
  }

  private async makeVariant(
    object: StorageObject & { storage_key: string },
    transform: ImageTransform,
    format: TransformFormat,
    key: string,
    canonical: string,
  ): Promise<Buffer> {
    const transformer = this.options.transformer as ImageTransformer;
    const source = await this.openBytes(object.storage_key);
    const bytes = await transformer.transform(source, transform, format);
    try {
      await this.backend.put(key, Readable.from([bytes]), { maxBytes: bytes.length });
      await this.repo.insertVariant({
        storageKey: key,
        objectKey: object.storage_key,
        params: canonical,
        size: bytes.length,
        contentType: outputContentType(format),
      });
    } catch (error) {
      // Not cached this time; the image is still served, and made again next time.
      this.log.warn({ err: error, key }, 'could not cache an image variant');
    }
    return bytes;
  }

  async remove(caller: Caller, bucketName: string, rawPath: string): Promise<void> {
    const path = objectPathFromUrl(rawPath);
    const bucket = await this.bucket(bucketName);
    const key = await this.repo.transaction(async (tx) => {
      const row = await this.repo.lockObject(tx, bucket.name, path);
      if (!row) throw new AppError('NOT_FOUND', `"${path}" does not exist in bucket "${bucket.name}".`);
      this.assertAllowed(caller, bucket, 'delete', row);
      await this.repo.deleteObject(tx, row.id);
      await this.repo.addPending(tx, row.storage_key, 'delete');
      return row.storage_key;
    });
    this.options.metrics?.remove?.();
    await this.discardBytes(key);
  }

  /**
   * Deletes several objects of one bucket in one transaction, each on its own terms: the
   * answer has one result per path, in order (a path that is invalid, absent or that the
   * delete rule refuses gets its error, the others are deleted). A path named twice is
   * deleted once; its later mentions are NOT_FOUND.
   */
  async removeMany(
    caller: Caller,
    bucketName: string,
    rawPaths: readonly string[],
  ): Promise<{ results: RemoveResult[] }> {
    const bucket = await this.bucket(bucketName);
    const checked = rawPaths.map((raw) => {
      try {
        return { raw, path: normalizeObjectPath(raw), error: null };
      } catch (error) {
        if (!isAppError(error)) throw error;
        return { raw, path: null, error };
      }
    });
    const valid = [...new Set(checked.flatMap((entry) => (entry.path === null ? [] : [entry.path])))];
    const { results, keys } = await this.repo.transaction(async (tx) => {
      const rows = new Map((await this.repo.lockObjects(tx, bucket.name, valid)).map((row) => [row.path, row]));
      const doomed: ObjectRow[] = [];
      const results = checked.map(({ raw, path, error }): RemoveResult => {
        if (path === null) return failed(raw, error);
        const row = rows.get(path);
        rows.delete(path);
        if (!row) return failed(raw, new AppError('NOT_FOUND', `"${path}" does not exist in bucket "${bucket.name}".`));
        try {
          this.assertAllowed(caller, bucket, 'delete', row);
        } catch (refused) {
          if (!isAppError(refused)) throw refused;
          return failed(raw, refused);
        }
        doomed.push(row);
        return { path, deleted: true };
      });
      await this.repo.deleteObjectsMarkingKeys(tx, doomed);
      return { results, keys: doomed.map((row) => row.storage_key) };
    });
    if (keys.length > 0) this.options.metrics?.remove?.();
    for (const key of keys) await this.discardBytes(key);
    return { results };
  }

  /**
   * Moves an object to another path (or bucket) in one transaction: the source's row goes
   * and the destination's row comes with the same bytes (nothing is copied), so readers see
   * the object at one place or the other, never both or neither. Needs the source's read and
   * delete rules and the destination's write rule; the destination bucket's size, type and quota
   * limits apply. The object keeps its owner. Triggers see a delete and an upload.
   */
  async move(caller: Caller, input: TransferInput): Promise<StorageObject> {
    const { source, target } = await this.transferEnds(input);
    const replacedKeys: string[] = [];
    const row = await this.repo.transaction(async (tx) => {
      const from = await this.repo.lockObject(tx, source.bucket.name, source.path);
      if (!from) throw this.missing(source.bucket.name, source.path);
      this.assertAllowed(caller, source.bucket, 'read', from);
      this.assertAllowed(caller, source.bucket, 'delete', from);
      this.assertFits(target.bucket, from.size, from.content_type);
      const candidate = { ...from, bucket: target.bucket.name, path: target.path };
      this.assertAllowed(caller, target.bucket, 'write', candidate);
      const fields = {
        bucket: target.bucket.name,
        path: target.path,
        storageKey: from.storage_key,
        size: from.size,
        contentType: from.content_type,
        etag: from.etag,
        sha256: from.sha256,
        owner: from.owner,
      };
      await this.repo.deleteObject(tx, from.id);
      for (;;) {
        const current = await this.repo.lockObject(tx, target.bucket.name, target.path);
        if (current) {
          if (!input.upsert) throw this.exists(target.bucket.name, target.path);
          this.assertAllowed(caller, target.bucket, 'write', current);
          await this.repo.deleteObjectsMarkingKeys(tx, [current]);
          replacedKeys.push(current.storage_key);
        }
        // Across buckets the object's bytes arrive in the target bucket, charged to its owner
        // there; checked once the replaced object (if any) no longer counts. Within a bucket a
        // move changes neither the bucket's total nor the owner's.
        if (target.bucket.name !== source.bucket.name) {
          await this.assertWithinQuota(tx, target.bucket, from.owner, from.size);
        }
        const inserted = await this.repo.insertObject(tx, fields);
        if (inserted) return inserted;
        // A concurrent upload took the destination since the lock: decide again against it.
      }
    });
    // A move keeps the stored total unless it replaced an object at the destination.
    if (replacedKeys.length > 0) this.options.metrics?.remove?.();
    // The replaced object's bytes go, and with them its image variants (discardBytes). The moved
    // object keeps its storage key, so its variants stay valid and follow it.
    for (const key of replacedKeys) await this.discardBytes(key);
    return toObject(row);
  }

  /**
   * Copies an object's bytes to another path (or bucket) as a new object owned by the
   * caller: the source's read rule and the destination's write rule decide, and the copy is
   * stored exactly as an upload is (streamed to a fresh key, its row committed only once
   * every byte is there, the bucket's limits enforced).
   */
  async copy(caller: Caller, input: TransferInput): Promise<StorageObject> {
    const { source, target } = await this.transferEnds(input);
    const from = (await this.repo.bucketAndObject(source.bucket.name, source.path)).object;
    if (!from) throw this.missing(source.bucket.name, source.path);
    this.assertAllowed(caller, source.bucket, 'read', from);
    this.assertFits(target.bucket, from.size, from.content_type);
    const body = from.size === 0 ? Readable.from([]) : await this.openBytes(from.storage_key, undefined, from.size);
    try {
      return await this.metered(() =>
        this.store(caller, {
          bucket: target.bucket.name,
          path: target.path,
          body,
          contentType: from.content_type,
          upsert: input.upsert ?? false,
          declaredSize: from.size,
        }),
      );
    } finally {
      body.destroy();
    }
  }

  private async transferEnds(input: TransferInput): Promise<{
    source: { bucket: Bucket; path: string };
    target: { bucket: Bucket; path: string };
  }> {
    const sourcePath = normalizeObjectPath(input.from);
    const targetPath = normalizeObjectPath(input.to);
    const sourceBucket = await this.bucket(input.bucket);
    const targetBucket = input.toBucket === undefined ? sourceBucket : await this.bucket(input.toBucket);
    if (sourceBucket.name === targetBucket.name && sourcePath === targetPath) {
      throw new AppError('INVALID_REQUEST', 'The source and the destination are the same object.', {
        details: { field: 'to' },
      });
    }
    return { source: { bucket: sourceBucket, path: sourcePath }, target: { bucket: targetBucket, path: targetPath } };
  }

  /** The bucket's size limit and types, checked before a move or copy. */
  private assertFits(bucket: Bucket, size: number, contentType: string): void {
    const limit = Math.min(bucket.max_file_size ?? this.options.maxFileSize, this.options.maxFileSize);
    if (size > limit) {
      throw new AppError('PAYLOAD_TOO_LARGE', `The file is larger than the limit of ${limit} bytes.`, {
        details: { max_file_size: limit },
      });
    }
    if (!mimeAllowed(contentType, bucket.allowed_mime_types)) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Bucket "${bucket.name}" does not accept ${contentType}.`, {
        details: { allowed_mime_types: bucket.allowed_mime_types },
      });
    }
  }

  private missing(bucket: string, path: string): AppError {
    return new AppError('NOT_FOUND', `"${path}" does not exist in bucket "${bucket}".`);
  }

  async list(
    caller: Caller,
    bucketName: string,
    query: { prefix?: string; limit?: number; after?: string },
  ): Promise<{ objects: StorageObject[]; next_cursor: string | null }> {
    const bucket = await this.bucket(bucketName);
    const prefix = normalizePrefix(query.prefix);
    const limit = query.limit ?? 100;
    const params: unknown[] = [];
    let filterSql: string | null = null;
    if (caller.role !== 'service' && !bucket.public) {
      const source = bucket.rules.read;
      if (source === undefined) {
        if (caller.role === 'public')
          throw new AppError('UNAUTHENTICATED', "This bucket's objects need a token to read.");
        throw new AppError('FORBIDDEN', `Bucket "${bucket.name}" has no read rule: only the service key may list it.`);
      }
      filterSql = compileRuleToSql(this.rule(source), {
        auth: ruleAuthFromCaller(caller),
        now: new Date(),
        params,
        subject: 'object',
        rowAlias: OBJECT_ALIAS,
      });
    }
    const rows = await this.repo.listObjects({
      bucket: bucket.name,
      prefix,
      after: query.after ?? null,
      limit: limit + 1,
      filterSql,
      params,
    });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { objects: page.map(toObject), next_cursor: rows.length > limit && last ? last.path : null };
  }

  /** A URL that reads one object without a token until it expires; the signer must be able to read it. */
  async signedUrl(
    caller: Caller,
    bucketName: string,
    rawPath: string,
    expiresIn: number,
    transform?: ImageTransform,
  ): Promise<{ url: string; expires_at: string }> {
    if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_SIGNED_URL_SECONDS) {
      throw new AppError(
        'INVALID_REQUEST',
        `expires_in must be a whole number of seconds from 1 to ${MAX_SIGNED_URL_SECONDS}.`,
      );
    }
    const object = await this.objectForRead(caller, bucketName, rawPath);
    const expires = Math.floor(Date.now() / 1000) + expiresIn;
    const canonical = transform ? canonicalTransform(transform) : '';
    const sig = this.signer.signature(object.bucket, object.path, expires, canonical);
    const query = `${canonical === '' ? '' : `${canonical}&`}expires=${expires}&sig=${sig}`;
    const url = `${this.options.publicUrl}/v1/storage/${object.bucket}/${encodeObjectPath(object.path)}?${query}`;
    return { url, expires_at: new Date(expires * 1000).toISOString() };
  }
}

/** A move or copy: from `bucket`/`from` to `toBucket` (default: the same bucket)/`to`. */
export interface TransferInput {
  bucket: string;
  from: string;
  to: string;
  toBucket?: string;
  /** Replace an object at the destination instead of failing with ALREADY_EXISTS. */
  upsert?: boolean;
}

/** One path's outcome in a bulk delete. */
export type RemoveResult =
  { path: string; deleted: true } | { path: string; deleted: false; error: { code: ErrorCode; message: string } };

function failed(path: string, error: AppError): RemoveResult {
  return { path, deleted: false, error: { code: error.code, message: error.message } };
}

function hasQuota(bucket: Bucket): boolean {
  return bucket.max_total_bytes !== null || bucket.max_bytes_per_user !== null;
}

function quotaLimits(bucket: Bucket): { maxTotalBytes: number | null; maxBytesPerUser: number | null } {
  return { maxTotalBytes: bucket.max_total_bytes, maxBytesPerUser: bucket.max_bytes_per_user };
}

export function quotaExceeded(breach: QuotaBreach): AppError {
  const scope = breach.quota === 'max_total_bytes' ? "the bucket's" : "the owner's";
  return new AppError(
    'QUOTA_EXCEEDED',
    `The upload would pass ${scope} quota of ${breach.limit} bytes (${breach.used} bytes used).`,
    { details: { quota: breach.quota, used: breach.used, limit: breach.limit } },
  );
}

/** An upload that passed its checks and holds a pending key (see beginUpload). */
export interface PreparedUpload {
  bucket: Bucket;
  path: string;
  contentType: string;
  /** The uploading user, or null (service key, public caller). */
  owner: string | null;
  /** The owner rules see: the existing object's when it is an overwrite. */
  ruleOwner: string | null;
  upsert: boolean;
  /** Largest size the object may have, in bytes. */
  limit: number;
  key: string;
}

/** The object as rules see it when `prepared` stores `size` bytes (an overwrite keeps its owner). */
function candidateOf(prepared: PreparedUpload, existing: ObjectRow | null, size: number): CandidateObject {
  return {
    bucket: prepared.bucket.name,
    path: prepared.path,
    size,
    content_type: prepared.contentType,
    owner: existing ? existing.owner : prepared.ruleOwner,
  };
}

interface CandidateObject {
  bucket: string;
  path: string;
  size: number;
  content_type: string;
  owner: string | null;
}
