import type { InvocationRecord } from './repository.js';

/** One run of a trace, as GET /v1/admin/traces/:trace_id lists it. */
export interface TraceInvocation {
  id: string;
  function: string;
  /** What started it: `http`, `schedule`, `document.create`, `object.upload`, `user.created`, `event`… */
  trigger: string;
  status: InvocationRecord['status'];
  attempt: number;
  event_id: string | null;
  /** The run whose write or publish started this one; null for a root of the trace. */
  parent_invocation_id: string | null;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  error: string | null;
  /** Distance from its root: 0 for a root, 1 for what a root's writes triggered, and so on. */
  depth: number;
}

function compareStart(a: InvocationRecord, b: InvocationRecord): number {
  return (a.started_at ?? a.created_at).localeCompare(b.started_at ?? b.created_at) || a.id.localeCompare(b.id);
}

/**
 * The runs of a trace in tree order: each root (a run with no parent in the trace), then
 * depth first its children, siblings by start time. A run whose parent is not among them
 * (recorded on another instance a moment later, or cut by the size limit) is a root here,
 * so every run is listed exactly once.
 */
export function traceTree(records: InvocationRecord[]): TraceInvocation[] {
  const ids = new Set(records.map((record) => record.id));
  const children = new Map<string | null, InvocationRecord[]>();
  for (const record of records) {
    const parent =
      record.parent_invocation_id && ids.has(record.parent_invocation_id) ? record.parent_invocation_id : null;
    const siblings = children.get(parent) ?? [];
    siblings.push(record);
    children.set(parent, siblings);
  }
  const ordered: TraceInvocation[] = [];
  const visit = (parent: string | null, depth: number) => {
    for (const record of (children.get(parent) ?? []).sort(compareStart)) {
      ordered.push({
        id: record.id,
        function: record.function,
        trigger: record.trigger,
        status: record.status,
        attempt: record.attempt,
        event_id: record.event_id,
        parent_invocation_id: record.parent_invocation_id,
        started_at: record.started_at,
        finished_at: record.finished_at,
        duration_ms: record.duration_ms,
        error: record.error,
        depth,
      });
      visit(record.id, depth + 1);
    }
  };
  visit(null, 0);
  return ordered;
}
