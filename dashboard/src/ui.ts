/** The pieces of markup the dashboard's pages share, built with `h`. */
import { link } from './app.js';
import { h, type Attrs, type Child } from './dom.js';

/** A table with one header row of plain column titles. */
export function dataTable(attrs: Attrs, headers: readonly string[], rows: Child[]): HTMLTableElement {
  return h(
    'table',
    attrs,
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        headers.map((title) => h('th', null, title)),
      ),
    ),
    h('tbody', null, rows),
  );
}

/** A table of `rows`, or a note saying `emptyText` when there are none. */
export function tableOrNote(
  attrs: Attrs,
  headers: readonly string[],
  rows: readonly Child[],
  emptyText: string,
): HTMLElement {
  return rows.length === 0 ? h('p', { class: 'empty' }, emptyText) : dataTable(attrs, headers, [...rows]);
}

/** A form that stays on the page: submitting it runs `onSubmit` instead of navigating. */
export function submitForm(attrs: Attrs, onSubmit: () => unknown, ...children: Child[]): HTMLFormElement {
  return h(
    'form',
    {
      ...attrs,
      onsubmit: (event: Event) => {
        event.preventDefault();
        void onSubmit();
      },
    },
    ...children,
  );
}

/** A page's title bar: its heading and whatever sits beside it. */
export function pageHead(title: string, ...aside: Child[]): HTMLElement {
  return h('header', { class: 'page-head' }, h('h1', null, title), ...aside);
}

export interface ListPanelItem {
  name: string;
  /** Dashboard path the item links to. */
  path: string;
  active: boolean;
  extra?: Child;
}

/** The sidebar of a list-and-detail page: a titled list of links and a link to create one more. */
export function listPanel(
  title: string,
  listId: string,
  items: readonly ListPanelItem[],
  createLink: HTMLAnchorElement,
): HTMLElement {
  return h(
    'aside',
    { class: 'list-panel' },
    h('h2', null, title),
    items.length === 0
      ? h('p', { class: 'muted' }, 'None yet.')
      : h(
          'ul',
          { class: 'nav-list', id: listId },
          items.map((item) =>
            h('li', null, h('a', { href: link(item.path), class: item.active ? 'active' : '' }, item.name, item.extra)),
          ),
        ),
    createLink,
  );
}

/** What a form needs of a rules editor: clearing its errors and showing one under the rule it names. */
export interface RuleErrors {
  clear(): void;
  /** Whether the error named a rule (and is now shown under it). */
  show(error: unknown): boolean;
}

/**
 * A form of settings: submitting it runs `save`, and a failure is shown under the rule it names
 * (when the form has rules) or in the form's problem line, above its submit button.
 */
export function savingForm(
  attrs: Attrs,
  submitLabel: string,
  save: () => Promise<void>,
  fields: Child[],
  rules?: RuleErrors,
): HTMLFormElement {
  const problem = h('p', { class: 'error-text' });
  return submitForm(
    attrs,
    async () => {
      problem.textContent = '';
      rules?.clear();
      try {
        await save();
      } catch (error) {
        if (!rules?.show(error)) problem.textContent = error instanceof Error ? error.message : String(error);
      }
    },
    fields,
    problem,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, submitLabel)),
  );
}

/** The detail pane for creating a new item: its title over a settings form (see `savingForm`). */
export function newItemPane(
  title: string,
  formId: string,
  submitLabel: string,
  save: () => Promise<void>,
  fields: Child[],
  rules?: RuleErrors,
): HTMLDivElement {
  return h(
    'div',
    null,
    h('h1', null, title),
    savingForm({ class: 'card stack', id: formId }, submitLabel, save, fields, rules),
  );
}
