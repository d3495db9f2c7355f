/**
 * Turns the JSON lines of a run into the Markdown tables of docs/benchmarks.md:
 *   npm run bench -- all > results.jsonl
 *   node --import tsx bench/summarize.ts results.jsonl
 */
import { readFileSync } from 'node:fs';

interface Figures {
  rps?: number;
  p50_ms?: number;
  p99_ms?: number;
  cpu_pct?: number;
  cpu_ms_per_req?: number;
  db_cpu_ms_per_req?: number;
  load_1m?: number;
  failed?: number;
  rps_rounds?: Array<number | null>;
  error?: string;
}

interface Line {
  bench: string;
  basalt?: Figures & Record<string, unknown>;
  parse?: Figures;
  raw?: Figures;
  vs_parse?: number | null;
  vs_raw?: number | null;
  vs_parse_by_cpu?: number | null;
  vs_raw_by_cpu?: number | null;
  goal?: Record<string, number>;
  met?: boolean | null;
  latency_1_connection?: Partial<Record<'basalt' | 'parse' | 'raw', Figures>>;
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node --import tsx bench/summarize.ts results.jsonl\n');
  process.exit(2);
}
const lines = readFileSync(file, 'utf8')
  .split('\n')
  .filter((line) => line.startsWith('{'))
  .map((line) => JSON.parse(line) as Line);

const number = (value: number | null | undefined, digits = 1): string =>
  value === null || value === undefined || Number.isNaN(value)
    ? '—'
    : value.toLocaleString('en-US', { maximumFractionDigits: digits });

function cell(figures: Figures | undefined): string[] {
  if (!figures) return ['—', '—', '—', '—', '—', '—'];
  if (figures.error) return [`error: ${figures.error.slice(0, 60)}`, '', '', '', '', ''];
  const rounds = figures.rps_rounds ? ` (${figures.rps_rounds.map((rps) => number(rps, 0)).join(' / ')})` : '';
  const failed = figures.failed ? ` **${figures.failed} failed**` : '';
  return [
    `${number(figures.rps, 0)}${rounds}${failed}`,
    number(figures.p50_ms, 2),
    number(figures.p99_ms, 1),
    number(figures.cpu_pct, 0),
    `${number(figures.cpu_ms_per_req, 2)} + ${number(figures.db_cpu_ms_per_req, 2)}`,
    number(figures.load_1m, 1),
  ];
}

const met = (value: boolean | null | undefined): string => (value === true ? 'yes' : value === false ? 'no' : 'n/a');

const out: string[] = [];
out.push(
  '| bench | target | req/s (rounds) | p50 ms | p99 ms | server CPU % | CPU ms/req (server + Postgres) | load |',
);
out.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const line of lines) {
  if (line.bench === 'auth.verify') continue;
  for (const target of ['basalt', 'parse', 'raw'] as const) {
    if (!line[target]) continue;
    out.push(`| ${line.bench} | ${target} | ${cell(line[target]).join(' | ')} |`);
  }
  for (const target of ['basalt', 'parse', 'raw'] as const) {
    const single = line.latency_1_connection?.[target];
    if (single) out.push(`| ${line.bench}, 1 connection | ${target} | ${cell(single).join(' | ')} |`);
  }
}
out.push('');
out.push('| bench | vs Parse | vs raw | vs Parse by CPU | vs raw by CPU | goal | met |');
out.push('| --- | --- | --- | --- | --- | --- | --- |');
for (const line of lines) {
  if (!line.goal && line.vs_parse == null && line.vs_raw == null) continue;
  const goal = line.goal
    ? Object.entries(line.goal)
        .map(([key, value]) => `${key} ${value}`)
        .join(', ')
    : '';
  const ratios = [line.vs_parse, line.vs_raw, line.vs_parse_by_cpu, line.vs_raw_by_cpu].map((value) =>
    number(value, 2),
  );
  out.push(`| ${line.bench} | ${ratios.join(' | ')} | ${goal} | ${met(line.met)} |`);
}
const verify = lines.find((line) => line.bench === 'auth.verify');
if (verify?.basalt) {
  const b = verify.basalt as Record<string, Record<string, unknown> | undefined>;
  const inProcess = b.in_process as Figures & { mean_ms?: number };
  const floor = b.jose_es256_floor as Figures & { mean_ms?: number };
  const http = b.http as { added_cpu_ms_per_request?: number } | undefined;
  out.push('');
  out.push('| token verification | mean ms | p50 ms | p99 ms |');
  out.push('| --- | --- | --- | --- |');
  if (inProcess) {
    out.push(
      `| Basalt's verifier, in-process | ${number(inProcess.mean_ms, 4)} | ${number(inProcess.p50_ms, 4)} | ${number(inProcess.p99_ms, 4)} |`,
    );
  }
  if (floor) {
    out.push(
      `| jose ES256 alone (floor) | ${number(floor.mean_ms, 4)} | ${number(floor.p50_ms, 4)} | ${number(floor.p99_ms, 4)} |`,
    );
  }
  if (http) out.push(`| added server CPU per HTTP request | ${number(http.added_cpu_ms_per_request, 4)} | | |`);
  out.push('');
  out.push(`Goal: mean < 0.1 ms — met: ${met(verify.met)}.`);
}
process.stdout.write(out.join('\n') + '\n');
