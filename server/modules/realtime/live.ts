import { isAppError } from '../../internal/errors.js';
import type { DocumentService } from '../documents/service.js';
import { DATA_SCHEMA } from '../documents/sql.js';
import { parseCursor, type ChangeFeed } from '../../internal/changes/feed.js';
import type { LiveDocuments } from './subscriptions.js';

/**
 * Live queries read through the documents service, so snapshots apply the same read
 * rule in SQL as HTTP queries do, and events use the same compiled rule in process.
 */
export function createLiveDocuments(documents: DocumentService, feed: ChangeFeed): LiveDocuments {
  return {
    async tableOf(collection) {
      const meta = await documents.collections.get(collection);
      return { schema: DATA_SCHEMA, table: meta.name };
    },
    async query(caller, collection, query) {
      return (await documents.query(caller, collection, query)).docs;
    },
    async get(caller, collection, id) {
      try {
        return await documents.get(caller, collection, id);
      } catch (error) {
        if (isAppError(error) && error.code === 'NOT_FOUND') return null;
        throw error;
      }
    },
    async reader(caller, collection) {
      const meta = await documents.collections.get(collection);
      return (doc) => documents.allows(meta, 'read', caller, { doc });
    },
    // Taken after the snapshot query: the tick then covers everything the query saw.
    markTick: async () => parseCursor(await feed.coveringCursor()),
  };
}
