import { BasaltError, type Collection, type Doc, type RuleKind } from '../api.js';
import { link, reportError, type Context, type Page } from '../app.js';
import { field, formatTime, h, parseJson, preview, replace, type Child } from '../dom.js';
import { listPanel, newItemPane, savingForm, submitForm, tableOrNote } from '../ui.js';
import { documentComparator } from '../../../client-sdk/src/order.js';
import type { LiveQuery } from '../../../client-sdk/src/index.js';
import { RulesEditor } from './rules-editor.js';

const RULE_KINDS: readonly RuleKind[] = ['read', 'create', 'update', 'delete'];
const RULES_HINT =
  'Rule expressions (docs/rules.md), e.g. auth != null && doc.owner == auth.uid. An empty rule means only the service key may do it.';
const TABS = ['documents', 'rules', 'indexes', 'search', 'schema'] as const;
type Tab = (typeof TABS)[number];

/** Collections: the list, a new-collection form, and one collection's documents, rules, indexes and schema. */
export async function collectionsPage(ctx: Context): Promise<Page> {
  const { collections } = await ctx.api.get<{ collections: Collection[] }>('/v1/admin/collections');
  const selected = ctx.params.name ? collections.find((c) => c.name === ctx.params.name) : undefined;
  if (ctx.params.name && !selected) throw new Error(`No collection named "${ctx.params.name}".`);
  const disposers: Array<() => void> = [];

  const sidebar = listPanel(
    'Collections',
    'collection-list',
    collections.map((c) => ({ name: c.name, path: `collections/${c.name}`, active: c.name === selected?.name })),
    h('a', { class: 'button', href: link('collections'), id: 'new-collection-link' }, '+ New collection'),
  );

  const main = selected ? collectionView(ctx, selected, disposers) : newCollectionForm(ctx);
  const element = h('div', { class: 'page collections with-list' }, sidebar, h('section', { class: 'detail' }, main));
  return { element, dispose: () => disposers.forEach((dispose) => dispose()) };
}

function newCollectionForm(ctx: Context): HTMLElement {
  const name = h('input', {
    name: 'collection-name',
    required: true,
    pattern: '[a-z][a-z0-9_]{0,62}',
    placeholder: 'e.g. notes',
  });
  const rules = new RulesEditor(RULE_KINDS, {}, RULES_HINT);
  return newItemPane(
    'New collection',
    'new-collection',
    'Create collection',
    async () => {
      await ctx.api.json('POST', '/v1/admin/collections', {
        name: name.value.trim(),
        rules: rules.values({ omitEmpty: true }),
      });
      ctx.notify(`Created collection ${name.value.trim()}.`);
      ctx.navigate(`collections/${name.value.trim()}`);
    },
    [
      field('Name', name, 'Lower case letters, digits and _ ; it becomes a Postgres table.'),
      h('h3', null, 'Rules'),
      rules.element,
    ],
    rules,
  );
}

function collectionView(ctx: Context, collection: Collection, disposers: Array<() => void>): HTMLElement {
  const tab: Tab = (TABS as readonly string[]).includes(ctx.query.get('tab') ?? '')
    ? (ctx.query.get('tab') as Tab)
    : 'documents';
  const tabs = h(
    'nav',
    { class: 'tabs' },
    TABS.map((t) =>
      h(
        'a',
        {
          href: link(`collections/${collection.name}${t === 'documents' ? '' : `?tab=${t}`}`),
          class: t === tab ? 'active' : '',
          'data-tab': t,
        },
        t[0]?.toUpperCase() + t.slice(1),
      ),
    ),
  );
  const body =
    tab === 'documents'
      ? documentsTab(ctx, collection, disposers)
      : tab === 'rules'
        ? rulesTab(ctx, collection)
        : tab === 'indexes'
          ? indexesTab(ctx, collection)
          : tab === 'search'
            ? searchTab(ctx, collection)
            : schemaTab(ctx, collection);
  const count = h('span', { class: 'muted count', id: 'document-count' });
  void ctx.api
    .json<{ count: number }>('POST', `/v1/db/${collection.name}/count`, {})
    .then((result) => (count.textContent = `${result.count} document${result.count === 1 ? '' : 's'}`))
    .catch(() => undefined);
  return h(
    'div',
    null,
    h(
      'header',
      { class: 'page-head' },
      h('h1', null, collection.name, ' ', count),
      h(
        'button',
        {
          type: 'button',
          class: 'danger',
          onclick: async () => {
            const typed = prompt(`Drop "${collection.name}" and all its documents? Type its name to confirm.`);
            if (typed !== collection.name) return;
            try {
              await ctx.api.json('DELETE', `/v1/admin/collections/${collection.name}`);
              ctx.notify(`Dropped ${collection.name}.`);
              ctx.navigate('collections');
            } catch (error) {
              reportError(ctx, error);
            }
          },
        },
        'Drop collection',
      ),
    ),
    tabs,
    body,
  );
}

/** Columns: the system fields, then the data fields seen in the shown documents (at most 8). */
function dataColumns(docs: Iterable<Doc>): string[] {
  const seen = new Set<string>();
  for (const doc of docs) for (const key of Object.keys(doc.data ?? {})) if (seen.size < 8) seen.add(key);
  return [...seen];
}

/** Orders results as the server does (the SDK's document order): the order_by terms, then the id. */
function sorter(orderBy: unknown): (a: Doc, b: Doc) => number {
  const terms: Array<[string, 'asc' | 'desc']> = Array.isArray(orderBy)
    ? orderBy.map((term: unknown) =>
        Array.isArray(term) ? [String(term[0]), term[1] === 'desc' ? 'desc' : 'asc'] : [String(term), 'asc'],
      )
    : [];
  return documentComparator(terms);
}

function documentsTab(ctx: Context, collection: Collection, disposers: Array<() => void>): HTMLElement {
  const where = h('input', {
    name: 'where',
    class: 'code',
    placeholder: '[["status", "==", "open"]]',
    value: ctx.query.get('where') ?? '',
  });
  const orderBy = h('input', {
    name: 'order_by',
    class: 'code',
    placeholder: '[["created_at", "desc"]]',
    value: ctx.query.get('order_by') ?? '',
  });
  const limit = h('input', { name: 'limit', type: 'number', min: 1, max: 1000, value: ctx.query.get('limit') ?? '50' });
  const search = h('input', {
    name: 'search',
    placeholder: collection.search ? '"a phrase" or word -excluded' : 'set search fields first',
    disabled: collection.search === null,
    value: ctx.query.get('search') ?? '',
  });
  const refPaths = Object.keys(collection.refs);
  const expand = h('input', {
    name: 'expand',
    class: 'code',
    placeholder: refPaths.length > 0 ? refPaths.join(', ') : 'declare refs first',
    disabled: refPaths.length === 0,
    value: ctx.query.get('expand') ?? '',
  });
  const live = h('input', { type: 'checkbox', name: 'live', checked: ctx.query.get('live') !== '0' });
  const status = h('span', { class: 'live-status', id: 'live-status' });
  const table = h('div', { class: 'table-wrap' });
  const pager = h('div', { class: 'pager' });
  const problem = h('p', { class: 'error-text' });
  let unsubscribe: (() => void) | null = null;
  disposers.push(() => unsubscribe?.());
  const showStatus = (state: 'connecting' | 'live' | 'error', message?: string) => {
    status.textContent = state === 'live' ? '● live' : state === 'connecting' ? 'connecting…' : (message ?? 'error');
    status.className = `live-status live-${state}`;
    status.dataset.state = state;
  };
  disposers.push(
    ctx.realtime.onStatusChange((connection) => {
      if (unsubscribe === null) return;
      if (connection === 'reconnecting') showStatus('error', 'Connection lost; reconnecting…');
      else if (connection === 'connecting') showStatus('connecting');
    }),
  );

  const rows = new Map<string, Doc>();
  const flashes = new Map<string, string>();

  const render = (order: ((a: Doc, b: Doc) => number) | null) => {
    // A search without order_by keeps the server's relevance order.
    const docs = order ? [...rows.values()].sort(order) : [...rows.values()];
    const columns = dataColumns(docs);
    const withHighlights = docs.some((doc) => doc.highlights !== undefined);
    replace(
      table,
      tableOrNote(
        { class: 'table clickable', id: 'documents' },
        ['id', ...columns, ...(withHighlights ? ['matches'] : []), 'version', 'updated'],
        docs.map((doc) => {
          const change = flashes.get(doc.id);
          return h(
            'tr',
            {
              'data-id': doc.id,
              ...(change ? { class: `flash flash-${change}`, 'data-change': change } : {}),
              // The id cell's link navigates by itself; the rest of the row does it here.
              onclick: (event: Event) => {
                if ((event.target as Element).closest('a')) return;
                ctx.navigate(`collections/${collection.name}/docs/${encodeURIComponent(doc.id)}`);
              },
            },
            h(
              'td',
              { class: 'mono' },
              h('a', { href: link(`collections/${collection.name}/docs/${encodeURIComponent(doc.id)}`) }, doc.id),
            ),
            columns.map((c) => h('td', { 'data-field': c }, cell(collection, doc, c))),
            withHighlights ? h('td', { class: 'small highlights' }, highlightsOf(doc)) : null,
            h('td', null, String(doc.version)),
            h('td', { class: 'small' }, formatTime(doc.updated_at)),
          );
        }),
        'No documents match.',
      ),
    );
  };

  const run = async (after: string | null = null) => {
    problem.textContent = '';
    unsubscribe?.();
    unsubscribe = null;
    rows.clear();
    flashes.clear();
    replace(pager);
    let query: { where?: unknown; order_by?: unknown; limit: number; search?: string; expand?: string[] };
    try {
      query = { limit: Number(limit.value) || 50 };
      if (where.value.trim()) query.where = parseJson(where.value, 'where');
      if (orderBy.value.trim()) query.order_by = parseJson(orderBy.value, 'order_by');
      if (search.value.trim()) query.search = search.value.trim();
      const paths = expand.value
        .split(',')
        .map((path) => path.trim())
        .filter(Boolean);
      if (paths.length > 0) query.expand = paths;
    } catch (error) {
      problem.textContent = (error as Error).message;
      return;
    }
    const order =
      query.search !== undefined && query.order_by === undefined && !live.checked ? null : sorter(query.order_by);
    if (live.checked) {
      showStatus('connecting');
      let received = false;
      unsubscribe = ctx.realtime.subscribe(
        { collection: collection.name, query: query as LiveQuery },
        (snapshot) => {
          rows.clear();
          for (const doc of snapshot.docs as Doc[]) rows.set(doc.id, doc);
          // The first snapshot lists every document as added: only later changes flash.
          showStatus('live');
          if (received) {
            for (const { type, doc } of snapshot.changes) {
              if (type === 'removed') continue;
              flashes.set(doc.id, type);
              window.setTimeout(() => {
                if (flashes.get(doc.id) === type) flashes.delete(doc.id);
                table.querySelector(`tr[data-id="${CSS.escape(doc.id)}"]`)?.classList.remove('flash', `flash-${type}`);
              }, 2500);
            }
          }
          received = true;
          render(order);
        },
        (error) => showStatus('error', `${error.code}: ${error.message}`),
      );
      return;
    }
    status.textContent = '';
    try {
      const result = await ctx.api.json<{ docs: Doc[]; next_cursor: string | null }>(
        'POST',
        `/v1/db/${collection.name}/query`,
        {
          ...query,
          ...(query.search !== undefined ? { highlight: true } : {}),
          ...(after ? { after } : {}),
        },
      );
      for (const doc of result.docs) rows.set(doc.id, doc);
      render(order);
      if (result.next_cursor) {
        const next = result.next_cursor;
        replace(pager, h('button', { type: 'button', onclick: () => void run(next) }, 'Next page ›'));
      }
    } catch (error) {
      problem.textContent = error instanceof BasaltError ? `${error.code}: ${error.message}` : String(error);
    }
  };

  const form = submitForm(
    { class: 'query-bar', id: 'query-form' },
    () => run(),
    field('where', where),
    field('order_by', orderBy),
    field('limit', limit),
    field('search', search),
    field('expand', expand),
    h('label', { class: 'check' }, live, 'Live'),
    h('button', { type: 'submit', class: 'primary' }, 'Run'),
    h(
      'a',
      { class: 'button', href: link(`collections/${collection.name}/docs/new`), id: 'new-document' },
      '+ New document',
    ),
  );
  live.addEventListener('change', () => void run());
  void run();
  return h('div', { class: 'documents-tab' }, form, h('div', { class: 'table-status' }, status), problem, table, pager);
}

/** A cell: reference fields link to the documents they name (expanded ones show a preview of theirs). */
function cell(collection: Collection, doc: Doc, column: string): Child {
  const value = doc.data?.[column];
  const target = collection.refs[column];
  if (!target || (typeof value !== 'string' && !Array.isArray(value))) return preview(value);
  const expanded = doc.expand?.[column];
  const found = new Map<string, Doc>();
  for (const item of Array.isArray(expanded) ? expanded : expanded ? [expanded] : []) found.set(item.id, item);
  const ids = (Array.isArray(value) ? value : [value]).filter((id): id is string => typeof id === 'string');
  return h(
    'span',
    { class: 'refs' },
    ids.map((id, i) => {
      const hit = found.get(id);
      const label = hit ? `${id} (${preview(Object.values(hit.data ?? {})[0], 30)})` : id;
      return [
        i > 0 ? ', ' : null,
        h(
          'a',
          { href: link(`collections/${target}/docs/${encodeURIComponent(id)}`), class: 'ref', 'data-ref': id },
          label,
        ),
      ];
    }),
  );
}

/**
 * Search highlights: HTML the server escaped, with <mark> as its only markup. Built as DOM
 * from the text between marks (never parsed as HTML), so nothing else can become markup.
 */
function highlightsOf(doc: Doc): Child {
  const decode = (text: string) =>
    text
      .replaceAll('&lt;', '<')
      .replaceAll('&gt;', '>')
      .replaceAll('&quot;', '"')
      .replaceAll('&#39;', "'")
      .replaceAll('&amp;', '&');
  return Object.entries(doc.highlights ?? {}).map(([path, html]) =>
    h(
      'div',
      { 'data-highlight': path },
      h('span', { class: 'muted' }, `${path}: `),
      html
        .split(/(<mark>.*?<\/mark>)/)
        .map((part) => (part.startsWith('<mark>') ? h('mark', null, decode(part.slice(6, -7))) : decode(part))),
    ),
  );
}

/** References and full-text search settings. */
function searchTab(ctx: Context, collection: Collection): HTMLElement {
  const fields = h('input', { name: 'search-fields', class: 'code', placeholder: 'title, body' });
  fields.value = collection.search?.fields.join(', ') ?? '';
  const language = h('input', { name: 'search-language', placeholder: 'simple' });
  language.value = collection.search?.language ?? 'simple';
  const refs = h('textarea', { rows: 6, class: 'code', name: 'refs', spellcheck: 'false' });
  refs.value = Object.entries(collection.refs)
    .map(([path, target]) => `${path}: ${target}`)
    .join('\n');
  return savingForm(
    { class: 'card stack', id: 'search-form' },
    'Save search and references',
    async () => {
      const paths = fields.value
        .split(',')
        .map((path) => path.trim())
        .filter(Boolean);
      const refMap: Record<string, string> = {};
      for (const line of refs.value.split('\n')) {
        if (!line.trim()) continue;
        const [path, target] = line.split(':').map((part) => part.trim());
        if (!path || !target) throw new Error(`References: "${line}" is not "path: collection".`);
        refMap[path] = target;
      }
      await ctx.api.json('PATCH', `/v1/admin/collections/${collection.name}`, {
        search: paths.length > 0 ? { fields: paths, language: language.value.trim() || 'simple' } : null,
        refs: refMap,
      });
      ctx.notify('Search and references saved.');
    },
    [
      field(
        'Search fields',
        fields,
        'Field paths searched by full-text search, most important first; empty turns search off.',
      ),
      field('Language', language, 'A Postgres text search configuration: simple, english, french, german …'),
      field(
        'References',
        refs,
        'One per line: field path: collection (the field holds an id, or a list of ids, of that collection).',
      ),
    ],
  );
}

function rulesTab(ctx: Context, collection: Collection): HTMLElement {
  const rules = new RulesEditor(RULE_KINDS, collection.rules, RULES_HINT);
  return savingForm(
    { class: 'card stack', id: 'rules-form' },
    'Save rules',
    async () => {
      await ctx.api.json('PATCH', `/v1/admin/collections/${collection.name}`, {
        rules: rules.values({ omitEmpty: false }),
      });
      ctx.notify('Rules saved.');
    },
    [rules.element],
    rules,
  );
}

function indexesTab(ctx: Context, collection: Collection): HTMLElement {
  const text = h('textarea', { rows: 8, class: 'code', name: 'indexes', spellcheck: 'false' });
  text.value = collection.indexes.map((index) => (Array.isArray(index) ? index.join(', ') : index)).join('\n');
  return savingForm(
    { class: 'card stack', id: 'indexes-form' },
    'Save indexes',
    async () => {
      const indexes = text.value
        .split('\n')
        .map((line) =>
          line
            .split(',')
            .map((part) => part.trim())
            .filter(Boolean),
        )
        .filter((paths) => paths.length > 0)
        .map((paths) => (paths.length === 1 ? (paths[0] as string) : paths));
      await ctx.api.json('PATCH', `/v1/admin/collections/${collection.name}`, { indexes });
      ctx.notify('Indexes saved.');
    },
    [
      field(
        'Indexes',
        text,
        'One index per line: a field path (status, address.city), or several separated by commas for a compound index. Saving replaces the list.',
      ),
    ],
  );
}

function schemaTab(ctx: Context, collection: Collection): HTMLElement {
  const text = h('textarea', { rows: 16, class: 'code', name: 'schema', spellcheck: 'false' });
  text.value = collection.schema ? JSON.stringify(collection.schema, null, 2) : '';
  return savingForm(
    { class: 'card stack', id: 'schema-form' },
    'Save schema',
    async () => {
      const schema = text.value.trim() ? parseJson(text.value, 'The schema') : null;
      await ctx.api.json('PATCH', `/v1/admin/collections/${collection.name}`, { schema });
      ctx.notify(schema === null ? 'Schema removed.' : 'Schema saved.');
    },
    [field('JSON Schema for data', text, 'Checked on every write; empty removes it.')],
  );
}
