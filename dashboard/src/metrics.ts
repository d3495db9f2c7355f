/** Reads the Prometheus text of /metrics and turns two samples into rates. */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? '').matchAll(LABEL)) {
      labels[label[1] ?? ''] = (label[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const raw = match[3] ?? '';
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    samples.push({ name: match[1] ?? '', labels, value });
  }
  return samples;
}

export class Scrape {
  constructor(
    readonly at: number,
    readonly samples: Sample[],
  ) {}

  /** The sum of every series of a metric whose labels match `filter`. */
  sum(name: string, filter: (labels: Record<string, string>) => boolean = () => true): number {
    let total = 0;
    for (const sample of this.samples) if (sample.name === name && filter(sample.labels)) total += sample.value;
    return total;
  }

  has(name: string): boolean {
    return this.samples.some((sample) => sample.name === name);
  }

  /** Histogram buckets of a metric, summed over all other labels: upper bound → cumulative count. */
  buckets(name: string, filter: (labels: Record<string, string>) => boolean = () => true): Map<number, number> {
    const result = new Map<number, number>();
    for (const sample of this.samples) {
      if (sample.name !== `${name}_bucket` || !filter(sample.labels)) continue;
      const le = sample.labels.le === '+Inf' ? Infinity : Number(sample.labels.le);
      result.set(le, (result.get(le) ?? 0) + sample.value);
    }
    return result;
  }
}

/** Per-second rate of a counter between two scrapes (a restart's reset counts as zero). */
export function rate(previous: Scrape, current: Scrape, name: string, filter?: (l: Record<string, string>) => boolean) {
  const seconds = (current.at - previous.at) / 1000;
  if (seconds <= 0) return 0;
  return Math.max(0, current.sum(name, filter) - previous.sum(name, filter)) / seconds;
}

/** The q-quantile of a histogram's observations between two scrapes, by linear interpolation in the bucket. */
export function quantile(
  previous: Scrape,
  current: Scrape,
  name: string,
  q: number,
  filter?: (l: Record<string, string>) => boolean,
): number | null {
  const before = previous.buckets(name, filter);
  const after = current.buckets(name, filter);
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((bound) => Math.max(0, (after.get(bound) ?? 0) - (before.get(bound) ?? 0)));
  const total = counts[counts.length - 1] ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const bound = bounds[i] ?? Infinity;
    const count = counts[i] ?? 0;
    if (count >= rank) {
      if (bound === Infinity) return lower;
      const inBucket = count - below;
      return inBucket === 0 ? bound : lower + ((bound - lower) * (rank - below)) / inBucket;
    }
    lower = bound;
    below = count;
  }
  return lower;
}
