import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';

/** Where the dashboard is served; every page under it falls back to index.html (client-side routes). */
export const DASHBOARD_PREFIX = '/_/';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** Vite names built assets after their content hash: they never change, so browsers keep them for a year. */
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** index.html names the current assets: always revalidated, so a new build is picked up at once. */
const REVALIDATE = 'no-cache';

export interface DashboardOptions {
  /** The built dashboard (dashboard/dist): index.html and assets/. */
  dir: string;
}

/** The file under `dir` that `relative` names, or null when it escapes `dir` or is not a regular file. */
async function fileIn(dir: string, relative: string): Promise<{ file: string; size: number } | null> {
  // `relative` is already percent-decoded by the router; normalising it under "/" drops any "..".
  if (relative.includes('\0')) return null;
  const file = path.resolve(dir, `.${path.posix.normalize(`/${relative}`)}`);
  if (file !== dir && !file.startsWith(`${dir}${path.sep}`)) return null;
  const info = await stat(file).catch(() => null);
  return info?.isFile() ? { file, size: info.size } : null;
}

function sendFile(reply: FastifyReply, file: string, size: number, cacheControl: string): FastifyReply {
  const type = CONTENT_TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
  return reply
    .type(type)
    .header('content-length', size)
    .header('cache-control', cacheControl)
    .header('x-content-type-options', 'nosniff')
    .send(createReadStream(file));
}

/**
 * Serves the admin dashboard's static files at /_/. The dashboard is a plain client of the
 * documented HTTP API: it holds no server-side privilege and these routes read no token.
 */
export const dashboardRoutes: FastifyPluginAsync<DashboardOptions> = async (app, options) => {
  const dir = path.resolve(options.dir);

  const serve = async (relative: string, reply: FastifyReply): Promise<FastifyReply> => {
    if (relative !== '' && !relative.endsWith('/')) {
      const found = await fileIn(dir, relative);
      if (found) {
        const hashed = relative.startsWith('assets/');
        return sendFile(reply, found.file, found.size, hashed ? IMMUTABLE : REVALIDATE);
      }
      // A missing asset is a 404, not the page: a browser would otherwise parse HTML as script.
      if (relative.startsWith('assets/') || path.posix.extname(relative) !== '') {
        return reply.code(404).type('text/plain; charset=utf-8').header('cache-control', REVALIDATE).send('Not found');
      }
    }
    const index = await fileIn(dir, 'index.html');
    if (!index) {
      return reply
        .code(503)
        .type('text/plain; charset=utf-8')
        .header('cache-control', REVALIDATE)
        .send('The dashboard is not built. Run `npm run build:dashboard` (npm start does it when needed).');
    }
    return sendFile(reply, index.file, index.size, REVALIDATE);
  };

  app.get('/_', { schema: { hide: true } }, async (request, reply) => {
    // With ignoreTrailingSlash both spellings reach this route; only the bare one needs the redirect.
    if (request.url.split('?')[0] === '/_') return reply.redirect(DASHBOARD_PREFIX, 301);
    return serve('', reply);
  });
  app.get<{ Params: { '*': string } }>('/_/*', { schema: { hide: true } }, async (request, reply) =>
    serve(request.params['*'] ?? '', reply),
  );
};
