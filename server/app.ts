import path from 'node:path';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyPluginAsync,
  type FastifyReply,
} from 'fastify';
import websocket from '@fastify/websocket';
import { ChangeFeed } from './internal/changes/feed.js';
import { isUser, type Caller } from './internal/caller.js';
import { Database } from './internal/db.js';
import { registerCors } from './internal/http/cors.js';
import { registerErrorHandling, toAppError } from './internal/http/errors.js';
import { createRouteTable } from './internal/http/method-not-allowed.js';
import { registerApiDocs } from './internal/http/openapi.js';
import { registerJsonBodyParser } from './internal/http/json-body.js';
import { registerRequestContext, requestIdFrom } from './internal/http/request-context.js';
import { registerSecurityHeaders } from './internal/http/security-headers.js';
import { createLogger, requestLogger, type Logger } from './internal/log.js';
import { Metrics } from './internal/metrics.js';
import type { Lifecycle } from './internal/module.js';
import { ROOT_DIR } from './internal/paths.js';
import type { Platform, RuntimeConfig } from './internal/platform.js';
import { buildAuditModule } from './modules/audit/module.js';
import { auditAdminChanges } from './modules/audit/routes.js';
import { buildAuthModule } from './modules/auth/module.js';
import { dashboardRoutes } from './modules/dashboard/routes.js';
import { buildDocumentsModule } from './modules/documents/module.js';
import { buildFunctionsModule } from './modules/functions/module.js';
import { buildIdempotencyModule } from './modules/idempotency/module.js';
import { registerIdempotency } from './modules/idempotency/routes.js';
import { opsRoutes } from './modules/ops/routes.js';
import { buildRealtimeModule } from './modules/realtime/module.js';
import { buildStorageModule } from './modules/storage/module.js';
import { UsageMeter } from './modules/usage/meter.js';
import { buildUsageModule } from './modules/usage/module.js';

export type { RuntimeConfig };

declare module 'fastify' {
  interface FastifyInstance {
    platform: Platform;
  }
}

/** Headers the SDK and browser apps read from responses. */
const EXPOSED_HEADERS = [
  'x-request-id',
  'etag',
  'content-range',
  'content-length',
  'content-disposition',
  'accept-ranges',
  'retry-after',
  'location',
  'allow',
  'idempotent-replayed',
  // tus (resumable uploads)
  'tus-resumable',
  'tus-version',
  'tus-extension',
  'tus-max-size',
  'upload-offset',
  'upload-length',
  'upload-expires',
  'upload-metadata',
];
const ALLOWED_HEADERS = [
  'authorization',
  'content-type',
  'if-match',
  'if-none-match',
  'range',
  'x-upsert',
  'x-request-id',
  'x-client-info',
  'idempotency-key',
  'prefer',
  // tus (resumable uploads)
  'tus-resumable',
  'upload-offset',
  'upload-length',
  'upload-metadata',
  'upload-defer-length',
  'upload-concat',
  'x-http-method-override',
];

/** 4096: a storage path of 1024 bytes is up to 3072 characters once percent-encoded. */
const MAX_PARAM_LENGTH = 4096;

/** Trusts the nearest `hops` proxies (Fastify's types take no hop count directly). */
function trustHops(hops: number): (address: string, hop: number) => boolean {
  return (_address, hop) => hop < hops;
}

/** The change feed reads the change log; a write through this instance's pool wakes it at once. */
function changeFeedLifecycle(db: Database, feed: ChangeFeed): Lifecycle {
  let stopNudging = (): void => undefined;
  return {
    async start() {
      stopNudging = db.onWrite(() => feed.nudge());
      await feed.start();
    },
    async stop() {
      await feed.stop();
      stopNudging();
    },
  };
}

export interface BuildOptions {
  logger?: Logger;
  /** A database to share (tests); otherwise one is opened from config.databaseUrl and closed with the app. */
  database?: Database;
}

/**
 * Builds the whole server from a resolved configuration: the platform, then every module
 * and its routes. Performs no I/O: modules start when the app is ready (app.ready() or
 * listen) and stop when it closes. Listening is the caller's job.
 *
 * `config.roles` decides what this process does (docs/deployment.md#roles): `api` serves the
 * HTTP API, websockets, HTTP functions and the dashboard; `worker` dispatches change events
 * to functions, runs their jobs and schedules, and sweeps storage. Every process serves
 * /healthz, /readyz and /metrics, and every process's services (documents, storage) are
 * built, since functions call them through ctx.db and ctx.storage.
 */
export async function buildApp(config: RuntimeConfig, options: BuildOptions = {}): Promise<FastifyInstance> {
  const log = options.logger ?? createLogger(config.logLevel);
  const servesApi = config.roles.api;
  const ownsDatabase = options.database === undefined;
  const db = options.database ?? new Database({ url: config.databaseUrl, max: config.databasePoolMax }, log);
  const metrics = new Metrics();

  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: config.bodyLimit,
    // The client IP feeds per-IP rate limits; behind a proxy it must come from X-Forwarded-For.
    trustProxy: typeof config.trustProxy === 'number' ? trustHops(config.trustProxy) : config.trustProxy,
    genReqId: (request) => requestIdFrom(request.headers['x-request-id']),
    // Each request's logger (with its request id) is only built when something is logged.
    childLoggerFactory: (logger, bindings, options) =>
      requestLogger(logger as Logger, bindings, options) as FastifyBaseLogger,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH, ignoreTrailingSlash: true },
    // A malformed URL (bad percent-encoding) gets the catalogue's envelope, not Fastify's own.
    frameworkErrors: (error, _request, reply) => {
      const appError = toAppError(error);
      void (reply as unknown as FastifyReply).code(appError.status).send(appError.toBody());
    },
  });

  // The platform: what every module is built from. The change feed is this instance's reader
  // of the change log (docs/changes.md); realtime and functions subscribe to it.
  const changes = new ChangeFeed(
    { db, log, metrics, databaseUrl: config.databaseUrl },
    { retentionMs: config.changeRetentionSeconds * 1000 },
  );
  const usage = new UsageMeter();
  const platform: Platform = { config, db, log, metrics, changes, usage };
  app.decorate('platform', platform);

  // The modules, in dependency order: each takes services from the ones built before it.
  const audit = buildAuditModule(platform);
  const usageModule = buildUsageModule(platform);
  const auth = buildAuthModule(platform, { audit: audit.log });
  const documents = buildDocumentsModule(platform, { audit: audit.log });
  const storage = buildStorageModule(platform, { audit: audit.log });
  const idempotency = buildIdempotencyModule(platform);
  const functions = buildFunctionsModule(platform, {
    documents: documents.documents,
    storage: storage.service,
    audit: audit.log,
  });
  // Built only where websockets arrive: API instances.
  const realtime = servesApi
    ? buildRealtimeModule(platform, { documents: documents.documents, tokenVerifier: auth.verifier })
    : null;

  registerErrorHandling(app, createRouteTable(app, { maxParamLength: MAX_PARAM_LENGTH }));
  registerJsonBodyParser(app);

  // helmet's headers, computed once at start-up rather than per request.
  registerSecurityHeaders(app, {
    // Basalt is an API called from other origins: its responses (images, files) must be
    // embeddable by those apps, so cross-origin resource policy is relaxed.
    crossOriginResourcePolicy: { policy: 'cross-origin' },
    crossOriginEmbedderPolicy: false,
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        imgSrc: ["'self'", 'data:', 'blob:'],
        styleSrc: ["'self'", "'unsafe-inline'"],
        scriptSrc: ["'self'"],
        connectSrc: ["'self'", 'ws:', 'wss:'],
        upgradeInsecureRequests: null,
      },
    },
  });
  // CORS headers, like helmet's, computed once at start-up.
  registerCors(app, {
    origins: config.corsOrigins,
    methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    allowedHeaders: ALLOWED_HEADERS,
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: 600,
    // tus clients may ask OPTIONS of the upload endpoint for its capabilities, with no preflight.
    discoveryPaths: ['/v1/storage/uploads'],
  });
  if (servesApi) {
    await registerApiDocs(app);
    await app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  }

  registerRequestContext(app, { serviceKey: config.serviceKey, tokenVerifier: auth.verifier });
  // Before any route is registered: every changing admin route gets the audit hook.
  auditAdminChanges(app, audit.log);
  if (servesApi) registerIdempotency(app, idempotency.service, log);

  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.recordRequest(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
    // An active user (docs/usage.md): one whose authenticated request succeeded.
    const caller = request.caller as Caller | null;
    if (reply.statusCode < 400 && caller !== null && isUser(caller)) usage.activeUser(caller.uid);
    done();
  });

  // Routes only, no service to start: health and metrics, and the admin dashboard (static
  // files; it calls the admin API like any other client).
  const ops: FastifyPluginAsync = async (instance) => {
    const readiness = [{ name: 'postgres', check: () => db.ping() }, storage.readiness];
    await instance.register(opsRoutes, { platform, readiness, tokenVerifier: auth.verifier });
  };
  const dashboard: FastifyPluginAsync = async (instance) => {
    await instance.register(dashboardRoutes, { dir: path.join(ROOT_DIR, 'dashboard', 'dist') });
  };

  // The routes this process serves, in this order in /docs: an API instance (the one with
  // realtime) all of them, a worker only /healthz, /readyz and /metrics (docs/deployment.md#roles).
  const routes = realtime
    ? [
        auth.routes,
        audit.routes,
        ops,
        dashboard,
        documents.routes,
        storage.routes,
        functions.routes,
        realtime.routes,
        usageModule.routes,
      ]
    : [ops];
  for (const plugin of routes) await app.register(plugin);

  // What this process runs: started in this order once the app is ready, stopped in reverse
  // when it closes. The change feed first and last: functions and realtime read it. Auth
  // (signing keys, revocations) and realtime run only where requests arrive.
  const feed = changeFeedLifecycle(db, changes);
  const running: Lifecycle[] = realtime
    ? [feed, audit, usageModule, auth, documents, storage, idempotency, functions, realtime]
    : [feed, audit, usageModule, documents, storage, functions];
  app.addHook('onReady', async () => {
    for (const module of running) await module.start();
  });
  app.addHook('onClose', async () => {
    for (const module of running.toReversed()) {
      await module.stop().catch((error: unknown) => log.error({ err: error }, 'error while closing'));
    }
    if (ownsDatabase) await db.close();
  });

  return app;
}
