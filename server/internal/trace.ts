import { randomFillSync } from 'node:crypto';

/**
 * Where a write, an upload or a publish came from: the trace of the invocation that made
 * it and that invocation's id. It travels with the change (basalt.changes.origin) to the
 * job it queues, so the run it triggers shares the trace and names its parent.
 */
export interface TraceOrigin {
  trace_id: string;
  parent_invocation_id: string;
}

/** How an invocation sits in its trace; `parentSpanId` names an outside caller's span (a W3C traceparent). */
export interface TraceContext {
  traceId: string;
  parentInvocationId: string | null;
  parentSpanId?: string | null;
}

const TRACE_ID = /^[0-9a-f]{32}$/;
const SPAN_ID = /^[0-9a-f]{16}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** version-traceid-parentid-flags, version 00 (W3C Trace Context level 1); later versions may append fields. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** A W3C trace id: 32 lowercase hex digits, not all zero. */
export function isTraceId(value: string): boolean {
  return TRACE_ID.test(value) && !/^0+$/.test(value);
}

/**
 * Random bytes for trace ids, filled 256 ids at a time: every HTTP call of a function starts
 * a trace, and asking the CSPRNG for 16 bytes per call cost more than the rest of its set-up
 * (randomUUID keeps a cache the same way).
 */
const TRACE_IDS_PER_FILL = 256;
const traceIdBytes = Buffer.alloc(16 * TRACE_IDS_PER_FILL);
let nextTraceIdAt = traceIdBytes.length;

export function newTraceId(): string {
  for (;;) {
    if (nextTraceIdAt >= traceIdBytes.length) {
      randomFillSync(traceIdBytes);
      nextTraceIdAt = 0;
    }
    const id = traceIdBytes.toString('hex', nextTraceIdAt, nextTraceIdAt + 16);
    nextTraceIdAt += 16;
    // All zero is not a trace id (W3C): a chance of 2^-128, tried again all the same.
    if (isTraceId(id)) return id;
  }
}

/** The span id an invocation has in OTLP and in `traceparent`: 16 hex digits of its uuid (the random ones). */
export function spanIdOf(invocationId: string): string {
  return invocationId.replace(/-/g, '').slice(16, 32);
}

/** The trace id and parent span of a W3C `traceparent` header; null when absent or malformed (a new trace starts). */
export function parseTraceparent(header: string | undefined): { traceId: string; parentSpanId: string } | null {
  if (!header) return null;
  const match = TRACEPARENT.exec(header.trim());
  if (!match) return null;
  const [, version = '', traceId = '', parentSpanId = '', , rest] = match;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (!isTraceId(traceId) || !SPAN_ID.test(parentSpanId) || /^0+$/.test(parentSpanId)) return null;
  return { traceId, parentSpanId };
}

/** The origin a change row carries, when it is one (written by Basalt, never trusted blindly). */
export function originFrom(value: unknown): TraceOrigin | null {
  if (typeof value !== 'object' || value === null) return null;
  const { trace_id: traceId, parent_invocation_id: parent } = value as Record<string, unknown>;
  if (typeof traceId !== 'string' || !isTraceId(traceId)) return null;
  if (typeof parent !== 'string' || !UUID.test(parent)) return null;
  return { trace_id: traceId, parent_invocation_id: parent };
}

/**
 * The trace a queued job's runs join, from the origin it carries: a change's (a run's write)
 * or a topic event's, whose parent is null when it was published from outside any function.
 * Null when it carries none.
 */
export function traceFromJobOrigin(value: unknown): TraceContext | null {
  if (typeof value !== 'object' || value === null) return null;
  const { trace_id: traceId, parent_invocation_id: parent } = value as Record<string, unknown>;
  if (typeof traceId !== 'string' || !isTraceId(traceId)) return null;
  return { traceId, parentInvocationId: typeof parent === 'string' && UUID.test(parent) ? parent : null };
}

/** The trace of a run its origin started; a run with none (plain SQL, a schedule tick) starts its own. */
export function traceOf(origin: TraceOrigin | null | undefined): TraceContext {
  return origin
    ? { traceId: origin.trace_id, parentInvocationId: origin.parent_invocation_id }
    : { traceId: newTraceId(), parentInvocationId: null };
}
