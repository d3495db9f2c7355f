import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parsePrometheus, quantile, rate, Scrape } from '../dashboard/src/metrics.js';

/** The overview's arithmetic on real prom-client output: parsing, counter rates, histogram quantiles. */
describe('dashboard metrics', () => {
  it('parses labels (escaped quotes included), values and +Inf buckets', () => {
    const samples = parsePrometheus(
      [
        '# HELP x_total a counter',
        '# TYPE x_total counter',
        'x_total{route="/v1/db/:collection",note="say \\"hi\\""} 3',
        'y_bucket{le="+Inf"} 7',
        'z 1.5e3',
      ].join('\n'),
    );
    expect(samples).toEqual([
      { name: 'x_total', labels: { route: '/v1/db/:collection', note: 'say "hi"' }, value: 3 },
      { name: 'y_bucket', labels: { le: '+Inf' }, value: 7 },
      { name: 'z', labels: {}, value: 1500 },
    ]);
  });

  it('computes per-second rates and quantiles between two scrapes of a prom-client registry', async () => {
    const registry = new Registry();
    const requests = new Counter({ name: 'req_total', help: 'h', labelNames: ['status'], registers: [registry] });
    const duration = new Histogram({
      name: 'dur_seconds',
      help: 'h',
      buckets: [0.01, 0.1, 1],
      registers: [registry],
    });
    requests.inc({ status: '200' }, 10);
    duration.observe(5); // before the first scrape: must not count
    const first = new Scrape(1_000, parsePrometheus(await registry.metrics()));

    requests.inc({ status: '200' }, 30);
    requests.inc({ status: '500' }, 10);
    for (let i = 0; i < 90; i++) duration.observe(0.005);
    for (let i = 0; i < 10; i++) duration.observe(0.5);
    const second = new Scrape(3_000, parsePrometheus(await registry.metrics()));

    expect(rate(first, second, 'req_total')).toBe(20);
    expect(rate(first, second, 'req_total', (labels) => labels.status === '500')).toBe(5);
    // 90 of 100 observations are in the first bucket (≤ 10 ms): the median lies inside it.
    const p50 = quantile(first, second, 'dur_seconds', 0.5);
    expect(p50).toBeGreaterThan(0);
    expect(p50).toBeLessThanOrEqual(0.01);
    // The 95th is in the (0.1, 1] bucket.
    const p95 = quantile(first, second, 'dur_seconds', 0.95);
    expect(p95).toBeGreaterThan(0.1);
    expect(p95).toBeLessThanOrEqual(1);
    // No observations between two scrapes: no figure rather than a made-up zero.
    expect(quantile(second, second, 'dur_seconds', 0.95)).toBeNull();
  });

  it('treats a counter reset (a restarted server) as zero, not a negative rate', () => {
    const before = new Scrape(0, parsePrometheus('c_total 100'));
    const after = new Scrape(2_000, parsePrometheus('c_total 4'));
    expect(rate(before, after, 'c_total')).toBe(0);
  });
});
