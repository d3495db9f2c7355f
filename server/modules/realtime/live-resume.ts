import { formatCursor } from '../../internal/changes/cursor.js';
import { isAppError } from '../../internal/errors.js';
import type { Document } from '../documents/query.js';
import { rowToDocument, stableVerdicts } from './change-frames.js';
import { positionCursor, routeChanges, type Position } from './live-cursor.js';
import { LIVE_QUERY_MAX_DOCUMENTS, tooManyDocuments, type Subscription } from './live-subscription.js';
import type { ChangeFeedLike, FeedChange } from './live-sources.js';

/** Beyond this many missed changes a resume is slower than starting over: the client gets a `reset`. */
const MAX_REPLAY_CHANGES = 20_000;

/**
 * Resume: the client holds the result at `position`. Read every change since, rebuild
 * the window the client has (the documents touched since, rolled back to their old rows),
 * then replay the changes one by one and send how the window changed at each. Ends with
 * the window at the current tick, then goes live.
 */
export async function resumeSubscription(
  subscription: Subscription,
  position: Position,
  feed: ChangeFeedLike,
): Promise<void> {
  let missed: FeedChange[];
  try {
    missed = await readMissed(subscription, position, feed);
  } catch (error) {
    // Older than the retention (or not a position this log knows): the client starts over.
    if (isAppError(error) && error.status < 500) {
      await subscription.start('reset');
      return;
    }
    throw error;
  }
  if (missed.length > MAX_REPLAY_CHANGES) {
    await subscription.start('reset');
    return;
  }
  // A document subscription ignores the rest of its table (cursors still count all of it).
  const docId = subscription.view.docId;
  const relevant = (change: FeedChange) => docId === null || change.rowId === docId;
  const touched = new Set(missed.filter(relevant).map((change) => change.rowId));
  for (const routed of subscription.buffer ?? []) if (relevant(routed.change)) touched.add(routed.change.rowId);
  const result = await subscription.exactSnapshot(touched.size + 16);
  const seen = new Set(missed.map((change) => change.id));
  const combined = [...missed, ...result.upto.map((routed) => routed.change).filter((c) => !seen.has(c.id))];
  const routedAll = routeChanges(unseen(combined, position), position.tick, position.skip).filter((routed) =>
    relevant(routed.change),
  );
  const all = routedAll.map((routed) => routed.change);
  const allTouched = new Set(all.map((change) => change.rowId));
  // At most `room` documents moved, so at least `limit` untouched ones lie in the page and
  // nothing beyond it can enter the window at any point of the replay.
  if (result.full && allTouched.size > result.room) {
    // More documents moved than the page had room for: too much changed; start over.
    subscription.buffer = [...result.upto, ...(subscription.buffer ?? [])];
    await subscription.start('reset');
    return;
  }
  // Roll the touched documents back to the state before their first missed change.
  const state = new Map(result.candidates);
  const first = new Map<string, FeedChange>();
  for (const change of all) if (!first.has(change.rowId)) first.set(change.rowId, change);
  const collection = subscription.view.collection;
  const rolledBack = new Map<string, Document | null>();
  for (const [id, change] of first) rolledBack.set(id, change.oldRow ? rowToDocument(collection, change.oldRow) : null);
  const replayed = routedAll.map((routed) => ({
    ...routed,
    doc: routed.change.newRow ? rowToDocument(collection, routed.change.newRow) : null,
  }));
  // A search is decided by Postgres: every document the replay will look at, in one statement.
  await subscription.view.prepare([...rolledBack.values(), ...replayed.map((entry) => entry.doc)]);
  for (const [id, doc] of rolledBack) {
    if (doc) state.set(id, doc);
    else state.delete(id);
  }
  // The rolled-back rows are history: each is replayed only if the subscriber's rule accepts it now.
  const readable = stableVerdicts(result.readable);
  const qualifies = (doc: Document) => subscription.view.matches(doc) && readable(doc);
  if (
    subscription.view.unbounded &&
    subscription.view.ordered(state.values(), qualifies).length > LIVE_QUERY_MAX_DOCUMENTS
  )
    throw tooManyDocuments();
  let window = new Map(subscription.view.top(state.values(), qualifies).map((doc) => [doc.id, doc]));
  subscription.connection.send({ type: 'subscribed', id: subscription.id, cursor: positionCursor(position) });
  for (const { change, cursor, doc: replayedDoc } of replayed) {
    if (replayedDoc) state.set(change.rowId, replayedDoc);
    else state.delete(change.rowId);
    const next = new Map(subscription.view.top(state.values(), qualifies).map((doc) => [doc.id, doc]));
    // A document that left is removed as the client holds it, never as the row that hid it.
    for (const [id, doc] of window) if (!next.has(id)) subscription.sendChange('removed', doc, cursor, readable);
    for (const [id, doc] of next) {
      const before = window.get(id);
      if (!before) subscription.sendChange('added', doc, cursor, readable);
      else if (before !== doc) subscription.sendChange('modified', doc, cursor, readable);
    }
    window = next;
  }
  subscription.window = window;
  subscription.setLastCursor(formatCursor(result.tick));
  // What lies beyond the window now; the client's `has_more` is from before it was away.
  subscription.trackBeyond(subscription.view.ordered(state.values(), qualifies), result.full);
  subscription.forgetToldMore();
  subscription.announceMore();
  subscription.goLive();
}

async function readMissed(subscription: Subscription, position: Position, feed: ChangeFeedLike): Promise<FeedChange[]> {
  const missed: FeedChange[] = [];
  const pageSize = 5_000;
  let cursor = formatCursor(position.tick);
  for (let page = 0; page < 100; page++) {
    const batch = await feed.readSince(cursor, { tables: [subscription.table], limit: pageSize });
    missed.push(...batch.changes);
    if (batch.changes.length < pageSize || batch.cursor === cursor || missed.length > MAX_REPLAY_CHANGES) break;
    cursor = batch.cursor;
  }
  return missed;
}

/**
 * The changes a client at `position` has not seen: later ticks, minus the first `skip`
 * changes of the tick right after (it left in the middle of that tick). Changes at or
 * before the position can appear when the position came from an instance a little ahead.
 */
function unseen(changes: FeedChange[], position: Position): FeedChange[] {
  let dropped = 0;
  return changes.filter((change) => {
    if (change.tick <= position.tick) return false;
    if (change.tick === position.tick + 1 && dropped < position.skip) {
      dropped++;
      return false;
    }
    return true;
  });
}
