import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  customType,
  doublePrecision,
  integer,
  jsonb,
  pgSchema,
  primaryKey,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core';

/**
 * Drizzle's view of Basalt's system tables, which live in the `basalt` schema. The SQL files
 * in migrations/ are the source of truth for the database (DDL, triggers, indexes, checks);
 * this file mirrors every system table column for column, so repositories query them with
 * drizzle's builder and take their row types from here (`typeof table.$inferSelect`).
 * test/db-schema.test.ts fails when the two disagree: a migration that adds or changes a
 * table changes this file in the same commit.
 */
export const basalt = pgSchema('basalt');

/** Timestamps are read as Date (node-postgres' own parsing for timestamptz). */
const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** Hashes of tokens and states: raw bytes. */
const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });
/** A transaction id (`pg_current_xact_id()`), kept as text: it exceeds 2^53. */
const xid8 = customType<{ data: string; driverData: string }>({ dataType: () => 'xid8' });
/** A `pg_current_snapshot()`, read as its text form. */
const pgSnapshot = customType<{ data: string; driverData: string }>({ dataType: () => 'pg_snapshot' });

// -- bookkeeping (0001) ----------------------------------------------------------------------

export const migrations = basalt.table('migrations', {
  name: text('name').primaryKey(),
  checksum: text('checksum').notNull(),
  appliedAt: timestamptz('applied_at').notNull().defaultNow(),
});

/** Settings of the whole deployment, shared by every instance (key → value). */
export const instanceInfo = basalt.table('instance', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

// -- change log (0002, 0007) -----------------------------------------------------------------

export const changes = basalt.table('changes', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  txid: xid8('txid')
    .notNull()
    .default(sql`pg_current_xact_id()`),
  tableSchema: text('table_schema').notNull(),
  tableName: text('table_name').notNull(),
  op: text('op', { enum: ['insert', 'update', 'delete'] }).notNull(),
  rowId: text('row_id').notNull(),
  oldRow: jsonb('old_row'),
  newRow: jsonb('new_row'),
  createdAt: timestamptz('created_at')
    .notNull()
    .default(sql`clock_timestamp()`),
  /** {trace_id, parent_invocation_id} of the function run that made the change (0025). */
  origin: jsonb('origin'),
});

export const changeTicks = basalt.table('change_ticks', {
  id: bigint('id', { mode: 'number' }).primaryKey(),
  snapshot: pgSnapshot('snapshot').notNull(),
  createdAt: timestamptz('created_at')
    .notNull()
    .default(sql`clock_timestamp()`),
});

export const changeConsumers = basalt.table('change_consumers', {
  name: text('name').primaryKey(),
  tickId: bigint('tick_id', { mode: 'number' }).notNull(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

// -- auth (0003, 0004) -----------------------------------------------------------------------

export const users = basalt.table('users', {
  id: uuid('id').primaryKey().defaultRandom(),
  email: text('email'),
  emailConfirmedAt: timestamptz('email_confirmed_at'),
  isAnonymous: boolean('is_anonymous').notNull().default(false),
  userMetadata: jsonb('user_metadata').$type<Record<string, unknown>>().notNull().default({}),
  appMetadata: jsonb('app_metadata').$type<Record<string, unknown>>().notNull().default({}),
  bannedUntil: timestamptz('banned_until'),
  lastSignInAt: timestamptz('last_sign_in_at'),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

export const userSecrets = basalt.table('user_secrets', {
  userId: uuid('user_id')
    .primaryKey()
    .references(() => users.id, { onDelete: 'cascade' }),
  passwordHash: text('password_hash'),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

export const identities = basalt.table('identities', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  provider: text('provider').notNull(),
  subject: text('subject').notNull(),
  email: text('email'),
  identityData: jsonb('identity_data').$type<Record<string, unknown>>().notNull().default({}),
  lastSignInAt: timestamptz('last_sign_in_at'),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

export const sessions = basalt.table('sessions', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  refreshedAt: timestamptz('refreshed_at').notNull().defaultNow(),
  expiresAt: timestamptz('expires_at').notNull(),
  revokedAt: timestamptz('revoked_at'),
  revokedReason: text('revoked_reason'),
  userAgent: text('user_agent'),
  ip: text('ip'),
  /** Who started this session as its user ("view as", 0017); such a session cannot refresh. */
  impersonatedBy: text('impersonated_by'),
  /** The assurance level: `aal2` once a second factor was proven (0016). */
  aal: text('aal', { enum: ['aal1', 'aal2'] })
    .notNull()
    .default('aal1'),
});

export const sessionRevocations = basalt.table('session_revocations', {
  sessionId: uuid('session_id').primaryKey(),
  revokedAt: timestamptz('revoked_at')
    .notNull()
    .default(sql`clock_timestamp()`),
});

export const refreshTokens = basalt.table('refresh_tokens', {
  tokenHash: bytea('token_hash').primaryKey(),
  sessionId: uuid('session_id')
    .notNull()
    .references(() => sessions.id, { onDelete: 'cascade' }),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  rotatedAt: timestamptz('rotated_at'),
});

export const emailTokens = basalt.table('email_tokens', {
  tokenHash: bytea('token_hash').primaryKey(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  type: text('type', { enum: ['signup', 'recovery', 'magiclink', 'email_change'] }).notNull(),
  email: text('email').notNull(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  expiresAt: timestamptz('expires_at').notNull(),
  usedAt: timestamptz('used_at'),
  /** The password a sign-up chose, kept until its confirmation is spent (0015). */
  passwordHash: text('password_hash'),
});

export const signingKeys = basalt.table('signing_keys', {
  kid: text('kid').primaryKey(),
  alg: text('alg').notNull(),
  publicJwk: jsonb('public_jwk').$type<Record<string, unknown>>().notNull(),
  privateKey: text('private_key').notNull(),
  createdAt: timestamptz('created_at')
    .notNull()
    .default(sql`clock_timestamp()`),
  retiredAt: timestamptz('retired_at'),
});

export const oauthStates = basalt.table('oauth_states', {
  stateHash: bytea('state_hash').primaryKey(),
  provider: text('provider').notNull(),
  codeVerifier: text('code_verifier').notNull(),
  nonce: text('nonce').notNull(),
  redirectTo: text('redirect_to').notNull(),
  bindingHash: bytea('binding_hash').notNull(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  expiresAt: timestamptz('expires_at').notNull(),
});

// -- second factors (0016) --------------------------------------------------------------------

export const authFactors = basalt.table('auth_factors', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  type: text('type', { enum: ['totp'] }).notNull(),
  status: text('status', { enum: ['unverified', 'verified'] })
    .notNull()
    .default('unverified'),
  friendlyName: text('friendly_name'),
  /** Sealed (see SecretSealer). */
  secret: text('secret').notNull(),
  lastUsedStep: bigint('last_used_step', { mode: 'number' }),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  verifiedAt: timestamptz('verified_at'),
  lastUsedAt: timestamptz('last_used_at'),
});

export const recoveryCodes = basalt.table(
  'recovery_codes',
  {
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    codeHash: bytea('code_hash').notNull(),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    usedAt: timestamptz('used_at'),
  },
  (table) => [primaryKey({ columns: [table.userId, table.codeHash] })],
);

export const passkeys = basalt.table('passkeys', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  credentialId: text('credential_id').notNull().unique(),
  publicKey: bytea('public_key').notNull(),
  counter: bigint('counter', { mode: 'number' }).notNull().default(0),
  transports: text('transports')
    .array()
    .notNull()
    .default(sql`'{}'`),
  deviceType: text('device_type').notNull(),
  backedUp: boolean('backed_up').notNull().default(false),
  name: text('name'),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  lastUsedAt: timestamptz('last_used_at'),
});

export const webauthnChallenges = basalt.table('webauthn_challenges', {
  challenge: text('challenge').primaryKey(),
  purpose: text('purpose', { enum: ['register', 'signin'] }).notNull(),
  userId: uuid('user_id').references(() => users.id, { onDelete: 'cascade' }),
  /** Only a passkey of `userId` answers (none when null): a sign-in asked for an email. */
  bound: boolean('bound').notNull().default(false),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  expiresAt: timestamptz('expires_at').notNull(),
});

export const rateLimits = basalt.table(
  'rate_limits',
  {
    key: text('key').notNull(),
    windowStart: timestamptz('window_start').notNull(),
    count: integer('count').notNull().default(0),
  },
  (table) => [primaryKey({ columns: [table.key, table.windowStart] })],
);

// -- documents (0005); each collection's documents live in basalt_data."<name>" --------------

export const collections = basalt.table('collections', {
  name: text('name').primaryKey(),
  rules: jsonb('rules').$type<Record<string, unknown>>().notNull().default({}),
  schema: jsonb('schema'),
  indexes: jsonb('indexes').$type<unknown[]>().notNull().default([]),
  revision: bigint('revision', { mode: 'number' }).notNull().default(1),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
  // 0018: full-text search settings and references.
  search: jsonb('search'),
  refs: jsonb('refs').$type<Record<string, string>>().notNull().default({}),
});

// -- storage (0006) --------------------------------------------------------------------------

export const buckets = basalt.table('buckets', {
  name: text('name').primaryKey(),
  public: boolean('public').notNull().default(false),
  maxFileSize: bigint('max_file_size', { mode: 'number' }),
  allowedMimeTypes: text('allowed_mime_types').array(),
  rules: jsonb('rules').$type<Record<string, unknown>>().notNull().default({}),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
  maxTotalBytes: bigint('max_total_bytes', { mode: 'number' }),
  maxBytesPerUser: bigint('max_bytes_per_user', { mode: 'number' }),
});

export const objects = basalt.table('objects', {
  id: uuid('id').primaryKey().defaultRandom(),
  bucket: text('bucket')
    .notNull()
    .references(() => buckets.name, { onDelete: 'restrict' }),
  path: text('path').notNull(),
  storageKey: text('storage_key').notNull().unique(),
  size: bigint('size', { mode: 'number' }).notNull(),
  contentType: text('content_type').notNull(),
  etag: text('etag').notNull(),
  sha256: text('sha256').notNull(),
  owner: text('owner'),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

export const storagePending = basalt.table('storage_pending', {
  storageKey: text('storage_key').primaryKey(),
  reason: text('reason', { enum: ['upload', 'delete'] }).notNull(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  touchedAt: timestamptz('touched_at').notNull().defaultNow(),
  bucket: text('bucket'),
  owner: text('owner'),
  reservedBytes: bigint('reserved_bytes', { mode: 'number' }).notNull().default(0),
});

// -- storage quotas (0019) -------------------------------------------------------------------

/** Committed bytes and objects per bucket (owner '') and per owner; kept by a trigger on objects. */
export const storageUsage = basalt.table(
  'storage_usage',
  {
    bucket: text('bucket')
      .notNull()
      .references(() => buckets.name, { onDelete: 'cascade' }),
    owner: text('owner').notNull(),
    bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
    objects: bigint('objects', { mode: 'number' }).notNull().default(0),
  },
  (table) => [primaryKey({ columns: [table.bucket, table.owner] })],
);

/** Cached image transform variants (see migrations/0019). */
export const storageVariants = basalt.table('storage_variants', {
  storageKey: text('storage_key').primaryKey(),
  objectKey: text('object_key').notNull(),
  params: text('params').notNull(),
  size: bigint('size', { mode: 'number' }).notNull(),
  contentType: text('content_type').notNull(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
});

/** Resumable (tus) uploads in progress (see migrations/0019). */
export const storageUploads = basalt.table('storage_uploads', {
  id: text('id').primaryKey(),
  bucket: text('bucket')
    .notNull()
    .references(() => buckets.name, { onDelete: 'cascade' }),
  path: text('path').notNull(),
  storageKey: text('storage_key').notNull().unique(),
  contentType: text('content_type').notNull(),
  upsert: boolean('upsert').notNull().default(false),
  owner: text('owner'),
  creator: text('creator').notNull(),
  uploadLength: bigint('upload_length', { mode: 'number' }).notNull(),
  uploadOffset: bigint('upload_offset', { mode: 'number' }).notNull().default(0),
  metadata: text('metadata').notNull().default(''),
  backendState: jsonb('backend_state').$type<Record<string, unknown>>().notNull().default({}),
  held: bytea('held'),
  leaseToken: text('lease_token'),
  leaseUntil: timestamptz('lease_until'),
  expiresAt: timestamptz('expires_at').notNull(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

// -- realtime (0008) -------------------------------------------------------------------------

export const realtimeInstances = basalt.table('realtime_instances', {
  id: uuid('id').primaryKey(),
  heartbeatAt: timestamptz('heartbeat_at').notNull().defaultNow(),
});

export const realtimePresence = basalt.table('realtime_presence', {
  ref: uuid('ref').primaryKey(),
  instanceId: uuid('instance_id')
    .notNull()
    .references(() => realtimeInstances.id, { onDelete: 'cascade' }),
  channel: text('channel').notNull(),
  key: text('key').notNull(),
  payload: jsonb('payload').notNull(),
  joinedAt: timestamptz('joined_at').notNull().defaultNow(),
});

// -- functions (0009) ------------------------------------------------------------------------

export const functionInvocations = basalt.table('function_invocations', {
  id: uuid('id').primaryKey().defaultRandom(),
  functionName: text('function_name').notNull(),
  trigger: text('trigger').notNull(),
  eventId: text('event_id'),
  jobId: uuid('job_id'),
  status: text('status', { enum: ['queued', 'running', 'succeeded', 'failed', 'dead'] }).notNull(),
  attempt: integer('attempt').notNull().default(1),
  coldStart: boolean('cold_start').notNull().default(false),
  startedAt: timestamptz('started_at'),
  finishedAt: timestamptz('finished_at'),
  durationMs: integer('duration_ms'),
  error: text('error'),
  logs: jsonb('logs').$type<unknown[]>().notNull().default([]),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  version: integer('version'),
  traceId: text('trace_id'),
  parentInvocationId: uuid('parent_invocation_id'),
});

// -- function deploys and secrets (0020) -----------------------------------------------------

export const functionVersions = basalt.table(
  'function_versions',
  {
    name: text('name').notNull(),
    version: integer('version').notNull(),
    kind: text('kind').notNull(),
    exportName: text('export_name').notNull(),
    options: jsonb('options').$type<Record<string, unknown>>().notNull(),
    entry: text('entry').notNull(),
    bundle: text('bundle').notNull(),
    bundleFormat: text('bundle_format', { enum: ['cjs', 'esm'] }).notNull(),
    bundleHash: text('bundle_hash').notNull(),
    source: text('source', { enum: ['api', 'folder'] }).notNull(),
    deployedAt: timestamptz('deployed_at').notNull().defaultNow(),
  },
  (table) => [primaryKey({ columns: [table.name, table.version] })],
);

export const functionActive = basalt.table('function_active', {
  name: text('name').primaryKey(),
  id: text('id').notNull(),
  version: integer('version').notNull(),
  kind: text('kind').notNull(),
  exportName: text('export_name').notNull(),
  options: jsonb('options').$type<Record<string, unknown>>().notNull(),
  changedAt: timestamptz('changed_at').notNull().defaultNow(),
});

export const functionDispatchVersions = basalt.table('function_dispatch_versions', {
  name: text('name').primaryKey(),
  version: integer('version').notNull(),
  kind: text('kind').notNull(),
  exportName: text('export_name').notNull(),
  options: jsonb('options').$type<Record<string, unknown>>().notNull(),
});

export const secrets = basalt.table('secrets', {
  name: text('name').primaryKey(),
  iv: bytea('iv').notNull(),
  ciphertext: bytea('ciphertext').notNull(),
  tag: bytea('tag').notNull(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

export const secretRevisions = basalt.table('secret_revisions', {
  id: text('id').primaryKey(),
  revision: bigint('revision', { mode: 'number' }).notNull(),
});

// -- audit (0017) ----------------------------------------------------------------------------

export const auditLog = basalt.table('audit_log', {
  id: bigserial('id', { mode: 'bigint' }).primaryKey(),
  at: timestamptz('at')
    .notNull()
    .default(sql`clock_timestamp()`),
  type: text('type').notNull(),
  userId: uuid('user_id'),
  actor: jsonb('actor').$type<Record<string, unknown>>().notNull(),
  ip: text('ip'),
  userAgent: text('user_agent'),
  details: jsonb('details').$type<Record<string, unknown>>().notNull().default({}),
});
// -- idempotency keys (0018) -----------------------------------------------------------------

export const idempotencyKeys = basalt.table(
  'idempotency_keys',
  {
    scope: text('scope').notNull(),
    key: text('key').notNull(),
    requestHash: bytea('request_hash').notNull(),
    state: text('state', { enum: ['pending', 'done'] })
      .notNull()
      .default('pending'),
    status: integer('status'),
    headers: jsonb('headers').$type<Record<string, string>>(),
    body: bytea('body'),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
  },
  (table) => [primaryKey({ columns: [table.scope, table.key] })],
);

// -- usage meter (0023): per-hour counters every instance adds to (docs/usage.md) -----------

export const usageHours = basalt.table('usage_hours', {
  hour: timestamptz('hour').primaryKey(),
  documentReads: bigint('document_reads', { mode: 'number' }).notNull().default(0),
  documentWrites: bigint('document_writes', { mode: 'number' }).notNull().default(0),
  storageBytesIn: bigint('storage_bytes_in', { mode: 'number' }).notNull().default(0),
  storageBytesOut: bigint('storage_bytes_out', { mode: 'number' }).notNull().default(0),
  storageBytesStored: bigint('storage_bytes_stored', { mode: 'number' }),
  realtimeMessages: bigint('realtime_messages', { mode: 'number' }).notNull().default(0),
});

export const usageFunctionHours = basalt.table(
  'usage_function_hours',
  {
    hour: timestamptz('hour').notNull(),
    functionName: text('function_name').notNull(),
    invocations: bigint('invocations', { mode: 'number' }).notNull().default(0),
    errors: bigint('errors', { mode: 'number' }).notNull().default(0),
    coldStarts: bigint('cold_starts', { mode: 'number' }).notNull().default(0),
    durationMs: bigint('duration_ms', { mode: 'number' }).notNull().default(0),
    gbSeconds: doublePrecision('gb_seconds').notNull().default(0),
  },
  (table) => [primaryKey({ columns: [table.hour, table.functionName] })],
);

export const usageConnectionPeaks = basalt.table(
  'usage_connection_peaks',
  {
    hour: timestamptz('hour').notNull(),
    instanceId: uuid('instance_id').notNull(),
    peak: integer('peak').notNull(),
  },
  (table) => [primaryKey({ columns: [table.hour, table.instanceId] })],
);

export const usageActiveUsers = basalt.table(
  'usage_active_users',
  {
    hour: timestamptz('hour').notNull(),
    userId: uuid('user_id').notNull(),
  },
  (table) => [primaryKey({ columns: [table.hour, table.userId] })],
);

// -- topics (0024): pub/sub topics an admin configured (docs/events.md) --------------------

export const topics = basalt.table('topics', {
  name: text('name').primaryKey(),
  rules: jsonb('rules').$type<{ publish?: string }>().notNull().default({}),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});
