/**
 * Two versions of Basalt measured by one harness, in one run: `node --import tsx bench/compare.ts
 * <other checkout> <suite> [rounds]` runs the suite against the Basalt of another checkout
 * (`before`, e.g. a `git worktree` of the last release) and of this one (`after`), alternating
 * which goes first each round so that neither always meets a warmer machine. Both are driven by
 * this checkout's harness (BENCH_BASALT_ROOT picks the server), so a change to the harness cannot
 * pass for a change to Basalt.
 *
 * stdout: every benchmark line, tagged with `checkout` and `round`; then a Markdown table of
 * each figure of Basalt's (medians over the rounds) before and after, and their ratio.
 * Other BENCH_* settings pass through; BENCH_TARGETS defaults to `basalt` alone.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { NODE_HEAP_FLOOR, ROOT_DIR } from './settings.js';

type Side = 'before' | 'after';
type Flat = Map<string, number>;

/** Peers' figures, goals and the run's settings: not Basalt's figures. */
const SKIPPED = new Set(['parse', 'raw', 'direct', 'relay', 'goal', 'met', 'machine', 'connections', 'duration_s']);

function usage(): never {
  process.stderr.write('usage: node --import tsx bench/compare.ts <other checkout> <suite> [rounds]\n');
  process.exit(2);
}

/** Numeric leaves of a benchmark line by path (`documents.create.basalt.rps`), peers' left out. */
function flatten(value: unknown, prefix: string, into: Flat): void {
  if (typeof value === 'number' && Number.isFinite(value)) {
    into.set(prefix, value);
    return;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
  for (const [key, inner] of Object.entries(value)) {
    if (SKIPPED.has(key) || key.startsWith('vs_')) continue;
    flatten(inner, `${prefix}.${key}`, into);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Builds a checkout's server if it has the compiled build and it is stale. */
function build(root: string): void {
  if (!existsSync(path.join(root, 'scripts', 'build.ts'))) return;
  const built = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts', '--if-stale'], {
    cwd: root,
    stdio: 'inherit',
  });
  if (built.status !== 0) throw new Error(`could not build the server in ${root}`);
}

function runSuite(root: string, suite: string): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...NODE_HEAP_FLOOR, '--import', 'tsx', 'bench/run.ts', suite], {
      cwd: ROOT_DIR,
      env: { BENCH_TARGETS: 'basalt', ...process.env, BENCH_BASALT_ROOT: root },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`bench ${suite} against ${root} exited with ${code}`));
      const lines = out.split('\n').filter((line) => line.trim().startsWith('{'));
      resolve(lines.map((line) => JSON.parse(line) as Record<string, unknown>));
    });
  });
}

async function main(): Promise<void> {
  const [otherArg, suite, roundsArg] = process.argv.slice(2);
  if (!otherArg || !suite) usage();
  const rounds = roundsArg ? Number(roundsArg) : 3;
  if (!Number.isInteger(rounds) || rounds < 1) usage();
  const roots: Record<Side, string> = { before: path.resolve(otherArg), after: ROOT_DIR };
  build(roots.before);
  build(roots.after);

  const figures: Record<Side, Map<string, number[]>> = { before: new Map(), after: new Map() };
  for (let round = 1; round <= rounds; round++) {
    const order: Side[] = round % 2 === 1 ? ['before', 'after'] : ['after', 'before'];
    for (const side of order) {
      process.stderr.write(`compare: round ${round}/${rounds}, ${side} (${roots[side]})\n`);
      for (const line of await runSuite(roots[side], suite)) {
        process.stdout.write(JSON.stringify({ checkout: side, round, ...line }) + '\n');
        const flat: Flat = new Map();
        // Suites that run one benchmark per backend (storage) name the backend on each line.
        const name = [line.bench ?? suite, line.backend].filter((part) => typeof part === 'string').join('.');
        flatten(line, name, flat);
        for (const [key, value] of flat) figures[side].set(key, [...(figures[side].get(key) ?? []), value]);
      }
    }
  }

  const rows = [...figures.after.keys()].filter((key) => figures.before.has(key)).sort();
  process.stdout.write(`\n| figure (median of ${rounds}) | before | after | after / before |\n|---|---:|---:|---:|\n`);
  for (const key of rows) {
    const before = median(figures.before.get(key)!);
    const after = median(figures.after.get(key)!);
    const ratio = before === 0 ? '–' : (after / before).toFixed(2);
    process.stdout.write(`| ${key} | ${before.toPrecision(4)} | ${after.toPrecision(4)} | ${ratio} |\n`);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`compare: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
