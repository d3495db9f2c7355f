import path from 'node:path';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import { ChangeFeed } from './internal/changes/feed.js';
import { Database } from './internal/db.js';
import { registerCors } from './internal/http/cors.js';
import { registerErrorHandling, toAppError } from './internal/http/errors.js';
import { registerJsonBodyParser } from './internal/http/json-body.js';
import { registerRequestContext, requestIdFrom } from './internal/http/request-context.js';
import { registerSecurityHeaders } from './internal/http/security-headers.js';
import { createLogger, requestLogger, type Logger } from './internal/log.js';
import { Metrics } from './internal/metrics.js';
import { ROOT_DIR } from './internal/paths.js';
import type { Platform, RuntimeConfig } from './internal/platform.js';
import { createAuthModule } from './modules/auth/module.js';
import { authRoutes } from './modules/auth/routes.js';
import { oauthRoutes } from './modules/auth/oauth/routes.js';
import { createDocumentsModule } from './modules/documents/index.js';
import { collectionAdminRoutes, documentRoutes } from './modules/documents/routes.js';
import { opsRoutes } from './modules/ops/routes.js';
import { dashboardRoutes } from './modules/dashboard/routes.js';
import { createFunctionsModule } from './modules/functions/module.js';
import { functionRoutes } from './modules/functions/routes.js';
import { realtimeRoutes } from './modules/realtime/routes.js';
import { createStorageModule } from './modules/storage/module.js';
import { registerStorageRoutes } from './modules/storage/routes.js';
import { createRealtimeService } from './modules/realtime/service.js';

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
];

/** Trusts the nearest `hops` proxies (Fastify's types take no hop count directly). */
function trustHops(hops: number): (address: string, hop: number) => boolean {
  return (_address, hop) => hop < hops;
}

/** The OpenAPI document of the routes registered after it, and its UI at /docs. */
async function registerApiDocs(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Basalt', version: '1', description: 'Auth, documents, realtime, storage and functions.' },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'An access token or the service key' },
        },
      },
      security: [{ bearer: [] }],
    },
    // Shared schemas (the error envelope) appear under components.schemas by their $id.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
}

export interface BuildOptions {
  logger?: Logger;
  /** A database to share (tests); otherwise one is opened from config.databaseUrl and closed with the app. */
  database?: Database;
}

/**
 * Builds the whole server from a resolved configuration: plugins, shared services and
 * every module. Performs no I/O beyond opening the pool; listening is the caller's job.
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
  const closeTasks: Array<() => Promise<void>> = [];

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
    // 4096: a storage path of 1024 bytes is up to 3072 characters once percent-encoded.
    routerOptions: { maxParamLength: 4096, ignoreTrailingSlash: true },
    // A malformed URL (bad percent-encoding) gets the catalogue's envelope, not Fastify's own.
    frameworkErrors: (error, _request, reply) => {
      const appError = toAppError(error);
      void (reply as unknown as FastifyReply).code(appError.status).send(appError.toBody());
    },
  });

  const platform: Platform = {
    config,
    db,
    log,
    metrics: new Metrics(),
    readiness: [{ name: 'postgres', check: () => db.ping() }],
    tokenVerifier: null,
    changes: null,
    onClose: (task) => closeTasks.push(task),
  };
  app.decorate('platform', platform);

  registerErrorHandling(app);
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
  });
  if (servesApi) {
    await registerApiDocs(app);
    await app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  }

  registerRequestContext(app, { serviceKey: config.serviceKey, tokenVerifier: () => platform.tokenVerifier });

  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    platform.metrics.recordRequest(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
    done();
  });

  // Modules, each built from the platform and registered with its routes. Order
  // matters only where one module hands a service to another (auth first).
  // The change feed first: realtime and functions subscribe to it. Its ticker runs in every
  // instance (one leads); it starts once the app is ready and stops after the modules.
  const changeFeed = new ChangeFeed(
    { db, log, metrics: platform.metrics, databaseUrl: config.databaseUrl },
    { retentionMs: config.changeRetentionSeconds * 1000 },
  );
  platform.changes = changeFeed;
  const stopNudging = db.onWrite(() => changeFeed.nudge());
  platform.onClose(async () => {
    stopNudging();
  });
  app.addHook('onReady', () => changeFeed.start());
  platform.onClose(() => changeFeed.stop());
  // Auth first: it installs the token verifier, and OAuth calls into auth.service.
  // Tokens are verified (keys loaded, revocations followed) only where requests arrive.
  const auth = createAuthModule(platform);
  platform.tokenVerifier = auth.service.verifier;
  if (servesApi) {
    app.addHook('onReady', () => auth.start());
    await app.register(authRoutes, { platform, auth });
    await app.register(oauthRoutes, { platform, auth: auth.service });
  }
  await app.register(opsRoutes, { platform });
  // The admin dashboard: static files only; it calls the admin API like any other client.
  if (servesApi) {
    await app.register(dashboardRoutes, { dir: path.join(ROOT_DIR, 'dashboard', 'dist') });
  }
  // Documents after auth (callers resolve to users); realtime and functions use `documents`.
  const { documents, collections } = await createDocumentsModule(platform);
  if (servesApi) {
    await app.register(documentRoutes, { documents });
    await app.register(collectionAdminRoutes, { collections });
  }
  // Storage after auth; its service is what functions' ctx.storage would call.
  const storage = createStorageModule(platform);
  if (servesApi) {
    await registerStorageRoutes(app, {
      storage: storage.service,
      sweeper: storage.sweeper,
      maxFileSize: config.storage.maxFileSize,
    });
  }
  // Functions last: ctx.db and ctx.storage call the services registered above.
  const functions = createFunctionsModule(platform, { documents, storage: storage.service });
  await functions.service.load();
  app.addHook('onReady', () => functions.start());
  platform.onClose(() => functions.stop());
  if (servesApi) await app.register(functionRoutes, { module: functions });
  // Realtime after the change feed and documents: it reads both. Stops before the feed.
  if (servesApi) {
    const realtime = createRealtimeService(platform, documents);
    app.addHook('onReady', () => realtime.start());
    platform.onClose(() => realtime.stop());
    await app.register(realtimeRoutes, { realtime });
  }

  app.addHook('onClose', async () => {
    for (const task of closeTasks.reverse()) {
      await task().catch((error: unknown) => log.error({ err: error }, 'error while closing'));
    }
    if (ownsDatabase) await db.close();
  });

  return app;
}
