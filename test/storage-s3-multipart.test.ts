/**
 * What the S3 backend sends to S3 for large uploads (and how it ends a download cut short),
 * observed on the wire: a loopback proxy in front of a real S3 server (s3rver) records every
 * request and forwards it unchanged.
 *
 * s3rver 3.7.1 stores multipart uploads but answers ListMultipartUploads with 501
 * NotImplemented and AbortMultipartUpload with 405 MethodNotAllowed. So these tests check
 * that the backend *sends* the abort (and that the key never becomes visible), and that a
 * sweep over a store without ListMultipartUploads completes; that S3 then discards the parts,
 * and the sweeper's abort of a listed stale upload, need a store that implements both calls.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isAppError } from '../server/internal/errors.js';
import { S3Backend } from '../server/modules/storage/backends/s3.js';
import { createTestDatabase, startTestApp, type TestApp, type TestDatabase } from './helpers.js';
import { generatedBytes, startS3Server, type S3Server } from './storage-helpers.js';

const MIB = 1024 * 1024;

interface Recorded {
  method: string;
  url: string;
  status: number;
  headers: http.IncomingHttpHeaders;
  bytes: number;
  /** Resolves when the answer to the backend ends: `true` if every byte went out, `false` if cut off. */
  ended: Promise<boolean>;
}

/** A pass-through HTTP proxy that keeps a log of requests (headers unchanged, so signatures hold). */
async function startRecordingProxy(target: string): Promise<{ url: string; log: Recorded[]; close(): Promise<void> }> {
  const log: Recorded[] = [];
  const upstream = new URL(target);
  const server = http.createServer((request, response) => {
    const entry: Recorded = {
      method: request.method ?? '',
      url: request.url ?? '',
      status: 0,
      headers: request.headers,
      bytes: 0,
      ended: new Promise((resolve) => response.once('close', () => resolve(response.writableFinished))),
    };
    log.push(entry);
    request.on('data', (chunk: Buffer) => (entry.bytes += chunk.length));
    const forward = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: request.method,
        path: request.url,
        headers: request.headers,
      },
      (answer) => {
        entry.status = answer.statusCode ?? 0;
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
        // The backend went away: stop reading s3rver too.
        response.once('close', () => answer.destroy());
      },
    );
    forward.on('error', () => response.destroy());
    request.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A real S3 server with the recording proxy in front of it and an S3 backend (5 MiB parts)
 * talking through the proxy, started before the suite's tests and closed after them.
 */
function onTheWire(bucket: string) {
  const wire = {} as { s3: S3Server; proxy: Awaited<ReturnType<typeof startRecordingProxy>>; backend: S3Backend };
  beforeAll(async () => {
    wire.s3 = await startS3Server(bucket);
    wire.proxy = await startRecordingProxy(wire.s3.endpoint);
    wire.backend = new S3Backend({
      endpoint: wire.proxy.url,
      region: 'us-east-1',
      bucket: wire.s3.bucket,
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
      forcePathStyle: true,
      partSize: 5 * MIB,
    });
  });
  afterAll(async () => {
    await wire.backend?.close();
    await wire.proxy?.close();
    await wire.s3?.close();
  });
  return wire;
}

describe('S3 backend: multipart uploads on the wire', () => {
  const wire = onTheWire('basalt-multipart');
  beforeEach(() => {
    wire.proxy.log.length = 0;
  });

  const key = (): string => `multipart/${randomUUID()}`;
  const requestsFor = (k: string, query: string, method: string): Recorded[] =>
    wire.proxy.log.filter(
      (entry) =>
        entry.method === method && entry.url.startsWith(`/${wire.s3.bucket}/${k}?`) && entry.url.includes(query),
    );
  const uploadIdOf = (k: string): string => {
    const create = requestsFor(k, 'uploads', 'POST');
    expect(create).toHaveLength(1);
    const part = requestsFor(k, 'partNumber=1', 'PUT')[0];
    const uploadId = part ? new URL(part.url, 'http://x').searchParams.get('uploadId') : null;
    expect(uploadId).toBeTruthy();
    return uploadId!;
  };

  it('uploads parts with a CRC32 each, without hashing them again for the signature, and completes', async () => {
    const k = key();
    const total = 12 * MIB + 5;
    const result = await wire.backend.put(k, generatedBytes(total), { maxBytes: 100 * MIB });
    expect(result.size).toBe(total);
    const uploadId = uploadIdOf(k);
    const parts = requestsFor(k, `uploadId=${uploadId}`, 'PUT');
    expect(parts.map((part) => part.bytes).sort((a, b) => b - a)).toEqual([5 * MIB, 5 * MIB, 2 * MIB + 5]);
    for (const part of parts) {
      expect(part.headers['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD');
      expect(part.headers['x-amz-checksum-crc32']).toMatch(/^[A-Za-z0-9+/]{6}==$/);
      // The checksum is covered by the signature, so it cannot be swapped along with the bytes.
      expect(String(part.headers.authorization)).toContain('x-amz-checksum-crc32');
    }
    expect(requestsFor(k, `uploadId=${uploadId}`, 'POST')).toHaveLength(1); // CompleteMultipartUpload
    expect(await wire.backend.head(k)).toMatchObject({ size: total });
  });

  it('aborts the multipart upload when the client goes away mid-body', async () => {
    const k = key();
    const error = await wire.backend
      .put(k, generatedBytes(30 * MIB, { failAfter: 12 * MIB }), { maxBytes: 100 * MIB })
      .catch((e: unknown) => e);
    expect((error as Error).message).toBe('client went away');
    const uploadId = uploadIdOf(k);
    const aborts = requestsFor(k, `uploadId=${uploadId}`, 'DELETE');
    expect(aborts).toHaveLength(1);
    // s3rver cannot abort (405); a real S3 discards the parts here.
    expect(aborts[0]!.status).toBe(405);
    expect(requestsFor(k, `uploadId=${uploadId}`, 'POST')).toHaveLength(0); // never completed
    expect(await wire.backend.head(k)).toBeNull();
  });

  it('aborts the multipart upload when the body passes the limit, and reports the limit', async () => {
    const k = key();
    const error = await wire.backend.put(k, generatedBytes(30 * MIB), { maxBytes: 11 * MIB }).catch((e: unknown) => e);
    expect(isAppError(error) && error.code).toBe('PAYLOAD_TOO_LARGE');
    const uploadId = uploadIdOf(k);
    expect(requestsFor(k, `uploadId=${uploadId}`, 'DELETE')).toHaveLength(1);
    expect(requestsFor(k, `uploadId=${uploadId}`, 'POST')).toHaveLength(0);
    expect(await wire.backend.head(k)).toBeNull();
    // The body was cut off at the limit, not read to its end.
    const sent = requestsFor(k, `uploadId=${uploadId}`, 'PUT').reduce((sum, part) => sum + part.bytes, 0);
    expect(sent).toBeLessThanOrEqual(11 * MIB);
  });

  it('grows the part size when the limit allows more than 10,000 parts of the configured size', async () => {
    const k = key();
    const maxBytes = 100 * 1024 * MIB; // 100 GiB: at least 10.24 MiB per part
    await wire.backend.put(k, generatedBytes(12 * MIB), { maxBytes });
    const uploadId = uploadIdOf(k);
    const sizes = requestsFor(k, `uploadId=${uploadId}`, 'PUT').map((part) => part.bytes);
    expect(Math.max(...sizes)).toBe(Math.ceil(maxBytes / 10_000));
  });

  it('sends a small body as one PutObject, never starting a multipart upload', async () => {
    const k = key();
    await wire.backend.put(k, generatedBytes(MIB), { maxBytes: 100 * MIB });
    expect(requestsFor(k, 'uploads', 'POST')).toHaveLength(0);
    expect(
      wire.proxy.log.filter((entry) => entry.method === 'PUT' && entry.url.startsWith(`/${wire.s3.bucket}/${k}`)),
    ).toHaveLength(1);
  });

  it('asks for unfinished multipart uploads when sweeping, and copes with a store that cannot list them', async () => {
    // An unfinished upload left behind, as a crash would leave it.
    const k = key();
    await wire.backend
      .put(k, generatedBytes(30 * MIB, { failAfter: 12 * MIB }), { maxBytes: 100 * MIB })
      .catch(() => undefined);
    wire.proxy.log.length = 0;
    const discarded = await wire.backend.discardStaleWrites(new Date(Date.now() + 60_000), async () => false);
    const listing = wire.proxy.log.filter(
      (entry) => entry.method === 'GET' && /^\/basalt-multipart\/?\?(.*&)?uploads(=|&|$)/.test(entry.url),
    );
    expect(listing).toHaveLength(1);
    expect(listing[0]!.status).toBe(501); // s3rver: NotImplemented
    expect(discarded).toBe(0);
  });
});

describe('S3 backend: a download cut short on the wire', () => {
  const wire = onTheWire('basalt-download');

  it('closes the S3 connection when the reader stops early, and a full read still ends cleanly', async () => {
    const k = `download/${randomUUID()}`;
    const total = 40 * MIB;
    await wire.backend.put(k, generatedBytes(total), { maxBytes: 100 * MIB });
    const gets = (): Recorded[] =>
      wire.proxy.log.filter((entry) => entry.method === 'GET' && entry.url.startsWith(`/${wire.s3.bucket}/${k}`));

    // Read 1 MiB, then go away, as a client closing its connection makes Fastify destroy the body.
    const body = await wire.backend.get(k);
    let read = 0;
    await new Promise<void>((resolve) => {
      body.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= MIB) {
          body.destroy();
          resolve();
        }
      });
    });
    expect(gets()).toHaveLength(1);
    // The answer to the backend was cut off: its connection closed before the 40 MiB were sent.
    expect(await gets()[0]!.ended).toBe(false);

    let whole = 0;
    for await (const chunk of await wire.backend.get(k)) whole += (chunk as Buffer).length;
    expect(whole).toBe(total);
    expect(gets()).toHaveLength(2);
    expect(await gets()[1]!.ended).toBe(true);
  });

  describe('through Basalt', () => {
    let database: TestDatabase;
    let server: TestApp;

    beforeAll(async () => {
      database = await createTestDatabase();
      server = await startTestApp(database, { ...wire.s3.env, S3_ENDPOINT: wire.proxy.url });
      const created = await fetch(`${server.url}/v1/admin/buckets`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.serviceKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'files' }),
      });
      expect(created.status).toBe(201);
    });
    afterAll(async () => {
      await server?.close();
      await database?.drop();
    });

    it('closes the S3 connection when the client disconnects mid-download', async () => {
      const total = 40 * MIB;
      const auth = { authorization: `Bearer ${server.serviceKey}` };
      const put = await new Promise<number>((resolve, reject) => {
        const request = http.request(`${server.url}/v1/storage/files/big.bin`, {
          method: 'PUT',
          headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': String(total) },
        });
        request.once('response', (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        });
        request.once('error', reject);
        generatedBytes(total).pipe(request);
      });
      expect(put).toBe(201);
      const before = wire.proxy.log.length;

      // Read 1 MiB of the download, then drop the connection.
      await new Promise<void>((resolve, reject) => {
        const request = http.get(`${server.url}/v1/storage/files/big.bin`, { headers: auth, agent: false });
        request.once('error', () => undefined);
        request.once('response', (response) => {
          expect(response.statusCode).toBe(200);
          expect(response.headers['content-length']).toBe(String(total));
          let read = 0;
          response.on('data', (chunk: Buffer) => {
            read += chunk.length;
            if (read >= MIB && !request.destroyed) {
              request.destroy();
              resolve();
            }
          });
          response.once('error', () => undefined);
          response.once('end', () => reject(new Error('the whole object arrived before the client went away')));
        });
      });
      const gets = wire.proxy.log.slice(before).filter((entry) => entry.method === 'GET');
      expect(gets).toHaveLength(1);
      // Basalt's request to S3 was cut off rather than read to its end.
      expect(await gets[0]!.ended).toBe(false);
    });
  });
});
