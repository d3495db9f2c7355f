import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Set by the build (scripts/build.ts, an esbuild `define`): the path from the folder of the
 * compiled server to the project's root. Undefined when the server runs from its TypeScript
 * sources (tests, `node --import tsx`).
 */
declare const BASALT_ROOT_FROM_BUILD: string | undefined;

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * Whether this is the compiled server (`dist/main.mjs`, one bundled file) rather than the
 * TypeScript sources. A bundle has one `import.meta.url` for every module in it, so files read
 * at run time are found from the folders below, never from a module's own URL.
 */
export const FROM_BUILD = typeof BASALT_ROOT_FROM_BUILD === 'string';

/** The project's root: package.json, node_modules/, migrations/, dashboard/, functions/. */
export const ROOT_DIR = FROM_BUILD ? path.resolve(here, BASALT_ROOT_FROM_BUILD as string) : path.resolve(here, '../..');

/** Where the running server's code is: server/ (the sources) or the build's output folder. */
export const CODE_DIR = FROM_BUILD ? here : path.join(ROOT_DIR, 'server');

/**
 * A file that sits among the server's sources but is not code (a word list…), given relative
 * to server/. The build copies every such file into its output at the same relative path.
 */
export function serverFile(relative: string): string {
  return path.join(CODE_DIR, relative);
}

/** The build's outputs, named here so the build and the code that loads them agree. */
export const BUILD_OUTPUTS = {
  /** The server, from server/main.ts (.mjs: an ES module wherever the folder is). */
  main: 'main.mjs',
  /** What `basalt/functions` resolves to in a function's bundle, from server/functions-api.ts. */
  functionsApi: 'functions-api.mjs',
  /** The function worker thread's script, from server/modules/functions/worker-entry.ts. */
  workerEntry: 'worker-entry.cjs',
} as const;
