import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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

/** prom-client's internal per-label-set histogram value (15.x), filled from RouteFigures at scrape time. */
interface HistogramValue {
  labels: Record<string, string>;
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}

/**
 * One registry per app (not prom-client's global one), so that two Basalt apps in one
 * process, as in tests, keep separate figures. Modules register their metrics here.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  /**
   * Per-request figures, kept here and handed to prom-client only when /metrics is scraped:
   * labelling a prom-client metric hashes and validates the label set on every call, a
   * measurable share of a short request. Route → method → figures; arrays keep first-seen
   * order, which is the order prom-client itself would print.
   */
  private readonly routes = new Map<string, Map<string, RouteFigures>>();
  private readonly routeOrder: RouteFigures[] = [];
  private readonly statusOrder: StatusFigures[] = [];

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'basalt_process_' });
    const statusOrder = this.statusOrder;
    const routeOrder = this.routeOrder;
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
    this.httpDuration = new Histogram({
      name: 'basalt_http_request_duration_seconds',
      help: 'Time to answer an HTTP request, by method and route pattern.',
      labelNames: ['method', 'route'],
      buckets: HTTP_DURATION_BUCKETS,
      registers: [this.registry],
      collect() {
        this.reset();
        const values = (this as unknown as { hashMap: Record<string, HistogramValue> }).hashMap;
        routeOrder.forEach((figures, index) => {
          const bucketValues: Record<number, number> = {};
          HTTP_DURATION_BUCKETS.forEach((bound, i) => (bucketValues[bound] = figures.buckets[i] ?? 0));
          values[String(index)] = {
            labels: { ...figures.labels },
            bucketValues,
            sum: figures.sum,
            count: figures.count,
          };
        });
      },
    });
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
