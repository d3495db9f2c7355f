import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../../internal/log.js';
import { parseIdempotencyKey, type Claim, type IdempotencyService, type StoredAnswer } from './service.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The idempotency key this request claimed (null: none, or already settled). */
    idempotencyClaim: Extract<Claim, { kind: 'run' }> | null;
  }
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const GUARDED_PREFIXES = ['/v1/db/', '/v1/storage/'];
/** Headers of a kept answer that a replay sends again; the rest (dates, request ids) are the new request's own. */
const REPLAYED_HEADERS = ['content-type', 'etag', 'location', 'cache-control', 'content-disposition'];
/** Headers that change what a write does, bound into the request's hash with method, URL and body. */
const MEANINGFUL_HEADERS = ['if-match', 'x-upsert', 'upload-length', 'upload-offset', 'upload-metadata'];

function isStream(body: unknown): body is Readable {
  return typeof (body as { pipe?: unknown } | null)?.pipe === 'function';
}

function headerText(value: string | string[] | number | undefined): string | undefined {
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value.join(', ') : String(value);
}

/**
 * The request as the key binds it. A JSON body is hashed whole. A streamed body (uploads)
 * is not read ahead: its declared length and media type stand for it (the multipart
 * boundary, which a client draws anew on every retry, is left out).
 */
function identityOf(request: FastifyRequest) {
  const streamed = isStream(request.body) || request.isMultipart?.() === true || request.body === undefined;
  const headers: Record<string, string | undefined> = {};
  for (const name of MEANINGFUL_HEADERS) headers[name] = headerText(request.headers[name]);
  if (streamed) {
    headers['content-length'] = headerText(request.headers['content-length']);
    headers['content-type'] = headerText(request.headers['content-type'])?.split(';')[0]?.trim().toLowerCase();
  }
  return { method: request.method, url: request.url, body: streamed ? null : request.body, headers };
}

function guarded(request: FastifyRequest): boolean {
  return WRITE_METHODS.has(request.method) && GUARDED_PREFIXES.some((prefix) => request.url.startsWith(prefix));
}

function replay(request: FastifyRequest, reply: FastifyReply, answer: StoredAnswer): FastifyReply {
  // An upload's body may still be arriving: it is not needed, and not worth reading.
  if (!request.raw.complete) void reply.header('connection', 'close');
  return reply.code(answer.status).headers(answer.headers).header('idempotent-replayed', 'true').send(answer.body);
}

function keptHeaders(reply: FastifyReply): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const name of REPLAYED_HEADERS) {
    const value = headerText(reply.getHeader(name) as string | string[] | number | undefined);
    if (value !== undefined) kept[name] = value;
  }
  return kept;
}

/**
 * `Idempotency-Key` on every write of /v1/db and /v1/storage (service.ts explains the
 * protocol). Root hooks, so no route carries code of its own: preHandler claims the key or
 * replays the kept answer, onSend keeps the answer before it leaves (a retry after the
 * answer arrives always finds it), and onResponse / onRequestAbort release a key whose
 * request ended any other way.
 */
export function registerIdempotency(app: FastifyInstance, service: IdempotencyService, log: Logger): void {
  app.decorateRequest<Extract<Claim, { kind: 'run' }> | null>('idempotencyClaim', null);

  app.addHook('preHandler', async (request, reply) => {
    if (!guarded(request)) return;
    const key = parseIdempotencyKey(request.headers['idempotency-key']);
    if (key === null) return;
    const claim = await service.begin(request.caller, key, identityOf(request));
    if (claim.kind === 'replay') return replay(request, reply, claim.answer);
    request.idempotencyClaim = claim;
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const claim = request.idempotencyClaim;
    if (claim === null) return payload;
    request.idempotencyClaim = null;
    if (payload !== null && payload !== undefined && typeof payload !== 'string' && !Buffer.isBuffer(payload)) {
      // A streamed answer cannot be kept; the key is released rather than left pending.
      await service
        .abandon(claim)
        .catch((error: unknown) => log.warn({ err: error }, 'idempotency key release failed'));
      return payload;
    }
    const body = payload === null || payload === undefined ? Buffer.alloc(0) : Buffer.from(payload);
    try {
      await service.finish(claim, { status: reply.statusCode, headers: keptHeaders(reply), body });
    } catch (error) {
      log.warn({ err: error }, 'could not keep the answer of an idempotent request');
      await service.abandon(claim).catch(() => undefined);
    }
    return payload;
  });

  const settle = (request: FastifyRequest): void => {
    const claim = request.idempotencyClaim;
    if (claim === null) return;
    request.idempotencyClaim = null;
    service.abandon(claim).catch((error: unknown) => log.warn({ err: error }, 'idempotency key release failed'));
  };
  app.addHook('onResponse', async (request) => settle(request));
  app.addHook('onRequestAbort', async (request) => settle(request));
}
