import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** A label value as the text format writes it: backslash, quote and newline escaped. */
function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** How often the event-loop delay is sampled (see the constructor). */
export const EVENT_LOOP_MONITORING_MS = 100;

const HTTP_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** One (method, route) pair's figures; statuses are counted separately for the request counter. */
interface RouteFigures {
  labels: { method: string; route: string };
  /** Observations per bucket, not cumulative (as prom-client keeps them); above the last bound only in count. */
  buckets: number[];
  sum: number;
  count: number;
  statuses: Map<number, StatusFigures>;
}

interface StatusFigures {
  labels: { method: string; route: string; status: string };
  count: number;
}

/**
 * One registry per app (not prom-client's global one), so that two Basalt apps in one
 * process, as in tests, keep separate figures. Modules register their metrics here.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  /**
   * Per-request figures, kept here and handed out only when /metrics is scraped: labelling a
   * prom-client metric hashes and validates the label set on every call, a measurable share
   * of a short request. Route → method → figures; arrays keep first-seen order. The request
   * counter is filled into prom-client at scrape time; the duration histogram is printed
   * from these figures by `render()` (prom-client has no public way to set bucket counts).
   */
  private readonly routes = new Map<string, Map<string, RouteFigures>>();
  private readonly routeOrder: RouteFigures[] = [];
  private readonly statusOrder: StatusFigures[] = [];

  constructor() {
    collectDefaultMetrics({
      register: this.registry,
      prefix: 'basalt_process_',
      // The event-loop delay monitor wakes the loop at this period. prom-client's 10 ms is a
      // hundred wake-ups a second, most of an idle server's CPU; sampled every 100 ms the
      // delay percentiles stay meaningful at a tenth of the cost.
      eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_MS,
    });
    const statusOrder = this.statusOrder;
    this.httpRequests = new Counter({
      name: 'basalt_http_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status.',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const figures of statusOrder) this.inc(figures.labels, figures.count);
      },
    });
  }

  /** The Prometheus text exposition of every metric, for GET /metrics. */
  async render(): Promise<{ contentType: string; body: string }> {
    const body = await this.registry.metrics();
    return { contentType: this.registry.contentType, body: `${body}${this.renderHttpDuration()}` };
  }

  /** basalt_http_request_duration_seconds in the text format, from the per-request figures. */
  private renderHttpDuration(): string {
    const name = 'basalt_http_request_duration_seconds';
    const lines = [
      `# HELP ${name} Time to answer an HTTP request, by method and route pattern.`,
      `# TYPE ${name} histogram`,
    ];
    for (const figures of this.routeOrder) {
      const labels = `method="${escapeLabel(figures.labels.method)}",route="${escapeLabel(figures.labels.route)}"`;
      let cumulative = 0;
      HTTP_DURATION_BUCKETS.forEach((bound, i) => {
        cumulative += figures.buckets[i] ?? 0;
        lines.push(`${name}_bucket{le="${bound}",${labels}} ${cumulative}`);
      });
      lines.push(`${name}_bucket{le="+Inf",${labels}} ${figures.count}`);
      lines.push(`${name}_sum{${labels}} ${figures.sum}`);
      lines.push(`${name}_count{${labels}} ${figures.count}`);
    }
    return `${lines.join('\n')}\n`;
  }

  /** Counts one answered request: a couple of Map lookups, no label hashing. */
  recordRequest(method: string, route: string, status: number, seconds: number): void {
    let byMethod = this.routes.get(route);
    if (byMethod === undefined) {
      byMethod = new Map();
      this.routes.set(route, byMethod);
    }
    let figures = byMethod.get(method);
    if (figures === undefined) {
      figures = {
        labels: { method, route },
        buckets: HTTP_DURATION_BUCKETS.map(() => 0),
        sum: 0,
        count: 0,
        statuses: new Map(),
      };
      byMethod.set(method, figures);
      this.routeOrder.push(figures);
    }
    let byStatus = figures.statuses.get(status);
    if (byStatus === undefined) {
      byStatus = { labels: { method, route, status: String(status) }, count: 0 };
      figures.statuses.set(status, byStatus);
      this.statusOrder.push(byStatus);
    }
    byStatus.count += 1;
    figures.sum += seconds;
    figures.count += 1;
    for (let i = 0; i < HTTP_DURATION_BUCKETS.length; i++) {
      if (seconds <= HTTP_DURATION_BUCKETS[i]!) {
        figures.buckets[i] = (figures.buckets[i] ?? 0) + 1;
        break;
      }
    }
  }

  gauge<L extends string>(name: string, help: string, labelNames: L[] = []): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  counter<L extends string>(name: string, help: string, labelNames: L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  histogram<L extends string>(name: string, help: string, labelNames: L[] = [], buckets?: number[]): Histogram<L> {
    return new Histogram({ name, help, labelNames, registers: [this.registry], ...(buckets ? { buckets } : {}) });
  }
}
