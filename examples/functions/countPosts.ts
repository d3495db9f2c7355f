import { onDocument } from 'basalt/functions';

/**
 * Keeps `stats/posts` equal to the number of documents in `posts`. Recounting (rather
 * than adding one per event) makes the handler idempotent: a retried or re-delivered
 * event writes the same value again.
 */
export default onDocument({ collection: 'posts', on: 'write' }, async (event, ctx) => {
  if (event.type === 'document.update') return; // an update does not change the count
  const count = await ctx.db.collection('posts').count();
  await ctx.db.collection('stats').doc('posts').set({ count, updated_by_event: event.id });
});
