import type { AuditEvent, ImpersonatedSession, User, UserFactors } from '../api.js';
import { link, reportError, type Context, type Page } from '../app.js';
import { auditTable } from './audit.js';
import { badge, field, formatTime, h, parseJson, replace } from '../dom.js';
import { pageHead, submitForm, tableOrNote } from '../ui.js';

const PER_PAGE = 25;
/** A ban is a date; "ban" in the dashboard means until further notice. */
const BAN_FOREVER = '9999-12-31T23:59:59Z';
/** Where "View as this user" opens the app; remembered per browser. */
const APP_URL_STORAGE = 'basalt.dashboard.appUrl';
const DEFAULT_APP_URL = 'http://127.0.0.1:5173/';
const TIMELINE_SIZE = 20;

/**
 * The app's address with an impersonated session in its fragment (never sent to a server,
 * nor in a Referer), marked `type=impersonation`: the app takes it for this tab only.
 */
export function viewAsUrl(appUrl: string, started: ImpersonatedSession): string {
  const target = new URL(appUrl);
  target.hash = new URLSearchParams({
    access_token: started.session.access_token,
    token_type: started.session.token_type,
    expires_in: String(started.session.expires_in),
    expires_at: String(started.session.expires_at),
    type: 'impersonation',
  }).toString();
  return target.toString();
}

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

  /**
   * "View as this user": a short impersonated session (audited, no refresh token, refused
   * sensitive account changes), opened in the app in a new tab.
   */
  const viewAs = (user: User) => {
    const appUrl = h('input', {
      type: 'url',
      name: 'app-url',
      value: localStorage.getItem(APP_URL_STORAGE) ?? DEFAULT_APP_URL,
    });
    const minutes = h('input', { type: 'number', name: 'view-as-minutes', min: 1, max: 60, value: 15 });
    return h(
      'div',
      { class: 'view-as' },
      h('h3', null, 'View as this user'),
      field(
        'App URL',
        appUrl,
        'Opened with a session of this user; it ends on its own, cannot be refreshed, and is audited.',
      ),
      field('Minutes', minutes),
      h(
        'button',
        {
          type: 'button',
          id: 'view-as',
          onclick: () =>
            void (async () => {
              try {
                const target = new URL(appUrl.value).toString();
                localStorage.setItem(APP_URL_STORAGE, target);
                const started = await ctx.api.json<ImpersonatedSession>(
                  'POST',
                  `/v1/admin/users/${user.id}/impersonate`,
                  { expires_in: Math.round(Number(minutes.value) * 60) },
                );
                window.open(viewAsUrl(target, started), '_blank', 'noopener');
                ctx.notify(`Opened the app as ${user.email ?? user.id} for ${minutes.value} minute(s).`);
                await loadTimeline(user);
              } catch (error) {
                reportError(ctx, error);
              }
            })(),
        },
        'View as this user',
      ),
    );
  };

  const timeline = h('div', { class: 'timeline' });
  const loadTimeline = async (user: User) => {
    const result = await ctx.api.get<{ events: AuditEvent[] }>(
      `/v1/admin/audit?user_id=${user.id}&limit=${TIMELINE_SIZE}`,
    );
    replace(timeline, auditTable(result.events, { withUser: false, empty: 'Nothing recorded for this user yet.' }));
  };

  /**
   * "Second factors": what the user has enrolled, and a reset for one who lost them all. The
   * dashboard never enrolls a factor: a TOTP secret is only ever shown to its user, by the app.
   */
  const factors = h('div', { class: 'factors' });
  const loadFactors = async (user: User) => {
    const result = await ctx.api.get<UserFactors>(`/v1/admin/users/${user.id}/factors`);
    const rows = [
      ...result.factors.map((factor) =>
        h(
          'tr',
          { 'data-factor': factor.id },
          h('td', null, 'TOTP'),
          h('td', null, factor.friendly_name ?? h('span', { class: 'muted' }, '—')),
          h('td', null, badge(factor.status, factor.status === 'verified' ? 'succeeded' : 'queued')),
          h('td', { class: 'nowrap small' }, formatTime(factor.created_at)),
          h('td', { class: 'nowrap small' }, formatTime(factor.last_used_at)),
        ),
      ),
      ...result.passkeys.map((passkey) =>
        h(
          'tr',
          { 'data-passkey': passkey.id },
          h('td', null, 'Passkey'),
          h('td', null, passkey.name ?? h('span', { class: 'muted' }, '—')),
          h('td', null, badge('verified', 'succeeded')),
          h('td', { class: 'nowrap small' }, formatTime(passkey.created_at)),
          h('td', { class: 'nowrap small' }, formatTime(passkey.last_used_at)),
        ),
      ),
    ];
    replace(
      factors,
      tableOrNote(
        { class: 'table', id: 'factors' },
        ['Type', 'Name', 'Status', 'Added', 'Last used'],
        rows,
        'None: this user signs in without a second factor.',
      ),
      h('p', { class: 'small muted', id: 'recovery-codes-left' }, `Recovery codes left: ${result.recovery_codes_left}`),
      rows.length === 0
        ? null
        : h(
            'button',
            {
              type: 'button',
              class: 'danger',
              id: 'reset-factors',
              onclick: () => {
                const who = user.email ?? user.id;
                if (!confirm(`Remove every second factor and recovery code of ${who} and end their sessions?`)) return;
                void (async () => {
                  try {
                    const reset = await ctx.api.json<{ removed: number }>(
                      'DELETE',
                      `/v1/admin/users/${user.id}/factors`,
                    );
                    ctx.notify(`Removed ${reset.removed} second factor(s) of ${who}.`);
                    await Promise.all([loadFactors(user), loadTimeline(user)]);
                  } catch (error) {
                    reportError(ctx, error);
                  }
                })();
              },
            },
            'Reset second factors',
          ),
    );
  };

  const edit = (user: User) => {
    replace(timeline, h('p', { class: 'muted' }, 'Loading…'));
    replace(factors, h('p', { class: 'muted' }, 'Loading…'));
    void loadTimeline(user).catch((error: unknown) => reportError(ctx, error));
    void loadFactors(user).catch((error: unknown) => reportError(ctx, error));
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
      h('h3', null, 'Second factors'),
      factors,
      viewAs(user),
      h('h3', null, 'Timeline ', h('a', { class: 'small', href: link(`audit?user_id=${user.id}`) }, 'all events')),
      timeline,
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
