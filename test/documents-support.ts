import type { Doc as WireDoc } from '../client-sdk/src/wire.js';

export { createCollection } from './helpers.js';

/** A document as the API answers it. */
export type Doc = WireDoc;
