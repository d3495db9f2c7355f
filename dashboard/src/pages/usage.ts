import { reportError, type Context, type Page } from '../app.js';
import { LineChart, type Series } from '../chart.js';
import { formatBytes, h, replace } from '../dom.js';
import { pageHead, tableOrNote } from '../ui.js';
import type { FunctionUsageFigures, UsageBucket } from '../../../server/modules/usage/service.js';

type FunctionUsage = FunctionUsageFigures;

/** The ranges the page offers: how far back, and by hour or by day. */
const RANGES: Record<string, { label: string; hours: number; granularity: 'hour' | 'day' }> = {
  '24h': { label: 'Last 24 hours', hours: 24, granularity: 'hour' },
  '7d': { label: 'Last 7 days', hours: 7 * 24, granularity: 'day' },
  '30d': { label: 'Last 30 days', hours: 30 * 24, granularity: 'day' },
  '90d': { label: 'Last 90 days', hours: 90 * 24, granularity: 'day' },
};

const HOUR_MS = 3_600_000;
const MB = 1024 * 1024;

const noUsage = (): FunctionUsage => ({ invocations: 0, errors: 0, cold_starts: 0, duration_ms: 0, gb_seconds: 0 });

function addUsage(into: FunctionUsage, figures: FunctionUsage): FunctionUsage {
  into.invocations += figures.invocations;
  into.errors += figures.errors;
  into.cold_starts += figures.cold_starts;
  into.duration_ms += figures.duration_ms;
  into.gb_seconds += figures.gb_seconds;
  return into;
}

/** Every function's figures of a bucket, added up. */
function sumFunctions(bucket: UsageBucket): FunctionUsage {
  return Object.values(bucket.functions).reduce(addUsage, noUsage());
}

function tile(label: string, value: string, id: string): HTMLElement {
  return h('div', { class: 'card tile' }, h('span', null, label), h('strong', { 'data-usage': id }, value));
}

/** Usage: the pay-per-use meter, summed over every instance, as totals, charts and a table per function. */
export async function usagePage(ctx: Context): Promise<Page> {
  const chosen = ctx.query.get('range') ?? '24h';
  const range = RANGES[chosen] ?? RANGES['24h']!;
  const select = h(
    'select',
    {
      id: 'usage-range',
      onchange: (event: Event) =>
        ctx.navigate(`usage?range=${encodeURIComponent((event.target as HTMLSelectElement).value)}`),
    },
    Object.entries(RANGES).map(([key, option]) =>
      h('option', { value: key, selected: RANGES[chosen] ? key === chosen : key === '24h' }, option.label),
    ),
  );
  const status = h('span', { class: 'muted', id: 'usage-status' }, 'Reading usage…');
  const tiles = h('div', { class: 'tiles' });
  const charts = h('div', { class: 'charts' });
  const table = h('div');
  const element = h(
    'div',
    { class: 'page usage' },
    pageHead('Usage', select, status),
    tiles,
    charts,
    h('h2', null, 'Functions'),
    table,
    h(
      'p',
      { class: 'muted small' },
      'Summed over every instance; each writes its counts every few seconds (GET /v1/admin/usage, docs/usage.md).',
    ),
  );

  const to = Math.ceil(Date.now() / HOUR_MS) * HOUR_MS;
  const from = to - range.hours * HOUR_MS;
  try {
    const { buckets } = await ctx.api.get<{ buckets: UsageBucket[] }>(
      `/v1/admin/usage?from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}&granularity=${range.granularity}`,
    );
    const totals = buckets.map(sumFunctions);
    const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
    const last = buckets.at(-1);
    replace(
      tiles,
      tile('Function invocations', String(sum(totals.map((t) => t.invocations))), 'invocations'),
      tile('GB-seconds', sum(totals.map((t) => t.gb_seconds)).toFixed(2), 'gb-seconds'),
      tile(
        'Document reads / writes',
        `${sum(buckets.map((b) => b.documents.reads))} / ${sum(buckets.map((b) => b.documents.writes))}`,
        'documents',
      ),
      tile('Stored', formatBytes(last?.storage.bytes_stored ?? 0), 'stored'),
    );

    const chart = (title: string, unit: string, series: Series[]) => {
      const drawn = new LineChart(title, unit, Math.max(2, buckets.length));
      drawn.draw(series);
      return drawn.element;
    };
    const line = (label: string, color: string, pick: (bucket: UsageBucket, i: number) => number): Series => ({
      label,
      color,
      points: buckets.map(pick),
    });
    replace(
      charts,
      chart('Function invocations', '', [
        line('invocations', '#2563eb', (_b, i) => totals[i]!.invocations),
        line('errors', '#dc2626', (_b, i) => totals[i]!.errors),
        line('cold starts', '#a855f7', (_b, i) => totals[i]!.cold_starts),
      ]),
      chart('GB-seconds', 'GB·s', [line('GB-seconds', '#0891b2', (_b, i) => totals[i]!.gb_seconds)]),
      chart('Documents', '', [
        line('reads', '#16a34a', (b) => b.documents.reads),
        line('writes', '#ea580c', (b) => b.documents.writes),
      ]),
      chart('Storage traffic', 'MB', [
        line('in', '#2563eb', (b) => b.storage.bytes_in / MB),
        line('out', '#16a34a', (b) => b.storage.bytes_out / MB),
      ]),
      chart('Storage stored', 'MB', [line('stored', '#64748b', (b) => b.storage.bytes_stored / MB)]),
      chart('Realtime', '', [
        line('messages', '#2563eb', (b) => b.realtime.messages),
        line('peak connections', '#ea580c', (b) => b.realtime.peak_connections),
      ]),
      chart('Active users', 'users', [line('active users', '#16a34a', (b) => b.auth.active_users)]),
    );

    const perFunction = new Map<string, FunctionUsage>();
    for (const bucket of buckets) {
      for (const [name, figures] of Object.entries(bucket.functions)) {
        const into = addUsage(perFunction.get(name) ?? noUsage(), figures);
        perFunction.set(name, into);
      }
    }
    replace(
      table,
      tableOrNote(
        { class: 'table', id: 'usage-functions' },
        ['Function', 'Invocations', 'Errors', 'Cold starts', 'Run time', 'GB-seconds'],
        [...perFunction]
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([name, f]) =>
            h(
              'tr',
              { 'data-function': name },
              h('td', null, h('strong', null, name)),
              h('td', null, String(f.invocations)),
              h('td', null, String(f.errors)),
              h('td', null, String(f.cold_starts)),
              h('td', null, `${(f.duration_ms / 1000).toFixed(2)} s`),
              h('td', null, f.gb_seconds.toFixed(3)),
            ),
          ),
        'No function ran in this range.',
      ),
    );
    status.textContent = `${range.label}, by the ${range.granularity} · ${buckets.length} bucket(s)`;
  } catch (error) {
    status.textContent = 'Could not read usage.';
    reportError(ctx, error);
  }
  return { element };
}
