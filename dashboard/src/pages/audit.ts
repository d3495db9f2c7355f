import type { AuditEvent } from '../api.js';
import { link, reportError, type Context, type Page } from '../app.js';
import { badge, field, formatTime, h, preview, replace } from '../dom.js';
import { pageHead, submitForm, tableOrNote } from '../ui.js';

const PAGE_SIZE = 50;
/** Type filters offered as suggestions; any exact type or prefix (`auth.`, `admin.users*`) works. */
const TYPE_SUGGESTIONS = [
  'auth.',
  'auth.signin',
  'auth.signin_failed',
  'auth.signup',
  'auth.signout',
  'auth.password_changed',
  'auth.refresh_token_reused',
  'mfa.',
  'passkey.',
  'admin.',
  'admin.users*',
  'admin.users.impersonate',
  'admin.collections*',
  'admin.buckets*',
  'admin.functions*',
  'admin.secrets*',
];

/** Who did it, in words: a user, the service key, or the service key acting as a user. */
export function actorLabel(event: AuditEvent): Node {
  const actor = event.actor;
  if (actor.type === 'service') return badge('service', 'info');
  if (actor.type === 'anonymous') return h('span', { class: 'muted' }, 'anonymous');
  const id = actor.id ?? '';
  return h(
    'span',
    null,
    actor.impersonator ? badge(`${actor.impersonator} as user`, 'queued') : null,
    h('span', { class: 'mono small', title: id }, `${id.slice(0, 8)}…`),
  );
}

function kindOf(type: string): string {
  if (type.endsWith('_failed') || type.endsWith('_reused')) return 'dead';
  if (type.startsWith('admin.')) return 'info';
  return 'succeeded';
}

/** The rows of a list of audit events; `withUser` adds the account column (the timeline leaves it out). */
export function auditTable(events: AuditEvent[], options: { withUser: boolean; empty: string }): HTMLElement {
  const headers = ['When', 'Event', ...(options.withUser ? ['User'] : []), 'Actor', 'From', 'Details'];
  return tableOrNote(
    { class: 'table audit-events' },
    headers,
    events.map((event) =>
      h(
        'tr',
        { 'data-event': event.type, 'data-id': event.id },
        h('td', { class: 'nowrap small', title: event.at }, formatTime(event.at)),
        h('td', null, badge(event.type, kindOf(event.type))),
        options.withUser
          ? h(
              'td',
              { class: 'mono small' },
              event.user_id
                ? h(
                    'a',
                    { href: link(`audit?user_id=${event.user_id}`), title: event.user_id },
                    `${event.user_id.slice(0, 8)}…`,
                  )
                : '—',
            )
          : null,
        h('td', null, actorLabel(event)),
        h('td', { class: 'small' }, event.ip ?? '—', h('div', { class: 'muted' }, preview(event.user_agent ?? '', 40))),
        h('td', { class: 'mono small', title: JSON.stringify(event.details, null, 2) }, preview(event.details, 80)),
      ),
    ),
    options.empty,
  );
}

/** Audit: every account event and admin change, newest first, filtered by user and type, paged by cursor. */
export async function auditPage(ctx: Context): Promise<Page> {
  const userInput = h('input', {
    type: 'search',
    name: 'user_id',
    placeholder: 'User id',
    value: ctx.query.get('user_id') ?? '',
    size: 38,
  });
  const typeInput = h('input', {
    type: 'search',
    name: 'type',
    placeholder: 'Type or prefix (auth., admin.users*)',
    value: ctx.query.get('type') ?? '',
    list: 'audit-types',
  });
  const list = h('div', { class: 'table-wrap' });
  const pager = h('div', { class: 'pager' });
  /** The cursors of the pages before the current one, to go back. */
  const previous: Array<string | undefined> = [];
  let before: string | undefined;

  const load = async () => {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (userInput.value.trim()) params.set('user_id', userInput.value.trim());
    if (typeInput.value.trim()) params.set('type', typeInput.value.trim());
    if (before) params.set('before', before);
    const result = await ctx.api.get<{ events: AuditEvent[]; next_before: string | null }>(`/v1/admin/audit?${params}`);
    replace(list, auditTable(result.events, { withUser: true, empty: 'No event matches.' }));
    replace(
      pager,
      h(
        'button',
        {
          type: 'button',
          id: 'audit-newer',
          disabled: previous.length === 0,
          onclick: () => {
            before = previous.pop();
            void act();
          },
        },
        '‹ Newer',
      ),
      h('span', null, `${result.events.length} event(s)`),
      h(
        'button',
        {
          type: 'button',
          id: 'audit-older',
          disabled: result.next_before === null,
          onclick: () => {
            previous.push(before);
            before = result.next_before ?? undefined;
            void act();
          },
        },
        'Older ›',
      ),
    );
  };
  const act = async () => {
    try {
      await load();
    } catch (error) {
      reportError(ctx, error);
    }
  };

  const element = h(
    'div',
    { class: 'page audit' },
    pageHead('Audit'),
    h(
      'p',
      { class: 'muted small' },
      'Sign-ups, sign-ins (and why they failed), sign-outs, credential changes, second factors, and every admin change, newest first.',
    ),
    submitForm(
      { class: 'inline-form card', id: 'audit-filters' },
      () => {
        before = undefined;
        previous.length = 0;
        return act();
      },
      field('User', userInput),
      field('Type', typeInput),
      h(
        'datalist',
        { id: 'audit-types' },
        TYPE_SUGGESTIONS.map((type) => h('option', { value: type })),
      ),
      h('button', { type: 'submit', class: 'primary' }, 'Filter'),
    ),
    list,
    pager,
  );
  await load();
  return { element };
}
