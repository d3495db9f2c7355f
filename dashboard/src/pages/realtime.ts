import type { RealtimeConnection } from '../api.js';
import type { Context, Page } from '../app.js';
import { badge, formatTime, h, preview, replace } from '../dom.js';
import { pageHead, tableOrNote } from '../ui.js';

/** Realtime: this instance's open websockets, their live queries and channels, refreshed every 2 s. */
export async function realtimePage(ctx: Context): Promise<Page> {
  const body = h('div');
  const status = h('span', { class: 'muted' });
  const element = h(
    'div',
    { class: 'page realtime' },
    pageHead('Realtime', status),
    h(
      'p',
      { class: 'muted small' },
      'Connections of the instance that answered (GET /v1/admin/realtime); behind a load balancer each instance lists its own.',
    ),
    body,
  );

  const load = async () => {
    const result = await ctx.api.get<{ instance_id: string; connections: RealtimeConnection[] }>('/v1/admin/realtime');
    const subscriptions = result.connections.reduce((n, c) => n + c.subscriptions.length, 0);
    status.textContent = `instance ${result.instance_id.slice(0, 8)} · ${result.connections.length} connection(s) · ${subscriptions} live quer${subscriptions === 1 ? 'y' : 'ies'} · ${new Date().toLocaleTimeString()}`;
    replace(
      body,
      tableOrNote(
        { class: 'table', id: 'connections' },
        ['Connection', 'Caller', 'Since', 'From', 'Live queries', 'Channels'],
        result.connections.map((c) =>
          h(
            'tr',
            null,
            h('td', { class: 'mono' }, c.id.slice(0, 8)),
            h('td', null, badge(c.role), c.uid ? h('div', { class: 'mono small' }, c.uid) : null),
            h('td', null, formatTime(c.connected_at)),
            h('td', { class: 'small' }, c.ip ?? '—', h('div', { class: 'muted' }, preview(c.user_agent ?? '', 40))),
            h(
              'td',
              null,
              c.subscriptions.length === 0
                ? h('span', { class: 'muted' }, 'none')
                : h(
                    'ul',
                    { class: 'plain' },
                    c.subscriptions.map((s) =>
                      h(
                        'li',
                        null,
                        h('strong', null, s.collection),
                        s.doc_id ? ` / ${s.doc_id}` : '',
                        s.where ? h('span', { class: 'mono small' }, ` where ${preview(s.where, 60)}`) : '',
                        h('span', { class: 'muted small' }, ` · ${s.documents} doc(s), limit ${s.limit}`),
                      ),
                    ),
                  ),
            ),
            h(
              'td',
              null,
              c.channels.length === 0
                ? h('span', { class: 'muted' }, 'none')
                : c.channels.map((ch) => h('div', null, ch.channel, ch.presence ? badge('presence', 'info') : null)),
            ),
          ),
        ),
        'No open realtime connections.',
      ),
    );
  };
  await load();
  const timer = window.setInterval(
    () => void load().catch((error: unknown) => (status.textContent = String(error))),
    2000,
  );
  return { element, dispose: () => window.clearInterval(timer) };
}
