import type { BasaltError } from './api.js';
import { RealtimeClient } from '../../client-sdk/src/index.js';
import { Api, storedKey, storeKey } from './api.js';
import { BASE, link, type Context, type Page, type PageFactory } from './app.js';
import { h, replace } from './dom.js';
import { auditPage } from './pages/audit.js';
import { collectionsPage } from './pages/collections.js';
import { documentPage } from './pages/document.js';
import { functionsPage } from './pages/functions.js';
import { overviewPage } from './pages/overview.js';
import { realtimePage } from './pages/realtime.js';
import { signInPage } from './pages/signin.js';
import { storagePage } from './pages/storage.js';
import { topicsPage } from './pages/topics.js';
import { usagePage } from './pages/usage.js';
import { tracePage } from './pages/trace.js';
import { usersPage } from './pages/users.js';

interface Route {
  pattern: RegExp;
  keys: string[];
  nav: string;
  page: PageFactory;
}

function route(path: string, nav: string, page: PageFactory): Route {
  const keys: string[] = [];
  const source = path.replace(/:([a-z]+)/g, (_, key: string) => {
    keys.push(key);
    return '([^/]+)';
  });
  return { pattern: new RegExp(`^${source}/?$`), keys, nav, page };
}

const ROUTES: Route[] = [
  route('', 'overview', overviewPage),
  route('users', 'users', usersPage),
  route('collections', 'collections', collectionsPage),
  route('collections/:name', 'collections', collectionsPage),
  route('collections/:name/docs/:id', 'collections', documentPage),
  route('storage', 'storage', storagePage),
  route('storage/:bucket', 'storage', storagePage),
  route('functions', 'functions', functionsPage),
  route('functions/:name', 'functions', functionsPage),
  route('traces/:id', 'functions', tracePage),
  route('topics', 'topics', topicsPage),
  route('realtime', 'realtime', realtimePage),
  route('audit', 'audit', auditPage),
  route('usage', 'usage', usagePage),
];

const NAV: Array<[string, string]> = [
  ['overview', 'Overview'],
  ['users', 'Users'],
  ['collections', 'Collections'],
  ['storage', 'Storage'],
  ['functions', 'Functions'],
  ['topics', 'Topics'],
  ['realtime', 'Realtime'],
  ['audit', 'Audit'],
  ['usage', 'Usage'],
];

const root = document.getElementById('app') as HTMLElement;
let current: Page | null = null;
let renderId = 0;
let realtime: { key: string; client: RealtimeClient } | null = null;
const notices = h('div', { class: 'notices', role: 'status', 'aria-live': 'polite' });

function notify(message: string, kind: 'info' | 'error' = 'info'): void {
  const notice = h(
    'div',
    { class: `notice notice-${kind}`, 'data-notice': kind },
    h('span', null, message),
    h('button', { class: 'link', type: 'button', 'aria-label': 'Dismiss', onclick: () => notice.remove() }, '×'),
  );
  notices.append(notice);
  if (kind === 'info') window.setTimeout(() => notice.remove(), 4000);
}

function navigate(path: string, options: { replace?: boolean } = {}): void {
  const url = path.startsWith(BASE) ? path : link(path);
  if (options.replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  void render();
}

function signOut(message?: string): void {
  storeKey(null);
  realtime?.client.disconnect();
  realtime = null;
  void render(message);
}

async function render(signInMessage?: string): Promise<void> {
  const id = ++renderId;
  current?.dispose?.();
  current = null;
  const key = storedKey();
  if (!key) {
    const page = signInPage({
      message: signInMessage,
      onSignedIn: (verified) => {
        storeKey(verified);
        void render();
      },
    });
    replace(root, page.element);
    current = page;
    return;
  }
  const api = new Api(key);
  // One socket for every page of a signed-in key: pages come and go, their live queries with them.
  if (realtime?.key !== key) {
    realtime?.client.disconnect();
    realtime = {
      key,
      client: new RealtimeClient({ baseUrl: location.origin, WebSocket: undefined, accessToken: async () => key }),
    };
  }
  api.onUnauthorized = (error: BasaltError) => signOut(`Signed out: the server refused the key (${error.message}).`);

  const relative = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : '';
  let match: { route: Route; params: Record<string, string> } | null = null;
  for (const candidate of ROUTES) {
    const found = candidate.pattern.exec(relative);
    if (!found) continue;
    const params: Record<string, string> = {};
    candidate.keys.forEach((name, i) => (params[name] = decodeURIComponent(found[i + 1] ?? '')));
    match = { route: candidate, params };
    break;
  }

  const main = h('main', { class: 'content' });
  const shell = h(
    'div',
    { class: 'shell' },
    h(
      'nav',
      { class: 'sidebar' },
      h('a', { class: 'brand', href: link('') }, h('img', { src: `${BASE}favicon.svg`, alt: '' }), 'Basalt'),
      h(
        'ul',
        null,
        NAV.map(([name, label]) =>
          h(
            'li',
            null,
            h(
              'a',
              {
                href: link(name === 'overview' ? '' : name),
                class: match?.route.nav === name ? 'active' : '',
                'data-nav': name,
              },
              label,
            ),
          ),
        ),
      ),
      h('button', { class: 'signout', type: 'button', onclick: () => signOut('Signed out.') }, 'Sign out'),
    ),
    main,
    notices,
  );
  replace(root, shell);

  if (!match) {
    replace(
      main,
      h('h1', null, 'Not found'),
      h('p', null, 'No page here. ', h('a', { href: link('') }, 'Go to the overview.')),
    );
    return;
  }
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  const ctx: Context = {
    api,
    realtime: realtime.client,
    params: match.params,
    query: new URLSearchParams(location.search),
    navigate,
    notify,
  };
  try {
    const page = await match.route.page(ctx);
    if (id !== renderId) {
      page.dispose?.();
      return;
    }
    current = page;
    replace(main, page.element);
  } catch (error) {
    if (id !== renderId) return;
    replace(
      main,
      h('h1', null, 'Could not load this page'),
      h('p', { class: 'error-text' }, error instanceof Error ? error.message : String(error)),
    );
  }
}

// Links inside the dashboard change the page without a reload.
document.addEventListener('click', (event) => {
  const anchor = (event.target as Element | null)?.closest?.('a');
  if (!anchor || event.defaultPrevented || event.button !== 0) return;
  if (
    event.metaKey ||
    event.ctrlKey ||
    event.shiftKey ||
    event.altKey ||
    anchor.target ||
    anchor.hasAttribute('download')
  )
    return;
  const href = anchor.getAttribute('href');
  if (!href || !href.startsWith(BASE)) return;
  event.preventDefault();
  navigate(href);
});
window.addEventListener('popstate', () => void render());

void render();
