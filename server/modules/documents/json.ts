import type { JsonObject } from './types.js';

const serialized = new WeakMap<JsonObject, string>();

/**
 * The JSON text of a document's data, computed once per data object: the size check
 * and the statement that stores it share one serialisation.
 */
export function dataJson(data: JsonObject): string {
  let text = serialized.get(data);
  if (text === undefined) {
    text = JSON.stringify(data);
    serialized.set(data, text);
  }
  return text;
}
