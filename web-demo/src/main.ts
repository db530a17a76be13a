// The reelhouse web app: a shell (header, navigation, one main region) and a
// view per route.

import './style.css';
import { renderVerifyBanner } from './banner';
import { h } from './dom';
import { disconnectLive } from './live';
import { match, navigate, route, startRouter, type Cleanup } from './router';
import { onSessionChange, restore, signOut, user } from './session';
import { accountView } from './views/account';
import { adminUsersView } from './views/admin-users';
import { authView } from './views/auth';
import { jobsView } from './views/jobs';
import { systemView } from './views/system';
import { libraryView } from './views/library';
import { forgotPasswordView, resetPasswordView } from './views/password-reset';
import { playerView } from './views/player';
import { uploadView } from './views/upload';
import { verifyEmailView } from './views/verify-email';

/** Pages for signed-out people only: signed in, they lead to the library. */
const PUBLIC_PATHS = new Set(['/signin', '/signup', '/forgot-password']);
/** Pages that mailed links open: they work signed in or not. */
const OPEN_PATHS = new Set(['/verify-email', '/reset-password']);

route('/', libraryView);
route('/signin', (main) => authView(main, 'signin'));
route('/signup', (main) => authView(main, 'signup'));
route('/upload', uploadView);
route('/watch/:id', playerView);
route('/jobs', jobsView);
route('/admin/system', systemView);
route('/account', accountView);
route('/admin/users', adminUsersView);
route('/forgot-password', forgotPasswordView);
route('/reset-password', resetPasswordView);
route('/verify-email', verifyEmailView);

const header = document.getElementById('site-header') as HTMLElement;
const main = document.getElementById('main') as HTMLElement;
const banner = document.getElementById('site-banner') as HTMLElement;
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
        me.role === 'ADMIN' ? h('a', { href: '/admin/system', 'data-link': true }, 'System') : null,
        me.role === 'ADMIN' ? h('a', { href: '/admin/users', 'data-link': true }, 'Users') : null,
        h('a', { href: '/account', 'data-link': true }, 'Account'),
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
  renderVerifyBanner(banner);
}

function render(path: string): void {
  if (cleanup) cleanup();
  cleanup = undefined;
  if (!user() && !PUBLIC_PATHS.has(path) && !OPEN_PATHS.has(path)) {
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
    if (!PUBLIC_PATHS.has(location.pathname) && !OPEN_PATHS.has(location.pathname)) render(location.pathname);
    else renderHeader();
  } else {
    // A confirmed or changed address, a new role: the header and banner follow.
    renderHeader();
  }
});

main.setAttribute('aria-busy', 'true');
void restore().finally(() => {
  main.removeAttribute('aria-busy');
  startRouter(render);
});
