import type { FastifyInstance, FastifyRequest } from 'fastify';
import { assertUserJson, MAX_USER_JSON_DEPTH } from '../user-json.js';

/**
 * How deep a whole JSON request body may nest: the user JSON it carries (at most
 * MAX_USER_JSON_DEPTH, checked again where it is used) plus the envelope around it (a batch
 * op's `data` sits three levels down). Far below what overflows the recursive code a body
 * meets (schema validation, rules, JSON.stringify in the Postgres driver).
 */
export const MAX_REQUEST_BODY_DEPTH = MAX_USER_JSON_DEPTH * 2;

/** The escapes through which NUL or a surrogate enters parsed JSON (decoded UTF-8 holds neither raw). */
const SUSPECT_ESCAPE = /\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** The deepest nesting of arrays and objects in valid JSON text, brackets inside strings ignored. */
function maxNesting(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const char = text.charCodeAt(i);
    if (inString) {
      if (char === 0x5c)
        i++; // a backslash escapes the next character
      else if (char === 0x22) inString = false;
      continue;
    }
    if (char === 0x22) inString = true;
    else if (char === 0x5b || char === 0x7b) max = Math.max(max, ++depth);
    else if (char === 0x5d || char === 0x7d) depth--;
  }
  return max;
}

/**
 * The one application/json parser of every route, and the only body parser outside the routes
 * that take other content types: Fastify's own (which refuses `__proto__`
 * and `constructor.prototype` keys), then the user-JSON check, so no module ever sees a body
 * nested deep enough to overflow the stack, or a string Postgres cannot store (NUL, an
 * unpaired surrogate): both are 400 INVALID_REQUEST naming the field.
 *
 * The full check walks every value and builds a path for each; a linear scan of the text
 * first lets the common body (shallow, no such escape) skip it at a fraction of the cost.
 */
export function registerJsonBodyParser(app: FastifyInstance): void {
  const parse = checkedJsonParser(app);
  // JSON routes take JSON only: Fastify's text/plain parser would hand them a string, which
  // their schema then refuses as a 400; the honest answer is 415 UNSUPPORTED_MEDIA_TYPE.
  // (HTTP functions and uploads register their own parsers for every content type.)
  app.removeContentTypeParser('text/plain');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parse(request, typeof body === 'string' ? body : body.toString('utf8'), done);
  });
}

/** The checks of registerJsonBodyParser, for a route that also needs the body's bytes. */
export function checkedJsonParser(
  app: FastifyInstance,
): (request: FastifyRequest, text: string, done: (error: Error | null, value?: unknown) => void) => void {
  const parse = app.getDefaultJsonParser('error', 'error');
  return (request, text, done) => {
    parse(request, text, (error: Error | null, value?: unknown) => {
      if (error) return done(error, undefined);
      if (maxNesting(text) > MAX_REQUEST_BODY_DEPTH || SUSPECT_ESCAPE.test(text)) {
        try {
          assertUserJson(value, 'body', MAX_REQUEST_BODY_DEPTH);
        } catch (problem) {
          return done(problem as Error, undefined);
        }
      }
      done(null, value);
    });
  };
}
