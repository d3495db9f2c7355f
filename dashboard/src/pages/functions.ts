import type { FunctionInfo, Invocation } from '../api.js';
import { link, reportError, type Context, type Page } from '../app.js';
import { badge, formatTime, h, replace } from '../dom.js';
import { dataTable, pageHead, tableOrNote } from '../ui.js';

const STATUSES = ['', 'queued', 'running', 'succeeded', 'failed', 'dead'] as const;

function describeTrigger(fn: FunctionInfo): string {
  const t = fn.trigger;
  switch (fn.kind) {
    case 'document':
      return `${String(t.collection)} · on ${String(t.on)}`;
    case 'object':
      return `bucket ${String(t.bucket)} · on ${String(t.on)}`;
    case 'auth':
      return `on ${String(t.on)}`;
    case 'schedule':
      return `cron ${String(t.cron)}`;
    case 'http':
      return `${String(t.method ?? 'ANY')} /v1/functions/${fn.name}`;
    default:
      return JSON.stringify(t);
  }
}

/** Functions: what is loaded, its triggers, and the invocations of one with logs and retries. */
export async function functionsPage(ctx: Context): Promise<Page> {
  const { functions, errors } = await ctx.api.get<{
    functions: FunctionInfo[];
    errors: Array<{ file: string; reason: string }>;
  }>('/v1/admin/functions');
  const selected = ctx.params.name ? functions.find((f) => f.name === ctx.params.name) : undefined;
  if (ctx.params.name && !selected) throw new Error(`No function named "${ctx.params.name}".`);
  let timer: number | null = null;

  const list = dataTable(
    { class: 'table clickable', id: 'functions' },
    ['Function', 'Kind', 'Trigger', 'Retries', 'Timeout', 'Concurrency'],
    functions.map((fn) =>
      h(
        'tr',
        {
          'data-function': fn.name,
          class: fn.name === selected?.name ? 'selected' : '',
          onclick: (event: Event) => {
            if (!(event.target as Element).closest('a')) ctx.navigate(`functions/${fn.name}`);
          },
        },
        h(
          'td',
          null,
          h('a', { href: link(`functions/${fn.name}`) }, fn.name),
          h('div', { class: 'muted small' }, fn.file),
        ),
        h('td', null, badge(fn.kind, 'info')),
        h('td', { class: 'mono small' }, describeTrigger(fn)),
        h('td', null, String(fn.options.retries ?? '—')),
        h('td', null, `${fn.options.timeout_ms ?? '—'} ms`),
        h('td', null, String(fn.options.concurrency ?? '—')),
      ),
    ),
  );

  const element = h(
    'div',
    { class: 'page functions' },
    pageHead('Functions'),
    errors.length > 0
      ? h(
          'div',
          { class: 'card warning' },
          h('strong', null, 'Files that failed to load'),
          h(
            'ul',
            null,
            errors.map((e) => h('li', null, h('span', { class: 'mono' }, e.file), ': ', e.reason)),
          ),
        )
      : null,
    functions.length === 0 ? h('p', { class: 'empty' }, 'No functions are loaded (BASALT_FUNCTIONS_DIR).') : list,
    selected ? invocationsView(ctx, selected, (t) => (timer = t)) : null,
  );
  return { element, dispose: () => (timer !== null ? window.clearInterval(timer) : undefined) };
}

function invocationsView(ctx: Context, fn: FunctionInfo, setTimer: (timer: number) => void): HTMLElement {
  const status = h(
    'select',
    { name: 'status' },
    STATUSES.map((s) => h('option', { value: s, selected: (ctx.query.get('status') ?? '') === s }, s || 'any status')),
  );
  const table = h('div', { class: 'table-wrap' });
  const updated = h('span', { class: 'muted small' });
  const open = new Set<string>();

  const load = async () => {
    const params = new URLSearchParams({ limit: '50' });
    if (status.value) params.set('status', status.value);
    const { invocations } = await ctx.api.get<{ invocations: Invocation[] }>(
      `/v1/admin/functions/${fn.name}/invocations?${params}`,
    );
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    replace(
      table,
      tableOrNote(
        { class: 'table', id: 'invocations' },
        ['Started', 'Status', 'Attempt', 'Duration', 'Trigger', 'Event', ''],
        invocations.flatMap((run) => {
          const row = h(
            'tr',
            {
              'data-invocation': run.id,
              'data-status': run.status,
              class: 'clickable-row',
              onclick: () => toggle(run.id),
            },
            h('td', { class: 'nowrap small' }, formatTime(run.started_at ?? run.created_at)),
            h('td', null, badge(run.status), run.cold_start ? badge('cold', 'info') : null),
            h('td', null, String(run.attempt)),
            h('td', null, run.duration_ms === null ? '—' : `${run.duration_ms} ms`),
            h('td', { class: 'small' }, run.trigger),
            h('td', { class: 'mono small' }, run.event_id ?? '—'),
            h(
              'td',
              { class: 'actions' },
              run.status === 'dead'
                ? h(
                    'button',
                    {
                      type: 'button',
                      class: 'primary',
                      'data-retry': run.id,
                      onclick: async (event: Event) => {
                        event.stopPropagation();
                        try {
                          await ctx.api.json('POST', `/v1/admin/invocations/${run.id}/retry`);
                          ctx.notify('Queued again with the same event id.');
                          await load();
                        } catch (error) {
                          reportError(ctx, error);
                        }
                      },
                    },
                    'Retry',
                  )
                : null,
            ),
          );
          const details = h(
            'tr',
            { class: 'details', 'data-details': run.id, hidden: !open.has(run.id) },
            h(
              'td',
              { colspan: 7 },
              run.error ? h('pre', { class: 'code error-text' }, run.error) : null,
              run.logs.length === 0
                ? h('p', { class: 'muted small' }, 'No log lines.')
                : h(
                    'pre',
                    { class: 'code logs' },
                    run.logs
                      .map((line) => `${line.at} ${line.level.toUpperCase().padEnd(5)} ${line.message}\n`)
                      .join(''),
                  ),
            ),
          );
          return [row, details];
        }),
        'No invocations yet.',
      ),
    );
  };
  const toggle = (id: string) => {
    if (open.has(id)) open.delete(id);
    else open.add(id);
    const details = table.querySelector<HTMLElement>(`tr[data-details="${CSS.escape(id)}"]`);
    if (details) details.hidden = !open.has(id);
  };
  status.addEventListener('change', () => void load().catch((error: unknown) => reportError(ctx, error)));
  void load().catch((error: unknown) => reportError(ctx, error));
  setTimer(window.setInterval(() => void load().catch(() => undefined), 3000));
  return h(
    'section',
    { class: 'invocations' },
    h(
      'header',
      { class: 'page-head' },
      h('h2', null, 'Invocations of ', fn.name),
      h('div', { class: 'buttons' }, status, updated),
    ),
    h(
      'p',
      { class: 'muted small' },
      'Newest first; click a row for its error and logs. A dead-lettered run can be retried: its event is queued again with the same id.',
    ),
    table,
  );
}
