import { describe, expect, it } from 'vitest';
import { errorCode, request, useTestApp } from './helpers.js';

const server = useTestApp({
  env: { BASALT_CORS_ORIGINS: 'https://app.example.com,http://localhost:5173' },
  beforeListen(app) {
    // A route that takes a JSON body, to exercise body parsing and the error handler.
    app.post('/test/echo', async (request) => ({ received: request.body }));
    app.get('/test/crash', async () => {
      throw new Error('secret internal detail: SELECT * FROM basalt.instance');
    });
  },
});

describe('health and operations', () => {
  it('answers /healthz', async () => {
    const response = await request(server.url, 'GET', '/healthz');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ status: 'ok' });
  });

  it('answers /readyz with the postgres check', async () => {
    const response = await request(server.url, 'GET', '/readyz');
    expect(response.status).toBe(200);
    // Modules add their own checks (storage adds its backend); postgres is always one.
    expect(response.body).toEqual({ status: 'ok', checks: expect.objectContaining({ postgres: true }) });
  });

  it('serves Prometheus metrics that count requests', async () => {
    await request(server.url, 'GET', '/healthz');
    const response = await request(server.url, 'GET', '/metrics', { token: server.serviceKey });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    expect(response.text).toMatch(/basalt_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+/);
    expect(response.text).toContain('basalt_http_request_duration_seconds_bucket');
  });

  it('serves the OpenAPI document and its UI at /docs', async () => {
    const spec = await request(server.url, 'GET', '/docs/json');
    expect(spec.status).toBe(200);
    const paths = (spec.body as { paths: Record<string, unknown> }).paths;
    expect(Object.keys(paths)).toEqual(expect.arrayContaining(['/healthz', '/readyz']));
    const ui = await fetch(`${server.url}/docs/`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('swagger');
  });
});

describe('request ids and headers', () => {
  it('puts an x-request-id on every response, including errors', async () => {
    const ok = await request(server.url, 'GET', '/healthz');
    const missing = await request(server.url, 'GET', '/no/such/route');
    expect(ok.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(missing.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(ok.headers.get('x-request-id')).not.toBe(missing.headers.get('x-request-id'));
  });

  it('keeps a well-formed incoming x-request-id and replaces a malformed one', async () => {
    const kept = await request(server.url, 'GET', '/healthz', { headers: { 'x-request-id': 'trace-abc.123' } });
    expect(kept.headers.get('x-request-id')).toBe('trace-abc.123');
    const replaced = await request(server.url, 'GET', '/healthz', {
      headers: { 'x-request-id': 'bad id with spaces' },
    });
    expect(replaced.headers.get('x-request-id')).not.toBe('bad id with spaces');
  });

  it('sends security headers', async () => {
    const response = await request(server.url, 'GET', '/healthz');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(response.headers.get('cross-origin-resource-policy')).toBe('cross-origin');
  });
});

describe('CORS', () => {
  it('answers a preflight from an allowed origin', async () => {
    const response = await fetch(`${server.url}/healthz`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'PATCH',
        'access-control-request-headers': 'authorization, content-type, if-match',
      },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    expect(response.headers.get('access-control-allow-methods')).toContain('PATCH');
    expect(response.headers.get('access-control-allow-headers')).toContain('authorization');
  });

  it('exposes the headers the SDK reads', async () => {
    const response = await fetch(`${server.url}/healthz`, { headers: { origin: 'http://localhost:5173' } });
    expect(response.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
    expect(response.headers.get('access-control-expose-headers')).toContain('x-request-id');
    expect(response.headers.get('access-control-expose-headers')).toContain('etag');
  });

  it('does not allow an origin outside the list', async () => {
    const response = await fetch(`${server.url}/healthz`, { headers: { origin: 'https://evil.example.net' } });
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('the error envelope', () => {
  it('answers an unknown route with 404 NOT_FOUND', async () => {
    const response = await request(server.url, 'GET', '/v1/nothing-here');
    expect(response.status).toBe(404);
    expect(errorCode(response.body)).toBe('NOT_FOUND');
    expect((response.body as { error: { message: string } }).error.message).toContain('/v1/nothing-here');
  });

  it.each([
    ['malformed JSON', () => '{"a": ', 'application/json', 400, 'INVALID_REQUEST'],
    [
      'a body over the limit',
      () => JSON.stringify({ blob: 'x'.repeat(server.config.bodyLimit + 10) }),
      'application/json',
      413,
      'PAYLOAD_TOO_LARGE',
    ],
    ['an unsupported content type', () => 'a=b', 'application/x-www-form-urlencoded', 415, 'UNSUPPORTED_MEDIA_TYPE'],
    // A JSON endpoint parses JSON only: text that happens to be JSON is refused, not half-accepted.
    ['text/plain on a JSON endpoint', () => '{"a": 1}', 'text/plain', 415, 'UNSUPPORTED_MEDIA_TYPE'],
  ])('answers %s with the catalogue error and no internals', async (_case, body, contentType, status, code) => {
    const response = await request(server.url, 'POST', '/test/echo', {
      rawBody: body(),
      headers: { 'content-type': contentType },
    });
    expect(response.status).toBe(status);
    expect(errorCode(response.body)).toBe(code);
    expect(response.text).not.toMatch(/at .*\.(js|ts):\d+/);
  });

  it('rejects a malformed Authorization header with 401 UNAUTHENTICATED', async () => {
    const response = await request(server.url, 'GET', '/healthz', { headers: { authorization: 'Basic abc' } });
    expect(response.status).toBe(401);
    expect(errorCode(response.body)).toBe('UNAUTHENTICATED');
  });

  it('rejects a bearer token that is neither the service key nor a valid access token', async () => {
    const response = await request(server.url, 'GET', '/healthz', { token: 'not-a-token' });
    expect(response.status).toBe(401);
    expect(errorCode(response.body)).toBe('UNAUTHENTICATED');
  });

  it('echoes a valid JSON body through the test route', async () => {
    const response = await request(server.url, 'POST', '/test/echo', { body: { a: [1, 'two'] } });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ received: { a: [1, 'two'] } });
  });

  it('answers a server fault with 500 INTERNAL and hides its message', async () => {
    const response = await request(server.url, 'GET', '/test/crash');
    expect(response.status).toBe(500);
    expect(errorCode(response.body)).toBe('INTERNAL');
    expect(response.text).not.toContain('secret');
    expect(response.text).not.toContain('SELECT');
  });

  it('accepts the service key', async () => {
    const response = await request(server.url, 'GET', '/healthz', { token: server.serviceKey });
    expect(response.status).toBe(200);
  });

  it('keeps serving after a burst of bad requests', async () => {
    const bad = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        request(server.url, 'POST', `/test/echo?i=${i}`, {
          rawBody: '{{{',
          headers: { 'content-type': 'application/json' },
        }),
      ),
    );
    expect(bad.every((response) => response.status === 400)).toBe(true);
    const after = await request(server.url, 'GET', '/readyz');
    expect(after.status).toBe(200);
  });
});
