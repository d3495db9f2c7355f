/**
 * `@basalt/client/offline`: the persistences an offline client can be given as objects
 * (docs/offline.md). The `'indexeddb'` and `'memory'` strings of `createClient`'s `offline`
 * option need no import; this entry is for sharing one persistence between clients, or
 * naming the IndexedDB database.
 */
export { indexedDbPersistence, memoryPersistence } from './persistence.js';
export type { OfflineChange, OfflineStorage, OfflineStoreName } from './persistence.js';
export type { OfflineOptions, PendingWrite, WriteErrorListener } from './engine.js';
export type { PendingOp } from './local.js';
