import { onObject } from 'basalt/functions';

/**
 * Counts the words of every text file uploaded to the `documents` bucket and writes the
 * result to the `word_counts` collection, keyed by the file's path.
 */
export default onObject({ bucket: 'documents', on: 'upload' }, async (event, ctx) => {
  const object = event.object as { path: string; content_type: string; size: number } | null;
  if (!object || !object.content_type.startsWith('text/')) return;
  const bytes = (await ctx.storage.from('documents').download(object.path)) as Uint8Array;
  const text = new TextDecoder().decode(bytes);
  const words = text.split(/\s+/).filter((word) => word.length > 0).length;
  const id = object.path.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 128);
  await ctx.db.collection('word_counts').doc(id).set({ path: object.path, words, event: event.id });
});
