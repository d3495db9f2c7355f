import { BasaltError, type Doc } from '../api.js';
import { link, type Context, type Page } from '../app.js';
import { field, formatTime, h, parseJson } from '../dom.js';

/** The server's message, with the schema's findings when it lists them. */
function describe(error: BasaltError): string {
  const found = error.details?.issues;
  const issues = Array.isArray(found) ? (found as Array<Record<string, unknown>>) : [];
  const lines = issues.map((issue) => `• ${String(issue.path ?? '')}: ${String(issue.message ?? '')}`);
  return [`${error.code}: ${error.message}`, ...lines].join('\n');
}

/** One document as JSON: create, edit (with If-Match on its version) or delete. */
export async function documentPage(ctx: Context): Promise<Page> {
  const collection = ctx.params.name ?? '';
  const creating = ctx.params.id === 'new';
  let doc: Doc | null = creating
    ? null
    : await ctx.api.get<Doc>(`/v1/db/${collection}/${encodeURIComponent(ctx.params.id ?? '')}`);

  const id = h('input', { name: 'doc-id', placeholder: 'generated when empty', pattern: '[A-Za-z0-9_-]{1,128}' });
  const data = h('textarea', { rows: 18, class: 'code', name: 'data', spellcheck: 'false' });
  data.value = JSON.stringify(doc?.data ?? {}, null, 2);
  const problem = h('p', { class: 'error-text', id: 'document-error' });
  const facts = h('dl', { class: 'facts' });
  const showFacts = () => {
    if (!doc) return;
    facts.replaceChildren(
      ...[
        ['Id', doc.id],
        ['Version', String(doc.version)],
        ['Owner', doc.owner ?? '—'],
        ['Created', formatTime(doc.created_at)],
        ['Updated', formatTime(doc.updated_at)],
      ].flatMap(([term, value]) => [
        h('dt', null, term),
        h('dd', { class: 'mono', 'data-fact': term?.toLowerCase() }, value),
      ]),
    );
  };
  showFacts();

  const save = async (event: Event) => {
    event.preventDefault();
    problem.textContent = '';
    try {
      const value = parseJson(data.value, 'data');
      if (creating) {
        const created = await ctx.api.json<Doc>('POST', `/v1/db/${collection}`, {
          ...(id.value.trim() ? { id: id.value.trim() } : {}),
          data: value,
        });
        ctx.notify(`Created ${created.id}.`);
        ctx.navigate(`collections/${collection}/docs/${encodeURIComponent(created.id)}`, { replace: true });
        return;
      }
      if (!doc) return;
      // If-Match: a write made by someone else since this page loaded is a conflict, not lost.
      doc = await ctx.api.json<Doc>(
        'PUT',
        `/v1/db/${collection}/${encodeURIComponent(doc.id)}`,
        { data: value },
        {
          'if-match': String(doc.version),
        },
      );
      data.value = JSON.stringify(doc.data, null, 2);
      showFacts();
      ctx.notify(`Saved ${doc.id} (version ${doc.version}).`);
    } catch (error) {
      if (error instanceof BasaltError && error.code === 'VERSION_CONFLICT') {
        problem.textContent =
          'The document changed since it was loaded: reload it to see the new version, then edit again.';
      } else {
        problem.textContent = error instanceof BasaltError ? describe(error) : (error as Error).message;
      }
    }
  };

  const remove = async () => {
    if (!doc || !confirm(`Delete document ${doc.id}?`)) return;
    try {
      await ctx.api.json('DELETE', `/v1/db/${collection}/${encodeURIComponent(doc.id)}`);
      ctx.notify(`Deleted ${doc.id}.`);
      ctx.navigate(`collections/${collection}`);
    } catch (error) {
      problem.textContent = error instanceof Error ? error.message : String(error);
    }
  };

  const element = h(
    'div',
    { class: 'page document' },
    h(
      'header',
      { class: 'page-head' },
      h(
        'h1',
        null,
        h('a', { href: link(`collections/${collection}`) }, collection),
        ' / ',
        creating ? 'new document' : (doc?.id ?? ''),
      ),
    ),
    h(
      'div',
      { class: 'split' },
      h(
        'form',
        { class: 'card stack', id: 'document-form', onsubmit: save },
        creating ? field('Id', id) : null,
        field(
          'data',
          data,
          "The document's fields as JSON. Saving replaces them (PUT) and checks the version you loaded.",
        ),
        problem,
        h(
          'div',
          { class: 'buttons' },
          h('button', { type: 'submit', class: 'primary' }, creating ? 'Create document' : 'Save'),
          creating ? null : h('button', { type: 'button', class: 'danger', onclick: () => void remove() }, 'Delete'),
          h('a', { class: 'button', href: link(`collections/${collection}`) }, 'Back to the table'),
        ),
      ),
      creating ? null : h('aside', { class: 'card side' }, h('h3', null, 'Document'), facts),
    ),
  );
  return { element };
}
