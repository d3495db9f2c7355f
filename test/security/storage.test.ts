/**
 * Storage attacks: content-type smuggling, malformed multipart bodies, path traversal,
 * another user's objects, signed URL tampering and expiry, oversized uploads, bucket rules
 * that can never work. One row per attack; see harness.ts.
 */
import http from 'node:http';

import { expect } from 'vitest';
import { UrlSigner } from '../../server/modules/storage/signing.js';
import { signUp, type SignedUp } from '../auth-helpers.js';
import { createBucket, errorCode, request, type TestApp } from '../helpers.js';
import { rawRequest } from '../storage-helpers.js';
import { securitySuite, type HttpResult } from './harness.js';

type User = SignedUp;

interface Fixture {
  alice: User;
  bob: User;
  /** A signed URL (path and query) of alice's private file. */
  signedPath: string;
  signedQuery: URLSearchParams;
}

const ALICE_SECRET = 'alice secret diary';

const encoder = new TextEncoder();

function tusMetadata(entries: Record<string, string>): string {
  return Object.entries(entries)
    .map(([key, value]) => `${key} ${Buffer.from(value).toString('base64')}`)
    .join(',');
}

/** A multipart/form-data body written by hand, so that each part's headers are exactly as given. */
function multipartBody(
  boundary: string,
  parts: Array<{ headers: string[]; content: string }>,
): Uint8Array<ArrayBuffer> {
  const text = parts.map((part) => `--${boundary}\r\n${part.headers.join('\r\n')}\r\n\r\n${part.content}\r\n`).join('');
  return encoder.encode(`${text}--${boundary}--\r\n`);
}

function fileHeaders(contentType: string, name = 'file'): string[] {
  return [`Content-Disposition: form-data; name="${name}"; filename="f.bin"`, `Content-Type: ${contentType}`];
}

/** What GET answers for an object now, as the service key sees it. */
async function served(server: TestApp, bucket: string, objectPath: string): Promise<HttpResult> {
  return request(server.url, 'GET', `/v1/storage/${bucket}/${objectPath}`, { token: server.serviceKey });
}

async function objectExists(server: TestApp, bucket: string, objectPath: string): Promise<boolean> {
  return (await served(server, bucket, objectPath)).status === 200;
}

securitySuite<Fixture>({
  surface: 'storage',
  async setup(server) {
    await createBucket(server, { name: 'images', allowed_mime_types: ['image/*'] });
    await createBucket(server, { name: 'files' });
    await createBucket(server, { name: 'small', max_file_size: 1000 });
    await createBucket(server, {
      name: 'private',
      rules: {
        read: 'auth != null && object.owner == auth.uid',
        write: 'auth != null && object.owner == auth.uid && starts_with(object.path, "users/")',
        delete: 'auth != null && object.owner == auth.uid',
      },
    });
    const alice = await signUp(server.url);
    const bob = await signUp(server.url);
    const put = await request(server.url, 'PUT', `/v1/storage/private/users/${alice.id}/diary.txt`, {
      token: alice.token,
      headers: { 'content-type': 'text/plain' },
      rawBody: encoder.encode(ALICE_SECRET),
    });
    expect(put.status, put.text).toBe(201);
    const signed = await request(server.url, 'POST', `/v1/sign/private/users/${alice.id}/diary.txt`, {
      token: alice.token,
      body: { expires_in: 600 },
    });
    expect(signed.status, signed.text).toBe(200);
    const url = new URL((signed.body as { url: string }).url);
    return { alice, bob, signedPath: url.pathname, signedQuery: url.searchParams };
  },
  tokenOf: (fixture, actor) =>
    actor === 'alice' ? fixture.alice.token : actor === 'bob' ? fixture.bob.token : undefined,
  attacks: [
    // ---- methods a path does not take ---------------------------------------------------------
    {
      name: "PATCH on another user's object: 405 with Allow, before any rule or byte; the object stays",
      request: (f) => ({
        method: 'PATCH',
        path: `/v1/storage/private/users/${f.alice.id}/diary.txt`,
        as: 'bob',
        headers: { 'content-type': 'text/plain' },
        rawBody: encoder.encode('overwritten'),
      }),
      status: 405,
      code: 'METHOD_NOT_ALLOWED',
      mustNotContain: () => [ALICE_SECRET],
      check: async (result, fixture, server) => {
        expect(result.headers.get('allow')).toBe('GET, HEAD, POST, PUT, DELETE');
        const stored = await request(server.url, 'GET', `/v1/storage/private/users/${fixture.alice.id}/diary.txt`, {
          token: fixture.alice.token,
        });
        expect(stored.text).toBe(ALICE_SECRET);
      },
    },

    // ---- content-type smuggling ------------------------------------------------------------
    {
      name: 'a Content-Type list smuggles text/html past an image/* bucket',
      source: 'review #10',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/images/smuggled.png',
        as: 'service',
        headers: { 'content-type': 'image/png; charset=x, text/html' },
        rawBody: encoder.encode('<script>alert(1)</script>'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      check: async (_result, _fixture, server) => {
        expect(await objectExists(server, 'images', 'smuggled.png')).toBe(false);
      },
    },
    {
      name: 'a Content-Type list in a multipart part keeps only the first type',
      source: 'review #10',
      // The form parser reads a part's type up to its first parameter; what is stored and
      // served is that type, normalized, never the list.
      request: () => ({
        method: 'POST',
        path: '/v1/storage/images/smuggled-part.png',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: multipartBody('XyZ', [
          { headers: fileHeaders('image/png; charset=x, text/html'), content: '<script>alert(1)</script>' },
        ]),
      }),
      status: 201,
      mustNotContain: () => ['text/html'],
      check: async (result, _fixture, server) => {
        expect((result.body as { content_type: string }).content_type).toBe('image/png');
        const get = await served(server, 'images', 'smuggled-part.png');
        expect(get.headers.get('content-type')).toBe('image/png');
      },
    },
    {
      name: 'parameters other than charset are dropped; type and charset are stored and served lower-cased',
      source: 'review #10',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/images/normalized.png',
        as: 'service',
        headers: { 'content-type': 'IMAGE/PNG ; Charset="UTF-8"; name="x.html"; boundary=abc' },
        rawBody: encoder.encode('png bytes'),
      }),
      status: 201,
      check: async (result, _fixture, server) => {
        expect((result.body as { content_type: string }).content_type).toBe('image/png; charset=utf-8');
        const get = await served(server, 'images', 'normalized.png');
        expect(get.headers.get('content-type')).toBe('image/png; charset=utf-8');
        expect(get.headers.get('x-content-type-options')).toBe('nosniff');
      },
    },
    {
      name: 'a multipart part’s type is normalized like a raw upload’s',
      source: 'review #10',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/images/normalized-part.png',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: multipartBody('XyZ', [{ headers: fileHeaders('Image/PNG; foo=bar'), content: 'png bytes' }]),
      }),
      status: 201,
      check: async (result, _fixture, server) => {
        expect((result.body as { content_type: string }).content_type).toBe('image/png');
        expect((await served(server, 'images', 'normalized-part.png')).headers.get('content-type')).toBe('image/png');
      },
    },
    {
      name: 'an invalid charset is refused',
      source: 'review #10',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/files/bad-charset.txt',
        as: 'service',
        headers: { 'content-type': 'text/plain; charset="utf-8, text/html"' },
        rawBody: encoder.encode('x'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a parameter without a value is refused',
      source: 'review #10',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/images/no-value.png',
        as: 'service',
        headers: { 'content-type': 'image/png; text/html' },
        rawBody: encoder.encode('x'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'a type the bucket does not allow is refused whatever its case',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/images/page.html',
        as: 'service',
        headers: { 'content-type': 'Text/HTML' },
        rawBody: encoder.encode('<script>alert(1)</script>'),
      }),
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    {
      name: 'HTML stored in an open bucket is served sandboxed and unsniffed',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/files/page.html',
        as: 'service',
        headers: { 'content-type': 'text/html' },
        rawBody: encoder.encode('<script>alert(1)</script>'),
      }),
      status: 201,
      check: async (_result, _fixture, server) => {
        const get = await served(server, 'files', 'page.html');
        expect(get.headers.get('content-security-policy')).toBe("default-src 'none'; sandbox");
        expect(get.headers.get('x-content-type-options')).toBe('nosniff');
      },
    },

    // ---- malformed multipart -----------------------------------------------------------------
    {
      name: 'multipart without a boundary',
      source: 'review #9',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/files/no-boundary.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data' },
        rawBody: encoder.encode('--x\r\n\r\nhello\r\n--x--\r\n'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      mustNotContain: () => ['Boundary', 'busboy'],
    },
    {
      name: 'multipart with an empty boundary',
      source: 'review #9',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/files/empty-boundary.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=' },
        rawBody: encoder.encode('--\r\n\r\nhello\r\n----\r\n'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'multipart whose file part is cut off before its closing boundary',
      source: 'review #9',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/files/truncated.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: encoder.encode(
          `--XyZ\r\n${fileHeaders('application/octet-stream').join('\r\n')}\r\n\r\nthe first bytes of a file`,
        ),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
      check: async (_result, _fixture, server) => {
        expect(await objectExists(server, 'files', 'truncated.bin')).toBe(false);
      },
    },
    {
      name: 'multipart whose part headers never end',
      source: 'review #9',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/files/garbled.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: encoder.encode('--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\nno end'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'multipart whose body is not multipart at all',
      source: 'review #9',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/files/garbage.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: encoder.encode('just some bytes, no boundary line anywhere'),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'multipart with a malformed part header',
      source: 'review #9',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/files/bad-header.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: encoder.encode(`--XyZ\r\n${'X'.repeat(20_000)}\r\n\r\nx\r\n--XyZ--\r\n`),
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },

    // ---- path traversal ----------------------------------------------------------------------
    {
      name: 'an encoded "../" climbs out of a path',
      request: (f) => ({
        method: 'GET',
        path: `/v1/storage/private/users%2F${f.bob.id}%2F..%2F..%2Fusers%2F${f.alice.id}%2Fdiary.txt`,
        as: 'bob',
      }),
      status: 400,
      code: 'INVALID_PATH',
      mustNotContain: () => [ALICE_SECRET],
    },
    {
      name: 'a raw "../" in the URL reaches another bucket',
      run: async (fixture, server) => {
        for (const rawPath of [
          `/v1/storage/files/../private/users/${fixture.alice.id}/diary.txt`,
          `/v1/storage/files/%2e%2e/private/users/${fixture.alice.id}/diary.txt`,
          `/v1/storage/private/users/${fixture.bob.id}/%2E%2E/${fixture.alice.id}/diary.txt`,
        ]) {
          const result = await rawRequest(server.url, 'GET', rawPath, fixture.bob.token);
          expect(result.status, rawPath).toBe(400);
          expect(errorCode(result.body)).toBe('INVALID_PATH');
        }
        const write = await rawRequest(
          server.url,
          'PUT',
          '/v1/storage/files/a/../../etc/passwd',
          server.serviceKey,
          'x',
        );
        expect(write.status).toBe(400);
      },
    },
    {
      name: 'a NUL byte in an object path',
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/files/a%00.txt',
        as: 'service',
        rawBody: encoder.encode('x'),
      }),
      status: 400,
      code: 'INVALID_PATH',
    },

    // ---- another user's objects --------------------------------------------------------------
    {
      name: "bob reads alice's file",
      request: (f) => ({ method: 'GET', path: `/v1/storage/private/users/${f.alice.id}/diary.txt`, as: 'bob' }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: () => [ALICE_SECRET],
    },
    {
      name: "bob overwrites alice's file",
      request: (f) => ({
        method: 'PUT',
        path: `/v1/storage/private/users/${f.alice.id}/diary.txt`,
        as: 'bob',
        headers: { 'x-upsert': 'true', 'content-type': 'text/plain' },
        rawBody: encoder.encode('bob was here'),
      }),
      status: 403,
      code: 'FORBIDDEN',
      check: async (_result, f, server) => {
        const own = await request(server.url, 'GET', `/v1/storage/private/users/${f.alice.id}/diary.txt`, {
          token: f.alice.token,
        });
        expect(own.text).toBe(ALICE_SECRET);
      },
    },
    {
      name: "bob deletes alice's file",
      request: (f) => ({ method: 'DELETE', path: `/v1/storage/private/users/${f.alice.id}/diary.txt`, as: 'bob' }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: "bob signs a URL for alice's file",
      request: (f) => ({
        method: 'POST',
        path: `/v1/sign/private/users/${f.alice.id}/diary.txt`,
        as: 'bob',
        body: { expires_in: 60 },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: "bob lists alice's folder",
      request: (f) => ({ method: 'GET', path: `/v1/storage/private?prefix=users/${f.alice.id}/`, as: 'bob' }),
      status: 200,
      check: (result) => expect((result.body as { objects: unknown[] }).objects).toEqual([]),
    },
    {
      name: 'a stranger without a token reads a private file',
      request: (f) => ({ method: 'GET', path: `/v1/storage/private/users/${f.alice.id}/diary.txt` }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: () => [ALICE_SECRET],
    },

    // ---- signed URLs -------------------------------------------------------------------------
    {
      name: 'a signed URL works without a token (control)',
      request: (f) => ({ method: 'GET', path: `${f.signedPath}?${f.signedQuery.toString()}` }),
      status: 200,
      check: (result) => expect(result.text).toBe(ALICE_SECRET),
    },
    {
      name: "a signed URL's signature moved to another path",
      request: (f) => ({
        method: 'GET',
        path: `/v1/storage/private/users/${f.bob.id}/diary.txt?${f.signedQuery.toString()}`,
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: "a signed URL's expiry pushed later",
      request: (f) => {
        const query = new URLSearchParams(f.signedQuery);
        query.set('expires', String(Number(query.get('expires')) + 86_400));
        return { method: 'GET', path: `${f.signedPath}?${query.toString()}` };
      },
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: () => [ALICE_SECRET],
    },
    {
      name: "a signed URL's signature with one character changed",
      request: (f) => {
        const query = new URLSearchParams(f.signedQuery);
        const sig = query.get('sig') ?? '';
        query.set('sig', `${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`);
        return { method: 'GET', path: `${f.signedPath}?${query.toString()}` };
      },
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a signed URL without its signature',
      request: (f) => ({ method: 'GET', path: `${f.signedPath}?expires=${f.signedQuery.get('expires')}` }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a correctly signed URL past its expiry',
      request: (f) => ({ method: 'GET', path: f.signedPath }),
      status: 403,
      code: 'FORBIDDEN',
      // Signed with the server's real key, one second in the past.
      check: async (_result, f, server) => {
        const signer = new UrlSigner(null, server.serviceKey);
        const expires = Math.floor(Date.now() / 1000) - 1;
        const objectPath = `users/${f.alice.id}/diary.txt`;
        const sig = signer.signature('private', objectPath, expires);
        const expired = await request(server.url, 'GET', `${f.signedPath}?expires=${expires}&sig=${sig}`);
        expect(expired.status).toBe(403);
        expect(expired.text).toContain('expired');
        expect(expired.text).not.toContain(ALICE_SECRET);
      },
    },

    // ---- oversized uploads -------------------------------------------------------------------
    {
      name: "an upload over the bucket's max_file_size",
      request: () => ({
        method: 'PUT',
        path: '/v1/storage/small/big.bin',
        as: 'service',
        headers: { 'content-type': 'application/octet-stream' },
        rawBody: new Uint8Array(5000),
      }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: "a chunked upload (no Content-Length) over the bucket's max_file_size",
      run: async (_fixture, server) => {
        const target = new URL(server.url);
        const result = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = http.request({
            host: target.hostname,
            port: target.port,
            method: 'PUT',
            path: '/v1/storage/small/chunked.bin',
            headers: { authorization: `Bearer ${server.serviceKey}`, 'content-type': 'application/octet-stream' },
          });
          req.on('response', (res) => {
            let body = '';
            res.on('data', (chunk: Buffer) => (body += chunk.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          });
          req.on('error', reject);
          for (let i = 0; i < 5; i++) req.write(Buffer.alloc(500));
          req.end();
        });
        expect(result.status).toBe(413);
        expect(errorCode(JSON.parse(result.body))).toBe('PAYLOAD_TOO_LARGE');
        expect(await objectExists(server, 'small', 'chunked.bin')).toBe(false);
      },
    },
    {
      name: "a multipart upload over the bucket's max_file_size",
      request: () => ({
        method: 'POST',
        path: '/v1/storage/small/big-part.bin',
        as: 'service',
        headers: { 'content-type': 'multipart/form-data; boundary=XyZ' },
        rawBody: multipartBody('XyZ', [
          { headers: fileHeaders('application/octet-stream'), content: 'x'.repeat(5000) },
        ]),
      }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },

    // ---- bucket rules that can never work ----------------------------------------------------
    {
      name: 'a bucket rule naming doc.* (a bucket rule has no document)',
      source: 'review #13',
      request: () => ({
        method: 'POST',
        path: '/v1/admin/buckets',
        as: 'service',
        body: { name: 'docrule', rules: { read: 'auth != null && doc.owner == auth.uid' } },
      }),
      status: 400,
      code: 'INVALID_RULE',
      check: async (result, _fixture, server) => {
        expect(result.text).toContain('doc');
        expect(
          (await request(server.url, 'GET', '/v1/admin/buckets/docrule', { token: server.serviceKey })).status,
        ).toBe(404);
      },
    },
    {
      name: 'a bucket rule changed to name incoming.*',
      source: 'review #13',
      request: () => ({
        method: 'PATCH',
        path: '/v1/admin/buckets/files',
        as: 'service',
        body: { rules: { write: 'incoming.data.ok == true' } },
      }),
      status: 400,
      code: 'INVALID_RULE',
      check: async (_result, _fixture, server) => {
        const bucket = await request(server.url, 'GET', '/v1/admin/buckets/files', { token: server.serviceKey });
        expect((bucket.body as { rules: Record<string, string> }).rules).toEqual({});
      },
    },
    {
      name: 'a bucket rule that does not parse',
      request: () => ({
        method: 'POST',
        path: '/v1/admin/buckets',
        as: 'service',
        body: { name: 'badrule', rules: { delete: 'auth.uid ==' } },
      }),
      status: 400,
      code: 'INVALID_RULE',
    },

    // ---- bulk delete, move and copy -----------------------------------------------------------
    {
      name: 'bob bulk-deletes alice’s object among paths of his own',
      request: (f) => ({
        method: 'DELETE',
        path: '/v1/storage/private',
        as: 'bob',
        body: { paths: [`users/${f.bob.id}/none.txt`, `users/${f.alice.id}/diary.txt`] },
      }),
      status: 200,
      check: async (result, f, server) => {
        const results = (result.body as { results: Array<{ deleted: boolean; error?: { code: string } }> }).results;
        expect(results.map((r) => r.error?.code)).toEqual(['NOT_FOUND', 'FORBIDDEN']);
        expect(await objectExists(server, 'private', `users/${f.alice.id}/diary.txt`)).toBe(true);
      },
    },
    {
      name: 'an anonymous caller bulk-deletes in a bucket without a delete rule',
      request: () => ({ method: 'DELETE', path: '/v1/storage/files', body: { paths: ['anything.txt'] } }),
      status: 200,
      check: (result) => {
        const results = (result.body as { results: Array<{ error?: { code: string } }> }).results;
        expect(results.map((r) => r.error?.code)).toEqual(['NOT_FOUND']);
      },
    },
    {
      name: 'bulk delete with traversal paths: each refused as INVALID_PATH, nothing else touched',
      request: (f) => ({
        method: 'DELETE',
        path: '/v1/storage/private',
        as: 'alice',
        body: { paths: [`users/${f.alice.id}/../${f.bob.id}/x`, '..', '/abs', `users/${f.alice.id}/./diary.txt`] },
      }),
      status: 200,
      check: async (result, f, server) => {
        const results = (result.body as { results: Array<{ error?: { code: string } }> }).results;
        expect(results.map((r) => r.error?.code)).toEqual([
          'INVALID_PATH',
          'INVALID_PATH',
          'INVALID_PATH',
          'INVALID_PATH',
        ]);
        expect(await objectExists(server, 'private', `users/${f.alice.id}/diary.txt`)).toBe(true);
      },
    },
    {
      name: 'bulk delete of more than 1000 paths',
      request: () => ({
        method: 'DELETE',
        path: '/v1/storage/files',
        as: 'service',
        body: { paths: Array.from({ length: 1001 }, (_, i) => `p${i}`) },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'bulk delete with paths that are not strings, or a huge path',
      request: () => ({
        method: 'DELETE',
        path: '/v1/storage/files',
        as: 'service',
        body: { paths: [{ $ne: null }, 'x'.repeat(5000)] },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'bob moves alice’s object into his own folder',
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/move',
        as: 'bob',
        body: { bucket: 'private', from: `users/${f.alice.id}/diary.txt`, to: `users/${f.bob.id}/diary.txt` },
      }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: () => [ALICE_SECRET],
      check: async (_result, f, server) => {
        expect(await objectExists(server, 'private', `users/${f.alice.id}/diary.txt`)).toBe(true);
        expect(await objectExists(server, 'private', `users/${f.bob.id}/diary.txt`)).toBe(false);
      },
    },
    {
      name: 'bob copies alice’s object into his own folder',
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/copy',
        as: 'bob',
        body: { bucket: 'private', from: `users/${f.alice.id}/diary.txt`, to: `users/${f.bob.id}/copy.txt` },
      }),
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: () => [ALICE_SECRET],
      check: async (_result, f, server) => {
        expect(await objectExists(server, 'private', `users/${f.bob.id}/copy.txt`)).toBe(false);
      },
    },
    {
      name: 'alice moves her object where the write rule forbids (outside users/), or to a bucket she may not write',
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/move',
        as: 'alice',
        body: { bucket: 'private', from: `users/${f.alice.id}/diary.txt`, to: 'public/diary.txt' },
      }),
      status: 403,
      code: 'FORBIDDEN',
      check: async (_result, f, server) => {
        expect(await objectExists(server, 'private', `users/${f.alice.id}/diary.txt`)).toBe(true);
        const elsewhere = await request(server.url, 'POST', '/v1/storage/copy', {
          token: f.alice.token,
          body: { bucket: 'private', from: `users/${f.alice.id}/diary.txt`, to: 'diary.txt', to_bucket: 'files' },
        });
        expect(elsewhere.status).toBe(403);
        expect(await objectExists(server, 'files', 'diary.txt')).toBe(false);
      },
    },
    {
      name: 'a move whose destination climbs out with ..',
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/move',
        as: 'alice',
        body: { bucket: 'private', from: `users/${f.alice.id}/diary.txt`, to: `users/${f.alice.id}/../../etc/x` },
      }),
      status: 400,
      code: 'INVALID_PATH',
    },
    {
      name: 'a copy with an unknown field or into a bucket name that is not one',
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/copy',
        as: 'alice',
        body: {
          bucket: 'private',
          from: `users/${f.alice.id}/diary.txt`,
          to: 'x',
          to_bucket: '../private',
          owner: 'bob',
        },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an anonymous caller moves an object',
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/move',
        body: { bucket: 'private', from: `users/${f.alice.id}/diary.txt`, to: 'users/x/diary.txt' },
      }),
      status: 403,
      code: 'FORBIDDEN',
    },

    // ---- bucket admin without the key --------------------------------------------------------
    {
      name: 'a user creates a bucket',
      request: () => ({ method: 'POST', path: '/v1/admin/buckets', as: 'alice', body: { name: 'mine', public: true } }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a stranger probes bucket validation without the key',
      request: () => ({ method: 'POST', path: '/v1/admin/buckets', body: { name: 'Not A Name!', max_file_size: -1 } }),
      status: 401,
      code: 'UNAUTHENTICATED',
    },

    // ---- image transforms ----------------------------------------------------------------------
    {
      name: 'a transform asks for an output larger than the bound',
      request: (f) => ({
        method: 'GET',
        path: `/v1/storage/private/users/${f.alice.id}/diary.txt?width=100000&height=100000`,
        as: 'alice',
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'transform parameters out of range or of the wrong kind',
      run: async (fixture, server) => {
        for (const query of ['width=0', 'height=2501', 'quality=1000', 'fit=fill', 'format=svg', 'width=1e3']) {
          const res = await request(
            server.url,
            'GET',
            `/v1/storage/private/users/${fixture.alice.id}/diary.txt?${query}`,
            {
              token: fixture.alice.token,
            },
          );
          expect(res.status, query).toBe(400);
          expect(errorCode(res.body), query).toBe('INVALID_REQUEST');
        }
      },
    },
    {
      name: 'a transform of a file that is not an image',
      request: (f) => ({
        method: 'GET',
        path: `/v1/storage/private/users/${f.alice.id}/diary.txt?width=10`,
        as: 'alice',
      }),
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    {
      name: "a transform of another user's file is still a read",
      request: (f) => ({
        method: 'GET',
        path: `/v1/storage/private/users/${f.alice.id}/diary.txt?width=10`,
        as: 'bob',
      }),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'transform parameters added to a signed URL of the original',
      request: (f) => {
        const query = new URLSearchParams(f.signedQuery);
        query.set('width', '10');
        return { method: 'GET', path: `${f.signedPath}?${query}` };
      },
      status: 403,
      code: 'FORBIDDEN',
      mustNotContain: () => [ALICE_SECRET],
    },

    // ---- resumable uploads (tus) ------------------------------------------------------------
    {
      name: "a tus upload that would overwrite another user's file",
      request: (f) => ({
        method: 'POST',
        path: '/v1/storage/uploads',
        as: 'bob',
        headers: {
          'tus-resumable': '1.0.0',
          'upload-length': '5',
          'upload-metadata': tusMetadata({ bucket: 'private', path: `users/${f.alice.id}/diary.txt`, upsert: 'true' }),
        },
      }),
      status: 403,
      code: 'FORBIDDEN',
      check: async (_result, fixture, server) => {
        const get = await request(server.url, 'GET', `/v1/storage/private/users/${fixture.alice.id}/diary.txt`, {
          token: fixture.alice.token,
        });
        expect(get.text).toBe(ALICE_SECRET);
      },
    },
    {
      name: 'a tus upload whose Upload-Length is over the bucket limit',
      request: () => ({
        method: 'POST',
        path: '/v1/storage/uploads',
        as: 'service',
        headers: {
          'tus-resumable': '1.0.0',
          'upload-length': '1001',
          'upload-metadata': tusMetadata({ bucket: 'small', path: 'big.bin' }),
        },
      }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'tus PATCHes at offsets that do not match, from another user, and after termination',
      run: async (fixture, server) => {
        const tusHeaders = { 'tus-resumable': '1.0.0' };
        const created = await request(server.url, 'POST', '/v1/storage/uploads', {
          token: fixture.alice.token,
          headers: {
            ...tusHeaders,
            'upload-length': '10',
            'upload-metadata': tusMetadata({ bucket: 'private', path: `users/${fixture.alice.id}/tus.txt` }),
          },
        });
        expect(created.status, created.text).toBe(201);
        const location = created.headers.get('location') as string;
        const patch = (token: string, offset: string, body: string) =>
          request(server.url, 'PATCH', location, {
            token,
            headers: { ...tusHeaders, 'upload-offset': offset, 'content-type': 'application/offset+octet-stream' },
            rawBody: encoder.encode(body),
          });
        for (const offset of ['5', '-1', '99999999999999999999', 'abc']) {
          const res = await patch(fixture.alice.token, offset, 'x');
          expect([400, 409], offset).toContain(res.status);
        }
        const bobs = await patch(fixture.bob.token, '0', 'bob');
        expect(bobs.status).toBe(404);
        expect(
          (await request(server.url, 'DELETE', location, { token: fixture.alice.token, headers: tusHeaders })).status,
        ).toBe(204);
        const after = await patch(fixture.alice.token, '0', '0123456789');
        expect(after.status).toBe(404);
        expect(await objectExists(server, 'private', `users/${fixture.alice.id}/tus.txt`)).toBe(false);
      },
    },

    // ---- quotas ------------------------------------------------------------------------------
    {
      name: 'quota squeeze: many concurrent uploads each under the remaining room',
      run: async (fixture, server) => {
        await createBucket(server, {
          name: 'quota-squeeze',
          max_bytes_per_user: 1000,
          rules: { write: 'auth != null', read: 'auth != null' },
        });
        const body = new Uint8Array(300).fill(1);
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            request(server.url, 'PUT', `/v1/storage/quota-squeeze/f${i}`, {
              token: fixture.bob.token,
              headers: { 'content-type': 'application/octet-stream' },
              rawBody: body,
            }),
          ),
        );
        expect(results.filter((r) => r.status === 201)).toHaveLength(3);
        for (const r of results.filter((r) => r.status !== 201)) {
          expect(r.status).toBe(413);
          expect(errorCode(r.body)).toBe('QUOTA_EXCEEDED');
        }
        const usage = await request(server.url, 'GET', '/v1/admin/buckets/quota-squeeze/usage', {
          token: server.serviceKey,
        });
        expect((usage.body as { bytes: number; reserved_bytes: number }).bytes).toBe(900);
        expect((usage.body as { reserved_bytes: number }).reserved_bytes).toBe(0);
      },
    },
    {
      name: 'quota dodge: concurrent copies of one object into a bucket with a per-user quota',
      run: async (fixture, server) => {
        await createBucket(server, {
          name: 'quota-copies',
          max_bytes_per_user: 1000,
          rules: { write: 'auth != null', read: 'auth != null', delete: 'auth != null' },
        });
        const put = await request(server.url, 'PUT', '/v1/storage/quota-copies/src', {
          token: fixture.bob.token,
          headers: { 'content-type': 'application/octet-stream' },
          rawBody: new Uint8Array(300).fill(2),
        });
        expect(put.status).toBe(201);
        const results = await Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            request(server.url, 'POST', '/v1/storage/copy', {
              token: fixture.bob.token,
              body: { bucket: 'quota-copies', from: 'src', to: `c${i}` },
            }),
          ),
        );
        expect(results.filter((r) => r.status === 201)).toHaveLength(2);
        for (const r of results.filter((r) => r.status !== 201)) {
          expect(r.status).toBe(413);
          expect(errorCode(r.body)).toBe('QUOTA_EXCEEDED');
        }
        const usage = await request(server.url, 'GET', '/v1/admin/buckets/quota-copies/usage', {
          token: server.serviceKey,
        });
        expect(usage.body).toMatchObject({ bytes: 900, objects: 3, reserved_bytes: 0 });
      },
    },
    {
      name: 'a user reads the per-user usage of a bucket',
      request: () => ({ method: 'GET', path: '/v1/admin/buckets/files/usage', as: 'alice' }),
      status: 403,
      code: 'FORBIDDEN',
    },
  ],
});
