import multipart, { type Multipart } from '@fastify/multipart';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { AppError, isAppError } from '../../internal/errors.js';
import { errorResponse } from '../../internal/http/errors.js';
import { closedObject } from '../../internal/http/response-schema.js';
import { requireService } from '../../internal/guards.js';
import { adminChangeEvent } from '../audit/routes.js';
import { servedContentType, splitStorageUrl } from './paths.js';
import type { StorageObject, StorageService } from './service.js';
import type { StorageSweeper } from './sweeper.js';
import type { ResumableUploads, UploadStatus } from './uploads.js';
import { MAX_SIGNED_URL_SECONDS } from './signing.js';
import { hasTransform, TRANSFORM_FITS, TRANSFORM_FORMATS, type TransformQuery } from './transforms.js';

export interface StorageRouteOptions {
  storage: StorageService;
  uploads: ResumableUploads;
  sweeper: StorageSweeper;
  /** Largest upload, for the routes' body limit. */
  maxFileSize: number;
}

// Empty and over-long rules reach the rule parser, which refuses them as INVALID_RULE, as for collections.
const ruleSchema = { type: 'string' } as const;
const bucketWritable = {
  public: { type: 'boolean' },
  max_file_size: { type: ['integer', 'null'], minimum: 1 },
  allowed_mime_types: {
    type: ['array', 'null'],
    maxItems: 100,
    items: { type: 'string', minLength: 3, maxLength: 255 },
  },
  rules: closedObject({ read: ruleSchema, write: ruleSchema, delete: ruleSchema }),
  max_total_bytes: { type: ['integer', 'null'], minimum: 0 },
  max_bytes_per_user: { type: ['integer', 'null'], minimum: 0 },
} as const;

const usageSchema = closedObject({ bytes: { type: 'integer' }, objects: { type: 'integer' } });

// Response schemas are closed (additionalProperties: false): the serializer sends only the
// properties they name, and the handlers' return types are checked against them.
const bucketSchema = closedObject({
  name: { type: 'string' },
  public: { type: 'boolean' },
  max_file_size: { type: ['integer', 'null'] },
  allowed_mime_types: { type: ['array', 'null'], items: { type: 'string' } },
  rules: closedObject({ read: { type: 'string' }, write: { type: 'string' }, delete: { type: 'string' } }),
  max_total_bytes: { type: ['integer', 'null'] },
  max_bytes_per_user: { type: ['integer', 'null'] },
  usage: usageSchema,
  created_at: { type: 'string' },
  updated_at: { type: 'string' },
});

const objectSchema = closedObject({
  id: { type: 'string' },
  bucket: { type: 'string' },
  path: { type: 'string' },
  size: { type: 'integer' },
  content_type: { type: 'string' },
  etag: { type: 'string' },
  sha256: { type: 'string' },
  owner: { type: ['string', 'null'] },
  created_at: { type: 'string' },
  updated_at: { type: 'string' },
});

const bucketParams = {
  type: 'object',
  required: ['bucket'],
  properties: { bucket: { type: 'string', maxLength: 63 } },
} as const;
const objectParams = {
  type: 'object',
  required: ['bucket', '*'],
  properties: { bucket: { type: 'string', maxLength: 63 }, '*': { type: 'string' } },
} as const;
const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', maxLength: 63 } },
} as const;

const errors = { 400: errorResponse, 401: errorResponse, 403: errorResponse, 404: errorResponse } as const;

/** Paths per bulk delete. */
export const MAX_BULK_PATHS = 1000;

function transferInput(body: { bucket: string; from: string; to: string; to_bucket?: string; upsert?: boolean }) {
  return {
    bucket: body.bucket,
    from: body.from,
    to: body.to,
    ...(body.to_bucket !== undefined ? { toBucket: body.to_bucket } : {}),
    upsert: body.upsert ?? false,
  };
}

/** Parses a single `bytes=` range against a size. null = serve the whole object; 'unsatisfiable' = 416. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | null | 'unsatisfiable' {
  if (header === undefined) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Malformed or multiple ranges: RFC 9110 lets a server ignore Range and send everything.
  if (!match) return null;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return null;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== '' && Number(last) < start) return null;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function contentDisposition(download: string | undefined, path: string): string | null {
  if (download === undefined) return null;
  const name = download !== '' ? download : (path.split('/').pop() ?? 'download');
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === etag);
}

/** A listing's `limit` query parameter (digits, checked by the schema): 1 to 1000, or undefined. */
function pageLimit(raw: string | undefined): number | undefined {
  const limit = raw === undefined ? undefined : Number(raw);
  if (limit !== undefined && (limit < 1 || limit > 1000)) {
    throw new AppError('INVALID_REQUEST', 'limit must be from 1 to 1000.');
  }
  return limit;
}

function upsertHeader(request: FastifyRequest): boolean {
  const raw = request.headers['x-upsert'];
  if (raw === undefined) return false;
  const value = (Array.isArray(raw) ? raw[0] : raw)?.toLowerCase();
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new AppError('INVALID_REQUEST', 'x-upsert must be "true" or "false".');
}

function declaredLength(request: FastifyRequest): number | null {
  const raw = request.headers['content-length'];
  if (raw === undefined || !/^\d+$/.test(raw)) return null;
  return Number(raw);
}

interface ObjectQuery extends TransformQuery {
  download?: string;
  expires?: string;
  sig?: string;
}

/** Cache headers and the sandbox every download carries, original or transformed. */
function downloadHeaders(reply: FastifyReply, etag: string, updatedAt: string, shared: boolean): void {
  void reply.header('etag', etag);
  void reply.header('last-modified', new Date(updatedAt).toUTCString());
  void reply.header('cache-control', shared ? 'public, max-age=0, must-revalidate' : 'private, no-cache');
  // User content served from the API's origin must not run as a page of that origin.
  void reply.header('content-security-policy', "default-src 'none'; sandbox");
}

async function serveObject(
  storage: StorageService,
  request: FastifyRequest,
  query: ObjectQuery,
  reply: FastifyReply,
  withBody: boolean,
): Promise<FastifyReply> {
  const { bucket, rawPath } = splitStorageUrl(request.url, '/v1/storage/');
  const signed = query.sig !== undefined || query.expires !== undefined;
  const transform = hasTransform(query) ? storage.parseTransform(query) : undefined;
  const object = await storage.objectForRead(request.caller, bucket, rawPath, {
    signature: signed ? { expires: query.expires, sig: query.sig } : undefined,
    transform,
  });
  const disposition = contentDisposition(query.download, object.path);
  if (disposition) void reply.header('content-disposition', disposition);
  if (transform) {
    const { etag } = storage.variantOf(object, transform);
    downloadHeaders(reply, etag, object.updated_at, object.public && !signed);
    if (etagMatches(request.headers['if-none-match'], etag)) return reply.code(304).send();
    const image = await storage.transformedImage(object, transform);
    void reply.type(image.contentType);
    void reply.header('content-length', String(image.size));
    if (!withBody) {
      if (!Buffer.isBuffer(image.body)) image.body.destroy();
      return reply.send();
    }
    return reply.send(image.body);
  }
  downloadHeaders(reply, object.etag, object.updated_at, object.public && !signed);
  void reply.header('accept-ranges', 'bytes');

  if (etagMatches(request.headers['if-none-match'], object.etag)) return reply.code(304).send();

  const ifRange = request.headers['if-range'];
  const range =
    ifRange === undefined || ifRange === object.etag ? parseRange(request.headers.range, object.size) : null;
  if (range === 'unsatisfiable') {
    throw new AppError('RANGE_NOT_SATISFIABLE', `The object has ${object.size} bytes.`, {
      headers: { 'content-range': `bytes */${object.size}` },
      details: { size: object.size },
    });
  }
  // Opened before the length headers are set, so a failure still gets a well-formed error response.
  const stream =
    withBody && object.size > 0
      ? await storage.openBytes(
          object.storage_key,
          range ?? undefined,
          range ? range.end - range.start + 1 : object.size,
        )
      : null;
  void reply.type(servedContentType(object.content_type));
  if (range) {
    void reply.code(206);
    void reply.header('content-range', `bytes ${range.start}-${range.end}/${object.size}`);
    void reply.header('content-length', String(range.end - range.start + 1));
  } else {
    void reply.header('content-length', String(object.size));
  }
  return stream ? reply.send(stream) : reply.send();
}

/** Buckets admin, downloads, listings, deletes and signing: JSON bodies. */
const storageJsonRoutes: FastifyPluginAsync<StorageRouteOptions> = async (plugin, { storage, sweeper }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  // The key is checked before the body and the parameters, so a stranger learns nothing from validation errors.
  const adminOnly = async (request: FastifyRequest) => requireService(request.caller);

  app.post(
    '/v1/admin/buckets',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['storage'],
        summary: 'Create a bucket (service key)',
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: { name: { type: 'string', minLength: 1, maxLength: 63 }, ...bucketWritable },
        },
        response: { 201: bucketSchema, 409: errorResponse, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) =>
      reply.code(201).send(await storage.createBucket(request.caller, request.body, adminChangeEvent(request, 201))),
  );

  app.get(
    '/v1/admin/buckets',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['storage'],
        summary: 'List buckets (service key)',
        response: {
          200: closedObject({ buckets: { type: 'array', items: bucketSchema } }),
          ...errors,
        },
      },
    },
    async (request) => ({ buckets: await storage.listBuckets(request.caller) }),
  );

  app.get(
    '/v1/admin/buckets/:name',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['storage'],
        summary: 'Get a bucket (service key)',
        params: nameParams,
        response: { 200: bucketSchema, ...errors },
      },
    },
    async (request) => storage.getBucket(request.caller, request.params.name),
  );

  app.patch(
    '/v1/admin/buckets/:name',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['storage'],
        summary: 'Change a bucket (service key); fields left out stay',
        params: nameParams,
        body: closedObject(bucketWritable),
        response: { 200: bucketSchema, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request) =>
      storage.updateBucket(request.caller, request.params.name, request.body, adminChangeEvent(request, 200)),
  );

  app.get(
    '/v1/admin/buckets/:name/usage',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['storage'],
        summary: "A bucket's usage and its owners' usage, in owner order (service key)",
        params: nameParams,
        querystring: {
          type: 'object',
          properties: {
            owner: { type: 'string', minLength: 1, maxLength: 255 },
            after: { type: 'string', maxLength: 255 },
            limit: { type: 'string', pattern: '^[0-9]{1,4}$' },
          },
        },
        response: {
          200: closedObject({
            bucket: { type: 'string' },
            bytes: { type: 'integer' },
            objects: { type: 'integer' },
            reserved_bytes: { type: 'integer' },
            users: {
              type: 'array',
              items: closedObject({
                owner: { type: 'string' },
                bytes: { type: 'integer' },
                objects: { type: 'integer' },
              }),
            },
            next_cursor: { type: ['string', 'null'] },
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      const limit = pageLimit(request.query.limit);
      return storage.bucketUsage(request.caller, request.params.name, {
        owner: request.query.owner,
        after: request.query.after,
        limit,
      });
    },
  );

  app.delete(
    '/v1/admin/buckets/:name',
    {
      preValidation: adminOnly,
      schema: {
        tags: ['storage'],
        summary: 'Delete a bucket (service key); a non-empty bucket needs ?force=true',
        params: nameParams,
        querystring: { type: 'object', properties: { force: { type: 'string', enum: ['true', 'false'] } } },
        response: { 204: { type: 'null' }, 409: errorResponse, ...errors },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      await storage.deleteBucket(
        request.caller,
        request.params.name,
        request.query.force === 'true',
        adminChangeEvent(request, 204),
      );
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/admin/storage/sweep',
    {
      preValidation: adminOnly,
      config: { audit: { type: 'admin.storage.sweep' } },
      schema: {
        tags: ['storage'],
        summary: 'Remove orphaned bytes now (service key)',
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: { grace_seconds: { type: 'integer', minimum: 0, maximum: 30 * 86_400 } },
        },
        response: {
          200: closedObject({
            ran: { type: 'boolean' },
            pending: { type: 'integer' },
            orphans: { type: 'integer' },
            stale_writes: { type: 'integer' },
            expired_uploads: { type: 'integer' },
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      requireService(request.caller);
      return sweeper.sweep(request.body?.grace_seconds ?? storage.orphanGraceSeconds);
    },
  );

  app.get(
    '/v1/storage/:bucket',
    {
      schema: {
        tags: ['storage'],
        summary: "List a bucket's objects the caller may read, in path order",
        params: bucketParams,
        querystring: {
          type: 'object',
          properties: {
            prefix: { type: 'string', maxLength: 1024 },
            limit: { type: 'string', pattern: '^[0-9]{1,4}$' },
            after: { type: 'string', maxLength: 1024 },
          },
        },
        response: {
          200: closedObject({
            objects: { type: 'array', items: objectSchema },
            next_cursor: { type: ['string', 'null'] },
          }),
          ...errors,
        },
      },
    },
    async (request) => {
      const limit = pageLimit(request.query.limit);
      return storage.list(request.caller, request.params.bucket, {
        prefix: request.query.prefix,
        limit,
        after: request.query.after,
      });
    },
  );

  const objectQuery = {
    type: 'object',
    properties: {
      download: { type: 'string', maxLength: 255 },
      expires: { type: 'string', maxLength: 20 },
      sig: { type: 'string', maxLength: 128 },
      // Checked by parseTransform, so a bad value gets a message naming the parameter.
      width: { type: 'string', maxLength: 16 },
      height: { type: 'string', maxLength: 16 },
      fit: { type: 'string', maxLength: 16 },
      format: { type: 'string', maxLength: 16 },
      quality: { type: 'string', maxLength: 16 },
    },
  } as const;

  app.get(
    '/v1/storage/:bucket/*',
    {
      exposeHeadRoute: false,
      schema: {
        tags: ['storage'],
        summary: 'Download an object (Range, If-None-Match, ?download[=name], signed ?expires&sig)',
        params: objectParams,
        querystring: objectQuery,
      },
    },
    async (request, reply) => serveObject(storage, request, request.query, reply, true),
  );

  app.head(
    '/v1/storage/:bucket/*',
    {
      schema: { tags: ['storage'], summary: "An object's headers", params: objectParams, querystring: objectQuery },
    },
    async (request, reply) => serveObject(storage, request, request.query, reply, false),
  );

  app.delete(
    '/v1/storage/:bucket/*',
    {
      schema: {
        tags: ['storage'],
        summary: 'Delete an object (its bytes and its metadata)',
        params: objectParams,
        response: { 204: { type: 'null' }, ...errors },
      },
    },
    async (request, reply) => {
      const { bucket, rawPath } = splitStorageUrl(request.url, '/v1/storage/');
      await storage.remove(request.caller, bucket, rawPath);
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/v1/storage/:bucket',
    {
      schema: {
        tags: ['storage'],
        summary: 'Delete several objects of a bucket; one result per path, in order',
        params: bucketParams,
        body: {
          type: 'object',
          required: ['paths'],
          additionalProperties: false,
          properties: {
            paths: {
              type: 'array',
              minItems: 1,
              maxItems: MAX_BULK_PATHS,
              items: { type: 'string', maxLength: 4096 },
            },
          },
        },
        response: {
          200: closedObject({
            results: {
              type: 'array',
              items: closedObject({
                path: { type: 'string' },
                deleted: { type: 'boolean' },
                error: closedObject({ code: { type: 'string' }, message: { type: 'string' } }),
              }),
            },
          }),
          ...errors,
        },
      },
    },
    async (request) => storage.removeMany(request.caller, request.params.bucket, request.body.paths),
  );

  const transferBody = {
    type: 'object',
    required: ['bucket', 'from', 'to'],
    additionalProperties: false,
    properties: {
      bucket: { type: 'string', maxLength: 63 },
      from: { type: 'string', maxLength: 4096 },
      to: { type: 'string', maxLength: 4096 },
      to_bucket: { type: 'string', maxLength: 63 },
      upsert: { type: 'boolean' },
    },
  } as const;
  const transferErrors = { 409: errorResponse, 413: errorResponse, 415: errorResponse, ...errors } as const;

  app.post(
    '/v1/storage/move',
    {
      schema: {
        tags: ['storage'],
        summary: 'Move an object to another path or bucket (metadata only; atomic)',
        body: transferBody,
        response: { 200: objectSchema, ...transferErrors },
      },
    },
    async (request) => storage.move(request.caller, transferInput(request.body)),
  );

  app.post(
    '/v1/storage/copy',
    {
      schema: {
        tags: ['storage'],
        summary: 'Copy an object to another path or bucket, as a new object of the caller',
        body: transferBody,
        response: { 201: objectSchema, ...transferErrors },
      },
    },
    async (request, reply) => reply.code(201).send(await storage.copy(request.caller, transferInput(request.body))),
  );

  app.post(
    '/v1/sign/:bucket/*',
    {
      schema: {
        tags: ['storage'],
        summary: 'A URL that downloads the object without a token until it expires',
        params: objectParams,
        body: {
          type: 'object',
          required: ['expires_in'],
          additionalProperties: false,
          properties: {
            expires_in: { type: 'integer', minimum: 1, maximum: MAX_SIGNED_URL_SECONDS },
            transform: closedObject({
              width: { type: 'integer' },
              height: { type: 'integer' },
              fit: { type: 'string', enum: TRANSFORM_FITS },
              format: { type: 'string', enum: TRANSFORM_FORMATS },
              quality: { type: 'integer' },
            }),
          },
        },
        response: {
          200: closedObject({ url: { type: 'string' }, expires_at: { type: 'string' } }),
          ...errors,
        },
      },
    },
    async (request) => {
      const { bucket, rawPath } = splitStorageUrl(request.url, '/v1/sign/');
      const transform = request.body.transform ? storage.parseTransform(request.body.transform) : undefined;
      return storage.signedUrl(request.caller, bucket, rawPath, request.body.expires_in, transform);
    },
  );
};

/**
 * Uploads: the body is never parsed or buffered. The raw PUT hands the request
 * stream straight to the service; the multipart POST streams the `file` part.
 */
const storageUploadRoutes: FastifyPluginAsync<StorageRouteOptions> = async (plugin, { storage, maxFileSize }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  await app.register(multipart, { limits: { fileSize: Number.MAX_SAFE_INTEGER, files: 1, fields: 20, parts: 40 } });

  // After an early rejection (409, 413, 415) the rest of a large body is not worth reading.
  app.addHook('onSend', async (request, reply) => {
    if (reply.statusCode >= 400 && !request.raw.complete) void reply.header('connection', 'close');
  });

  const bodyLimit = Math.min(Number.MAX_SAFE_INTEGER, maxFileSize + 1024 * 1024);
  const uploadSchema = (summary: string) => ({
    tags: ['storage'],
    summary,
    params: objectParams,
    response: { 201: objectSchema, 409: errorResponse, 413: errorResponse, 415: errorResponse, ...errors },
  });

  app.put(
    '/v1/storage/:bucket/*',
    { bodyLimit, schema: uploadSchema('Upload an object from the raw body (x-upsert: true overwrites)') },
    async (request, reply) => {
      const { bucket, rawPath } = splitStorageUrl(request.url, '/v1/storage/');
      // The body has no schema (it is the object's bytes, any type): the '*' parser above hands
      // over the request stream, which no JSON schema can describe, so its type is stated here.
      const body = (request.body as Readable | undefined) ?? request.raw;
      const object = await storage.upload(request.caller, {
        bucket,
        rawPath,
        body,
        contentType: request.headers['content-type'],
        upsert: upsertHeader(request),
        declaredSize: declaredLength(request),
      });
      return reply.code(201).send(object);
    },
  );

  app.post(
    '/v1/storage/:bucket/*',
    { bodyLimit, schema: uploadSchema('Upload an object from multipart/form-data (field `file`)') },
    async (request, reply) => {
      if (!request.isMultipart()) {
        throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'POST uploads take multipart/form-data; use PUT for a raw body.');
      }
      const { bucket, rawPath } = splitStorageUrl(request.url, '/v1/storage/');
      const upsert = upsertHeader(request);
      let object: StorageObject | null = null;
      let parts: AsyncIterator<Multipart>;
      try {
        parts = request.parts()[Symbol.asyncIterator]();
      } catch (error) {
        throw malformedMultipart(error);
      }
      for (;;) {
        let next: IteratorResult<Multipart>;
        try {
          next = await parts.next();
        } catch (error) {
          // Once the file is stored, a form that breaks off after it does not undo the upload.
          if (object !== null) break;
          throw malformedMultipart(error);
        }
        if (next.done) break;
        const part = next.value;
        if (part.type !== 'file') continue;
        if (part.fieldname !== 'file' || object !== null) {
          part.file.resume();
          continue;
        }
        let bodyError: unknown = null;
        part.file.once('error', (error: unknown) => (bodyError ??= error));
        try {
          object = await storage.upload(request.caller, {
            bucket,
            rawPath,
            body: part.file,
            // The parser hands over the part's type without its parameters (charset included).
            contentType: part.mimetype,
            upsert,
            declaredSize: null,
          });
        } catch (error) {
          // A body cut off inside the file fails the write; that is the client's fault, not the store's.
          if (bodyError !== null && !isAppError(bodyError)) throw malformedMultipart(bodyError);
          throw error;
        }
      }
      if (!object) throw new AppError('INVALID_REQUEST', 'The form has no file field named "file".');
      return reply.code(201).send(object);
    },
  );
};

/**
 * The multipart parser's own errors (no boundary, a garbled or cut-off body) are the
 * client's: 400, never 500. Errors that already carry a client status (the plugin's
 * part and field limits) keep it.
 */
function malformedMultipart(error: unknown): unknown {
  if (isAppError(error)) return error;
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return error;
  return new AppError('INVALID_REQUEST', 'The multipart/form-data body is malformed.', { cause: error });
}

const TUS_VERSION = '1.0.0';
const TUS_EXTENSIONS = 'creation,creation-with-upload,termination,expiration';
const TUS_CONTENT_TYPE = 'application/offset+octet-stream';

function tusHeaders(reply: FastifyReply, status: UploadStatus): void {
  void reply.header('upload-offset', String(status.offset));
  void reply.header('upload-expires', new Date(status.expiresAt).toUTCString());
}

function uploadOffset(request: FastifyRequest): number {
  const raw = request.headers['upload-offset'];
  if (typeof raw !== 'string' || !/^\d{1,16}$/.test(raw)) {
    throw new AppError('INVALID_REQUEST', 'Upload-Offset must be a whole number of bytes.');
  }
  return Number(raw);
}

/** The body of a PATCH, or of a POST with creation-with-upload; null when there is none. */
function tusBody(request: FastifyRequest, required: boolean): Readable | null {
  const type = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  if (type !== TUS_CONTENT_TYPE) {
    if (!required && type === undefined && (request.headers['content-length'] ?? '0') === '0') return null;
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Upload bytes are sent as ${TUS_CONTENT_TYPE}.`);
  }
  return (request.body as Readable | undefined) ?? request.raw;
}

/**
 * tus 1.0.0 at /v1/storage/uploads (see uploads.ts). Errors are the catalogue's JSON bodies
 * with the statuses tus expects (409 for a wrong offset, 404 for an unknown or expired
 * upload, 413 over a limit); every answer carries Tus-Resumable.
 */
const tusRoutes: FastifyPluginAsync<StorageRouteOptions> = async (plugin, { uploads, maxFileSize }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  app.addHook('onRequest', async (request, reply) => {
    void reply.header('tus-resumable', TUS_VERSION);
    if (request.method === 'OPTIONS') return;
    if (request.headers['tus-resumable'] !== TUS_VERSION) {
      void reply.header('tus-version', TUS_VERSION);
      return reply.code(412).send({
        error: { code: 'INVALID_REQUEST', message: `Tus-Resumable: ${TUS_VERSION} is required.` },
      });
    }
  });
  app.addHook('onSend', async (request, reply) => {
    if (reply.statusCode >= 400 && !request.raw.complete) void reply.header('connection', 'close');
  });

  const bodyLimit = Math.min(Number.MAX_SAFE_INTEGER, maxFileSize + 1024 * 1024);
  const tusErrors = { ...errors, 409: errorResponse, 412: errorResponse, 413: errorResponse, 415: errorResponse };
  const idParams = {
    type: 'object',
    required: ['id'],
    properties: { id: { type: 'string', maxLength: 64 } },
  } as const;
  const capabilities = async (_request: FastifyRequest, reply: FastifyReply) => {
    void reply.header('tus-version', TUS_VERSION);
    void reply.header('tus-extension', TUS_EXTENSIONS);
    void reply.header('tus-max-size', String(maxFileSize));
    return reply.code(204).send();
  };
  app.options('/v1/storage/uploads', { schema: { hide: true } }, capabilities);
  app.options('/v1/storage/uploads/:id', { schema: { hide: true } }, capabilities);

  app.post(
    '/v1/storage/uploads',
    {
      bodyLimit,
      schema: {
        tags: ['storage'],
        summary:
          'Create a resumable upload (tus 1.0.0; Upload-Length, Upload-Metadata: bucket, path, content_type, upsert)',
        response: {
          201: {
            ...objectSchema,
            type: ['object', 'null'],
            description: 'Created; the object when the request carried all of its bytes, else null',
          },
          ...tusErrors,
        },
      },
    },
    async (request, reply) => {
      const raw = request.headers['upload-length'];
      if (typeof raw !== 'string' || !/^\d{1,16}$/.test(raw)) {
        throw new AppError(
          'INVALID_REQUEST',
          'Upload-Length must be a whole number of bytes (deferred lengths are not supported).',
        );
      }
      const body = tusBody(request, false);
      const metadata = request.headers['upload-metadata'];
      let status = await uploads.create(
        request.caller,
        Number(raw),
        typeof metadata === 'string' ? metadata : undefined,
      );
      if (body !== null) status = await uploads.append(request.caller, status.id, 0, body);
      void reply.header('location', `/v1/storage/uploads/${status.id}`);
      tusHeaders(reply, status);
      return reply.code(201).send(status.object);
    },
  );

  app.head(
    '/v1/storage/uploads/:id',
    { schema: { tags: ['storage'], summary: 'Where a resumable upload stands (Upload-Offset)', params: idParams } },
    async (request, reply) => {
      const status = await uploads.status(request.caller, request.params.id);
      tusHeaders(reply, status);
      void reply.header('upload-length', String(status.length));
      if (status.metadata !== '') void reply.header('upload-metadata', status.metadata);
      void reply.header('cache-control', 'no-store');
      return reply.code(200).send();
    },
  );

  app.patch(
    '/v1/storage/uploads/:id',
    {
      bodyLimit,
      schema: {
        tags: ['storage'],
        summary: 'Append bytes to a resumable upload at Upload-Offset',
        params: idParams,
        response: {
          200: {
            ...objectSchema,
            description: 'The upload is complete: the object (only with `Prefer: return=representation`)',
          },
          204: { type: 'null', description: 'Stored; Upload-Offset says how far' },
          ...tusErrors,
        },
      },
    },
    async (request, reply) => {
      const offset = uploadOffset(request);
      const body = tusBody(request, true);
      const status = await uploads.append(request.caller, request.params.id, offset, body);
      tusHeaders(reply, status);
      // tus answers every PATCH with 204. A client that asks with `Prefer: return=representation`
      // (RFC 7240; the SDK does) gets the finished object from the last one, as a PUT returns it.
      return status.object && prefersRepresentation(request)
        ? reply.code(200).send(status.object)
        : reply.code(204).send(null);
    },
  );

  app.delete(
    '/v1/storage/uploads/:id',
    {
      schema: {
        tags: ['storage'],
        summary: 'Terminate a resumable upload and discard its bytes',
        params: idParams,
        response: { 204: { type: 'null' }, ...tusErrors },
      },
    },
    async (request, reply) => {
      await uploads.terminate(request.caller, request.params.id);
      return reply.code(204).send(null);
    },
  );
};

/** Buckets, objects and signed URLs under /v1/storage, /v1/sign and /v1/admin/storage. */
export const storageRoutes: FastifyPluginAsync<StorageRouteOptions> = async (app, options) => {
  await app.register(storageJsonRoutes, options);
  await app.register(storageUploadRoutes, options);
  await app.register(tusRoutes, options);
};

/** Whether the request asks for the resource in the answer (`Prefer: return=representation`, RFC 7240). */
function prefersRepresentation(request: FastifyRequest): boolean {
  const prefer = request.headers.prefer;
  return typeof prefer === 'string' && /(^|[\s,;])return=representation($|[\s,;])/i.test(prefer);
}
