import { isAppError } from '../../internal/errors.js';
import type { DocumentService } from '../documents/service.js';
import { DATA_SCHEMA } from '../documents/sql.js';
import { parseCursor, type ChangeFeed } from '../../internal/changes/feed.js';
import { ruleCallerKey } from './rule-key.js';
import type { LiveDocuments } from './live-sources.js';
import type { Document } from '../documents/query.js';

/**
 * Read-rule verdicts per event document, shared by the subscribers whose callers the rule
 * cannot tell apart (see ruleCallerKey): one fan-out evaluates `auth != null` once, not once
 * per socket. Keyed by the document object, which lives as long as some window holds it.
 */
const verdicts = new WeakMap<Document, Map<string, boolean>>();

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
      const page = await documents.query(caller, collection, query);
      return { docs: page.docs, more: page.next_cursor !== null };
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
      const rule = meta.rules.read;
      const key = caller.role !== 'service' && rule ? ruleCallerKey(rule, caller) : null;
      if (key === null || !rule) return (doc) => documents.allows(meta, 'read', caller, { doc });
      const memo = `${meta.name}\u0000${meta.revision}\u0000${rule.source}\u0000${key}`;
      return (doc) => {
        let known = verdicts.get(doc);
        if (!known) {
          known = new Map();
          verdicts.set(doc, known);
        }
        let verdict = known.get(memo);
        if (verdict === undefined) {
          verdict = documents.allows(meta, 'read', caller, { doc });
          known.set(memo, verdict);
        }
        return verdict;
      };
    },
    searchMatches: (collection, text, docs) => documents.searchMatches(collection, text, docs),
    expand: (caller, collection, docs, paths) => documents.expandFor(caller, collection, docs, paths),
    expandTargets: (collection, paths) => documents.expandTargets(collection, paths),
    aggregate: (caller, collection, input) => documents.aggregate(caller, collection, input),
    // Taken after the snapshot query: the tick then covers everything the query saw.
    markTick: async () => parseCursor(await feed.coveringCursor()),
  };
}
