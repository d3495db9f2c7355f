/**
 * Where the offline cache and the outbox persist (docs/offline.md): one small interface,
 * implemented by IndexedDB in browsers and by memory elsewhere.
 */

/** The stores of the offline database: cached documents and query results, queued writes, bookkeeping. */
export type OfflineStoreName = 'docs' | 'queries' | 'outbox' | 'meta';

const STORES: OfflineStoreName[] = ['docs', 'queries', 'outbox', 'meta'];

/** One change for `OfflineStorage.write`: a put, or a delete when `value` is undefined. */
export type OfflineChange = [store: OfflineStoreName, key: string, value: unknown];

/** A persistence for `createClient(url, { offline: { persistence } })`. */
export interface OfflineStorage {
  /** Every record of a store, as [key, value] pairs. */
  getAll(store: OfflineStoreName): Promise<Array<[string, unknown]>>;
  /** Puts and deletes in one transaction; resolves once they are durable. */
  write(changes: OfflineChange[]): Promise<void>;
  /** Forgets everything (on sign-out). */
  clear(): Promise<void>;
}

/**
 * Keeps the cache and the outbox in memory: lost with the process. One instance given to
 * two clients in turn stands for a page reload (the second sees what the first left).
 */
export function memoryPersistence(): OfflineStorage {
  const stores = new Map<OfflineStoreName, Map<string, unknown>>(STORES.map((name) => [name, new Map()]));
  const store = (name: OfflineStoreName) => stores.get(name) as Map<string, unknown>;
  return {
    getAll: async (name) => [...store(name)].map(([key, value]) => [key, structuredClone(value)]),
    write: async (changes) => {
      for (const [name, key, value] of changes) {
        if (value === undefined) store(name).delete(key);
        else store(name).set(key, structuredClone(value));
      }
    },
    clear: async () => {
      for (const map of stores.values()) map.clear();
    },
  };
}

/** Resolves with `request`'s result, rejects with its error. */
function settled<T>(request: IDBRequest<T> | IDBTransaction, result: () => T): Promise<T> {
  return new Promise((resolve, reject) => {
    const fail = () => reject(request.error);
    if ('oncomplete' in request) {
      request.oncomplete = () => resolve(result());
      request.onabort = fail;
    } else request.onsuccess = () => resolve(result());
    request.onerror = fail;
  });
}

/**
 * Keeps the cache and the outbox in the browser's IndexedDB, database `name`, shared by the
 * tabs of the origin and kept across reloads and closed tabs.
 */
export function indexedDbPersistence(name = 'basalt.offline'): OfflineStorage {
  let database: Promise<IDBDatabase> | undefined;
  const open = (): Promise<IDBDatabase> => {
    if (!database) {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => {
        for (const store of STORES) request.result.createObjectStore(store);
      };
      database = settled(request, () => request.result);
    }
    return database;
  };
  const transaction = async (mode: IDBTransactionMode, work: (tx: IDBTransaction) => void): Promise<void> => {
    const tx = (await open()).transaction(STORES, mode);
    work(tx);
    await settled(tx, () => undefined);
  };
  return {
    getAll: async (store) => {
      let keys: IDBValidKey[] = [];
      let values: unknown[] = [];
      await transaction('readonly', (tx) => {
        const objects = tx.objectStore(store);
        const keyRequest = objects.getAllKeys();
        const valueRequest = objects.getAll();
        keyRequest.onsuccess = () => (keys = keyRequest.result);
        valueRequest.onsuccess = () => (values = valueRequest.result);
      });
      return keys.map((key, i) => [String(key), values[i]]);
    },
    write: (changes) =>
      transaction('readwrite', (tx) => {
        for (const [store, key, value] of changes) {
          if (value === undefined) tx.objectStore(store).delete(key);
          else tx.objectStore(store).put(value, key);
        }
      }),
    clear: () =>
      transaction('readwrite', (tx) => {
        for (const store of STORES) tx.objectStore(store).clear();
      }),
  };
}
