import { STATUS_CODES } from 'node:http';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

/**
 * The OpenAPI document at /docs/json. Routes describe their JSON bodies with the schemas
 * Fastify validates and serializes with; what a JSON schema on a route cannot say is
 * completed here, in one place: the responses that are not JSON (an object's bytes,
 * Prometheus text, an HTTP function's answer), statuses a route answers outside its schema
 * (206, 304, 416, 504), HEAD on objects, the websocket endpoint, 405 and the 5xx every
 * route can answer. test/openapi.test.ts holds the document to the running server.
 */

type Json = Record<string, unknown>;
type Operation = { responses?: Record<string, Json>; summary?: string; [key: string]: unknown };
type PathItem = Record<string, Operation>;
interface OpenApiDocument {
  paths: Record<string, PathItem>;
  components: { schemas?: Record<string, unknown>; responses?: Record<string, unknown>; [key: string]: unknown };
  info: { description?: string; [key: string]: unknown };
  [key: string]: unknown;
}

const ENVELOPE = { $ref: '#/components/schemas/ErrorEnvelope' } as const;

/** An error response: the envelope as JSON. */
function envelope(description: string, headers?: Json): Json {
  return { ...headersOnly(description, headers), content: { 'application/json': { schema: ENVELOPE } } };
}

/** A response without a body (HEAD, 304). */
function headersOnly(description: string, headers?: Json): Json {
  return { description, ...(headers ? { headers } : {}) };
}

const header = (description: string, schema: Json = { type: 'string' }): Json => ({ description, schema });

/** The headers an object download answers with, for its 200, 206 and 304. */
const OBJECT_HEADERS = {
  etag: header('The object’s ETag (quoted); send it back in If-None-Match or If-Range'),
  'last-modified': header('When the object was last written (HTTP date)'),
  'accept-ranges': header('Always `bytes`'),
  'cache-control': header('`public, max-age=0, must-revalidate` for public buckets, else `private, no-cache`'),
};
const BYTES = { '*/*': { schema: { type: 'string', format: 'binary' } } };

/** An object's download and HEAD: the bytes with the object's own type, ranges, revalidation. */
function objectResponses(withBody: boolean): Record<string, Json> {
  const content = withBody ? { content: BYTES } : {};
  // A HEAD answer has the GET's status and headers, never a body (the errors' neither).
  const error = withBody ? envelope : headersOnly;
  return {
    200: {
      description: withBody ? 'The object’s bytes, with its content type' : 'The object’s headers, without its bytes',
      headers: { ...OBJECT_HEADERS, 'content-length': header('The object’s size', { type: 'integer' }) },
      ...content,
    },
    206: {
      description: 'One byte range (a `Range: bytes=…` request, If-Range matching)',
      headers: {
        ...OBJECT_HEADERS,
        'content-range': header('`bytes start-end/size`'),
        'content-length': header('The range’s size', { type: 'integer' }),
      },
      ...content,
    },
    304: { description: 'If-None-Match names the object’s current ETag', headers: OBJECT_HEADERS },
    400: error('INVALID_REQUEST: a malformed path or signature'),
    401: error('UNAUTHENTICATED: a forged or expired token, or an expired signed URL'),
    403: error('FORBIDDEN: the bucket’s read rule refuses (an existing object)'),
    404: error('NOT_FOUND: no such bucket or object, or not readable'),
    416: error('RANGE_NOT_SATISFIABLE: the range starts past the end', {
      'content-range': header('`bytes */size`'),
    }),
  };
}

/** Responses a route's schema cannot state, by OpenAPI path and method; they replace what swagger derived. */
const RESPONSES: Record<string, Record<string, Record<string, Json>>> = {
  '/v1/storage/{bucket}/{*}': { get: objectResponses(true), head: objectResponses(false) },
  '/metrics': {
    get: {
      200: {
        description: 'Prometheus text exposition',
        content: { 'text/plain': { schema: { type: 'string' } } },
      },
      401: envelope('UNAUTHENTICATED: no token'),
      403: envelope('FORBIDDEN: a token that is neither the service key nor BASALT_METRICS_TOKEN'),
    },
  },
};

/** What every HTTP function answers, whichever method it is called with. */
const FUNCTION_RESPONSES: Record<string, Json> = {
  200: {
    description:
      'The JSON value the function returned; a function that returns a Response answers with its status, headers and body instead',
    content: { 'application/json': { schema: {} }, '*/*': { schema: { type: 'string', format: 'binary' } } },
  },
  404: envelope('NOT_FOUND: no HTTP function of that name'),
  405: envelope('METHOD_NOT_ALLOWED: the function declares another method', {
    allow: header('The one method the function declares'),
  }),
  500: envelope('FUNCTION_ERROR: the function threw'),
  503: envelope('UNAVAILABLE: no worker could take the call'),
  504: envelope('FUNCTION_TIMEOUT: the function ran past its timeout'),
};

/** The realtime websocket, which swagger cannot see: @fastify/websocket hides its routes. */
const REALTIME_OPERATION = {
  tags: ['realtime'],
  summary: 'Realtime websocket: live queries and channels',
  description:
    'A websocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`). The token comes as `?access_token=` ' +
    '(browsers) or `Authorization: Bearer` (Node); without one the socket is the public caller. Every frame is a ' +
    'JSON text object with a `type`; `x-websocket` lists them, docs/realtime.md describes them. A frame over ' +
    '64 KiB closes the socket with 1009.',
  parameters: [
    {
      name: 'access_token',
      in: 'query',
      required: false,
      description: 'An access token or the service key',
      schema: { type: 'string', minLength: 1, maxLength: 8192 },
    },
  ],
  responses: {
    101: {
      description: 'Switching Protocols: the socket is open',
      headers: { upgrade: header('`websocket`') },
    },
    404: envelope('NOT_FOUND: a GET that asks for no upgrade'),
  },
  'x-websocket': {
    subprotocol: null,
    maxPayloadBytes: 64 * 1024,
    clientMessages: {
      auth: '{type, access_token: string | null}: set or replace the token (null signs out)',
      subscribe: '{type, id, collection, doc_id?, query?, resume_from?}: start a live query',
      unsubscribe: '{type, id}: stop a live query',
      ping: '{type}: answered with pong',
      join: '{type, channel, presence?}: join a channel, tracking presence',
      leave: '{type, channel}: leave a channel',
      broadcast: '{type, channel, event, payload, id?}: send to the channel’s other members',
    },
    serverMessages: {
      authenticated: '{type, role, uid?}',
      subscribed: '{type, id, docs?, cursor}: the result at cursor (no docs when resuming); changes follow',
      change:
        '{type, id, change: added | modified | removed, doc, cursor}: keeps the client’s copy equal to the result',
      reset: '{type, id, docs, cursor}: the resume cursor was too old; a fresh result',
      broadcast: '{type, channel, event, payload}',
      presence: '{type, channel, state | joins/leaves}',
      joined: '{type, channel, presence_ref?}',
      left: '{type, channel}',
      sent: '{type, id, channel}: a broadcast’s acknowledgement',
      pong: '{type}',
      error: '{type, id?, channel?, code, message, details?}: a catalogue code, as in HTTP error bodies',
    },
    closeCodes: {
      1001: 'the server shuts down',
      1009: 'a frame over 64 KiB',
      1013: 'Postgres is unreachable; reconnect and resume',
      4008: 'slow consumer: the socket’s send buffer is full',
    },
  },
};

const METHOD_NOT_ALLOWED_DESCRIPTION =
  'A path that exists answers a method it does not take with 405 `METHOD_NOT_ALLOWED` and an `Allow` header ' +
  'listing the methods it does take (HEAD wherever GET is); a path that does not exist is 404 `NOT_FOUND`.';

/** Completes swagger's document; see the module comment. `websockets`: the paths of websocket routes. */
export function completeOpenApi(document: OpenApiDocument, websockets: ReadonlySet<string>): OpenApiDocument {
  const paths = document.paths;
  for (const [path, methods] of Object.entries(RESPONSES)) {
    const item = paths[path];
    if (!item) continue;
    for (const [method, responses] of Object.entries(methods)) {
      // HEAD is listed where a route has one of its own (swagger leaves HEAD routes out).
      const operation = item[method] ?? (method === 'head' && item.get ? headOf(item.get) : undefined);
      if (operation) item[method] = { ...operation, responses };
    }
  }
  const functions = paths['/v1/functions/{name}'];
  if (functions) {
    for (const [method, operation] of Object.entries(functions)) {
      functions[method] = { ...operation, responses: FUNCTION_RESPONSES };
    }
  }
  // The one websocket route is realtime's (docs/realtime.md).
  for (const url of websockets) paths[url] = { get: REALTIME_OPERATION };

  for (const [path, item] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const responses = (operation.responses ??= {});
      for (const [status, response] of Object.entries(responses)) {
        // swagger writes "Default Response" where a route gives no description.
        if (response.description === 'Default Response') response.description = describeStatus(status);
      }
      // Postgres unreachable (503, with Retry-After) or a fault of the server (500): any API call.
      const statuses = Object.keys(responses);
      if (path.startsWith('/v1/') && !statuses.some((status) => status.startsWith('5'))) {
        responses['5XX'] = (method === 'head' ? headersOnly : envelope)(
          'INTERNAL, or UNAVAILABLE (with Retry-After) while Postgres is unreachable',
        );
      }
    }
  }

  document.components.responses = {
    ...document.components.responses,
    MethodNotAllowed: envelope('METHOD_NOT_ALLOWED: the path takes other methods', {
      allow: header('The methods the path takes, e.g. `GET, HEAD, PATCH`'),
    }),
  };
  document.info.description = `${document.info.description ?? ''}\n\n${METHOD_NOT_ALLOWED_DESCRIPTION}`.trim();
  return document;
}

function headOf(get: Operation): Operation {
  const { operationId: _operationId, ...rest } = get;
  return { ...rest, summary: `${get.summary ?? 'The same'} (headers only)` };
}

function describeStatus(status: string): string {
  if (/^\dXX$/i.test(status)) return status.startsWith('4') ? 'A client error' : 'A server error';
  return STATUS_CODES[Number(status)] ?? status;
}

/** The OpenAPI document of the routes registered after it, and its UI at /docs. */
export async function registerApiDocs(app: FastifyInstance): Promise<void> {
  // swagger calls `transform` for every route, hidden ones too, before `transformObject`.
  const websockets = new Set<string>();
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
    transform: ({ schema, url, route }) => {
      if ((route as { websocket?: boolean }).websocket === true) websockets.add(url);
      return { schema, url };
    },
    transformObject: (documents) =>
      'openapiObject' in documents
        ? (completeOpenApi(
            documents.openapiObject as unknown as OpenApiDocument,
            websockets,
          ) as unknown as typeof documents.openapiObject)
        : documents.swaggerObject,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
}
