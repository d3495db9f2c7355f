import { AppError } from '../../internal/errors.js';
import { normalizeTimestamp, type Document, type JsonObject } from '../documents/query.js';
import type { FeedChange } from './live-sources.js';

export type ChangeKind = 'added' | 'modified' | 'removed';

/** A read rule as one delivery evaluates it. */
export type ReadRule = (doc: Document) => boolean;

function timestamp(value: unknown): string {
  if (typeof value === 'string') return normalizeTimestamp(value) ?? value;
  return new Date(0).toISOString();
}

/** A collection row from the change log (to_jsonb of the row) as the API's document. */
export function rowToDocument(collection: string, row: Record<string, unknown>): Document {
  const data = row.data;
  return {
    id: String(row.id),
    collection,
    owner: typeof row.owner === 'string' ? row.owner : null,
    version: typeof row.version === 'number' ? row.version : Number(row.version ?? 1),
    created_at: timestamp(row.created_at),
    updated_at: timestamp(row.updated_at),
    data: typeof data === 'object' && data !== null && !Array.isArray(data) ? (data as JsonObject) : {},
  };
}

/** Documents of changes and their JSON, made once per change however many subscribers it reaches. */
const newDocuments = new WeakMap<FeedChange, Document | null>();
const documentJsonCache = new WeakMap<FrameDocument, string>();

/**
 * A `removed` frame's `doc` when the subscriber may no longer read its last copy (the rule
 * changed, or the socket now speaks for someone else): the id alone says what to drop.
 */
interface RemovedId {
  id: string;
}

/** What the `doc` of a `change` frame holds. */
type FrameDocument = Document | RemovedId;

/**
 * The read rule with one verdict per document for the span of one delivery, so that what
 * decided a document's place in the window and what the frame gate checks cannot disagree
 * (a rule that reads `now` could otherwise flip between the two evaluations).
 */
export function stableVerdicts(readable: ReadRule): ReadRule {
  const verdicts = new Map<Document, boolean>();
  return (doc) => {
    let verdict = verdicts.get(doc);
    if (verdict === undefined) {
      verdict = readable(doc);
      verdicts.set(doc, verdict);
    }
    return verdict;
  };
}

/**
 * What a `change` frame may carry to a subscriber whose read rule is `readable`. Every change
 * frame, live or replayed, is built from this, so no frame can carry a row the receiver's rule
 * rejects. `removed` carries the subscriber's last copy (the one it was sent, or held at its
 * resume position) when the rule still accepts it, else only the id: never the row that made
 * the document leave, which is exactly what the subscriber may not see. An `added` or
 * `modified` document the rule rejects would be a bug in the window logic: it is refused, and
 * the subscription fails, rather than sent.
 */
function frameDocument(kind: ChangeKind, doc: Document, readable: ReadRule): FrameDocument {
  if (readable(doc)) return doc;
  if (kind === 'removed') return { id: doc.id };
  throw new AppError('INTERNAL', 'A live query was about to send a document its subscriber may not read.');
}

/** The document a change leaves behind (null for a delete), made once per change. */
export function newDocument(change: FeedChange, collection: string): Document | null {
  let doc = newDocuments.get(change);
  if (doc === undefined) {
    doc = change.newRow ? rowToDocument(collection, change.newRow) : null;
    newDocuments.set(change, doc);
  }
  return doc;
}

interface SharedFrame {
  id: string;
  kind: ChangeKind;
  cursor: string;
  frame: Buffer;
}

/**
 * Frames made during one synchronous fan-out (SubscriptionManager.onBatch), by document:
 * subscribers whose frames are byte for byte the same (same document, kind, cursor and
 * subscription id) share one encoded Buffer. A document has one or a few distinct frames,
 * so a short list beats building a string key per delivery. Null outside a batch.
 */
let batchFrames: Map<FrameDocument, SharedFrame[]> | null = null;

/** From here until endSharedFrames, identical change frames are encoded once and shared. */
export function beginSharedFrames(): void {
  batchFrames = new Map();
}

export function endSharedFrames(): void {
  batchFrames = null;
}

function changeText(id: string, kind: ChangeKind, doc: FrameDocument, cursor: string): string {
  return `{"type":"change","id":${JSON.stringify(id)},"change":"${kind}","doc":${documentJson(doc)},"cursor":${JSON.stringify(cursor)}}`;
}

/**
 * The encoded `change` frame for a subscriber whose read rule is `readable`: its document
 * passes through frameDocument, so this is the only way a change becomes a frame.
 */
export function changeFrame(
  id: string,
  kind: ChangeKind,
  document: Document,
  cursor: string,
  readable: ReadRule,
): string | Buffer {
  const doc = frameDocument(kind, document, readable);
  if (batchFrames === null) return changeText(id, kind, doc, cursor);
  let frames = batchFrames.get(doc);
  if (!frames) {
    frames = [];
    batchFrames.set(doc, frames);
  }
  for (const shared of frames) {
    if (shared.id === id && shared.kind === kind && shared.cursor === cursor) return shared.frame;
  }
  const frame = Buffer.from(changeText(id, kind, doc, cursor));
  frames.push({ id, kind, cursor, frame });
  return frame;
}

function documentJson(doc: FrameDocument): string {
  let json = documentJsonCache.get(doc);
  if (json === undefined) {
    json = JSON.stringify(doc);
    documentJsonCache.set(doc, json);
  }
  return json;
}
