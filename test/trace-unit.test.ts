import { describe, expect, it } from 'vitest';
import { loadConfig } from '../server/config.js';
import { isTraceId, newTraceId, parseTraceparent, spanIdOf } from '../server/internal/trace.js';
import type { InvocationRecord } from '../server/modules/functions/repository.js';
import { traceTree } from '../server/modules/functions/trace-tree.js';

describe('trace ids and traceparent', () => {
  it('makes W3C trace ids and span ids from invocation ids', () => {
    // Several fills of the pooled random bytes (256 ids each): every id valid, none repeated.
    const ids = Array.from({ length: 1000 }, () => newTraceId());
    for (const id of ids) expect(isTraceId(id)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(isTraceId('0'.repeat(32))).toBe(false);
    expect(spanIdOf('7f0c9a52-3c1e-4b8e-9d47-5a1b2c3d4e5f')).toBe('9d475a1b2c3d4e5f');
  });

  it('reads a traceparent, and ignores what the W3C spec says to ignore', () => {
    const id = '4bf92f3577b34da6a3ce929d0e0e4736';
    expect(parseTraceparent(`00-${id}-00f067aa0ba902b7-01`)).toEqual({ traceId: id, parentSpanId: '00f067aa0ba902b7' });
    // A later version may add fields after the flags.
    expect(parseTraceparent(`01-${id}-00f067aa0ba902b7-01-extra`)?.traceId).toBe(id);
    for (const bad of [
      undefined,
      '',
      `00-${id}-00f067aa0ba902b7-01-extra`,
      `ff-${id}-00f067aa0ba902b7-01`,
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
      `00-${id}-${'0'.repeat(16)}-01`,
      `00-${id.toUpperCase()}-00f067aa0ba902b7-01`,
      `00-${id}-00f067aa0ba902b7`,
    ]) {
      expect(parseTraceparent(bad), String(bad)).toBeNull();
    }
  });
});

function run(id: string, parent: string | null, startedAt: string): InvocationRecord {
  return {
    id,
    job_id: null,
    function: id,
    trigger: parent ? 'document.create' : 'http',
    event_id: null,
    status: 'succeeded',
    attempt: 1,
    cold_start: false,
    started_at: startedAt,
    finished_at: startedAt,
    duration_ms: 1,
    error: null,
    logs: [],
    created_at: startedAt,
    version: 1,
    trace_id: 'a'.repeat(32),
    parent_invocation_id: parent,
  };
}

describe('the tree of a trace', () => {
  it('lists each root, then depth first its children by start time, with their depth', () => {
    const tree = traceTree([
      run('c2', 'root', '2026-01-01T00:00:03Z'),
      run('gc', 'c1', '2026-01-01T00:00:04Z'),
      run('root', null, '2026-01-01T00:00:00Z'),
      run('c1', 'root', '2026-01-01T00:00:01Z'),
      // Its parent is not in the trace (not recorded yet): a root of its own.
      run('orphan', 'elsewhere', '2026-01-01T00:00:02Z'),
    ]);
    expect(tree.map((node) => [node.id, node.depth])).toEqual([
      ['root', 0],
      ['c1', 1],
      ['gc', 2],
      ['c2', 1],
      ['orphan', 0],
    ]);
    expect(tree.find((node) => node.id === 'orphan')?.parent_invocation_id).toBe('elsewhere');
  });
});

describe('OTLP settings', () => {
  it('exports only with an endpoint, as http/json, to <endpoint>/v1/traces', () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }).otel).toBeNull();
    const otel = loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=abc%20def,tenant=t1',
    }).otel;
    expect(otel).toMatchObject({
      tracesUrl: 'http://collector:4318/v1/traces',
      headers: { 'x-api-key': 'abc def', tenant: 't1' },
      serviceName: 'basalt',
    });
    expect(() =>
      loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }),
    ).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL/);
    expect(() =>
      loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_HEADERS: '=x' }),
    ).toThrow(/OTEL_EXPORTER_OTLP_HEADERS/);
  });
});
