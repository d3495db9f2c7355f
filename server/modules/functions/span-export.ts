import { randomUUID } from 'node:crypto';
import { diag, DiagLogLevel, ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, TracerProvider, type IdGenerator } from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { OtelConfig } from '../../config.js';
import type { Logger } from '../../internal/log.js';
import { newTraceId, spanIdOf } from '../../internal/trace.js';
import type { InvocationRun } from './repository.js';

/** Shutdown waits this long at most for the last spans to leave (a collector that is down must not hold it up). */
const SHUTDOWN_WAIT_MS = 5_000;
/** An unreachable collector is reported once per this, not once per batch. */
const WARN_EVERY_MS = 30_000;

/**
 * The SDK asks its id generator for a new span's ids; a span here must carry ids Basalt
 * already chose (its trace, and a span id derived from the invocation id, so a child names
 * its parent without asking anybody). They are handed over right before each startSpan,
 * which calls the generator synchronously.
 */
class GivenIds implements IdGenerator {
  next: { traceId: string; spanId: string } | null = null;
  generateTraceId(): string {
    return this.next?.traceId ?? newTraceId();
  }
  generateSpanId(): string {
    return this.next?.spanId ?? spanIdOf(randomUUID());
  }
}

/** The OpenTelemetry `faas.trigger` of a Basalt trigger. */
function faasTrigger(trigger: string): string {
  if (trigger === 'http') return 'http';
  if (trigger === 'schedule') return 'timer';
  if (trigger === 'event') return 'pubsub';
  return 'datasource';
}

/**
 * Exports one span per finished function run over OTLP/HTTP (JSON), with the OpenTelemetry
 * SDK's batch processor: record() only queues the span (a full queue drops it, never
 * holding up a run), and a collector that is down costs failed exports, logged now and
 * then, nothing else. A run's span is the child of its parent invocation's span, or of the
 * caller's span named by a W3C traceparent.
 */
export class SpanExporter {
  private readonly provider: TracerProvider;
  private readonly ids = new GivenIds();
  private readonly tracer;
  private lastWarning = 0;

  constructor(config: OtelConfig, log: Logger) {
    // The SDK reports failed exports through its global diagnostic logger.
    diag.setLogger(
      {
        error: (message: string) => this.warn(log, message),
        warn: (message: string) => this.warn(log, message),
        info: () => undefined,
        debug: () => undefined,
        verbose: () => undefined,
      },
      { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
    );
    this.provider = new TracerProvider({
      resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.serviceName }),
      sampler: new AlwaysOnSampler(),
      idGenerator: this.ids,
      spanProcessors: [
        new BatchSpanProcessor({
          exporter: new OTLPTraceExporter({
            url: config.tracesUrl,
            headers: config.headers,
            timeoutMillis: config.exportTimeoutMs,
          }),
          scheduledDelayMillis: config.scheduleDelayMs,
          maxQueueSize: config.maxQueueSize,
          maxExportBatchSize: Math.min(512, config.maxQueueSize),
          exportTimeoutMillis: config.exportTimeoutMs,
        }),
      ],
    });
    this.tracer = this.provider.getTracer('basalt.functions');
  }

  private warn(log: Logger, message: string): void {
    if (Date.now() - this.lastWarning < WARN_EVERY_MS) return;
    this.lastWarning = Date.now();
    log.warn({ reason: message }, 'exporting function spans over OTLP failed; spans are dropped meanwhile');
  }

  /** Queues the span of a finished run. */
  record(run: InvocationRun): void {
    if (!run.traceId) return;
    const parentSpanId = run.parentInvocationId ? spanIdOf(run.parentInvocationId) : run.parentSpanId;
    const parent = parentSpanId
      ? trace.setSpanContext(ROOT_CONTEXT, {
          traceId: run.traceId,
          spanId: parentSpanId,
          traceFlags: TraceFlags.SAMPLED,
          isRemote: true,
        })
      : ROOT_CONTEXT;
    this.ids.next = { traceId: run.traceId, spanId: spanIdOf(run.id) };
    try {
      const span = this.tracer.startSpan(
        run.functionName,
        {
          kind: run.trigger === 'http' ? SpanKind.SERVER : SpanKind.CONSUMER,
          startTime: run.startedAt,
          attributes: {
            'basalt.function': run.functionName,
            'basalt.trigger': run.trigger,
            'basalt.status': run.status,
            'basalt.invocation_id': run.id,
            'basalt.attempt': run.attempt,
            ...(run.parentInvocationId ? { 'basalt.parent_invocation_id': run.parentInvocationId } : {}),
            ...(run.version === undefined ? {} : { 'basalt.function_version': run.version }),
            'faas.name': run.functionName,
            'faas.trigger': faasTrigger(run.trigger),
            'faas.invocation_id': run.id,
            'faas.coldstart': run.cold,
          },
        },
        parent,
      );
      if (run.status !== 'succeeded') span.setStatus({ code: SpanStatusCode.ERROR, message: run.error ?? run.status });
      span.end(new Date(run.startedAt.getTime() + run.durationMs));
    } finally {
      this.ids.next = null;
    }
  }

  /** Sends what is queued and stops; bounded, so an unreachable collector cannot hold up shutdown. */
  async shutdown(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.provider.shutdown().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, SHUTDOWN_WAIT_MS);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}
