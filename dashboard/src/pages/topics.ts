import type { TopicSummary } from '../api.js';
import { link, type Context, type Page } from '../app.js';
import { badge, h, replace } from '../dom.js';
import { pageHead, tableOrNote } from '../ui.js';

/** Topics (pub/sub): each topic's publish rule, its subscribers, their waiting events and dead letters; refreshed every 5 s. */
export async function topicsPage(ctx: Context): Promise<Page> {
  const body = h('div');
  const status = h('span', { class: 'muted' });
  const element = h(
    'div',
    { class: 'page topics' },
    pageHead('Topics', status),
    h(
      'p',
      { class: 'muted small' },
      'Functions subscribe with onEvent({topic}); events are published with ctx.events.publish or POST /v1/events/:topic (docs/events.md). Depth counts events waiting, retrying or delayed.',
    ),
    body,
  );

  const load = async () => {
    const { topics } = await ctx.api.get<{ topics: TopicSummary[] }>('/v1/admin/topics');
    status.textContent = `${topics.length} topic(s) · ${new Date().toLocaleTimeString()}`;
    replace(
      body,
      tableOrNote(
        { class: 'table', id: 'topics' },
        ['Topic', 'Publish rule', 'Subscribers', 'Depth', 'Dead letters'],
        topics.map((topic) =>
          h(
            'tr',
            { 'data-topic': topic.name },
            h('td', null, h('strong', null, topic.name)),
            h('td', { class: 'mono small' }, topic.rules.publish ?? h('span', { class: 'muted' }, 'service key only')),
            h(
              'td',
              null,
              topic.subscribers.length === 0
                ? h('span', { class: 'muted' }, 'none')
                : h(
                    'ul',
                    { class: 'plain' },
                    topic.subscribers.map((fn) =>
                      h(
                        'li',
                        { 'data-subscriber': fn.function },
                        h('a', { href: link(`functions/${fn.function}`) }, fn.function),
                        h('span', { class: 'muted small' }, ` v${fn.version}`),
                        fn.batch_size ? h('span', { class: 'muted small' }, ` · batches of ${fn.batch_size}`) : '',
                        h('span', { class: 'small' }, ` · depth ${fn.depth}`),
                        fn.dead_letters > 0 ? [' ', badge(`${fn.dead_letters} dead`, 'dead')] : '',
                      ),
                    ),
                  ),
            ),
            h('td', { class: 'depth' }, String(topic.depth)),
            h(
              'td',
              { class: 'dead-letters' },
              topic.dead_letters > 0 ? badge(String(topic.dead_letters), 'dead') : '0',
            ),
          ),
        ),
        'No topics yet: deploy a function with onEvent, or set a topic’s rules.',
      ),
    );
  };
  await load();
  const timer = window.setInterval(
    () => void load().catch((error: unknown) => (status.textContent = String(error))),
    5000,
  );
  return { element, dispose: () => window.clearInterval(timer) };
}
