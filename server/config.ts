import path from 'node:path';
import { parseSecretsKey } from './internal/service-key.js';

/**
 * The whole configuration of a Basalt process, read once from the environment at
 * start, validated, and passed down. Modules never read `process.env`.
 */
export interface Config {
  port: number;
  host: string;
  /** External Postgres; `null` means start the embedded one. */
  databaseUrl: string | null;
  dataDir: string;
  /** As root: where the embedded Postgres keeps what the `postgres` user cannot reach in the checkout. */
  embeddedPostgresDir: string;
  /** From BASALT_SERVICE_KEY; `null` means generated once and kept in the data dir. */
  serviceKey: string | null;
  /** BASALT_SECRETS_KEY: the key of function secrets at rest; null = generated into the data dir. */
  secretsKey: string | null;
  /** From BASALT_METRICS_TOKEN: a bearer that reads /metrics and nothing else (the service key also does). */
  metricsToken: string | null;
  publicUrl: string;
  storage: StorageConfig;
  smtpUrl: string | null;
  auth: AuthConfig;
  functionsDir: string;
  /** Reload functions when a file of the folder changes (development). */
  functionsWatch: boolean;
  /** A warm function worker unused this long ends; the next run starts a new one (a cold start). */
  functionsIdleTimeoutMs: number;
  /** How often each instance writes its usage counts (docs/usage.md); a crash loses at most this much. */
  usageFlushIntervalMs: number;
  roles: { api: boolean; worker: boolean };
  corsOrigins: '*' | string[];
  /** Which proxies' X-Forwarded-For to believe for the client IP (rate limits); `false` = the peer address. */
  trustProxy: boolean | number | string;
  /** Largest accepted JSON request body, in bytes. */
  bodyLimit: number;
  /** Largest `data` of one document, in bytes. */
  maxDocumentBytes: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** How long start waits for an unreachable database before giving up, in ms. */
  databaseConnectTimeoutMs: number;
  /** Connections of the request pool (readers and listeners hold a few more of their own). */
  databasePoolMax: number;
  /** The environment at start; a function sees only the variables it declares. */
  environment: Readonly<Record<string, string>>;
  /** How long the change log keeps changes (and cursors stay resumable), in seconds. */
  changeRetentionSeconds: number;
  /** How long the audit log keeps events, in days; older ones are pruned hourly. */
  auditRetentionDays: number;
  realtime: RealtimeConfig;
  /** OTLP export of function spans (docs/tracing.md); null when no endpoint is set. */
  otel: OtelConfig | null;
}

export interface OtelConfig {
  /** The full URL spans are POSTed to (`<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces`, or the traces endpoint itself). */
  tracesUrl: string;
  headers: Record<string, string>;
  serviceName: string;
  /** How long the batch processor gathers spans before it sends them (OTEL_BSP_SCHEDULE_DELAY). */
  scheduleDelayMs: number;
  /** Spans waiting beyond this are dropped, never holding up a run (OTEL_BSP_MAX_QUEUE_SIZE). */
  maxQueueSize: number;
  /** How long one export may take (OTEL_EXPORTER_OTLP_TIMEOUT). */
  exportTimeoutMs: number;
}

export interface RealtimeConfig {
  /** Live queries one websocket may hold at once. */
  maxSubscriptions: number;
  /** Ping interval; a client silent for two intervals is dropped. */
  heartbeatMs: number;
  /** A socket whose unsent bytes pass this is closed as a slow consumer (it resumes from its cursor). */
  sendBufferBytes: number;
  /** How often each connection's token is re-checked for expiry and revocation. */
  authCheckMs: number;
  /** How often an instance refreshes its presence heartbeat; presences expire after three missed beats. */
  presenceHeartbeatMs: number;
  /** Messages a client may send per second (bursts up to twice that); more get RATE_LIMITED. */
  messagesPerSecond: number;
  /** Channels one websocket may be joined to at once (each may hold a presence row). */
  maxChannelsPerSocket: number;
  /** A live aggregate is re-evaluated at most once per this many ms, however fast its collection changes. */
  aggregateIntervalMs: number;
}

export interface StorageConfig {
  backend: 'fs' | 's3';
  s3: {
    endpoint: string | null;
    region: string;
    bucket: string | null;
    accessKeyId: string | null;
    secretAccessKey: string | null;
    forcePathStyle: boolean;
  };
  /** Part size of S3 multipart uploads, in bytes (S3's minimum is 5 MiB). */
  s3PartSize: number;
  /** Largest object when a bucket sets no max_file_size, in bytes. */
  maxFileSize: number;
  /** Secret for signed URLs; `null` means derived from the service key. */
  signingSecret: string | null;
  /** Seconds between sweeps for orphaned bytes; 0 turns the periodic sweep off. */
  sweepIntervalSeconds: number;
  /** Age, in seconds, after which an unfinished upload's bytes count as orphaned. */
  orphanGraceSeconds: number;
  /** An unfinished resumable upload expires this long after its last append, in seconds. */
  uploadExpirySeconds: number;
  transforms: ImageTransformConfig;
}

export interface ImageTransformConfig {
  /** Largest width or height a transform may ask for, in pixels. */
  maxDimension: number;
  /** Largest image (width × height) a transform decodes; larger ones are refused. */
  maxInputPixels: number;
  /** Largest original a transform reads, in bytes. */
  maxInputBytes: number;
  /** Transforms computed at once per instance; more wait their turn. */
  concurrency: number;
}

export interface AuthConfig {
  confirmEmail: boolean;
  accessTokenTtlSeconds: number;
  /** A rotated-out refresh token still works this long (two tabs refreshing at once); after, reuse revokes the session. */
  refreshReuseGraceSeconds: number;
  /** Absolute life of a session, whatever its activity. */
  sessionLifetimeSeconds: number;
  /** A session not refreshed for this long ends. */
  sessionInactivitySeconds: number;
  /** Life of a mailed token (confirmation, recovery, magic link, email change). */
  emailTokenTtlSeconds: number;
  /** At most one mail per address in this many seconds. */
  emailIntervalSeconds: number;
  /** How often each instance reads new session revocations from Postgres. */
  revocationPollMs: number;
  /** argon2id cost; raising either rehashes a password at its next sign-in. */
  argon2MemoryKib: number;
  argon2TimeCost: number;
  /** Encrypts the signing keys' private halves at rest; `null` keeps them in a server-only table. */
  keyEncryptionKey: string | null;
  mailFrom: string;
  rateLimits: AuthRateLimits;
  /** Exact URLs an OAuth sign-in may send the browser back to (BASALT_AUTH_REDIRECT_URLS). */
  redirectUrls: string[];
  /** OAuth 2 / OpenID Connect providers, from BASALT_OAUTH_<NAME>_* variables. */
  oauthProviders: OAuthProviderConfig[];
  /** The name authenticator apps and passkey prompts show (BASALT_AUTH_APP_NAME); null: the public URL's host. */
  appName: string | null;
  /** The WebAuthn relying party id (BASALT_PASSKEY_RP_ID); null: the public URL's host. */
  passkeyRpId: string | null;
  /** Origins a passkey ceremony may come from (BASALT_PASSKEY_ORIGINS); null: see passkeyOrigins() in the auth module. */
  passkeyOrigins: string[] | null;
}

/** Per-window request budgets, counted in Postgres so that they hold across instances. */
export interface AuthRateLimits {
  windowSeconds: number;
  signinFailedPerAccountIp: number;
  signinFailedPerAccount: number;
  signinPerIp: number;
  signupPerIp: number;
  emailPerIp: number;
  verifyPerIp: number;
  refreshPerIp: number;
  anonymousPerIp: number;
  /** Wrong second-factor codes (TOTP, recovery) per user; a success gives its count back. */
  mfaFailedPerUser: number;
  /** Second-factor attempts (codes, passkey sign-ins) per IP. */
  mfaPerIp: number;
}

export interface OAuthProviderConfig {
  /** Lower-case name used in `?provider=`, e.g. `github`, `google`, `my_idp`. */
  name: string;
  /** `oidc`: any OpenID provider, found by discovery from `issuer`; `github`: GitHub's OAuth 2 apps. */
  type: 'oidc' | 'github';
  /** OIDC issuer (discovery at `${issuer}/.well-known/openid-configuration`); `null` for GitHub. */
  issuer: string | null;
  clientId: string;
  /** `null` for a public client (PKCE only). */
  clientSecret: string | null;
  scopes: string[];
  /** GitHub only: the web and API base URLs (GitHub Enterprise Server has its own). */
  webUrl: string | null;
  apiUrl: string | null;
}

/** A configuration mistake: names the variable and says why, so start can print one clear line. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    reason: string,
  ) {
    super(`${variable}: ${reason}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function value(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined) return undefined;
  const trimmed = raw.trim();
  return trimmed === '' ? undefined : trimmed;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = value(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected a whole number, got "${raw}"`);
  const parsed = Number(raw);
  if (parsed < min || parsed > max) throw new ConfigError(name, `expected a number from ${min} to ${max}, got ${raw}`);
  return parsed;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = value(env, name);
  if (raw === undefined) return fallback;
  const lowered = raw.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(lowered)) return true;
  if (['false', '0', 'no', 'off'].includes(lowered)) return false;
  throw new ConfigError(name, `expected true or false, got "${raw}"`);
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = value(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `not a valid URL`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `expected a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`);
  }
  return raw;
}

function databaseUrl(env: Env): string | null {
  const raw = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  if (raw === undefined) return null;
  const parsed = new URL(raw);
  if (!parsed.hostname && !parsed.searchParams.get('host')) throw new ConfigError('DATABASE_URL', 'has no host');
  return raw;
}

function roles(env: Env): Config['roles'] {
  const raw = value(env, 'BASALT_ROLES');
  if (raw === undefined) return { api: true, worker: true };
  const names = raw.split(',').map((part) => part.trim().toLowerCase());
  const unknown = names.filter((name) => name !== 'api' && name !== 'worker');
  if (unknown.length > 0 || names.length === 0) {
    throw new ConfigError('BASALT_ROLES', `expected a comma-separated list of api and worker, got "${raw}"`);
  }
  return { api: names.includes('api'), worker: names.includes('worker') };
}

function trustProxy(env: Env): Config['trustProxy'] {
  const raw = value(env, 'BASALT_TRUST_PROXY');
  if (raw === undefined) return false;
  const lowered = raw.toLowerCase();
  if (['false', '0', 'no', 'off'].includes(lowered)) return false;
  if (['true', 'yes', 'on'].includes(lowered)) return true;
  if (/^\d{1,2}$/.test(raw)) return Number(raw);
  if (!/^[0-9a-fA-F:.,/\s]+$/.test(raw)) {
    throw new ConfigError(
      'BASALT_TRUST_PROXY',
      'expected true, false, a hop count, or comma-separated addresses/CIDRs',
    );
  }
  return raw;
}

/** A comma-separated list of origins (scheme, host and port), each checked. */
function originList(env: Env, name: string): string[] | undefined {
  const raw = value(env, name);
  if (raw === undefined) return undefined;
  const origins = raw.split(',').map((part) => part.trim());
  for (const origin of origins) {
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new ConfigError(name, `"${origin}" is not an origin like https://app.example.com`);
    }
    if (parsed.origin !== origin.replace(/\/$/, '')) {
      throw new ConfigError(name, `"${origin}" is not an origin (scheme, host and port only)`);
    }
  }
  return origins.map((origin) => origin.replace(/\/$/, ''));
}

function corsOrigins(env: Env): Config['corsOrigins'] {
  if (value(env, 'BASALT_CORS_ORIGINS') === '*') return '*';
  return originList(env, 'BASALT_CORS_ORIGINS') ?? '*';
}

/** A WebAuthn relying party id: a bare domain name (no scheme, port or path). */
function passkeyRpId(env: Env): string | null {
  const raw = value(env, 'BASALT_PASSKEY_RP_ID');
  if (raw === undefined) return null;
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(raw) || raw.length > 253) {
    throw new ConfigError('BASALT_PASSKEY_RP_ID', `"${raw}" is not a domain name like example.com`);
  }
  return raw.toLowerCase();
}

function storage(env: Env): StorageConfig {
  const backend = value(env, 'STORAGE_BACKEND') ?? 'fs';
  if (backend !== 'fs' && backend !== 's3') {
    throw new ConfigError('STORAGE_BACKEND', `expected fs or s3, got "${backend}"`);
  }
  const s3 = {
    endpoint: url(env, 'S3_ENDPOINT', ['http:', 'https:']) ?? null,
    region: value(env, 'S3_REGION') ?? 'us-east-1',
    bucket: value(env, 'S3_BUCKET') ?? null,
    accessKeyId: value(env, 'S3_ACCESS_KEY_ID') ?? null,
    secretAccessKey: value(env, 'S3_SECRET_ACCESS_KEY') ?? null,
    forcePathStyle: boolean(env, 'S3_FORCE_PATH_STYLE', false),
  };
  if (backend === 's3' && !s3.bucket) throw new ConfigError('S3_BUCKET', 'is required when STORAGE_BACKEND=s3');
  const signingSecret = value(env, 'BASALT_STORAGE_SIGNING_SECRET') ?? null;
  if (signingSecret !== null && signingSecret.length < 32) {
    throw new ConfigError('BASALT_STORAGE_SIGNING_SECRET', 'must be at least 32 characters');
  }
  const mib = 1024 * 1024;
  return {
    backend,
    s3,
    s3PartSize: integer(env, 'S3_PART_SIZE', 5 * mib, 5 * mib, 5 * 1024 * mib),
    maxFileSize: integer(env, 'BASALT_STORAGE_MAX_FILE_SIZE', 5 * 1024 * mib, 1, Number.MAX_SAFE_INTEGER),
    signingSecret,
    sweepIntervalSeconds: integer(env, 'BASALT_STORAGE_SWEEP_INTERVAL', 600, 0, 7 * 86_400),
    orphanGraceSeconds: integer(env, 'BASALT_STORAGE_ORPHAN_GRACE', 3600, 0, 30 * 86_400),
    uploadExpirySeconds: integer(env, 'BASALT_STORAGE_UPLOAD_EXPIRY', 86_400, 1, 30 * 86_400),
    transforms: {
      maxDimension: integer(env, 'BASALT_STORAGE_TRANSFORM_MAX_DIMENSION', 2500, 16, 16_384),
      maxInputPixels: integer(env, 'BASALT_STORAGE_TRANSFORM_MAX_INPUT_PIXELS', 50_000_000, 1, 1_000_000_000),
      maxInputBytes: integer(env, 'BASALT_STORAGE_TRANSFORM_MAX_INPUT_BYTES', 50 * mib, 1, 1024 * mib),
      concurrency: integer(env, 'BASALT_STORAGE_TRANSFORM_CONCURRENCY', 2, 1, 64),
    },
  };
}

/** Schemes a browser must never be sent to with a session in the fragment. */
const UNSAFE_SCHEMES = new Set(['javascript:', 'data:', 'vbscript:', 'file:', 'blob:']);

function redirectUrls(env: Env): string[] {
  const name = 'BASALT_AUTH_REDIRECT_URLS';
  const raw = value(env, name);
  if (raw === undefined) return [];
  const urls = raw
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
  for (const entry of urls) {
    let parsed: URL;
    try {
      parsed = new URL(entry);
    } catch {
      throw new ConfigError(name, `"${entry}" is not an absolute URL`);
    }
    if (UNSAFE_SCHEMES.has(parsed.protocol)) throw new ConfigError(name, `"${entry}" uses a forbidden scheme`);
    // The session is delivered in the fragment, so the URL must not carry one of its own.
    if (entry.includes('#')) throw new ConfigError(name, `"${entry}" must not contain a fragment (#)`);
  }
  return urls;
}

const OAUTH_PRESETS: Record<string, Pick<OAuthProviderConfig, 'type' | 'issuer'>> = {
  github: { type: 'github', issuer: null },
  google: { type: 'oidc', issuer: 'https://accounts.google.com' },
};

/**
 * One provider per BASALT_OAUTH_<NAME>_CLIENT_ID; its other variables are
 * BASALT_OAUTH_<NAME>_CLIENT_SECRET, _ISSUER, _TYPE (oidc | github), _SCOPES and, for
 * GitHub Enterprise, _WEB_URL and _API_URL. GITHUB and GOOGLE need only the client.
 */
function oauthProviders(env: Env): OAuthProviderConfig[] {
  const providers: OAuthProviderConfig[] = [];
  const names = Object.keys(env)
    .map((key) => /^BASALT_OAUTH_([A-Z0-9]+(?:_[A-Z0-9]+)*)_CLIENT_ID$/.exec(key)?.[1])
    .filter((name): name is string => name !== undefined && value(env, `BASALT_OAUTH_${name}_CLIENT_ID`) !== undefined)
    .sort();
  for (const upper of names) {
    const prefix = `BASALT_OAUTH_${upper}`;
    const name = upper.toLowerCase();
    const preset = OAUTH_PRESETS[name];
    const typeRaw = value(env, `${prefix}_TYPE`) ?? preset?.type ?? 'oidc';
    if (typeRaw !== 'oidc' && typeRaw !== 'github') {
      throw new ConfigError(`${prefix}_TYPE`, `expected oidc or github, got "${typeRaw}"`);
    }
    const issuer =
      url(env, `${prefix}_ISSUER`, ['https:', 'http:']) ?? (preset?.type === typeRaw ? preset.issuer : null);
    if (typeRaw === 'oidc' && !issuer) {
      throw new ConfigError(`${prefix}_ISSUER`, 'is required for an OpenID Connect provider');
    }
    const clientSecret = value(env, `${prefix}_CLIENT_SECRET`) ?? null;
    if (typeRaw === 'github' && !clientSecret) {
      throw new ConfigError(`${prefix}_CLIENT_SECRET`, 'is required for a GitHub provider');
    }
    const scopesRaw = value(env, `${prefix}_SCOPES`);
    const scopes = scopesRaw
      ? scopesRaw.split(/[\s,]+/).filter((scope) => scope !== '')
      : typeRaw === 'github'
        ? ['read:user', 'user:email']
        : ['openid', 'email', 'profile'];
    if (typeRaw === 'oidc' && !scopes.includes('openid')) scopes.unshift('openid');
    providers.push({
      name,
      type: typeRaw,
      issuer: typeRaw === 'oidc' ? (issuer ?? null) : null,
      clientId: value(env, `${prefix}_CLIENT_ID`) ?? '',
      clientSecret,
      scopes,
      webUrl:
        typeRaw === 'github'
          ? (url(env, `${prefix}_WEB_URL`, ['https:', 'http:']) ?? 'https://github.com').replace(/\/+$/, '')
          : null,
      apiUrl:
        typeRaw === 'github'
          ? (url(env, `${prefix}_API_URL`, ['https:', 'http:']) ?? 'https://api.github.com').replace(/\/+$/, '')
          : null,
    });
  }
  return providers;
}

type AuthCoreConfig = Omit<AuthConfig, 'confirmEmail' | 'accessTokenTtlSeconds' | 'redirectUrls' | 'oauthProviders'>;

function authCoreConfig(env: Env): AuthCoreConfig {
  const keyEncryptionKey = value(env, 'BASALT_AUTH_KEY_ENCRYPTION_KEY') ?? null;
  if (keyEncryptionKey !== null && keyEncryptionKey.length < 32) {
    throw new ConfigError('BASALT_AUTH_KEY_ENCRYPTION_KEY', 'must be at least 32 characters (use 256 random bits)');
  }
  const day = 86_400;
  const limit = (name: string, fallback: number) => integer(env, name, fallback, 1, 1_000_000_000);
  return {
    refreshReuseGraceSeconds: integer(env, 'BASALT_AUTH_REFRESH_REUSE_GRACE', 10, 0, 300),
    sessionLifetimeSeconds: integer(env, 'BASALT_AUTH_SESSION_LIFETIME', 30 * day, 60, 365 * day),
    sessionInactivitySeconds: integer(env, 'BASALT_AUTH_SESSION_INACTIVITY', 7 * day, 60, 365 * day),
    emailTokenTtlSeconds: integer(env, 'BASALT_AUTH_EMAIL_TOKEN_TTL', 3600, 1, 7 * day),
    emailIntervalSeconds: integer(env, 'BASALT_AUTH_EMAIL_INTERVAL', 60, 0, day),
    revocationPollMs: integer(env, 'BASALT_AUTH_REVOCATION_POLL_MS', 1000, 50, 4000),
    argon2MemoryKib: integer(env, 'BASALT_AUTH_ARGON2_MEMORY_KIB', 19_456, 19_456, 4 * 1024 * 1024),
    argon2TimeCost: integer(env, 'BASALT_AUTH_ARGON2_TIME_COST', 2, 2, 20),
    keyEncryptionKey,
    mailFrom: value(env, 'BASALT_MAIL_FROM') ?? 'Basalt <no-reply@localhost>',
    rateLimits: {
      windowSeconds: integer(env, 'BASALT_AUTH_RATE_WINDOW', 900, 1, day),
      signinFailedPerAccountIp: limit('BASALT_AUTH_RATE_SIGNIN_FAILED_ACCOUNT_IP', 20),
      signinFailedPerAccount: limit('BASALT_AUTH_RATE_SIGNIN_FAILED_ACCOUNT', 1000),
      signinPerIp: limit('BASALT_AUTH_RATE_SIGNIN_IP', 500),
      signupPerIp: limit('BASALT_AUTH_RATE_SIGNUP_IP', 100),
      emailPerIp: limit('BASALT_AUTH_RATE_EMAIL_IP', 60),
      verifyPerIp: limit('BASALT_AUTH_RATE_VERIFY_IP', 200),
      refreshPerIp: limit('BASALT_AUTH_RATE_REFRESH_IP', 3000),
      anonymousPerIp: limit('BASALT_AUTH_RATE_ANONYMOUS_IP', 100),
      mfaFailedPerUser: limit('BASALT_AUTH_RATE_MFA_FAILED_USER', 10),
      mfaPerIp: limit('BASALT_AUTH_RATE_MFA_IP', 100),
    },
    appName: value(env, 'BASALT_AUTH_APP_NAME') ?? null,
    passkeyRpId: passkeyRpId(env),
    passkeyOrigins: originList(env, 'BASALT_PASSKEY_ORIGINS') ?? null,
  };
}

/** `key=value,key2=value2`, values percent-decoded (the OpenTelemetry environment format). */
function otelHeaders(env: Env, name: string): Record<string, string> {
  const raw = value(env, name);
  if (!raw) return {};
  const headers: Record<string, string> = {};
  for (const entry of raw.split(',')) {
    if (entry.trim() === '') continue;
    const equals = entry.indexOf('=');
    const key = equals > 0 ? entry.slice(0, equals).trim() : '';
    if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(key)) throw new ConfigError(name, `"${entry}" is not key=value`);
    try {
      headers[key.toLowerCase()] = decodeURIComponent(entry.slice(equals + 1).trim());
    } catch {
      throw new ConfigError(name, `the value of "${key}" is not percent-encoded text`);
    }
  }
  return headers;
}

const OTEL_EXPORT_SETTINGS = [
  'OTEL_EXPORTER_OTLP_HEADERS',
  'OTEL_EXPORTER_OTLP_TRACES_HEADERS',
  'OTEL_SERVICE_NAME',
  'OTEL_BSP_SCHEDULE_DELAY',
  'OTEL_BSP_MAX_QUEUE_SIZE',
  'OTEL_EXPORTER_OTLP_TIMEOUT',
];

/** OTLP/HTTP trace export: on when an endpoint is set. Only the JSON encoding is sent. */
function otel(env: Env): OtelConfig | null {
  const base = url(env, 'OTEL_EXPORTER_OTLP_ENDPOINT', ['http:', 'https:']);
  const traces = url(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', ['http:', 'https:']);
  const protocols = {
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: value(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'),
    OTEL_EXPORTER_OTLP_PROTOCOL: value(env, 'OTEL_EXPORTER_OTLP_PROTOCOL'),
  };
  // The rest is read (and checked) only for an export: variables set for other programs stay theirs.
  if (!base && !traces) {
    for (const name of OTEL_EXPORT_SETTINGS) value(env, name);
    return null;
  }
  for (const [name, protocol] of Object.entries(protocols)) {
    if (protocol !== undefined && protocol !== 'http/json') {
      throw new ConfigError(name, `Basalt exports OTLP as http/json only, got "${protocol}"`);
    }
  }
  return {
    tracesUrl: traces ?? `${(base ?? '').replace(/\/+$/, '')}/v1/traces`,
    headers: {
      ...otelHeaders(env, 'OTEL_EXPORTER_OTLP_HEADERS'),
      ...otelHeaders(env, 'OTEL_EXPORTER_OTLP_TRACES_HEADERS'),
    },
    serviceName: value(env, 'OTEL_SERVICE_NAME') ?? 'basalt',
    scheduleDelayMs: integer(env, 'OTEL_BSP_SCHEDULE_DELAY', 5_000, 10, 3_600_000),
    maxQueueSize: integer(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 2_048, 1, 1_000_000),
    exportTimeoutMs: integer(env, 'OTEL_EXPORTER_OTLP_TIMEOUT', 10_000, 100, 600_000),
  };
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function logLevel(env: Env): Config['logLevel'] {
  const raw = value(env, 'LOG_LEVEL') ?? 'info';
  const match = LOG_LEVELS.find((level) => level === raw.toLowerCase());
  if (!match) throw new ConfigError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}, got "${raw}"`);
  return match;
}

/** Reads and validates the configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const port = integer(env, 'PORT', 8080, 0, 65535);
  const host = value(env, 'HOST') ?? '127.0.0.1';
  const dataDir = path.resolve(value(env, 'BASALT_DATA_DIR') ?? './.basalt');
  const serviceKey = value(env, 'BASALT_SERVICE_KEY') ?? null;
  if (serviceKey !== null && serviceKey.length < 32) {
    throw new ConfigError('BASALT_SERVICE_KEY', 'must be at least 32 characters (use 256 random bits)');
  }
  const secretsKey = value(env, 'BASALT_SECRETS_KEY') ?? null;
  if (secretsKey !== null && !parseSecretsKey(secretsKey)) {
    throw new ConfigError('BASALT_SECRETS_KEY', 'must be 32 bytes: 64 hex digits, or base64 (openssl rand -hex 32)');
  }
  const metricsToken = value(env, 'BASALT_METRICS_TOKEN') ?? null;
  if (metricsToken !== null && (metricsToken.length < 32 || /\s/.test(metricsToken))) {
    throw new ConfigError(
      'BASALT_METRICS_TOKEN',
      'must be at least 32 characters, without spaces (use 256 random bits)',
    );
  }
  const publicUrl = (url(env, 'BASALT_PUBLIC_URL', ['http:', 'https:']) ?? `http://${host}:${port}`).replace(
    /\/+$/,
    '',
  );
  return {
    port,
    host,
    databaseUrl: databaseUrl(env),
    dataDir,
    embeddedPostgresDir: path.resolve(value(env, 'BASALT_EMBEDDED_POSTGRES_DIR') ?? '/var/lib/basalt'),
    serviceKey,
    secretsKey,
    metricsToken,
    publicUrl,
    storage: storage(env),
    smtpUrl: url(env, 'SMTP_URL', ['smtp:', 'smtps:']) ?? null,
    auth: {
      confirmEmail: boolean(env, 'BASALT_AUTH_CONFIRM_EMAIL', false),
      accessTokenTtlSeconds: integer(env, 'BASALT_ACCESS_TOKEN_TTL', 900, 30, 86_400),
      ...authCoreConfig(env),
      redirectUrls: redirectUrls(env),
      oauthProviders: oauthProviders(env),
    },
    functionsDir: path.resolve(value(env, 'BASALT_FUNCTIONS_DIR') ?? './functions'),
    functionsWatch: boolean(env, 'BASALT_FUNCTIONS_WATCH', value(env, 'NODE_ENV') !== 'production'),
    functionsIdleTimeoutMs: integer(env, 'BASALT_FUNCTIONS_IDLE_TIMEOUT_MS', 300_000, 100, 86_400_000),
    usageFlushIntervalMs: integer(env, 'BASALT_USAGE_FLUSH_INTERVAL_MS', 10_000, 100, 3_600_000),
    otel: otel(env),
    roles: roles(env),
    corsOrigins: corsOrigins(env),
    trustProxy: trustProxy(env),
    bodyLimit: integer(env, 'BASALT_BODY_LIMIT', 2 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxDocumentBytes: integer(env, 'BASALT_MAX_DOCUMENT_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
    logLevel: logLevel(env),
    databaseConnectTimeoutMs: integer(env, 'BASALT_DB_CONNECT_TIMEOUT_MS', 30_000, 0, 3_600_000),
    databasePoolMax: integer(env, 'BASALT_DB_POOL_MAX', 20, 1, 1000),
    environment: Object.freeze(
      Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined)),
    ),
    changeRetentionSeconds: integer(env, 'BASALT_CHANGE_RETENTION', 86_400, 1, 365 * 86_400),
    auditRetentionDays: integer(env, 'BASALT_AUDIT_RETENTION_DAYS', 90, 1, 36_500),
    realtime: {
      maxSubscriptions: integer(env, 'BASALT_REALTIME_MAX_SUBSCRIPTIONS', 100, 1, 10_000),
      heartbeatMs: integer(env, 'BASALT_REALTIME_HEARTBEAT_MS', 30_000, 50, 600_000),
      sendBufferBytes: integer(env, 'BASALT_REALTIME_SEND_BUFFER_BYTES', 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
      authCheckMs: integer(env, 'BASALT_REALTIME_AUTH_CHECK_MS', 1_000, 50, 60_000),
      presenceHeartbeatMs: integer(env, 'BASALT_REALTIME_PRESENCE_HEARTBEAT_MS', 5_000, 50, 600_000),
      messagesPerSecond: integer(env, 'BASALT_REALTIME_MESSAGES_PER_SECOND', 100, 1, 1_000_000),
      maxChannelsPerSocket: integer(env, 'BASALT_REALTIME_MAX_CHANNELS_PER_SOCKET', 100, 1, 10_000),
      aggregateIntervalMs: integer(env, 'BASALT_REALTIME_AGGREGATE_INTERVAL_MS', 250, 10, 60_000),
    },
  };
}
