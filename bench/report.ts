import os from 'node:os';
import type { BenchFigures, TargetFigures } from './documents.js';
import { round } from './load.js';
import type { Settings } from './settings.js';

/** Where the figures were taken; run.ts fills in the Postgres version before the first line. */
export const machine = {
  cpus: os.cpus().length,
  cpu_model: os.cpus()[0]?.model ?? 'unknown',
  memory_gib: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  postgres: 'unknown',
};

interface Goal {
  vs_raw?: number;
  vs_parse?: number;
  p50_ms_below?: number;
  rps_at_least?: number;
}

/** The targets from the issues; `met` in each line says whether Basalt reached them. */
export const GOALS: Record<string, Goal> = {
  'documents.create': { vs_raw: 0.6, vs_parse: 3 },
  'documents.get': { vs_raw: 0.7, vs_parse: 3 },
  'documents.query': { p50_ms_below: 5 },
  'auth.refresh': { rps_at_least: 1500 },
};

function ratio(a: TargetFigures | undefined, b: TargetFigures | undefined): number | null {
  if (!a?.rps || !b?.rps) return null;
  return round(a.rps / b.rps, 2);
}

/** CPU (server process + its Postgres backends) per request: what capacity depends on when CPU is the limit. */
function cpuPerRequest(figures: TargetFigures | undefined): number | null {
  if (figures?.cpu_ms_per_req === undefined || figures.db_cpu_ms_per_req === undefined) return null;
  return figures.cpu_ms_per_req + figures.db_cpu_ms_per_req;
}

/**
 * The other target's CPU per request over Basalt's: how many of Basalt's requests fit in the
 * CPU one of the other's takes. Read like vs_parse and vs_raw (higher is better for Basalt),
 * but much less disturbed by other work on a shared machine than throughput is.
 */
function cpuRatio(basalt: TargetFigures | undefined, other: TargetFigures | undefined): number | null {
  const mine = cpuPerRequest(basalt);
  const theirs = cpuPerRequest(other);
  if (mine === null || theirs === null || mine === 0) return null;
  return round(theirs / mine, 2);
}

/** Whether Basalt met the bench's goal; null when a needed figure is missing. */
function met(
  goal: Goal | undefined,
  basalt: TargetFigures | undefined,
  vsRaw: number | null,
  vsParse: number | null,
  p50: number | undefined,
): boolean | null {
  if (!goal || !basalt || basalt.error || basalt.rps === undefined) return null;
  const checks: Array<boolean | null> = [];
  if (goal.vs_raw !== undefined) checks.push(vsRaw === null ? null : vsRaw >= goal.vs_raw);
  if (goal.vs_parse !== undefined) checks.push(vsParse === null ? null : vsParse >= goal.vs_parse);
  if (goal.p50_ms_below !== undefined) checks.push(p50 === undefined ? null : p50 < goal.p50_ms_below);
  if (goal.rps_at_least !== undefined) checks.push(basalt.rps >= goal.rps_at_least);
  if (checks.includes(false)) return false;
  return checks.includes(null) ? null : true;
}

/**
 * One JSON line: each target's figures, Basalt's ratios to Parse and to the raw limit, the
 * goal and whether it was met. `p50ForGoal` overrides which p50 a latency goal is judged on.
 */
export function benchLine(
  bench: string,
  figures: BenchFigures,
  settings: Settings,
  extra: object = {},
  p50ForGoal: number | undefined = figures.basalt?.p50_ms,
): string {
  const vsParse = ratio(figures.basalt, figures.parse);
  const vsRaw = ratio(figures.basalt, figures.raw);
  const goal = GOALS[bench];
  return JSON.stringify({
    bench,
    ...figures,
    vs_parse: vsParse,
    vs_raw: vsRaw,
    vs_parse_by_cpu: cpuRatio(figures.basalt, figures.parse),
    vs_raw_by_cpu: cpuRatio(figures.basalt, figures.raw),
    connections: settings.connections,
    duration_s: settings.durationSeconds,
    ...extra,
    ...(goal ? { goal, met: met(goal, figures.basalt, vsRaw, vsParse, p50ForGoal) } : {}),
    date: new Date().toISOString(),
    machine,
  });
}
