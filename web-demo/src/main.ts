// The reelhouse web app: a shell (header, navigation, one main region) and a
// view per route.

import './style.css';
import { h } from './dom';
import { disconnectLive } from './live';
import { match, navigate, route, startRouter, type Cleanup } from './router';
import { onSessionChange, restore, signOut, user } from './session';
import { authView } from './views/auth';
import { jobsView } from './views/jobs';
import { systemView } from './views/system';
import { libraryView } from './views/library';
import { playerView } from './views/player';
import { uploadView } from './views/upload';

const PUBLIC_PATHS = new Set(['/signin', '/signup']);

route('/', libraryView);
route('/signin', (main) => authView(main, 'signin'));
route('/signup', (main) => authView(main, 'signup'));
route('/upload', uploadView);
route('/watch/:id', playerView);
route('/jobs', jobsView);
route('/admin/system', systemView);

const header = document.getElementById('site-header') as HTMLElement;
const main = document.getElementById('main') as HTMLElement;
let cleanup: Cleanup | void;

function renderHeader(): void {
  const me = user();
  const nav = me
    ? h(
        'nav',
        { 'aria-label': 'Main' },
        h('a', { href: '/', 'data-link': true }, 'Library'),
        h('a', { href: '/upload', 'data-link': true }, 'Upload'),
        h('a', { href: '/jobs', 'data-link': true }, me.role === 'ADMIN' ? 'Jobs & workers' : 'Jobs'),
        me.role === 'ADMIN' ? h('a', { href: '/admin/system', 'data-link': true }, 'System') : '',
        h('span', { class: 'who' }, me.displayName),
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            onclick: async () => {
              await signOut();
              navigate('/signin');
            },
          },
          'Sign out',
        ),
      )
    : null;
  header.replaceChildren(
    h('a', { href: '/', 'data-link': true, class: 'brand' }, h('span', { 'aria-hidden': 'true' }, '▶'), ' reelhouse'),
    nav ?? '',
  );
  for (const a of header.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === location.pathname) a.setAttribute('aria-current', 'page');
  }
}

function render(path: string): void {
  if (cleanup) cleanup();
  cleanup = undefined;
  if (!user() && !PUBLIC_PATHS.has(path)) {
    const next = path === '/' ? '' : `?next=${encodeURIComponent(path)}`;
    history.replaceState(null, '', `/signin${next}`);
    path = '/signin';
  } else if (user() && PUBLIC_PATHS.has(path)) {
    history.replaceState(null, '', '/');
    path = '/';
  }
  renderHeader();
  main.replaceChildren();
  const found = match(path);
  if (!found) {
    main.append(
      h('h1', { tabindex: '-1' }, 'Page not found'),
      h('p', {}, h('a', { href: '/', 'data-link': true }, 'Back to your library')),
    );
  } else {
    cleanup = found.view(main, found.params);
  }
  // Move focus to the new page's heading so keyboard and screen-reader users start there.
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
    document.title = `${heading.textContent} · reelhouse`;
  }
}

onSessionChange((me) => {
  if (!me) {
    disconnectLive();
    if (!PUBLIC_PATHS.has(location.pathname)) render(location.pathname);
    else renderHeader();
  }
});

main.setAttribute('aria-busy', 'true');
void restore().finally(() => {
  main.removeAttribute('aria-busy');
  startRouter(render);
});
