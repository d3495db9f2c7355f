import { onDocument } from 'basalt/functions';

/** A no-op trigger that notes when it started, for commit-to-handler latency. */
export default onDocument({ collection: 'bench_fn', on: 'create', concurrency: 32 }, async (event) => {
  console.log(`${event.after?.id} ${Date.now()}`);
});
