import { stat } from 'node:fs/promises';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';

/** Where the dashboard is served; every page under it falls back to index.html (client-side routes). */
export const DASHBOARD_PREFIX = '/_/';

/** Vite names built assets after their content hash: they never change, so browsers keep them for a year. */
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** index.html names the current assets: always revalidated (its ETag makes that cheap). */
const REVALIDATE = 'no-cache';

export interface DashboardOptions {
  /** The built dashboard (dashboard/dist): index.html and assets/, with .br/.gz copies beside them. */
  dir: string;
}

/**
 * Whether `relative` names a regular file inside `dir`. @fastify/send refuses paths that climb
 * out of its root too; checking first lets a missing asset be a plain 404 and any other path
 * fall back to the page.
 */
async function isFileIn(dir: string, relative: string): Promise<boolean> {
  if (relative.includes('\0')) return false;
  const file = path.resolve(dir, `.${path.posix.normalize(`/${relative}`)}`);
  if (file !== dir && !file.startsWith(`${dir}${path.sep}`)) return false;
  return (await stat(file).catch(() => null))?.isFile() ?? false;
}

/**
 * Serves the admin dashboard's static files at /_/ with @fastify/static (ETag and
 * Last-Modified, Range, precompressed .br/.gz files). The dashboard is a plain client of the
 * documented HTTP API: it holds no server-side privilege and these routes read no token.
 */
export const dashboardRoutes: FastifyPluginAsync<DashboardOptions> = async (plugin, options) => {
  const app = plugin.withTypeProvider<JsonSchemaToTsProvider>();
  const dir = path.resolve(options.dir);
  await app.register(fastifyStatic, {
    root: dir,
    // The routes below decide what is served; the plugin only lends `reply.sendFile`.
    serve: false,
    preCompressed: true,
    cacheControl: false,
    setHeaders: (response, file) => {
      const hashed = path.relative(dir, file).startsWith(`assets${path.sep}`);
      response.setHeader('cache-control', hashed ? IMMUTABLE : REVALIDATE);
      response.setHeader('x-content-type-options', 'nosniff');
    },
  });

  // Scripts go out as RFC 9239's text/javascript (the plugin's type table says application/javascript).
  app.addHook('onSend', async (_request, reply, payload) => {
    const type = reply.getHeader('content-type');
    if (typeof type === 'string' && type.startsWith('application/javascript')) {
      reply.header('content-type', type.replace('application/javascript', 'text/javascript'));
    }
    return payload;
  });

  const notFound = (reply: FastifyReply, status: number, text: string): FastifyReply =>
    reply.code(status).type('text/plain; charset=utf-8').header('cache-control', REVALIDATE).send(text);

  const serve = async (relative: string, reply: FastifyReply): Promise<FastifyReply> => {
    if (relative !== '' && !relative.endsWith('/')) {
      if (await isFileIn(dir, relative)) return reply.sendFile(path.posix.normalize(`/${relative}`));
      // A missing asset is a 404, not the page: a browser would otherwise parse HTML as script.
      if (relative.startsWith('assets/') || path.posix.extname(relative) !== '') {
        return notFound(reply, 404, 'Not found');
      }
    }
    if (!(await isFileIn(dir, 'index.html'))) {
      return notFound(
        reply,
        503,
        'The dashboard is not built. Run `npm run build:dashboard` (npm start does it when needed).',
      );
    }
    return reply.sendFile('index.html');
  };

  app.get('/_', { schema: { hide: true } }, async (request, reply) => {
    // With ignoreTrailingSlash both spellings reach this route; only the bare one needs the redirect.
    if (request.url.split('?')[0] === '/_') return reply.redirect(DASHBOARD_PREFIX, 301);
    return serve('', reply);
  });
  app.get(
    '/_/*',
    { schema: { hide: true, params: { type: 'object', properties: { '*': { type: 'string' } } } } },
    async (request, reply) => serve(request.params['*'] ?? '', reply),
  );
};
