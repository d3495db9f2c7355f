import { BasaltError } from '../api.js';
import { h } from '../dom.js';

/**
 * Rule inputs for a set of kinds, with the parser's errors shown under the rule they
 * concern: the message and a caret under the position the server reports.
 */
export class RulesEditor<K extends string> {
  readonly element: HTMLElement;
  private readonly inputs = new Map<K, HTMLTextAreaElement>();
  private readonly errors = new Map<K, HTMLElement>();

  constructor(kinds: readonly K[], initial: Partial<Record<K, string>>, hint: string) {
    this.element = h(
      'div',
      { class: 'rules-editor' },
      kinds.map((kind) => {
        const input = h('textarea', {
          rows: 2,
          class: 'code',
          name: `rule-${kind}`,
          'data-rule': kind,
          spellcheck: 'false',
          placeholder: 'empty: only the service key',
        });
        input.value = initial[kind] ?? '';
        input.addEventListener('input', () => this.clear(kind));
        const error = h('div', { class: 'rule-error', 'data-rule-error': kind, hidden: true });
        this.inputs.set(kind, input);
        this.errors.set(kind, error);
        return h('label', { class: 'field' }, h('span', { class: 'field-label mono' }, kind), input, error);
      }),
      h('small', { class: 'muted' }, hint),
    );
  }

  /** The rules as the admin API takes them: text, or null to remove one. */
  values(options: { omitEmpty: boolean }): Partial<Record<K, string | null>> {
    const result: Partial<Record<K, string | null>> = {};
    for (const [kind, input] of this.inputs) {
      const text = input.value.trim();
      if (text) result[kind] = text;
      else if (!options.omitEmpty) result[kind] = null;
    }
    return result;
  }

  clear(kind?: K): void {
    for (const [k, error] of this.errors) {
      if (kind !== undefined && k !== kind) continue;
      error.hidden = true;
      error.replaceChildren();
      this.inputs.get(k)?.classList.remove('invalid');
    }
  }

  /** Shows an INVALID_RULE error next to its rule; false when the error is about something else. */
  show(error: unknown): boolean {
    if (!(error instanceof BasaltError) || error.code !== 'INVALID_RULE') return false;
    const details = error.details ?? {};
    // Collections name the rule; buckets report only its source, which identifies the input.
    const source0 = typeof details.source === 'string' ? details.source : null;
    const kind =
      (details.rule as K | undefined) ??
      [...this.inputs].find(([, input]) => source0 !== null && input.value.trim() === source0)?.[0];
    const target = kind !== undefined ? this.errors.get(kind) : undefined;
    const input = kind !== undefined ? this.inputs.get(kind) : undefined;
    if (!target || !input) return false;
    const position = typeof details.position === 'number' ? details.position : null;
    const source = typeof details.source === 'string' ? details.source : input.value.trim();
    target.hidden = false;
    target.replaceChildren(h('span', { class: 'error-text' }, error.message));
    if (position !== null) {
      const column = Math.max(0, Math.min(position, source.length));
      target.append(h('pre', { class: 'caret' }, `${source}\n${' '.repeat(column)}^`));
    }
    input.classList.add('invalid');
    input.focus();
    if (position !== null) input.setSelectionRange(position, Math.min(position + 1, input.value.length));
    return true;
  }
}
