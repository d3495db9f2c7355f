import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { AppError } from '../../internal/errors.js';
import { errorResponse } from '../../internal/http/errors.js';
import { closedObject } from '../../internal/http/response-schema.js';
import { requireService } from '../../internal/guards.js';
import { adminChangeEvent } from '../audit/routes.js';
import type { CollectionService } from './collection-service.js';
import { COLLECTION_NAME_PATTERN, DOCUMENT_ID_PATTERN } from './names.js';
import { AGGREGATE_LIMITS } from './aggregate.js';
import { EXPAND_LIMITS } from './expand.js';
import { MAX_SELECT_PATHS, OPERATORS, QUERY_LIMITS } from './query.js';
import { SEARCH_LIMITS } from './search.js';
import { MAX_BATCH_OPS, type DocumentService, type RedactedDocument, type WriteOptions } from './service.js';
import type { Document } from './types.js';

// Response schemas are closed (additionalProperties: false): the serializer sends only the
// properties they name, and the handlers' return types are checked against them.
const documentSchema = closedObject({
  id: { type: 'string' },
  collection: { type: 'string' },
  owner: { type: ['string', 'null'] },
  version: { type: 'integer' },
  created_at: { type: 'string', format: 'date-time' },
  updated_at: { type: 'string', format: 'date-time' },
  data: {
    type: ['object', 'null'],
    additionalProperties: true,
    description: 'null only in a PATCH or batch update result the caller may not read',
  },
  expand: {
    type: 'object',
    additionalProperties: true,
    description: 'With expand: each reference path → the document, a list of them, or null (absent or unreadable)',
  },
  highlights: {
    type: 'object',
    additionalProperties: { type: 'string' },
    description: 'With a search and highlight: each search field → its matching passages, HTML with <mark>',
  },
});

const collectionParam = { type: 'string', pattern: COLLECTION_NAME_PATTERN } as const;
const idParam = { type: 'string', pattern: DOCUMENT_ID_PATTERN } as const;
const dataField = {
  type: 'object',
  additionalProperties: true,
  description: 'User fields; names may not start with "$". PATCH and update accept field transforms.',
} as const;
const ownerField = {
  type: ['string', 'null'],
  maxLength: 256,
  description: 'Service key only: the owner of the new document (default: the calling user)',
} as const;
const ifMatchHeaders = {
  type: 'object',
  properties: { 'if-match': { type: 'string', description: 'The version the write expects, e.g. 3 or "3"' } },
} as const;

const whereSchema = {
  type: 'array',
  maxItems: QUERY_LIMITS.maxConditions,
  description: `[[path, op, value], ...] ANDed; an entry may be {"or": [...]} or {"and": [...]}. op: ${OPERATORS.join(', ')}`,
  items: { anyOf: [{ type: 'array', minItems: 3, maxItems: 3 }, { type: 'object' }] },
} as const;

const expandSchema = {
  type: 'array',
  maxItems: EXPAND_LIMITS.maxPaths,
  items: { type: 'string', maxLength: 1000 },
  description: 'Reference paths to expand (refs of the collection; two levels at most, e.g. "post.author")',
} as const;

const searchSettingsSchema = {
  type: ['object', 'null'],
  required: ['fields'],
  additionalProperties: false,
  properties: {
    fields: { type: 'array', minItems: 1, maxItems: SEARCH_LIMITS.maxFields, items: { type: 'string' } },
    language: { type: 'string', maxLength: 63 },
  },
} as const;

const refsSchema = {
  type: 'object',
  additionalProperties: { type: 'string' },
  description: 'Field path → the collection whose document ids it holds',
} as const;

const querySchema = closedObject({
  where: whereSchema,
  order_by: {
    type: 'array',
    maxItems: QUERY_LIMITS.maxOrderBy,
    items: { anyOf: [{ type: 'array', minItems: 1, maxItems: 2 }, { type: 'string' }] },
  },
  limit: { type: 'integer', minimum: 1, maximum: QUERY_LIMITS.maxLimit, default: QUERY_LIMITS.defaultLimit },
  after: { type: ['string', 'null'], maxLength: 200_000 },
  before: { type: ['string', 'null'], maxLength: 200_000 },
  limit_to_last: { type: 'integer', minimum: 1, maximum: QUERY_LIMITS.maxLimit },
  select: { type: 'array', maxItems: MAX_SELECT_PATHS, items: { type: 'string', maxLength: 1024 } },
  search: {
    type: 'string',
    maxLength: SEARCH_LIMITS.maxQueryChars,
    description: 'Full-text search in web-search syntax ("a phrase", or, -exclude); relevance order unless order_by',
  },
  highlight: { type: 'boolean', description: 'With search: add highlights' },
  expand: expandSchema,
});

const rulesSchema = closedObject({
  read: { type: ['string', 'null'] },
  create: { type: ['string', 'null'] },
  update: { type: ['string', 'null'] },
  delete: { type: ['string', 'null'] },
});

const ruleKinds = {
  read: { type: 'string' },
  create: { type: 'string' },
  update: { type: 'string' },
  delete: { type: 'string' },
} as const;

const collectionSchema = closedObject({
  name: { type: 'string' },
  rules: closedObject(ruleKinds),
  schema: { type: ['object', 'null'], additionalProperties: true },
  indexes: { type: 'array', items: {} },
  search: {
    type: ['object', 'null'],
    additionalProperties: false,
    required: ['fields', 'language'],
    properties: { fields: { type: 'array', items: { type: 'string' } }, language: { type: 'string' } },
  },
  refs: { type: 'object', additionalProperties: { type: 'string' } },
  created_at: { type: 'string' },
  updated_at: { type: 'string' },
});

const indexesSchema = {
  type: 'array',
  items: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] },
} as const;

/** Reads If-Match: a version number, bare or quoted as an ETag. */
function ifMatch(header: string | undefined): WriteOptions {
  if (header === undefined) return {};
  const match = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/.exec(header);
  const version = match ? Number(match[1]) : NaN;
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new AppError('INVALID_REQUEST', 'If-Match must be a document version, e.g. 3.', {
      details: { field: 'if-match' },
    });
  }
  return { ifVersion: version };
}

function sendDocument(reply: FastifyReply, status: number, doc: Document | RedactedDocument): FastifyReply {
  return reply.code(status).header('etag', `"${doc.version}"`).send(doc);
}

const tags = ['documents'];

/** A query or count with no body at all means "everything": `{}`. */
async function emptyBodyIsEmptyQuery(request: { body: unknown }): Promise<void> {
  if (request.body === undefined || request.body === null) request.body = {};
}

/** /v1/db: documents, queries, counts and batches. */
export const documentRoutes: FastifyPluginAsync<{ documents: DocumentService }> = async (plugin, { documents }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  app.post(
    '/v1/db/batch',
    {
      schema: {
        tags,
        summary: 'Write up to 500 documents in one transaction, all or nothing',
        body: {
          type: 'object',
          required: ['ops'],
          additionalProperties: false,
          properties: {
            ops: {
              type: 'array',
              minItems: 1,
              maxItems: MAX_BATCH_OPS,
              items: {
                type: 'object',
                required: ['op', 'collection'],
                additionalProperties: false,
                properties: {
                  op: { type: 'string', enum: ['create', 'set', 'update', 'delete'] },
                  collection: collectionParam,
                  id: idParam,
                  data: dataField,
                  if_version: { type: 'integer', minimum: 1 },
                  owner: ownerField,
                },
              },
            },
          },
        },
        response: {
          200: closedObject({ results: { type: 'array', items: { anyOf: [documentSchema, { type: 'null' }] } } }),
          '4xx': errorResponse,
        },
      },
    },
    async (request) => documents.batch(request.caller, request.body),
  );

  app.post(
    '/v1/db/:collection',
    {
      schema: {
        tags,
        summary: 'Create a document (id generated when absent)',
        params: { type: 'object', required: ['collection'], properties: { collection: collectionParam } },
        body: {
          type: 'object',
          required: ['data'],
          additionalProperties: false,
          properties: { id: idParam, data: dataField, owner: ownerField },
        },
        response: { 201: documentSchema, '4xx': errorResponse },
      },
    },
    async (request, reply) => {
      const doc = await documents.create(request.caller, request.params.collection, request.body);
      return sendDocument(reply, 201, doc);
    },
  );

  app.post(
    '/v1/db/:collection/query',
    {
      preValidation: emptyBodyIsEmptyQuery,
      schema: {
        tags,
        summary: 'Query documents (where, order_by, limit, after, before, limit_to_last, select)',
        params: { type: 'object', required: ['collection'], properties: { collection: collectionParam } },
        body: querySchema,
        response: {
          200: closedObject({
            docs: { type: 'array', items: documentSchema },
            next_cursor: { type: ['string', 'null'] },
            prev_cursor: { type: ['string', 'null'] },
          }),
          '4xx': errorResponse,
        },
      },
    },
    async (request) => documents.query(request.caller, request.params.collection, request.body ?? {}),
  );

  app.post(
    '/v1/db/:collection/aggregate',
    {
      schema: {
        tags,
        summary: 'Group and aggregate (count, sum, avg, min, max) the documents the caller may read',
        params: { type: 'object', required: ['collection'], properties: { collection: collectionParam } },
        body: {
          type: 'object',
          required: ['aggregates'],
          additionalProperties: false,
          properties: {
            where: whereSchema,
            group_by: { type: 'array', maxItems: AGGREGATE_LIMITS.maxGroupBy, items: { type: 'string' } },
            aggregates: {
              type: 'object',
              maxProperties: AGGREGATE_LIMITS.maxAggregates,
              additionalProperties: { type: 'array', minItems: 1, maxItems: 2, items: { type: 'string' } },
              description: '{"<alias>": ["count"] | ["sum" | "avg" | "min" | "max", path]}',
            },
            order_by: {
              type: 'array',
              maxItems: QUERY_LIMITS.maxOrderBy,
              items: { anyOf: [{ type: 'array', minItems: 1, maxItems: 2 }, { type: 'string' }] },
            },
            limit: { type: 'integer', minimum: 1, maximum: AGGREGATE_LIMITS.maxLimit },
          },
        },
        response: {
          200: closedObject({
            groups: {
              type: 'array',
              items: closedObject({
                key: { type: 'object', additionalProperties: true },
                values: { type: 'object', additionalProperties: { type: ['number', 'null'] } },
              }),
            },
          }),
          '4xx': errorResponse,
        },
      },
    },
    async (request) => documents.aggregate(request.caller, request.params.collection, request.body),
  );

  app.post(
    '/v1/db/:collection/count',
    {
      preValidation: emptyBodyIsEmptyQuery,
      schema: {
        tags,
        summary: 'Count the documents that match where (and that the caller may read)',
        params: { type: 'object', required: ['collection'], properties: { collection: collectionParam } },
        body: closedObject({ where: whereSchema }),
        response: {
          200: closedObject({ count: { type: 'integer' } }),
          '4xx': errorResponse,
        },
      },
    },
    async (request) => documents.count(request.caller, request.params.collection, request.body ?? {}),
  );

  const documentParams = {
    type: 'object',
    required: ['collection', 'id'],
    properties: { collection: collectionParam, id: idParam },
  } as const;

  app.get(
    '/v1/db/:collection/:id',
    {
      schema: {
        tags,
        summary: 'Read a document (404 when absent or not readable); expand=a,b adds referenced documents',
        params: documentParams,
        querystring: {
          type: 'object',
          properties: { expand: { type: 'string', maxLength: 2000 } },
        },
        response: { 200: documentSchema, '4xx': errorResponse },
      },
    },
    async (request, reply) => {
      const { collection, id } = request.params;
      const doc = await documents.get(request.caller, collection, id, { expand: request.query.expand });
      return sendDocument(reply, 200, doc);
    },
  );

  app.put(
    '/v1/db/:collection/:id',
    {
      schema: {
        tags,
        summary: 'Replace a document, or create it',
        params: documentParams,
        headers: ifMatchHeaders,
        body: { type: 'object', required: ['data'], additionalProperties: false, properties: { data: dataField } },
        response: { 200: documentSchema, 201: documentSchema, '4xx': errorResponse },
      },
    },
    async (request, reply) => {
      const { collection, id } = request.params;
      const { doc, created } = await documents.set(
        request.caller,
        collection,
        id,
        request.body,
        ifMatch(request.headers['if-match']),
      );
      return sendDocument(reply, created ? 201 : 200, doc);
    },
  );

  app.patch(
    '/v1/db/:collection/:id',
    {
      schema: {
        tags,
        summary: 'Deep-merge into a document; field transforms apply',
        params: documentParams,
        headers: ifMatchHeaders,
        body: { type: 'object', required: ['data'], additionalProperties: false, properties: { data: dataField } },
        response: { 200: documentSchema, '4xx': errorResponse },
      },
    },
    async (request, reply) => {
      const { collection, id } = request.params;
      const doc = await documents.update(
        request.caller,
        collection,
        id,
        request.body,
        ifMatch(request.headers['if-match']),
      );
      return sendDocument(reply, 200, doc);
    },
  );

  app.delete(
    '/v1/db/:collection/:id',
    {
      schema: {
        tags,
        summary: 'Delete a document',
        params: documentParams,
        headers: ifMatchHeaders,
        response: { 204: { type: 'null' }, '4xx': errorResponse },
      },
    },
    async (request, reply) => {
      const { collection, id } = request.params;
      await documents.delete(request.caller, collection, id, ifMatch(request.headers['if-match']));
      return reply.code(204).send(null);
    },
  );
};

/** /v1/admin/collections: service key only. */
export const collectionAdminRoutes: FastifyPluginAsync<{ collections: CollectionService }> = async (
  plugin,
  { collections },
) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  const adminTags = ['admin'];
  // The caller is checked before the body, so a user probing the admin API learns nothing from validation.
  const preValidation = async (request: { caller: Parameters<typeof requireService>[0] }) =>
    requireService(request.caller);
  const nameParams = { type: 'object', required: ['name'], properties: { name: collectionParam } } as const;

  app.post(
    '/v1/admin/collections',
    {
      preValidation,
      schema: {
        tags: adminTags,
        summary: 'Create a collection (its own table)',
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: {
            name: collectionParam,
            rules: rulesSchema,
            schema: { type: ['object', 'null'], additionalProperties: true },
            indexes: indexesSchema,
            search: searchSettingsSchema,
            refs: refsSchema,
          },
        },
        response: { 201: collectionSchema, '4xx': errorResponse },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) =>
      reply.code(201).send(await collections.create(request.caller, request.body, adminChangeEvent(request, 201))),
  );

  app.get(
    '/v1/admin/collections',
    {
      preValidation,
      schema: {
        tags: adminTags,
        summary: 'List collections',
        response: {
          200: closedObject({ collections: { type: 'array', items: collectionSchema } }),
          '4xx': errorResponse,
        },
      },
    },
    async (request) => ({ collections: await collections.list(request.caller) }),
  );

  app.get(
    '/v1/admin/collections/:name',
    {
      preValidation,
      schema: {
        tags: adminTags,
        summary: 'Read a collection',
        params: nameParams,
        response: { 200: collectionSchema, '4xx': errorResponse },
      },
    },
    async (request) => collections.get(request.caller, request.params.name),
  );

  app.patch(
    '/v1/admin/collections/:name',
    {
      preValidation,
      schema: {
        tags: adminTags,
        summary:
          'Change rules (per kind; null removes), schema (null removes), indexes (the list), search (null removes) or refs',
        params: nameParams,
        body: closedObject({
          rules: rulesSchema,
          schema: { type: ['object', 'null'], additionalProperties: true },
          indexes: indexesSchema,
          search: searchSettingsSchema,
          refs: refsSchema,
        }),
        response: { 200: collectionSchema, '4xx': errorResponse },
      },
      config: { audit: { recorded: true } },
    },
    async (request) =>
      collections.update(request.caller, request.params.name, request.body ?? {}, adminChangeEvent(request, 200)),
  );

  app.delete(
    '/v1/admin/collections/:name',
    {
      preValidation,
      schema: {
        tags: adminTags,
        summary: 'Drop a collection and all its documents',
        params: nameParams,
        response: { 204: { type: 'null' }, '4xx': errorResponse },
      },
      config: { audit: { recorded: true } },
    },
    async (request, reply) => {
      await collections.delete(request.caller, request.params.name, adminChangeEvent(request, 204));
      return reply.code(204).send(null);
    },
  );
};
