import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON lines in production; human-readable when a person is watching the terminal. */
export function createLogger(level: string, options: { pretty?: boolean } = {}): Logger {
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  return pino({
    level,
    base: { service: 'basalt' },
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', '*.password', '*.access_token', '*.refresh_token'],
      censor: '[redacted]',
    },
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss', ignore: 'pid,hostname,service' } } }
      : {}),
  });
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
