import { schedule } from 'basalt/functions';

/**
 * Every night at 03:00 UTC, deletes drafts in `posts` older than 30 days. A tick missed
 * while no instance was running is not made up for: the next night's run catches up,
 * because the query selects by age rather than by day.
 */
export default schedule({ cron: '0 3 * * *', timeout_ms: 60_000 }, async (_event, ctx) => {
  const cutoff = new Date(Date.now() - 30 * 24 * 3600 * 1000).toISOString();
  let removed = 0;
  for (;;) {
    const page = (await ctx.db
      .collection('posts')
      .where('draft', '==', true)
      .where('created_at', '<', cutoff)
      .limit(100)
      .get()) as { docs: Array<{ id: string }> };
    if (page.docs.length === 0) break;
    for (const doc of page.docs) await ctx.db.collection('posts').doc(doc.id).delete();
    removed += page.docs.length;
  }
  ctx.log.info('nightly clean-up done', { removed });
});
