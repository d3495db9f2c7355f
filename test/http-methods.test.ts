import { describe, expect, it } from 'vitest';
import { errorCode, request, useTestApp } from './helpers.js';

const server = useTestApp();

/** A wrong method on a path: 405 with the envelope and the path's methods in `Allow`. */
async function expectNotAllowed(method: string, path: string, allow: string[]): Promise<void> {
  const response = await request(server.url, method, path, { token: server.serviceKey });
  expect(response.status, `${method} ${path}: ${response.text}`).toBe(405);
  expect(errorCode(response.body)).toBe('METHOD_NOT_ALLOWED');
  expect(response.headers.get('allow')?.split(', ')).toEqual(allow);
  expect(response.headers.get('x-request-id')).toBeTruthy();
  if (method !== 'HEAD') {
    expect((response.body as { error: { details: unknown } }).error.details).toEqual({ method, allowed: allow });
  }
}

describe('a known path with a method it does not take', () => {
  it('answers 405 with Allow on a static path', async () => {
    await expectNotAllowed('DELETE', '/healthz', ['GET', 'HEAD']);
    await expectNotAllowed('GET', '/v1/auth/signup', ['POST']);
    await expectNotAllowed('PUT', '/v1/auth/user', ['GET', 'HEAD', 'PATCH']);
    await expectNotAllowed('DELETE', '/v1/db/batch', ['POST']);
    await expectNotAllowed('GET', '/v1/db/batch', ['POST']);
  });

  it('answers 405 on parametric paths, for any concrete value', async () => {
    await expectNotAllowed('POST', '/v1/db/posts/abc', ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE']);
    await expectNotAllowed('DELETE', '/v1/db/posts', ['POST']);
    await expectNotAllowed('POST', '/v1/admin/users/00000000-0000-0000-0000-000000000000', [
      'GET',
      'HEAD',
      'PATCH',
      'DELETE',
    ]);
  });

  it('answers 405 on wildcard paths, however deep', async () => {
    await expectNotAllowed('PATCH', '/v1/storage/avatars/a/b/c.png', ['GET', 'HEAD', 'POST', 'PUT', 'DELETE']);
    await expectNotAllowed('PATCH', '/v1/storage/avatars', ['GET', 'HEAD', 'DELETE']);
    await expectNotAllowed('GET', '/v1/sign/avatars/a.png', ['POST']);
  });

  it('answers 405 on the websocket path for anything but GET', async () => {
    await expectNotAllowed('POST', '/v1/realtime', ['GET', 'HEAD']);
  });

  it('answers 405 to HEAD on a path without GET, with no body', async () => {
    const response = await request(server.url, 'HEAD', '/v1/auth/signin');
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
    expect(response.text).toBe('');
  });

  it('ignores the query string and a trailing slash', async () => {
    await expectNotAllowed('POST', '/healthz/?verbose=1', ['GET', 'HEAD']);
  });

  it('lets the browser read Allow across origins', async () => {
    const response = await request(server.url, 'DELETE', '/healthz', { headers: { origin: 'https://app.example' } });
    expect(response.headers.get('access-control-expose-headers')).toContain('allow');
  });
});

describe('an unknown path', () => {
  it('stays 404 whatever the method', async () => {
    for (const method of ['GET', 'POST', 'DELETE']) {
      const response = await request(server.url, method, '/v1/nothing/here');
      expect(response.status).toBe(404);
      expect(errorCode(response.body)).toBe('NOT_FOUND');
      expect(response.headers.get('allow')).toBeNull();
    }
    // Deeper than any route under /v1/db: no route has this path.
    expect((await request(server.url, 'GET', '/v1/db/posts/abc/extra')).status).toBe(404);
  });

  it('does not turn a preflight into a 405', async () => {
    const response = await fetch(`${server.url}/v1/db/posts`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
    });
    expect(response.status).toBe(204);
  });

  it('answers a malformed path 400, not 405', async () => {
    const response = await request(server.url, 'POST', '/healthz%');
    expect([400, 404]).toContain(response.status);
  });
});
