/**
 * What an HTTP function may answer besides JSON: a WHATWG `Response` (the global of Node 20),
 * turned in the worker thread into plain values that cross to the server thread.
 */

/** A function's `Response` as it crosses the worker boundary: structured-clone values only. */
export interface FunctionResponse {
  status: number;
  /** In order; `set-cookie` once per cookie, other repeated names joined by `, ` (as `Headers` does). */
  headers: Array<[string, string]>;
  body: Uint8Array;
}

/**
 * Headers the server sets itself: the framing of the answer on its connection (length,
 * transfer coding, keep-alive) is the server's, whatever a function says.
 */
export const SERVER_CONTROLLED_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'content-length',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** RFC 9110 field names and values: `Headers` checks them, a subclass of Response need not. */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FIELD_VALUE = /^[^\0\r\n]*$/;

/**
 * From this size a body crossing between the server thread and a worker is moved (its buffer
 * transferred) rather than copied: below it a copy is as cheap as detaching and re-wrapping
 * the buffer, above it the copy costs more the larger the body.
 */
export const TRANSFER_MIN_BYTES = 16 * 1024;

/** The buffer to move with a message: `bytes`'s own whole buffer, when it is large enough to be worth it. */
export function transferable(bytes: Uint8Array): ArrayBuffer | null {
  const { buffer } = bytes;
  return bytes.byteLength >= TRANSFER_MIN_BYTES &&
    buffer instanceof ArrayBuffer &&
    bytes.byteOffset === 0 &&
    bytes.byteLength === buffer.byteLength
    ? buffer
    : null;
}

export const MIN_FUNCTION_STATUS = 200;
export const MAX_FUNCTION_STATUS = 599;

/**
 * The response a function returned, read whole. Throws (failing the run, so its invocation
 * records why) for a status outside 200–599 (`Response.error()` has 0) or a header the
 * server controls.
 */
export async function readFunctionResponse(response: Response): Promise<FunctionResponse> {
  if (
    !Number.isInteger(response.status) ||
    response.status < MIN_FUNCTION_STATUS ||
    response.status > MAX_FUNCTION_STATUS
  ) {
    throw new RangeError(
      `the response's status ${response.status} is not one a function may answer (${MIN_FUNCTION_STATUS}–${MAX_FUNCTION_STATUS})`,
    );
  }
  const headers: Array<[string, string]> = [];
  for (const [name, value] of response.headers) {
    if (typeof name !== 'string' || typeof value !== 'string' || !FIELD_NAME.test(name) || !FIELD_VALUE.test(value)) {
      throw new TypeError(`the response has a header that is not a valid HTTP field: ${JSON.stringify(name)}`);
    }
    if (SERVER_CONTROLLED_HEADERS.has(name.toLowerCase())) {
      throw new TypeError(`the response sets the "${name}" header, which the server controls`);
    }
    headers.push([name.toLowerCase(), value]);
  }
  return { status: response.status, headers, body: new Uint8Array(await response.arrayBuffer()) };
}
