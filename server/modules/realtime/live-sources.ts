import type { Caller } from '../../internal/caller.js';
import type { Change, ChangeInterest, TableFilter } from '../../internal/changes/feed.js';
import type { AggregateGroup } from '../documents/aggregate.js';
import type { Document } from '../documents/query.js';

/** One row change as the change feed hands it out: the parts of a log change live queries read. */
export type FeedChange = Pick<Change, 'id' | 'tick' | 'schema' | 'table' | 'op' | 'rowId' | 'oldRow' | 'newRow'>;

export interface FeedBatch {
  fromCursor: string;
  cursor: string;
  changes: FeedChange[];
}

/** What realtime needs of the change feed (server/internal/changes). */
export interface ChangeFeedLike {
  currentCursor(): string;
  /** `interest` names the tables (`schema.table`) whose changes this listener needs. */
  subscribe(listener: (batch: FeedBatch) => void, interest?: ChangeInterest): () => void;
  readSince(cursor: string, options: { tables?: TableFilter[]; limit?: number }): Promise<FeedBatch>;
}

/** What realtime needs of the documents module: reads with the caller's rules, and the rules in process. */
export interface LiveDocuments {
  /** The table of a collection, to match change-feed rows; NOT_FOUND when it does not exist. */
  tableOf(collection: string): Promise<{ schema: string; table: string }>;
  /**
   * The query's first `limit` documents as `caller` may see them (read rule applied in SQL),
   * and whether more match beyond them.
   */
  query(caller: Caller, collection: string, query: LiveQueryInput): Promise<{ docs: Document[]; more: boolean }>;
  /** The document if it exists and `caller` may read it. */
  get(caller: Caller, collection: string, id: string): Promise<Document | null>;
  /** The read rule as an in-process predicate for `caller`, evaluated on each event. */
  reader(caller: Caller, collection: string): Promise<(doc: Document) => boolean>;
  /** Whether each document matches a full-text search of the collection (decided by Postgres, in one statement). */
  searchMatches(collection: string, text: string, docs: Document[]): Promise<boolean[]>;
  /** The documents with their references expanded as `caller` may read them. */
  expand(caller: Caller, collection: string, docs: Document[], paths: string[]): Promise<Document[]>;
  /** The collections an expand reads, at every level. */
  expandTargets(collection: string, paths: string[]): Promise<string[]>;
  /** `/aggregate` as `caller` (read rule applied in SQL): the groups of a live aggregate. */
  aggregate(caller: Caller, collection: string, input: Record<string, unknown>): Promise<{ groups: AggregateGroup[] }>;
  /** A tick at or after every transaction committed so far (forces one if needed). */
  markTick(): Promise<number>;
}

/** A live query as the client sent it: `where`, `order_by`, `after` of the query API, and the page to read. */
export interface LiveQueryInput {
  where?: unknown;
  order_by?: unknown;
  after?: unknown;
  search?: string;
  expand?: string[];
  limit: number;
}
