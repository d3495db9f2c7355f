import type { FunctionInfo, FunctionVersion, Invocation, SecretInfo } from '../api.js';
import { link, reportError, type Context, type Page } from '../app.js';
import { badge, field, formatTime, h, replace } from '../dom.js';
import { dataTable, pageHead, submitForm, tableOrNote } from '../ui.js';

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

/** Deploys a pasted or uploaded file as a new version of a function. */
function deployForm(ctx: Context, name?: string): HTMLElement {
  const nameInput = h('input', {
    name: 'name',
    required: true,
    pattern: '[A-Za-z][A-Za-z0-9_\\-]{0,62}',
    value: name ?? '',
  });
  const file = h('input', { type: 'file', name: 'file', accept: '.ts,.mts,.js,.mjs' });
  const source = h('textarea', {
    name: 'source',
    rows: 8,
    class: 'mono',
    spellcheck: false,
    placeholder: "import { http } from 'basalt/functions';\nexport default http(async () => ({ hello: 'world' }));",
  });
  let fileName = 'index.ts';
  file.addEventListener('change', async () => {
    const chosen = file.files?.[0];
    if (!chosen) return;
    fileName = chosen.name;
    source.value = await chosen.text();
    if (!nameInput.value) nameInput.value = chosen.name.replace(/\.[^.]+$/, '');
  });
  return h(
    'section',
    { class: 'card deploy' },
    h('h2', null, name ? `Deploy a new version of ${name}` : 'Deploy a function'),
    submitForm(
      { id: 'deploy-form' },
      async () => {
        try {
          const deployed = await ctx.api.json<{ name: string; version: number }>(
            'PUT',
            `/v1/admin/functions/${encodeURIComponent(nameInput.value)}`,
            { files: { [fileName]: source.value }, entry: fileName },
          );
          ctx.notify(`Deployed ${deployed.name} version ${deployed.version}.`);
          ctx.navigate(`functions/${deployed.name}`);
        } catch (error) {
          reportError(ctx, error);
        }
      },
      field('Name', nameInput),
      field('Upload a file', file, 'or paste the source below'),
      field('Source', source),
      h('button', { type: 'submit', class: 'primary' }, 'Deploy'),
    ),
  );
}

/** Secret names (values never leave the server), and a form to set one. */
function secretsView(ctx: Context, secrets: SecretInfo[]): HTMLElement {
  const name = h('input', {
    name: 'secret-name',
    required: true,
    pattern: '[A-Z][A-Z0-9_]{0,63}',
    placeholder: 'STRIPE_KEY',
  });
  const value = h('input', { name: 'secret-value', type: 'password', required: true, autocomplete: 'off' });
  return h(
    'section',
    { class: 'card secrets' },
    h('h2', null, 'Secrets'),
    h('p', { class: 'muted small' }, 'Functions read the secrets they declare as ctx.secrets. Values are never shown.'),
    tableOrNote(
      { class: 'table', id: 'secrets' },
      ['Name', 'Updated', ''],
      secrets.map((secret) =>
        h(
          'tr',
          { 'data-secret': secret.name },
          h('td', { class: 'mono' }, secret.name),
          h('td', { class: 'small' }, formatTime(secret.updated_at)),
          h(
            'td',
            { class: 'actions' },
            h(
              'button',
              {
                type: 'button',
                onclick: async () => {
                  try {
                    await ctx.api.json('DELETE', `/v1/admin/secrets/${secret.name}`);
                    ctx.notify(`Deleted ${secret.name}.`);
                    ctx.navigate('functions');
                  } catch (error) {
                    reportError(ctx, error);
                  }
                },
              },
              'Delete',
            ),
          ),
        ),
      ),
      'No secrets yet.',
    ),
    submitForm(
      { id: 'secret-form', class: 'inline' },
      async () => {
        try {
          await ctx.api.json('PUT', `/v1/admin/secrets/${encodeURIComponent(name.value)}`, { value: value.value });
          ctx.notify(`Set ${name.value}.`);
          ctx.navigate('functions');
        } catch (error) {
          reportError(ctx, error);
        }
      },
      field('Name', name),
      field('Value', value),
      h('button', { type: 'submit' }, 'Set secret'),
    ),
  );
}

/** The versions of one function, with rollback and undeploy. */
function versionsView(ctx: Context, fn: FunctionInfo, versions: FunctionVersion[]): HTMLElement {
  return h(
    'section',
    { class: 'versions' },
    h(
      'header',
      { class: 'page-head' },
      h('h2', null, 'Versions of ', fn.name),
      h(
        'div',
        { class: 'buttons' },
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            'data-undeploy': fn.name,
            onclick: async () => {
              if (!window.confirm(`Undeploy ${fn.name}? Its queued events are dead-lettered.`)) return;
              try {
                await ctx.api.json('DELETE', `/v1/admin/functions/${fn.name}`);
                ctx.notify(`Undeployed ${fn.name}.`);
                ctx.navigate('functions');
              } catch (error) {
                reportError(ctx, error);
              }
            },
          },
          'Undeploy',
        ),
      ),
    ),
    dataTable(
      { class: 'table', id: 'versions' },
      ['Version', 'Deployed', 'Source', ''],
      versions.map((version) =>
        h(
          'tr',
          { 'data-version': version.version },
          h('td', null, `v${version.version}`, version.active ? badge('live', 'succeeded') : null),
          h('td', { class: 'small' }, formatTime(version.deployed_at)),
          h('td', null, version.source),
          h(
            'td',
            { class: 'actions' },
            version.active
              ? null
              : h(
                  'button',
                  {
                    type: 'button',
                    'data-rollback': version.version,
                    onclick: async () => {
                      try {
                        await ctx.api.json('POST', `/v1/admin/functions/${fn.name}/rollback`, {
                          version: version.version,
                        });
                        ctx.notify(`${fn.name} is at version ${version.version}.`);
                        ctx.navigate(`functions/${fn.name}`);
                      } catch (error) {
                        reportError(ctx, error);
                      }
                    },
                  },
                  'Roll back to this',
                ),
          ),
        ),
      ),
    ),
  );
}

/** Functions: what is deployed, its triggers and versions, deploys, secrets, and the invocations of one. */
export async function functionsPage(ctx: Context): Promise<Page> {
  const [{ functions, errors }, { secrets }] = await Promise.all([
    ctx.api.get<{ functions: FunctionInfo[]; errors: Array<{ file: string; reason: string }> }>('/v1/admin/functions'),
    ctx.api.get<{ secrets: SecretInfo[] }>('/v1/admin/secrets'),
  ]);
  const selected = ctx.params.name ? functions.find((f) => f.name === ctx.params.name) : undefined;
  if (ctx.params.name && !selected) throw new Error(`No function named "${ctx.params.name}".`);
  const versions = selected
    ? (await ctx.api.get<{ versions: FunctionVersion[] }>(`/v1/admin/functions/${selected.name}/versions`)).versions
    : [];
  let timer: number | null = null;

  const list = dataTable(
    { class: 'table clickable', id: 'functions' },
    ['Function', 'Version', 'Kind', 'Trigger', 'Retries', 'Timeout', 'Concurrency'],
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
        h(
          'td',
          null,
          `v${fn.version}`,
          h('div', { class: 'muted small' }, `${fn.source} · ${formatTime(fn.deployed_at)}`),
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
    functions.length === 0
      ? h(
          'p',
          { class: 'empty' },
          'No functions are deployed yet: deploy one below, with `basalt functions deploy`, or from the functions folder.',
        )
      : list,
    selected ? versionsView(ctx, selected, versions) : null,
    selected ? invocationsView(ctx, selected, (t) => (timer = t)) : null,
    deployForm(ctx, selected?.name),
    secretsView(ctx, secrets),
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
        ['Started', 'Status', 'Attempt', 'Duration', 'Trigger', 'Event', 'Trace', ''],
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
              { class: 'mono small' },
              run.trace_id
                ? h(
                    'a',
                    {
                      href: link(`traces/${run.trace_id}`),
                      'data-trace': run.trace_id,
                      title: 'This run and every run its writes and publishes started',
                      onclick: (event: Event) => event.stopPropagation(),
                    },
                    run.trace_id.slice(0, 8),
                  )
                : '—',
            ),
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
              { colspan: 8 },
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
