/**
 * Runs inside a worker thread: loads a function bundle, calls one handler per
 * invocation, and forwards logs and ctx.db / ctx.storage calls to the server thread.
 * Bundled by esbuild at start, so it runs as plain JavaScript in any worker.
 */
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';
import { readFunctionResponse, transferable } from './http-response.js';
import type { FromWorker, LogLine, ProbedDefinition, RpcTarget, ToWorker } from './protocol.js';

const port = parentPort;
if (!port) throw new Error('worker-entry must run in a worker thread');

const KINDS = new Set(['document', 'object', 'auth', 'http', 'schedule', 'event']);
let current: string | null = null;
let nextCallId = 1;
const pendingCalls = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();

function send(message: FromWorker, transfer?: ArrayBuffer[]): void {
  port?.postMessage(message, transfer);
}

function log(level: LogLine['level'], args: unknown[]): void {
  const message = format(...args);
  if (current) send({ type: 'log', invocationId: current, line: { level, message, at: new Date().toISOString() } });
}

// console output of a function belongs to its invocation's log.
console.log = (...args: unknown[]) => log('info', args);
console.info = (...args: unknown[]) => log('info', args);
console.debug = (...args: unknown[]) => log('info', args);
console.warn = (...args: unknown[]) => log('warn', args);
console.error = (...args: unknown[]) => log('error', args);

type Rpc = (target: RpcTarget, method: string, args: unknown[]) => Promise<unknown>;

function rpcAs(as: 'service' | 'caller'): Rpc {
  return (target, method, args) => {
    const invocationId = current;
    if (!invocationId) return Promise.reject(new Error('ctx used outside of an invocation'));
    const callId = nextCallId++;
    return new Promise((resolve, reject) => {
      pendingCalls.set(callId, { resolve, reject });
      send({ type: 'rpc', invocationId, callId, target, as, method, args });
    });
  };
}

const rpc = rpcAs('service');

interface Definition {
  kind: string;
  options: Record<string, unknown>;
  handler: (input: unknown, ctx: unknown) => unknown;
}

function isDefinition(value: unknown): value is Definition {
  const candidate = value as Partial<Definition> | null;
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.kind === 'string' &&
    KINDS.has(candidate.kind) &&
    typeof candidate.handler === 'function'
  );
}

const modules = new Map<string, Record<string, unknown>>();

async function load(bundle: string): Promise<Record<string, unknown>> {
  let loaded = modules.get(bundle);
  if (!loaded) {
    // CommonJS bundles are required: importing them would start the ES module loader (loader.ts).
    loaded = bundle.endsWith('.cjs')
      ? (createRequire(bundle)(bundle) as Record<string, unknown>)
      : ((await import(pathToFileURL(bundle).href)) as Record<string, unknown>);
    modules.set(bundle, loaded);
  }
  return loaded;
}

/** A chainable query builder whose get()/count() run on the server through ctx.db. */
function query(
  rpc: Rpc,
  collection: string,
  spec: { where: unknown[]; order_by: unknown[]; limit?: number; after?: string },
) {
  return {
    where: (path: string, op: string, value: unknown) =>
      query(rpc, collection, { ...spec, where: [...spec.where, [path, op, value]] }),
    orderBy: (path: string, direction: 'asc' | 'desc' = 'asc') =>
      query(rpc, collection, { ...spec, order_by: [...spec.order_by, [path, direction]] }),
    limit: (limit: number) => query(rpc, collection, { ...spec, limit }),
    startAfter: (after: string) => query(rpc, collection, { ...spec, after }),
    get: async () => {
      const page = (await rpc('db', 'query', [collection, spec])) as { docs: unknown[]; next_cursor: string | null };
      return { docs: page.docs, nextCursor: page.next_cursor };
    },
    count: async () => ((await rpc('db', 'count', [collection, { where: spec.where }])) as { count: number }).count,
  };
}

/** ctx.db: the client SDK's document interface over `rpc`. */
function documents(rpc: Rpc) {
  return {
    collection: (name: string) => ({
      add: (data: unknown, options?: { id?: string }) => rpc('db', 'create', [name, data, options ?? {}]),
      doc: (id: string) => ({
        get: () => rpc('db', 'get', [name, id]),
        set: (data: unknown) => rpc('db', 'set', [name, id, data]),
        update: (data: unknown, options?: { ifVersion?: number }) =>
          rpc('db', 'update', [name, id, data, options ?? {}]),
        delete: () => rpc('db', 'delete', [name, id]),
      }),
      ...query(rpc, name, { where: [], order_by: [] }),
    }),
  };
}

/** ctx.storage: the client SDK's storage interface over `rpc`. */
function files(rpc: Rpc) {
  return {
    from: (bucket: string) => ({
      upload: (path: string, body: string | Uint8Array, options?: { contentType?: string; upsert?: boolean }) =>
        rpc('storage', 'upload', [bucket, path, body, options ?? {}]),
      download: (path: string) => rpc('storage', 'download', [bucket, path]),
      remove: (path: string) => rpc('storage', 'remove', [bucket, path]),
      list: (options?: { prefix?: string; limit?: number; after?: string }) =>
        rpc('storage', 'list', [bucket, options ?? {}]),
    }),
  };
}

const asCallerRpc = rpcAs('caller');

function logAt(level: LogLine['level']) {
  return (message: string, fields?: Record<string, unknown>) => log(level, fields ? [message, fields] : [message]);
}
const logInfo = logAt('info');
const logWarn = logAt('warn');
const logError = logAt('error');

/**
 * ctx.db, ctx.storage and ctx.asCaller hold no per-run state (they act for whichever
 * invocation is current), so they are built once per worker rather than on every run, and
 * frozen so that a run cannot change them for the runs after it. The rest of ctx is the run's own.
 */
const serviceDb = Object.freeze(documents(rpc));
const serviceStorage = Object.freeze(files(rpc));
// ctx.events.publish resolves once the event is committed: durable, at least once to every subscriber.
const serviceEvents = Object.freeze({
  publish: async (topic: string, payload: unknown, options?: { key?: string; delay_seconds?: number }) =>
    (await rpc('events', 'publish', [topic, payload, options ?? {}])) as { id: string },
  // All of them or none, in one transaction; each runs in list order among the events of its key.
  publishMany: async (topic: string, events: Array<{ payload: unknown; key?: string; delay_seconds?: number }>) =>
    (await rpc('events', 'publishMany', [topic, events])) as { ids: string[] },
});
const callerInterfaces = Object.freeze({
  db: Object.freeze(documents(asCallerRpc)),
  storage: Object.freeze(files(asCallerRpc)),
});

function context(
  env: Record<string, string | undefined>,
  secrets: Record<string, string>,
  asCaller: boolean,
  traceId: string,
) {
  return {
    env,
    trace_id: traceId,
    // The message's own copy, made for this run.
    secrets: Object.freeze(secrets),
    log: { info: logInfo, warn: logWarn, error: logError },
    db: serviceDb,
    storage: serviceStorage,
    events: serviceEvents,
    // HTTP functions: the same interfaces acting as the verified caller, with the rules applied.
    ...(asCaller ? { asCaller: callerInterfaces } : {}),
  };
}

port.on('message', (message: ToWorker) => {
  void handle(message);
});

/**
 * Whether a handler returned a WHATWG Response. Only an object with the body methods is
 * checked against the global: Node builds `Response` (undici) on first use, which a worker
 * whose functions return JSON should not pay for on its cold start.
 */
function isResponse(value: unknown): value is Response {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { arrayBuffer?: unknown }).arrayBuffer === 'function' &&
    value instanceof Response
  );
}

async function handle(message: ToWorker): Promise<void> {
  switch (message.type) {
    case 'rpc-result': {
      const pending = pendingCalls.get(message.callId);
      if (!pending) return;
      pendingCalls.delete(message.callId);
      if (message.ok) pending.resolve(message.value);
      else {
        const error = new Error(message.error?.message ?? 'call failed');
        error.name = message.error?.code ?? 'Error';
        pending.reject(error);
      }
      return;
    }
    case 'probe': {
      try {
        const loaded = await load(message.bundle);
        const definitions: ProbedDefinition[] = [];
        for (const [exportName, value] of Object.entries(loaded)) {
          if (isDefinition(value)) {
            definitions.push({
              exportName,
              kind: value.kind as ProbedDefinition['kind'],
              options: JSON.parse(JSON.stringify(value.options ?? {})) as Record<string, unknown>,
            });
          }
        }
        send({ type: 'probed', ok: true, definitions });
      } catch (error) {
        send({ type: 'probed', ok: false, error: error instanceof Error ? error.message : String(error) });
      }
      return;
    }
    case 'invoke': {
      current = message.invocationId;
      try {
        // A warm worker has the bundle already: no await (and no turn of the microtask queue) for it.
        const loaded = modules.get(message.bundle) ?? (await load(message.bundle));
        const definition = loaded[message.exportName];
        if (!isDefinition(definition)) throw new Error(`export "${message.exportName}" is not a function definition`);
        const value = await definition.handler(
          message.input,
          context(message.env, message.secrets, message.asCaller, message.traceId),
        );
        if (isResponse(value)) {
          // An HTTP function's own status, headers and bytes.
          const response = await readFunctionResponse(value);
          // The body is this run's own copy: a large one is moved to the server thread, not copied.
          const moved = transferable(response.body);
          send(
            { type: 'result', invocationId: message.invocationId, ok: true, json: 'null', response },
            moved ? [moved] : undefined,
          );
          return;
        }
        // Anything else crosses back as JSON text, made once here: an HTTP function's result is
        // sent as its response as is, with no parse and serialisation again in the server thread.
        const json = value === undefined ? 'null' : (JSON.stringify(value) as string | undefined);
        if (json === undefined) throw new TypeError('the function returned a value that is not JSON');
        send({ type: 'result', invocationId: message.invocationId, ok: true, json });
      } catch (error) {
        const failure = error instanceof Error ? error : new Error(String(error));
        send({
          type: 'result',
          invocationId: message.invocationId,
          ok: false,
          error: { message: failure.message, name: failure.name },
        });
      } finally {
        current = null;
      }
      return;
    }
  }
}
