/**
 * Messages between the server and a function worker thread. Plain JSON-compatible
 * values and byte arrays only: they cross a structured-clone boundary.
 */
import type { FunctionResponse } from './http-response.js';

export type InvocationKind = 'document' | 'object' | 'auth' | 'http' | 'schedule' | 'event';

/** What ctx.* calls reach on the server: ctx.db, ctx.storage and ctx.events. */
export type RpcTarget = 'db' | 'storage' | 'events';

export interface InvokeMessage {
  type: 'invoke';
  invocationId: string;
  /** Absolute path of the bundled module. */
  bundle: string;
  exportName: string;
  input: unknown;
  env: Record<string, string | undefined>;
  /** The secrets the function declares, by name: ctx.secrets. */
  secrets: Record<string, string>;
  /** Whether ctx.asCaller acts as a verified caller (HTTP functions). */
  asCaller: boolean;
  /** ctx.trace_id: the trace this invocation belongs to. */
  traceId: string;
}

export interface ProbeMessage {
  type: 'probe';
  bundle: string;
}

export interface RpcResultMessage {
  type: 'rpc-result';
  callId: number;
  ok: boolean;
  value?: unknown;
  error?: { code: string; message: string };
}

export type ToWorker = InvokeMessage | ProbeMessage | RpcResultMessage;

export interface LogLine {
  level: 'info' | 'warn' | 'error';
  message: string;
  at: string;
}

export interface ProbedDefinition {
  exportName: string;
  kind: InvocationKind;
  options: Record<string, unknown>;
}

export type FromWorker =
  | { type: 'log'; invocationId: string; line: LogLine }
  | {
      type: 'rpc';
      invocationId: string;
      callId: number;
      target: RpcTarget;
      /** ctx.db / ctx.storage act as the service role; ctx.asCaller as the HTTP caller. */
      as: 'service' | 'caller';
      method: string;
      args: unknown[];
    }
  /** `json`: what the handler returned as JSON text, made once in the worker and sent as is by an HTTP route. */
  | { type: 'result'; invocationId: string; ok: true; json: string; response?: FunctionResponse }
  | { type: 'result'; invocationId: string; ok: false; error: { message: string; name: string } }
  | { type: 'probed'; ok: true; definitions: ProbedDefinition[] }
  | { type: 'probed'; ok: false; error: string };
