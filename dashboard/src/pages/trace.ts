import type { TraceInvocation } from '../../../server/modules/functions/trace-tree.js';
import { link, type Context, type Page } from '../app.js';
import { badge, formatTime, h } from '../dom.js';
import { pageHead, tableOrNote } from '../ui.js';

/** A run's start in ms since the epoch (a run not started yet sits at the trace's start). */
function startOf(run: TraceInvocation, fallback: number): number {
  const at = run.started_at ? Date.parse(run.started_at) : Number.NaN;
  return Number.isNaN(at) ? fallback : at;
}

/**
 * One trace: its runs as a tree (the API lists them depth first, each with its depth), and
 * beside each a bar on the trace's timeline, from its start for its duration — an HTTP call,
 * the triggers its writes fired, theirs, and so on.
 */
export async function tracePage(ctx: Context): Promise<Page> {
  const traceId = ctx.params.id ?? '';
  const { invocations } = await ctx.api.get<{ invocations: TraceInvocation[] }>(
    `/v1/admin/traces/${encodeURIComponent(traceId)}`,
  );
  const first = Math.min(...invocations.map((run) => startOf(run, Number.POSITIVE_INFINITY)));
  const t0 = Number.isFinite(first) ? first : 0;
  const end = Math.max(...invocations.map((run) => startOf(run, t0) + (run.duration_ms ?? 0)), t0 + 1);
  const span = end - t0;
  const percent = (ms: number) => `${Math.max(0, Math.min(100, (ms / span) * 100)).toFixed(2)}%`;

  const rows = invocations.map((run) => {
    const offset = startOf(run, t0) - t0;
    const duration = run.duration_ms ?? 0;
    return h(
      'tr',
      { 'data-trace-run': run.id, 'data-depth': run.depth, 'data-parent': run.parent_invocation_id ?? '' },
      h(
        'td',
        { class: 'trace-name' },
        h(
          'span',
          { style: `padding-left: ${run.depth * 1.25}rem` },
          run.depth > 0 ? h('span', { class: 'muted' }, '└ ') : null,
          h(
            'a',
            { href: link(`functions/${encodeURIComponent(run.function)}`), 'data-function': run.function },
            run.function,
          ),
        ),
      ),
      h('td', { class: 'small' }, run.trigger, run.attempt > 1 ? ` · attempt ${run.attempt}` : ''),
      h('td', null, badge(run.status)),
      h('td', { class: 'nowrap small', 'data-duration': duration }, run.duration_ms === null ? '—' : `${duration} ms`),
      h(
        'td',
        { class: 'trace-timeline' },
        h('div', {
          class: `trace-bar status-${run.status}`,
          style: `margin-left: ${percent(offset)}; width: max(2px, ${percent(duration)})`,
          title: `+${offset} ms, ${duration} ms`,
        }),
      ),
    );
  });

  const element = h(
    'div',
    { class: 'trace-page' },
    pageHead('Trace', h('span', { class: 'mono small', id: 'trace-id' }, traceId)),
    h(
      'p',
      { class: 'muted small' },
      `${invocations.length} run${invocations.length === 1 ? '' : 's'}, from ${formatTime(new Date(t0).toISOString())}, `,
      `${span} ms end to end. Each run sits under the run whose write, upload or publish started it.`,
    ),
    tableOrNote(
      { class: 'table', id: 'trace' },
      ['Function', 'Trigger', 'Status', 'Duration', 'Timeline'],
      rows,
      'No runs in this trace.',
    ),
  );
  return { element };
}
