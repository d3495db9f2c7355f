/**
 * The cheapest HTTP hop in front of S3, for the storage benchmark's downloads: node:http and
 * the S3 client Basalt's backend builds (createS3Client), nothing else. `GET /<key>` answers
 * with `GetObject`'s body piped to the response — no database, no rules, no auth of the caller.
 * Settings: PORT, S3_ENDPOINT, S3_BUCKET.
 *
 * Basalt's S3 downloads pass through one process more than the SDK's direct ones; this server
 * pays that same extra hop with no features, so a run shows which part of the gap to direct is
 * the hop itself and which part is Basalt.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createS3Client } from '../server/modules/storage/backends/s3.js';

const port = Number(process.env.PORT ?? 8091);
const bucket = process.env.S3_BUCKET ?? 'bench';
const endpoint = process.env.S3_ENDPOINT;
if (!endpoint) throw new Error('S3_ENDPOINT is required');

const client = createS3Client({
  region: 'us-east-1',
  endpoint,
  forcePathStyle: true,
  accessKeyId: 'S3RVER',
  secretAccessKey: 'S3RVER',
});

const server = http.createServer((request, response) => {
  void (async () => {
    if (request.url === '/healthz') {
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    const key = decodeURIComponent((request.url ?? '/').slice(1));
    try {
      const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      if (!(object.Body instanceof Readable)) throw new Error('S3 returned no body stream');
      response.writeHead(200, {
        'content-type': object.ContentType ?? 'application/octet-stream',
        'content-length': String(object.ContentLength ?? 0),
      });
      await pipeline(object.Body, response);
    } catch (error) {
      if (!response.headersSent) response.writeHead(502, { 'content-type': 'text/plain' }).end(String(error));
      else response.destroy();
    }
  })();
});
server.listen(port, '127.0.0.1');
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => server.close(() => process.exit(0)));
