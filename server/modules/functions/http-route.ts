import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync } from 'fastify';
import { checkedJsonParser } from '../../internal/http/json-body.js';
import { errors, nameParams } from './routes.js';
import type { FunctionsService } from './service.js';

/** Headers a function never sees: the caller's credentials are already verified into `auth`. */
const HIDDEN_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);

/** A request body as a function gets it: its bytes as sent, and what they parse to. */
class ReceivedBody {
  constructor(
    readonly bytes: Uint8Array,
    readonly parsed: unknown,
  ) {}
}

const NO_BODY = new ReceivedBody(new Uint8Array(0), null);

/** The media type of a Content-Type header, without parameters, in lower case. */
function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

/**
 * `ANY /v1/functions/:name`, in a scope of its own: it takes a body of any content type
 * (within the server's body limit) and keeps its bytes, for signature checks such as
 * Stripe's, besides the JSON (application/json) or text (text/plain) they parse to.
 */
export const httpFunctionRoute: FastifyPluginAsync<{ functions: FunctionsService }> = async (plugin, { functions }) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  const parseJson = checkedJsonParser(plugin);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
    // A copy: the parser's buffer may be a view of a larger pooled one, all of which would cross to the worker.
    const bytes = new Uint8Array(body as Buffer);
    const type = mediaType(request.headers['content-type']);
    if (type === 'application/json') {
      parseJson(request, Buffer.from(bytes).toString('utf8'), (error, value) =>
        error ? done(error, undefined) : done(null, new ReceivedBody(bytes, value)),
      );
      return;
    }
    done(null, new ReceivedBody(bytes, type === 'text/plain' ? Buffer.from(bytes).toString('utf8') : null));
  });

  // The query and the body are the function's to read: neither has a schema, so both are unknown here.
  app.route({
    method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v1/functions/:name',
    schema: {
      tags: ['functions'],
      summary: 'Call an HTTP function; its JSON result, or the Response it returns, is the response',
      params: nameParams,
      response: {
        200: { description: 'The JSON value the function returned, or the body of the Response it returned' },
        ...errors,
      },
    },
    handler: async (request, reply) => {
      const headers: Record<string, string> = {};
      for (const [key, value] of Object.entries(request.headers)) {
        if (HIDDEN_HEADERS.has(key) || value === undefined) continue;
        headers[key] = Array.isArray(value) ? value.join(', ') : value;
      }
      const query: Record<string, string> = {};
      for (const [key, value] of Object.entries(request.query ?? {})) {
        if (typeof value === 'string') query[key] = value;
      }
      const body = request.body instanceof ReceivedBody ? request.body : NO_BODY;
      const answer = await functions.invokeHttp(request.params.name, request.caller, {
        method: request.method,
        path: request.url.split('?')[0] ?? request.url,
        query,
        headers,
        body: body.parsed,
        rawBody: body.bytes,
      });
      if (answer.kind === 'json') {
        // Always JSON, also for a bare string or number, so clients can parse every answer alike.
        return reply.type('application/json; charset=utf-8').send(JSON.stringify(answer.value));
      }
      // The headers were checked in the worker (see readFunctionResponse); several set-cookie add up.
      reply.code(answer.status);
      for (const [name, value] of answer.headers) reply.header(name, value);
      return reply.send(Buffer.from(answer.body.buffer, answer.body.byteOffset, answer.body.byteLength));
    },
  });
};
