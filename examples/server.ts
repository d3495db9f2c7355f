/**
 * A tiny static server for the examples: the example's own files, the SDK build under
 * `/sdk/`, and `/config.js`, which tells the page where Basalt is. No framework and no
 * bundler: the page is plain HTML and an ES module that imports `/sdk/index.js`.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

export interface ExampleServerOptions {
  /** The example's folder (index.html, app.js, style.css, ...). */
  root: string;
  /** Where the page finds Basalt, e.g. http://127.0.0.1:8080. */
  basaltUrl: string;
  /** The SDK build, served under /sdk/: file name → contents (index.js and its map). */
  sdk: ReadonlyMap<string, Buffer | string>;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
}

export interface ExampleServer {
  /** e.g. http://127.0.0.1:5173 */
  url: string;
  close(): Promise<void>;
}

/**
 * The page may talk to itself and to Basalt only (HTTP and websocket), and show images from
 * Basalt: a cross-site script that slipped into a todo title could not send data elsewhere.
 */
function contentSecurityPolicy(basaltUrl: string): string {
  const api = new URL(basaltUrl).origin;
  const socket = api.replace(/^http/, 'ws');
  return [
    "default-src 'self'",
    `connect-src 'self' ${api} ${socket}`,
    `img-src 'self' ${api} blob: data:`,
    "style-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export async function startExampleServer(options: ExampleServerOptions): Promise<ExampleServer> {
  const root = path.resolve(options.root);
  const basaltUrl = options.basaltUrl.replace(/\/+$/, '');
  const config = `export const BASALT_URL = ${JSON.stringify(basaltUrl)};\n`;
  const csp = contentSecurityPolicy(basaltUrl);

  async function resolve(urlPath: string): Promise<{ body: Buffer | string; type: string } | null> {
    if (urlPath === '/config.js') return { body: config, type: CONTENT_TYPES['.js']! };
    if (urlPath.startsWith('/sdk/')) {
      const name = urlPath.slice('/sdk/'.length);
      const body = options.sdk.get(name);
      return body === undefined ? null : { body, type: CONTENT_TYPES[path.extname(name)] ?? 'text/plain' };
    }
    const relative = urlPath === '/' ? 'index.html' : urlPath.slice(1);
    const type = CONTENT_TYPES[path.extname(relative)];
    const file = path.resolve(root, relative);
    // Only files inside the example's folder, of the kinds listed above.
    if (!type || !file.startsWith(root + path.sep)) return null;
    try {
      return { body: await readFile(file), type };
    } catch {
      return null;
    }
  }

  const server = http.createServer((request, response) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    let urlPath: string;
    try {
      urlPath = decodeURIComponent(new URL(request.url ?? '/', 'http://localhost').pathname);
    } catch {
      response.writeHead(400).end();
      return;
    }
    resolve(urlPath).then(
      (found) => {
        if (!found) {
          response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('Not found\n');
          return;
        }
        response.writeHead(200, {
          'content-type': found.type,
          'content-length': Buffer.byteLength(found.body),
          // Edits to the example show on reload.
          'cache-control': 'no-cache',
          'x-content-type-options': 'nosniff',
          ...(found.type.startsWith('text/html') ? { 'content-security-policy': csp } : {}),
        });
        response.end(request.method === 'HEAD' ? undefined : found.body);
      },
      () => response.writeHead(500).end(),
    );
  });

  await new Promise<void>((ready, fail) => {
    server.once('error', fail);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', fail);
      ready();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}
