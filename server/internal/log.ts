import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * Query parameters whose value is a credential: a realtime `access_token`, the mailed
 * `token` of /v1/auth/verify, a signed URL's `sig`, an OAuth `code` … A browser can only
 * put them in the URL, and a URL is what request logs keep, so their values never reach a
 * log line. Names are compared decoded and in lower case, as the query parser reads them.
 */
const CREDENTIAL_PARAMETERS: ReadonlySet<string> = new Set([
  'access_token',
  'refresh_token',
  'id_token',
  'token',
  'token_hash',
  'sig',
  'signature',
  'code',
  'apikey',
  'api_key',
  'key',
  'password',
  'secret',
  'client_secret',
]);

/** `?name=value` or `&name=value`, in a URL or in text that quotes one. */
const QUERY_PARAMETER = /([?&])([^=&#?\s]+)=([^&#\s]*)/g;
const REDACTED = '[redacted]';

function isCredentialName(raw: string): boolean {
  let name = raw;
  if (name.includes('%') || name.includes('+')) {
    try {
      name = decodeURIComponent(name.replace(/\+/g, ' '));
    } catch {
      // Not decodable: compared as written.
    }
  }
  return CREDENTIAL_PARAMETERS.has(name.toLowerCase());
}

/**
 * Replaces the value of every credential query parameter in a URL, or in any text that
 * contains one (an error message, a "not found" line), by `[redacted]`. The one redaction
 * of credentials in URLs: the logger applies it to request URLs, top-level string fields,
 * messages and errors, so no call site has to remember it.
 */
export function redactCredentials(text: string): string {
  if (!text.includes('=')) return text;
  return text.replace(QUERY_PARAMETER, (whole: string, separator: string, name: string, value: string) =>
    value !== '' && isCredentialName(name) ? `${separator}${name}=${REDACTED}` : whole,
  );
}

function redactDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactCredentials(value);
  if (value === null || typeof value !== 'object' || depth > 8) return value;
  if (Array.isArray(value)) return value.map((item) => redactDeep(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) out[key] = redactDeep(inner, depth + 1);
  return out;
}

/** What Fastify passes as `req` to the request serializer (a FastifyRequest). */
interface LoggedRequest {
  method?: string;
  url?: string;
  host?: string;
  ip?: string;
  headers?: Record<string, string | string[] | undefined>;
  socket?: { remotePort?: number };
}

/**
 * The serializers of every Basalt logger. They replace Fastify's own (`req`, `err`) with the
 * same fields, URLs and messages redacted.
 */
const serializers: pino.LoggerOptions['serializers'] = {
  req: (req: LoggedRequest) => ({
    method: req.method,
    url: typeof req.url === 'string' ? redactCredentials(req.url) : req.url,
    version: req.headers?.['accept-version'],
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  }),
  // Error messages may quote a URL (Fastify's "reply already sent" does), and so may a cause's.
  err: (error: Error) => redactDeep(pino.stdSerializers.err(error)),
};

/** Redacts every top-level string field of a line (`url`, `path`, `reason` …); objects have their serializers. */
function redactFields(object: Record<string, unknown>): Record<string, unknown> {
  let out = object;
  for (const [key, value] of Object.entries(object)) {
    if (typeof value !== 'string') continue;
    const redacted = redactCredentials(value);
    if (redacted === value) continue;
    if (out === object) out = { ...object };
    out[key] = redacted;
  }
  return out;
}

/** Redacts the message of every line; an Error logged alone is split as pino would, so its message is too. */
function logMethod(this: Logger, args: unknown[], method: (...values: unknown[]) => void): void {
  let values = args;
  if (values[0] instanceof Error && typeof values[1] !== 'string') {
    values = [{ err: values[0] }, values[0].message, ...values.slice(1)];
  }
  method.apply(
    this,
    values.map((value) => (typeof value === 'string' ? redactCredentials(value) : value)),
  );
}

export interface LoggerOptions {
  /** Human-readable lines; by default when a person is watching the terminal. */
  pretty?: boolean;
  /** Where JSON lines go instead of stdout (tests read them from memory). */
  destination?: DestinationStream;
}

/** JSON lines in production; human-readable when a person is watching the terminal. */
export function createLogger(level: string, options: LoggerOptions = {}): Logger {
  const pretty = options.destination === undefined && (options.pretty ?? process.stdout.isTTY === true);
  const settings: pino.LoggerOptions = {
    level,
    base: { service: 'basalt' },
    serializers,
    formatters: { log: redactFields },
    hooks: { logMethod: logMethod as NonNullable<pino.LoggerOptions['hooks']>['logMethod'] },
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', '*.password', '*.access_token', '*.refresh_token'],
      censor: REDACTED,
    },
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss', ignore: 'pid,hostname,service' } } }
      : {}),
  };
  return options.destination ? pino(settings, options.destination) : pino(settings);
}

type LevelName = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * A request's logger that becomes a real pino child (with the request id bound) only when
 * something is written at an enabled level. Most requests write nothing, and building a
 * pino child per request (bindings serialised to JSON) was a measurable share of a short
 * request. Lines that are written carry the same bindings as an eager child's.
 */
class LazyChildLogger {
  private real: Logger | null = null;

  constructor(
    private readonly parent: Logger,
    private readonly childBindings: pino.Bindings,
  ) {}

  private materialize(): Logger {
    this.real ??= this.parent.child(this.childBindings);
    return this.real;
  }

  private write(level: LevelName, args: unknown[]): void {
    if (this.real === null && !this.parent.isLevelEnabled(level)) return;
    (this.materialize()[level] as (...values: unknown[]) => void)(...args);
  }

  get level(): string {
    return (this.real ?? this.parent).level;
  }

  set level(level: string) {
    this.materialize().level = level;
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}

  isLevelEnabled(level: string): boolean {
    return (this.real ?? this.parent).isLevelEnabled(level);
  }

  child(bindings: pino.Bindings, options?: pino.ChildLoggerOptions): Logger {
    return this.materialize().child(bindings, options);
  }

  bindings(): pino.Bindings {
    return this.materialize().bindings();
  }

  setBindings(bindings: pino.Bindings): void {
    this.materialize().setBindings(bindings);
  }

  flush(callback?: (error?: Error) => void): void {
    this.parent.flush(callback);
  }
}

/**
 * Fastify's childLoggerFactory: a lazy child when the route keeps the app's level and
 * serializers (the usual case), an ordinary child otherwise.
 */
export function requestLogger(parent: Logger, bindings: pino.Bindings, options: pino.ChildLoggerOptions): Logger {
  if (Object.keys(options).length > 0) return parent.child(bindings, options);
  return new LazyChildLogger(parent, bindings) as unknown as Logger;
}
