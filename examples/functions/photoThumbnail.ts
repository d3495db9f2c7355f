import { createRequire } from 'node:module';
import path from 'node:path';
import { onObject } from 'basalt/functions';

/** sharp's part of the API this function uses (the package is the server's own dependency). */
interface Sharp {
  (input: Uint8Array): {
    rotate(): ReturnType<Sharp>;
    resize(options: { width: number; height: number; fit: 'inside'; withoutEnlargement: boolean }): ReturnType<Sharp>;
    webp(options: { quality: number }): ReturnType<Sharp>;
    toBuffer(): Promise<Buffer>;
  };
}

const THUMBNAIL_PREFIX = 'thumbs/';

/**
 * Resize on upload: every image uploaded to the `photos` bucket gets a 256-pixel WebP copy
 * under `thumbs/<path>.webp`, made once instead of on each view. (For thumbnails made on
 * demand and cached by the server, a transform URL needs no function at all:
 * `?width=256&format=webp`, see docs/storage.md.)
 *
 * sharp is a native module, so it is loaded at run time from the project's node_modules
 * rather than bundled with the function.
 */
export default onObject({ bucket: 'photos', on: 'upload' }, async (event, ctx) => {
  const object = event.object as { path: string; content_type: string } | null;
  // The thumbnails are uploads too: never make a thumbnail of a thumbnail.
  if (!object || object.path.startsWith(THUMBNAIL_PREFIX) || !object.content_type.startsWith('image/')) return;
  const sharp = createRequire(path.join(process.cwd(), 'package.json'))('sharp') as Sharp;
  const original = (await ctx.storage.from('photos').download(object.path)) as Uint8Array;
  const thumbnail = await sharp(original)
    .rotate()
    .resize({ width: 256, height: 256, fit: 'inside', withoutEnlargement: true })
    .webp({ quality: 80 })
    .toBuffer();
  await ctx.storage.from('photos').upload(`${THUMBNAIL_PREFIX}${object.path}.webp`, new Uint8Array(thumbnail), {
    contentType: 'image/webp',
    upsert: true,
  });
  ctx.log.info('thumbnail made', { path: object.path, bytes: thumbnail.length });
});
