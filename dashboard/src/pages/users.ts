import type { User } from '../api.js';
import { reportError, type Context, type Page } from '../app.js';
import { badge, field, formatTime, h, parseJson, replace } from '../dom.js';
import { pageHead, submitForm, tableOrNote } from '../ui.js';

const PER_PAGE = 25;
/** A ban is a date; "ban" in the dashboard means until further notice. */
const BAN_FOREVER = '9999-12-31T23:59:59Z';

function isBanned(user: User): boolean {
  return user.banned_until !== null && Date.parse(user.banned_until) > Date.now();
}

/** Users: list, search by email, create, ban, delete, edit app_metadata. */
export async function usersPage(ctx: Context): Promise<Page> {
  let page = 1;
  let email = ctx.query.get('email') ?? '';
  const list = h('div', { class: 'table-wrap' });
  const editor = h('div', { class: 'side-panel', hidden: true });
  const search = h('input', { type: 'search', name: 'email', placeholder: 'Search by email', value: email });

  const load = async () => {
    const params = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    if (email) params.set('email', email);
    const result = await ctx.api.get<{ users: User[]; total: number; page: number; per_page: number }>(
      `/v1/admin/users?${params}`,
    );
    const pages = Math.max(1, Math.ceil(result.total / PER_PAGE));
    replace(
      list,
      tableOrNote(
        { class: 'table', id: 'users' },
        ['Email', 'Id', 'Created', 'Status', ''],
        result.users.map((user) =>
          h(
            'tr',
            { 'data-user': user.email ?? user.id },
            h('td', null, user.email ?? h('span', { class: 'muted' }, user.is_anonymous ? 'anonymous' : '—')),
            h('td', { class: 'mono small', title: user.id }, `${user.id.slice(0, 8)}…`),
            h('td', { class: 'nowrap small', title: formatTime(user.created_at) }, user.created_at.slice(0, 10)),
            h(
              'td',
              null,
              isBanned(user) ? badge('banned', 'dead') : badge('active', 'succeeded'),
              user.email_confirmed_at ? null : badge('unconfirmed', 'queued'),
              Object.keys(user.app_metadata).length > 0 ? badge('app_metadata', 'info') : null,
            ),
            h(
              'td',
              { class: 'actions' },
              h('button', { type: 'button', onclick: () => edit(user) }, 'Edit'),
              h(
                'button',
                {
                  type: 'button',
                  onclick: () =>
                    void act(async () => {
                      await ctx.api.json('PATCH', `/v1/admin/users/${user.id}`, {
                        banned_until: isBanned(user) ? null : BAN_FOREVER,
                      });
                      ctx.notify(
                        isBanned(user) ? `Unbanned ${user.email ?? user.id}.` : `Banned ${user.email ?? user.id}.`,
                      );
                    }),
                },
                isBanned(user) ? 'Unban' : 'Ban',
              ),
              h(
                'button',
                {
                  type: 'button',
                  class: 'danger',
                  onclick: () => {
                    if (!confirm(`Delete ${user.email ?? user.id} and end their sessions?`)) return;
                    void act(async () => {
                      await ctx.api.json('DELETE', `/v1/admin/users/${user.id}`);
                      ctx.notify(`Deleted ${user.email ?? user.id}.`);
                    });
                  },
                },
                'Delete',
              ),
            ),
          ),
        ),
        email ? 'No user matches this search.' : 'No users yet.',
      ),
      h(
        'div',
        { class: 'pager' },
        h(
          'button',
          { type: 'button', disabled: page <= 1, onclick: () => ((page -= 1), void act(async () => undefined)) },
          '‹ Previous',
        ),
        h('span', null, `Page ${page} of ${pages} · ${result.total} user(s)`),
        h(
          'button',
          { type: 'button', disabled: page >= pages, onclick: () => ((page += 1), void act(async () => undefined)) },
          'Next ›',
        ),
      ),
    );
  };

  const act = async (work: () => Promise<void>) => {
    try {
      await work();
      await load();
    } catch (error) {
      reportError(ctx, error);
    }
  };

  const edit = (user: User) => {
    const appMetadata = h('textarea', { rows: 8, class: 'code', name: 'app_metadata' });
    appMetadata.value = JSON.stringify(user.app_metadata, null, 2);
    const problem = h('p', { class: 'error-text' });
    editor.hidden = false;
    replace(
      editor,
      h('h2', null, 'Edit ', user.email ?? user.id),
      h(
        'dl',
        { class: 'facts' },
        h('dt', null, 'Id'),
        h('dd', { class: 'mono' }, user.id),
        h('dt', null, 'Confirmed'),
        h('dd', null, formatTime(user.email_confirmed_at)),
        h('dt', null, 'Banned until'),
        h('dd', null, formatTime(user.banned_until)),
      ),
      field(
        'app_metadata',
        appMetadata,
        'Trusted claims (roles, plans): copied into access tokens at the next refresh. Only the service key may set them.',
      ),
      h('h3', null, 'user_metadata'),
      h('pre', { class: 'code' }, JSON.stringify(user.user_metadata, null, 2)),
      problem,
      h(
        'div',
        { class: 'buttons' },
        h(
          'button',
          {
            type: 'button',
            class: 'primary',
            onclick: () =>
              void (async () => {
                try {
                  const value = parseJson(appMetadata.value, 'app_metadata');
                  await ctx.api.json('PATCH', `/v1/admin/users/${user.id}`, { app_metadata: value });
                  ctx.notify('Saved app_metadata.');
                  editor.hidden = true;
                  await load();
                } catch (error) {
                  problem.textContent = error instanceof Error ? error.message : String(error);
                }
              })(),
          },
          'Save',
        ),
        h('button', { type: 'button', onclick: () => (editor.hidden = true) }, 'Close'),
      ),
    );
  };

  const newEmail = h('input', { type: 'email', name: 'new-email', required: true, placeholder: 'someone@example.com' });
  const newPassword = h('input', {
    type: 'password',
    name: 'new-password',
    autocomplete: 'new-password',
    placeholder: 'optional',
  });
  const confirmed = h('input', { type: 'checkbox', name: 'email-confirm', checked: true });
  const createForm = submitForm(
    { class: 'inline-form card', id: 'create-user' },
    () =>
      act(async () => {
        const body: Record<string, unknown> = { email: newEmail.value, email_confirm: confirmed.checked };
        if (newPassword.value) body.password = newPassword.value;
        const user = await ctx.api.json<User>('POST', '/v1/admin/users', body);
        ctx.notify(`Created ${user.email ?? user.id}.`);
        newEmail.value = '';
        newPassword.value = '';
      }),
    h('strong', null, 'New user'),
    field('Email', newEmail),
    field('Password', newPassword),
    h('label', { class: 'check' }, confirmed, 'Email confirmed'),
    h('button', { type: 'submit', class: 'primary' }, 'Create user'),
  );

  const element = h(
    'div',
    { class: 'page users' },
    pageHead(
      'Users',
      submitForm(
        { class: 'search' },
        () => {
          email = search.value.trim();
          page = 1;
          return act(async () => undefined);
        },
        search,
        h('button', { type: 'submit' }, 'Search'),
      ),
    ),
    createForm,
    h('div', { class: 'split' }, list, editor),
  );
  await load();
  return { element };
}
