import { existsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { build, stop as stopEsbuild, type BuildOptions } from 'esbuild';
import { BUILD_OUTPUTS, CODE_DIR, FROM_BUILD, ROOT_DIR } from '../../internal/paths.js';
import type { InvocationKind } from './protocol.js';

/** A function as loaded from the functions folder. */
export interface LoadedFunction {
  name: string;
  file: string;
  bundle: string;
  exportName: string;
  kind: InvocationKind;
  options: Record<string, unknown>;
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

/**
 * Bundles one function file into plain JavaScript. `basalt/functions` resolves to
 * the server's own helpers; npm packages are bundled in, so a bundle loads from anywhere
 * (packages with native addons are not supported inside functions).
 *
 * The bundle is CommonJS whenever the code allows it, and ESM only when it needs ESM (top-level
 * await, `import.meta`): a worker thread that loads no ES module never starts Node's ES module
 * loader, which is about 7 ms of every cold start (a bare worker: 32 ms with a CommonJS entry,
 * 39 ms with an ES module one, on the benchmark machine).
 */
export async function bundleFunction(file: string, outDir: string, generation: number): Promise<string> {
  const base = path.basename(file).replace(/\.(ts|mts|js|mjs)$/, '');
  const options: BuildOptions = {
    entryPoints: [file],
    bundle: true,
    platform: 'node',
    target: 'node20',
    alias: { 'basalt/functions': FUNCTIONS_API },
    nodePaths: [SERVER_NODE_MODULES],
    logLevel: 'silent',
    sourcemap: 'inline',
  };
  // A new file name per build: the worker's module cache keys on the file, so a rebuilt
  // function is really reloaded.
  const commonJs = path.join(outDir, `${base}.${generation}.cjs`);
  const asCommonJs = await build({ ...options, format: 'cjs', outfile: commonJs }).catch(() => null);
  // esbuild refuses top-level await in CommonJS, and turns import.meta into an empty object
  // (with this warning): both need the ES module build, which also reports real errors.
  if (asCommonJs && !asCommonJs.warnings.some((warning) => warning.id === 'empty-import-meta')) return commonJs;
  await rm(commonJs, { force: true });
  const esm = path.join(outDir, `${base}.${generation}.mjs`);
  await build({ ...options, format: 'esm', outfile: esm });
  return esm;
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

/** esbuild keeps a helper process between builds; ending it after a load leaves no child behind at shutdown. */
export async function releaseBuilder(): Promise<void> {
  await stopEsbuild();
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
  const minWarm = typeof options.min_warm === 'number' ? options.min_warm : 0;
  const concurrency =
    typeof options.concurrency === 'number' ? options.concurrency : NUMERIC_OPTIONS.concurrency.default;
  if (minWarm > concurrency) return `\`min_warm\` (${minWarm}) must not exceed \`concurrency\` (${concurrency})`;
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
