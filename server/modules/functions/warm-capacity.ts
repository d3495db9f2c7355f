import { Gauge } from 'prom-client';
import type { Metrics } from '../../internal/metrics.js';
import type { LoadedFunction } from './loader.js';
import type { WarmCapacity } from './pool.js';

/** A whole-number option of a definition, or undefined (the load has checked its range). */
function option(fn: LoadedFunction, key: 'min_warm' | 'idle_timeout_s' | 'memory_mb'): number | undefined {
  const value = fn.options[key];
  return typeof value === 'number' ? value : undefined;
}

/**
 * The warm capacity of each function this instance runs: HTTP functions where the API is
 * served, event and schedule functions where jobs run. `idle_timeout_s` falls back to
 * the instance's default (BASALT_FUNCTIONS_IDLE_TIMEOUT_MS).
 */
export function warmCapacities(
  functions: Iterable<LoadedFunction>,
  defaults: { idleMs: number; memoryMb: number; roles: { api: boolean; worker: boolean } },
): WarmCapacity[] {
  const capacities: WarmCapacity[] = [];
  for (const fn of functions) {
    const runsHere = fn.kind === 'http' ? defaults.roles.api : defaults.roles.worker;
    const idleTimeout = option(fn, 'idle_timeout_s');
    capacities.push({
      functionName: fn.name,
      bundle: fn.bundle,
      exportName: fn.exportName,
      memoryMb: option(fn, 'memory_mb') ?? defaults.memoryMb,
      minWarm: runsHere ? (option(fn, 'min_warm') ?? 0) : 0,
      idleMs: idleTimeout === undefined ? defaults.idleMs : idleTimeout * 1000,
    });
  }
  return capacities;
}

/** basalt_function_warm_workers{function}: read from the pool when /metrics is scraped. */
export function registerWarmWorkersGauge(metrics: Metrics, warmWorkers: () => Map<string, number>): void {
  new Gauge({
    name: 'basalt_function_warm_workers',
    help: 'Live function workers (idle or running) on this instance, by function.',
    labelNames: ['function'],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const [name, count] of warmWorkers()) this.set({ function: name }, count);
    },
  });
}
