/**
 * The raw limit for storage: node:http and the file system, nothing else. PUT streams the body
 * to a temporary file and renames it into place (as Basalt's disk backend does); GET streams
 * the file back; DELETE removes it. The disk work is Basalt's (temporary file, fsync, rename);
 * there is no database, no rules, no checksum and no metadata.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

const root = process.env.RAW_STORAGE_DIR ?? '/tmp/basalt-raw-storage';
const port = Number(process.env.PORT ?? 8090);

function fileOf(url: string): string | null {
  const name = url.split('?', 1)[0]?.replace(/^\/files\//, '') ?? '';
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(name)) return null;
  return path.join(root, 'objects', name);
}

const server = http.createServer((request, response) => {
  void (async () => {
    if (request.url === '/healthz') {
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    const file = request.url ? fileOf(request.url) : null;
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    if (request.method === 'PUT') {
      const temporary = path.join(root, 'tmp', randomUUID());
      await pipeline(request, createWriteStream(temporary));
      const handle = await open(temporary, 'r+');
      await handle.sync();
      await handle.close();
      await rename(temporary, file);
      response.writeHead(201, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    if (request.method === 'DELETE') {
      await rm(file, { force: true });
      response.writeHead(204).end();
      return;
    }
    const info = await stat(file).catch(() => null);
    if (!info) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(info.size) });
    await pipeline(createReadStream(file), response);
  })().catch(() => {
    if (!response.headersSent) response.writeHead(500);
    response.end();
  });
});

await mkdir(path.join(root, 'objects'), { recursive: true });
await mkdir(path.join(root, 'tmp'), { recursive: true });
server.listen(port, '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => server.close(() => process.exit(0)));
