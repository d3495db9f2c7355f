import { reportError, type Context, type Page } from '../app.js';
import { LineChart } from '../chart.js';
import { h } from '../dom.js';
import { pageHead } from '../ui.js';
import { parsePrometheus, quantile, rate, Scrape } from '../metrics.js';

const POINTS = 60;
const INTERVAL_MS = 2000;

/** The overview: live charts computed from two consecutive scrapes of /metrics. */
export async function overviewPage(ctx: Context): Promise<Page> {
  const charts = {
    requests: new LineChart('Requests', 'req/s', POINTS),
    latency: new LineChart('Latency', 'ms', POINTS),
    lag: new LineChart('Change-log lag', 's', POINTS),
    queue: new LineChart('Function queue depth', 'jobs', POINTS),
    invocations: new LineChart('Function invocations', '/s', POINTS),
  };
  const history = {
    requests: [] as Array<number | null>,
    errors: [] as Array<number | null>,
    p50: [] as Array<number | null>,
    p95: [] as Array<number | null>,
    lag: [] as Array<number | null>,
    queue: [] as Array<number | null>,
    succeeded: [] as Array<number | null>,
    failed: [] as Array<number | null>,
  };
  const tiles = {
    connections: h('strong', null, '—'),
    subscriptions: h('strong', null, '—'),
    memory: h('strong', null, '—'),
    uptime: h('strong', null, '—'),
  };
  const status = h('span', { class: 'muted', id: 'overview-status' }, 'Reading /metrics…');
  const element = h(
    'div',
    { class: 'page overview' },
    pageHead('Overview', status),
    h(
      'div',
      { class: 'tiles' },
      h('div', { class: 'card tile' }, h('span', null, 'Realtime connections'), tiles.connections),
      h('div', { class: 'card tile' }, h('span', null, 'Live queries'), tiles.subscriptions),
      h('div', { class: 'card tile' }, h('span', null, 'Resident memory'), tiles.memory),
      h('div', { class: 'card tile' }, h('span', null, 'Uptime'), tiles.uptime),
    ),
    h(
      'div',
      { class: 'charts' },
      Object.values(charts).map((chart) => chart.element),
      maintenance(ctx),
    ),
    h(
      'p',
      { class: 'muted small' },
      "Figures of the instance that answers /metrics, sampled every 2 s; the dashboard's own calls are counted too.",
    ),
  );

  let previous: Scrape | null = null;
  let stopped = false;
  const push = (list: Array<number | null>, value: number | null) => {
    list.push(value);
    if (list.length > POINTS) list.shift();
  };

  const tick = async () => {
    try {
      const response = await ctx.api.raw('GET', '/metrics');
      const scrape = new Scrape(Date.now(), parsePrometheus(await response.text()));
      if (stopped) return;
      if (previous) {
        push(history.requests, rate(previous, scrape, 'basalt_http_requests_total'));
        push(
          history.errors,
          rate(previous, scrape, 'basalt_http_requests_total', (l) => (l.status ?? '').startsWith('5')),
        );
        const p50 = quantile(previous, scrape, 'basalt_http_request_duration_seconds', 0.5);
        const p95 = quantile(previous, scrape, 'basalt_http_request_duration_seconds', 0.95);
        push(history.p50, p50 === null ? null : p50 * 1000);
        push(history.p95, p95 === null ? null : p95 * 1000);
        push(
          history.succeeded,
          rate(previous, scrape, 'basalt_function_invocations_total', (l) => l.status === 'succeeded'),
        );
        push(
          history.failed,
          rate(previous, scrape, 'basalt_function_invocations_total', (l) => l.status !== 'succeeded'),
        );
      }
      push(
        history.lag,
        scrape.has('basalt_change_feed_lag_seconds') ? scrape.sum('basalt_change_feed_lag_seconds') : null,
      );
      push(history.queue, scrape.sum('basalt_function_queue_depth'));
      charts.requests.draw([
        { label: 'all', color: '#2563eb', points: history.requests },
        { label: '5xx', color: '#dc2626', points: history.errors },
      ]);
      charts.latency.draw([
        { label: 'p95', color: '#7c3aed', points: history.p95 },
        { label: 'p50', color: '#0891b2', points: history.p50 },
      ]);
      charts.lag.draw([{ label: 'lag', color: '#ea580c', points: history.lag }]);
      charts.queue.draw([{ label: 'waiting', color: '#16a34a', points: history.queue }]);
      charts.invocations.draw([
        { label: 'succeeded', color: '#16a34a', points: history.succeeded },
        { label: 'failed or dead', color: '#dc2626', points: history.failed },
      ]);
      tiles.connections.textContent = String(scrape.sum('basalt_realtime_connections'));
      tiles.subscriptions.textContent = String(scrape.sum('basalt_realtime_subscriptions'));
      // prom-client's default metrics keep their own process_ prefix after Basalt's basalt_process_.
      const memory = scrape.sum('basalt_process_process_resident_memory_bytes');
      tiles.memory.textContent = memory > 0 ? `${(memory / 1024 / 1024).toFixed(0)} MiB` : '—';
      const started = scrape.sum('basalt_process_process_start_time_seconds');
      tiles.uptime.textContent = started > 0 ? uptime(Date.now() / 1000 - started) : '—';
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      previous = scrape;
    } catch (error) {
      status.textContent = `Could not read /metrics: ${error instanceof Error ? error.message : String(error)}`;
    }
  };
  await tick();
  const timer = window.setInterval(() => void tick(), INTERVAL_MS);
  return {
    element,
    dispose() {
      stopped = true;
      window.clearInterval(timer);
    },
  };
}

function uptime(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

/** The two maintenance calls of the admin API. */
function maintenance(ctx: Context): HTMLElement {
  const rotate = async () => {
    if (
      !confirm(
        'Start signing access tokens with a new key? Tokens signed with the old key stay valid until they expire.',
      )
    )
      return;
    try {
      const result = await ctx.api.json<{ kid: string }>('POST', '/v1/admin/auth/keys/rotate');
      ctx.notify(`Now signing with key ${result.kid}.`);
    } catch (error) {
      reportError(ctx, error);
    }
  };
  const sweep = async () => {
    try {
      const result = await ctx.api.json<{ ran: boolean; orphans?: number; stale_writes?: number }>(
        'POST',
        '/v1/admin/storage/sweep',
        {},
      );
      ctx.notify(
        result.ran
          ? `Storage swept: ${result.orphans ?? 0} orphaned file(s), ${result.stale_writes ?? 0} stale write(s) removed.`
          : 'Another instance is sweeping right now.',
      );
    } catch (error) {
      reportError(ctx, error);
    }
  };
  return h(
    'section',
    { class: 'card maintenance' },
    h('h3', null, 'Maintenance'),
    h(
      'p',
      { class: 'muted small' },
      'Rotate the access-token signing key (POST /v1/admin/auth/keys/rotate), or remove orphaned storage bytes now instead of waiting for the periodic sweep (POST /v1/admin/storage/sweep).',
    ),
    h(
      'div',
      { class: 'buttons' },
      h('button', { type: 'button', id: 'rotate-key', onclick: () => void rotate() }, 'Rotate signing key'),
      h('button', { type: 'button', id: 'sweep-storage', onclick: () => void sweep() }, 'Sweep storage now'),
    ),
  );
}
