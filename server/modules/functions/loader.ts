import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { build, stop as stopEsbuild, type BuildOptions, type Plugin } from 'esbuild';
import { BUILD_OUTPUTS, CODE_DIR, FROM_BUILD, ROOT_DIR } from '../../internal/paths.js';
import { MAX_BATCH_SIZE, validTopic } from '../events/service.js';
import type { InvocationKind } from './protocol.js';

/** A function as loaded from the functions folder. */
export interface LoadedFunction {
  name: string;
  /** The entry: a deployed file's path, or the file's name in the functions folder. */
  file: string;
  /** Where this instance wrote the bundle for its workers. */
  bundle: string;
  exportName: string;
  kind: InvocationKind;
  options: Record<string, unknown>;
  version: number;
  source: 'api' | 'folder';
  deployedAt: Date;
}

export interface LoadError {
  file: string;
  reason: string;
}

/** `basalt/functions`: the compiled helpers in a build, else their TypeScript source (esbuild reads both). */
const FUNCTIONS_API = path.join(CODE_DIR, FROM_BUILD ? BUILD_OUTPUTS.functionsApi : 'functions-api.ts');
/** Packages a function imports resolve next to it first, then among Basalt's own. */
const SERVER_NODE_MODULES = path.join(ROOT_DIR, 'node_modules');
export const WORKER_ENTRY_SOURCE = path.join(ROOT_DIR, 'server', 'modules', 'functions', 'worker-entry.ts');
const SOURCE = /^[^._][^/]*\.(ts|mts|js|mjs)$/;
const NAME = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;

/** The files of the functions folder that define functions (helpers start with `_` or `.`). */
export async function functionFiles(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && SOURCE.test(entry.name) && !entry.name.endsWith('.d.ts'))
    .map((entry) => path.join(dir, entry.name))
    .sort();
}

/** A function's code as one file of plain JavaScript, ready to store and to load in a worker. */
export interface Bundle {
  code: string;
  format: 'cjs' | 'esm';
}

/**
 * Keeps a deploy's imports among its own files: a relative or absolute import that leaves
 * `root` fails the build, so a deploy cannot pull the server's own files into its bundle.
 * Packages (bare imports) still resolve among Basalt's.
 */
function confinedTo(root: string): Plugin {
  return {
    name: 'basalt-confine',
    setup(build) {
      build.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === 'entry-point') return undefined;
        if (!args.path.startsWith('.') && !path.isAbsolute(args.path)) return undefined;
        // Only the deployed files are confined: Basalt's helpers and packages import their own files.
        const inside = (file: string) => file === root || file.startsWith(`${root}${path.sep}`);
        if (!inside(args.importer)) return undefined;
        if (inside(path.resolve(args.resolveDir, args.path))) return undefined;
        return { errors: [{ text: `"${args.path}" is outside the deployed files` }] };
      });
    },
  };
}

/**
 * Bundles one function file into plain JavaScript, in memory. `basalt/functions` resolves to
 * the server's own helpers; npm packages are bundled in, so a bundle loads from anywhere
 * (packages with native addons are not supported inside functions). With `confine`, imports
 * must stay inside that folder (deploys through the API).
 *
 * The bundle is CommonJS whenever the code allows it, and ESM only when it needs ESM (top-level
 * await, `import.meta`): a worker thread that loads no ES module never starts Node's ES module
 * loader, which is about 7 ms of every cold start (a bare worker: 32 ms with a CommonJS entry,
 * 39 ms with an ES module one, on the benchmark machine).
 */
export async function buildBundle(file: string, options: { confine?: string } = {}): Promise<Bundle> {
  const base = path.basename(file).replace(/\.(ts|mts|cts|js|mjs|cjs)$/, '');
  const settings: BuildOptions = {
    entryPoints: [file],
    bundle: true,
    platform: 'node',
    target: 'node20',
    alias: { 'basalt/functions': FUNCTIONS_API },
    nodePaths: [SERVER_NODE_MODULES],
    logLevel: 'silent',
    sourcemap: 'inline',
    write: false,
    plugins: options.confine ? [confinedTo(options.confine)] : [],
  };
  buildsInFlight++;
  try {
    return await buildBoth(file, base, settings);
  } finally {
    buildsInFlight--;
  }
}

async function buildBoth(file: string, base: string, settings: BuildOptions): Promise<Bundle> {
  // Never written there: the name only makes the source map's paths relative to the function's folder.
  const outBase = path.join(path.dirname(file), base);
  const asCommonJs = await build({ ...settings, format: 'cjs', outfile: `${outBase}.cjs` }).catch(() => null);
  // esbuild refuses top-level await in CommonJS, and turns import.meta into an empty object
  // (with this warning): both need the ES module build, which also reports real errors.
  const cjs = asCommonJs?.outputFiles?.[0];
  if (cjs && !asCommonJs.warnings.some((warning) => warning.id === 'empty-import-meta')) {
    return { code: cjs.text, format: 'cjs' };
  }
  const esm = await build({ ...settings, format: 'esm', outfile: `${outBase}.mjs` });
  const output = esm.outputFiles?.[0];
  if (!output) throw new Error('the build produced no output');
  return { code: output.text, format: 'esm' };
}

export function bundleHash(bundle: Bundle): string {
  return createHash('sha256').update(bundle.format).update('\u0000').update(bundle.code).digest('hex');
}

/**
 * Writes a bundle where a worker can load it, under a name of its own per content: the
 * worker's module cache keys on the file, so a new version is really loaded.
 */
export async function writeBundle(outDir: string, label: string, bundle: Bundle): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const file = path.join(
    outDir,
    `${label}.${bundleHash(bundle).slice(0, 16)}.${bundle.format === 'cjs' ? 'cjs' : 'mjs'}`,
  );
  if (!existsSync(file)) {
    const pending = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
    await writeFile(pending, bundle.code);
    await rename(pending, file);
  }
  return file;
}

/** Bundles one function file into outDir (see buildBundle); returns the bundle's path. */
export async function bundleFunction(file: string, outDir: string, generation: number): Promise<string> {
  const base = path.basename(file).replace(/\.(ts|mts|js|mjs)$/, '');
  return writeBundle(outDir, `${base}.${generation}`, await buildBundle(file));
}

/** How the worker thread's script is compiled: here at start from the sources, or by the build. */
export function workerScriptBuildOptions(outfile: string): BuildOptions {
  // CommonJS, like most bundles: see bundleFunction.
  return {
    entryPoints: [WORKER_ENTRY_SOURCE],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    logLevel: 'silent',
  };
}

/**
 * The worker thread's script as plain JavaScript, so any worker can run it: the build's copy
 * when the server runs from the build (nothing to compile at start), else compiled into outDir.
 */
export async function buildWorkerScript(outDir: string): Promise<string> {
  if (FROM_BUILD) return path.join(CODE_DIR, BUILD_OUTPUTS.workerEntry);
  await mkdir(outDir, { recursive: true });
  const outfile = path.join(outDir, BUILD_OUTPUTS.workerEntry);
  await build(workerScriptBuildOptions(outfile));
  return outfile;
}

/** Builds in progress in this process: the builder is ended only when none is. */
let buildsInFlight = 0;

/** esbuild keeps a helper process between builds; ending it after a load leaves no child behind at shutdown. */
export async function releaseBuilder(): Promise<void> {
  // Concurrent deploys share the helper: ending it under another build would fail that build.
  if (buildsInFlight === 0) await stopEsbuild();
}

export async function cleanBuildDir(outDir: string): Promise<void> {
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
}

/** Names a definition: the file name for a default export, else the export name. */
export function functionName(file: string, exportName: string): string {
  return exportName === 'default' ? path.basename(file).replace(/\.(ts|mts|js|mjs)$/, '') : exportName;
}

/** One line that says why a build failed: esbuild's first message with its file and line. */
export function buildFailureReason(error: unknown): string {
  const failure = error as {
    errors?: Array<{ text?: string; location?: { file?: string; line?: number; column?: number } | null }>;
  };
  const first = failure.errors?.[0];
  if (first?.text) {
    const where = first.location
      ? `${path.basename(first.location.file ?? '')}:${first.location.line}:${first.location.column}: `
      : '';
    return `${where}${first.text}`;
  }
  return error instanceof Error ? (error.message.split('\n')[0] ?? error.message) : String(error);
}

/** The deployed file a build failure points at, relative to the deploy's folder; undefined when it names none there. */
export function buildFailureFile(error: unknown, root: string): string | undefined {
  const failure = error as { errors?: Array<{ location?: { file?: string } | null }> };
  const file = failure.errors?.[0]?.location?.file;
  if (!file) return undefined;
  const relative = path.relative(root, path.resolve(root, file));
  return relative.startsWith('..') || path.isAbsolute(relative) ? undefined : relative.split(path.sep).join('/');
}

export function validFunctionName(name: string): boolean {
  return NAME.test(name);
}

/**
 * The numeric options every helper takes: their default and their range. A value outside
 * its range is a load error, not clamped, so `retries: 50` cannot quietly run with 20.
 * `concurrency` is at most 32: the warm workers the pool keeps per function.
 */
export const NUMERIC_OPTIONS = {
  retries: { default: 3, min: 0, max: 20 },
  timeout_ms: { default: 10_000, min: 100, max: 300_000 },
  memory_mb: { default: 128, min: 16, max: 4096 },
  concurrency: { default: 10, min: 1, max: 32 },
  /** Workers kept warm on each instance that runs the function, never reaped (at most its concurrency). */
  min_warm: { default: 0, min: 0, max: 32 },
  /** Seconds an idle worker lives; the default is the instance's BASALT_FUNCTIONS_IDLE_TIMEOUT_MS. */
  idle_timeout_s: { default: 300, min: 1, max: 86_400 },
} as const;

export type NumericOption = keyof typeof NUMERIC_OPTIONS;

/** Why a definition's numeric options are not valid, or null. */
function numericOptionProblem(options: Record<string, unknown>): string | null {
  for (const [key, range] of Object.entries(NUMERIC_OPTIONS)) {
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < range.min || value > range.max) {
      return `\`${key}\` must be an integer from ${range.min} to ${range.max} (got ${JSON.stringify(value) ?? String(value)})`;
    }
  }
  return null;
}

/** Shorthands the job queue's cron accepts besides five fields. */
const CRON_MACROS = /^@(yearly|annually|monthly|weekly|daily|hourly)$/;

/**
 * Why a definition cannot run, or null: a numeric option out of its range, a bad cron. Checked at load so that a bad option is reported
 * against its file (in the log and under `errors`) instead of failing when the job queue
 * registers it, which would stop every other function, and the server's start, with it.
 */
export function definitionProblem(kind: InvocationKind, options: Record<string, unknown>): string | null {
  const numeric = numericOptionProblem(options);
  if (numeric) return numeric;
  const privileges = privilegeProblem(options);
  if (privileges) return privileges;
  const minWarm = typeof options.min_warm === 'number' ? options.min_warm : 0;
  const concurrency =
    typeof options.concurrency === 'number' ? options.concurrency : NUMERIC_OPTIONS.concurrency.default;
  if (minWarm > concurrency) return `\`min_warm\` (${minWarm}) must not exceed \`concurrency\` (${concurrency})`;
  if (kind === 'event') return eventProblem(options);
  if (options.batch_size !== undefined) return '`batch_size` is an option of onEvent only';
  if (kind !== 'schedule') return null;
  const cron = options.cron;
  if (typeof cron !== 'string' || cron.trim() === '') return 'a schedule needs `cron`, a cron expression';
  const expression = cron.trim();
  try {
    CronExpressionParser.parse(expression, { tz: 'UTC' });
  } catch (error) {
    return `cron "${cron}" is not a valid cron expression (${error instanceof Error ? error.message : String(error)})`;
  }
  // The parser also takes a leading seconds field, which the job queue's minute ticks cannot honour.
  if (!CRON_MACROS.test(expression) && expression.split(/\s+/).length !== 5) {
    return `cron "${cron}" must have 5 fields (minute hour day-of-month month day-of-week)`;
  }
  return null;
}

/** Why an onEvent definition cannot run: its topic and batch size. */
function eventProblem(options: Record<string, unknown>): string | null {
  if (!validTopic(options.topic)) {
    return `onEvent needs \`topic\`, a topic name ([a-z][a-z0-9._-]{0,127}; got ${JSON.stringify(options.topic) ?? 'nothing'})`;
  }
  const batch = options.batch_size;
  if (
    batch !== undefined &&
    (typeof batch !== 'number' || !Number.isInteger(batch) || batch < 1 || batch > MAX_BATCH_SIZE)
  ) {
    return `\`batch_size\` must be an integer from 1 to ${MAX_BATCH_SIZE} (got ${JSON.stringify(batch) ?? String(batch)})`;
  }
  return null;
}

const SECRET_NAME = /^[A-Z][A-Z0-9_]{0,63}$/;
const ACCESS_KEYS = ['collections', 'buckets', 'topics'] as const;

function stringList(value: unknown): value is string[] {
  return (
    Array.isArray(value) &&
    value.length <= 1000 &&
    value.every((item) => typeof item === 'string' && item.length <= 256)
  );
}

/** Why `secrets` or `access` is malformed, or null. */
function privilegeProblem(options: Record<string, unknown>): string | null {
  const { secrets, access } = options;
  if (secrets !== undefined && (!stringList(secrets) || !secrets.every((name) => SECRET_NAME.test(name)))) {
    return '`secrets` must be a list of secret names ([A-Z][A-Z0-9_]{0,63})';
  }
  if (access === undefined) return null;
  if (typeof access !== 'object' || access === null || Array.isArray(access)) {
    return '`access` must be an object: {collections?, buckets?, topics?}';
  }
  for (const [key, list] of Object.entries(access)) {
    if (!(ACCESS_KEYS as readonly string[]).includes(key))
      return `\`access\` has no "${key}" (collections, buckets, topics)`;
    if (!stringList(list)) return `\`access.${key}\` must be a list of names`;
  }
  return null;
}
