import { describe, expect, it } from 'vitest';
import { parsePrometheus } from '../dashboard/src/metrics.js';
import { Metrics } from '../server/internal/metrics.js';

describe('the metrics exposition', () => {
  it('prints the request counter and a cumulative duration histogram per route from the recorded requests', async () => {
    const metrics = new Metrics();
    for (const seconds of [0.0005, 0.002, 0.002, 0.3, 20])
      metrics.recordRequest('GET', '/v1/db/:collection', 200, seconds);
    metrics.recordRequest('GET', '/v1/db/:collection', 404, 0.004);
    metrics.recordRequest('POST', 'label "with" \\ quotes', 201, 0.05);

    const { contentType, body } = await metrics.render();
    expect(contentType).toContain('text/plain');
    const samples = parsePrometheus(body);
    const sample = (name: string, labels: Record<string, string>): number | undefined =>
      samples.find(
        (entry) => entry.name === name && Object.entries(labels).every(([key, value]) => entry.labels[key] === value),
      )?.value;

    const route = { method: 'GET', route: '/v1/db/:collection' };
    expect(sample('basalt_http_requests_total', { ...route, status: '200' })).toBe(5);
    expect(sample('basalt_http_requests_total', { ...route, status: '404' })).toBe(1);
    expect(sample('basalt_http_request_duration_seconds_count', route)).toBe(6);
    expect(sample('basalt_http_request_duration_seconds_sum', route)).toBeCloseTo(20.3085, 6);
    expect(sample('basalt_http_request_duration_seconds_bucket', { ...route, le: '0.001' })).toBe(1);
    expect(sample('basalt_http_request_duration_seconds_bucket', { ...route, le: '0.005' })).toBe(4);
    expect(sample('basalt_http_request_duration_seconds_bucket', { ...route, le: '0.25' })).toBe(4);
    expect(sample('basalt_http_request_duration_seconds_bucket', { ...route, le: '10' })).toBe(5);
    expect(sample('basalt_http_request_duration_seconds_bucket', { ...route, le: '+Inf' })).toBe(6);
    // Label values are escaped as the text format requires, and read back intact.
    expect(
      sample('basalt_http_request_duration_seconds_count', { method: 'POST', route: 'label "with" \\ quotes' }),
    ).toBe(1);
    // Process metrics from prom-client's registry are there too.
    expect(samples.some((entry) => entry.name.startsWith('basalt_process_'))).toBe(true);
  });
});
