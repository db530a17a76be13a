// /admin/users (admins): find accounts by address or name, role and state, a
// page at a time; change a role, disable or enable, set quotas, delete.

import { alertBox, field, formatBytes, h } from '../dom';
import { humanMessage } from '../errors';
import { graphql, type ResultOf, type VariablesOf } from '../graphql';
import type { Cleanup } from '../router';
import { gql, user } from '../session';

const USER_FIELDS = graphql(`
  fragment AdminUser on User {
    id email displayName role disabled emailVerified totpEnabled createdAt
    storageUsedBytes storageQuotaBytes processingSecondsToday processingBudgetSecondsPerDay
  }
`);
const USERS = graphql(
  `query AdminUsers($first: Int, $after: String, $filter: UserFilter) {
    users(first: $first, after: $after, filter: $filter) {
      nodes { ...AdminUser }
      pageInfo { hasNextPage endCursor }
    }
  }`,
  [USER_FIELDS],
);
const SET_ROLE = graphql(`mutation SetUserRole($id: ID!, $role: Role!) { setUserRole(id: $id, role: $role) { ...AdminUser } }`, [
  USER_FIELDS,
]);
const DISABLE = graphql(`mutation DisableUser($id: ID!) { disableUser(id: $id) { ...AdminUser } }`, [USER_FIELDS]);
const ENABLE = graphql(`mutation EnableUser($id: ID!) { enableUser(id: $id) { ...AdminUser } }`, [USER_FIELDS]);
const DELETE = graphql(`mutation DeleteUser($id: ID!) { deleteUser(id: $id) { id status } }`);
const SET_QUOTA = graphql(
  `mutation SetUserQuota($id: ID!, $bytes: Int, $seconds: Int) {
    setUserQuota(id: $id, storageQuotaBytes: $bytes, processingBudgetSecondsPerDay: $seconds) { ...AdminUser }
  }`,
  [USER_FIELDS],
);

type AdminUser = ResultOf<typeof USER_FIELDS>;
type Filter = NonNullable<VariablesOf<typeof USERS>['filter']>;
type Role = AdminUser['role'];

const PAGE_SIZE = 20;
const ROLES: Role[] = ['ADMIN', 'MODERATOR', 'USER', 'VIEWER'];
const ROLE_LABEL: Record<Role, string> = { ADMIN: 'Admin', MODERATOR: 'Moderator', USER: 'User', VIEWER: 'Viewer' };
const MIB = 1024 * 1024;

export function adminUsersView(main: HTMLElement): Cleanup | void {
  main.append(h('h1', {}, 'Users'));
  if (user()?.role !== 'ADMIN') {
    main.append(h('p', { class: 'alert', role: 'alert' }, 'Only administrators can manage users.'));
    return;
  }
  let stopped = false;
  const alert = alertBox();
  const status = h('p', { class: 'meta', role: 'status', 'aria-live': 'polite' });
  const body = h('tbody');
  const pageLabel = h('span', { class: 'meta' });
  const prev = h('button', { type: 'button', class: 'secondary' }, 'Previous page');
  const next = h('button', { type: 'button', class: 'secondary' }, 'Next page');

  // Filters
  const search = h('input', { type: 'search', name: 'search', autocomplete: 'off', maxlength: 200 });
  const role = h(
    'select',
    { name: 'role' },
    h('option', { value: '' }, 'Any role'),
    ROLES.map((r) => h('option', { value: r }, ROLE_LABEL[r])),
  );
  const state = h(
    'select',
    { name: 'disabled' },
    h('option', { value: '' }, 'Any'),
    h('option', { value: 'false' }, 'Active'),
    h('option', { value: 'true' }, 'Disabled'),
  );
  const filters = h(
    'form',
    { class: 'card filters', role: 'search', 'aria-label': 'Find users' },
    field('Search', search, 'Part of an email address or display name.'),
    field('Role', role),
    field('Status', state),
    h('button', { type: 'submit' }, 'Search'),
  );

  // Paging: the cursor each visited page started after (null: the first page).
  let starts: (string | null)[] = [null];
  let nextCursor: string | null = null;
  let filter: Filter = {};

  function currentFilter(): Filter {
    const f: Filter = {};
    const text = search.value.trim();
    if (text) f.search = text;
    if (role.value) f.role = role.value as Role;
    if (state.value) f.disabled = state.value === 'true';
    return f;
  }

  /** Bumped by every load: an older answer arriving late (a search typed while the
   *  first page was loading) must not replace a newer one. */
  let loads = 0;

  async function load(): Promise<void> {
    const mine = ++loads;
    alert.clear();
    main.setAttribute('aria-busy', 'true');
    try {
      const after = starts[starts.length - 1];
      const data = await gql(USERS, { first: PAGE_SIZE, after, filter });
      if (stopped || mine !== loads) return;
      nextCursor = data.users.pageInfo.hasNextPage ? data.users.pageInfo.endCursor ?? null : null;
      body.replaceChildren(
        ...(data.users.nodes.length
          ? data.users.nodes.map(row)
          : [h('tr', {}, h('td', { colspan: 5 }, 'No user matches these filters.'))]),
      );
      pageLabel.textContent = `Page ${starts.length}`;
      prev.disabled = starts.length <= 1;
      next.disabled = !nextCursor;
    } catch (err) {
      if (mine === loads) alert.show(humanMessage(err));
    } finally {
      if (mine === loads) main.removeAttribute('aria-busy');
    }
  }

  /** Run an action on one user, announce the outcome, and redraw the row. */
  async function act(u: AdminUser, run: () => Promise<AdminUser | null>, done: (fresh: AdminUser) => string): Promise<void> {
    alert.clear();
    status.textContent = '';
    try {
      const fresh = await run();
      if (fresh) {
        const old = body.querySelector(`tr[data-user="${CSS.escape(u.id)}"]`);
        old?.replaceWith(row(fresh));
        status.textContent = done(fresh);
      }
    } catch (err) {
      alert.show(humanMessage(err));
      // Put the row back as the server has it (a refused role change resets the select).
      await load();
    }
  }

  function quotaForm(u: AdminUser): HTMLElement {
    const storage = h('input', {
      type: 'number',
      name: 'storageQuotaMiB',
      min: 0,
      step: 1,
      inputmode: 'numeric',
      value: u.storageQuotaBytes === null || u.storageQuotaBytes === undefined ? '' : String(Math.round(u.storageQuotaBytes / MIB)),
    });
    const budget = h('input', {
      type: 'number',
      name: 'processingBudgetSecondsPerDay',
      min: 0,
      step: 1,
      inputmode: 'numeric',
      value: u.processingBudgetSecondsPerDay ?? '',
    });
    const formAlert = alertBox();
    const form = h(
      'form',
      { class: 'quota-form' },
      field('Storage quota (MiB)', storage, 'Empty: the server default; 0: no limit.'),
      field('Processing budget (seconds per day)', budget, 'Empty: the server default; 0: no limit.'),
      formAlert,
      h('button', { type: 'submit' }, 'Save quota'),
    );
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      formAlert.clear();
      const parse = (input: HTMLInputElement): number | null | undefined => {
        const text = input.value.trim();
        if (!text) return null;
        const n = Number(text);
        return Number.isInteger(n) && n >= 0 ? n : undefined;
      };
      const mib = parse(storage);
      const seconds = parse(budget);
      if (mib === undefined || seconds === undefined) {
        formAlert.show('Quotas are whole numbers, 0 or more (or empty for the server default).');
        return;
      }
      await act(
        u,
        async () => (await gql(SET_QUOTA, { id: u.id, bytes: mib === null ? null : mib * MIB, seconds })).setUserQuota,
        (fresh) => `Quota of ${fresh.email} saved.`,
      );
    });
    return h('details', { class: 'quota' }, h('summary', {}, 'Quota'), form);
  }

  function row(u: AdminUser): HTMLTableRowElement {
    const self = u.id === user()?.id;
    const roleSelect = h(
      'select',
      { 'aria-label': `Role of ${u.email}`, disabled: self },
      ROLES.map((r) => h('option', { value: r, selected: r === u.role }, ROLE_LABEL[r])),
    );
    roleSelect.addEventListener('change', () => {
      const chosen = roleSelect.value as Role;
      void act(
        u,
        async () => (await gql(SET_ROLE, { id: u.id, role: chosen })).setUserRole,
        (fresh) => `${fresh.email} is now ${ROLE_LABEL[fresh.role]}.`,
      );
    });
    const toggle = h(
      'button',
      { type: 'button', class: 'secondary', disabled: self, 'aria-label': `${u.disabled ? 'Enable' : 'Disable'} ${u.email}` },
      u.disabled ? 'Enable' : 'Disable',
    );
    toggle.addEventListener('click', () => {
      toggle.disabled = true;
      void act(
        u,
        async () => (u.disabled ? (await gql(ENABLE, { id: u.id })).enableUser : (await gql(DISABLE, { id: u.id })).disableUser),
        (fresh) => (fresh.disabled ? `${fresh.email} is disabled and signed out everywhere.` : `${fresh.email} is enabled again.`),
      );
    });
    const remove = h(
      'button',
      { type: 'button', class: 'secondary danger', disabled: self, 'aria-label': `Delete ${u.email}` },
      'Delete…',
    );
    remove.addEventListener('click', async () => {
      if (!window.confirm(`Delete ${u.email}, with every video they uploaded? This cannot be undone.`)) return;
      alert.clear();
      remove.disabled = true;
      try {
        const job = (await gql(DELETE, { id: u.id })).deleteUser;
        status.replaceChildren(
          `${u.email} is deleted; their videos are being removed by job `,
          h('a', { href: '/jobs', 'data-link': true, class: 'job-id' }, job.id),
          '.',
        );
        await load();
      } catch (err) {
        alert.show(humanMessage(err));
        remove.disabled = false;
      }
    });
    const badges = [
      u.disabled ? h('span', { class: 'badge', 'data-status': 'FAILED' }, 'Disabled') : h('span', { class: 'badge', 'data-status': 'READY' }, 'Active'),
      u.emailVerified ? null : h('span', { class: 'badge', 'data-status': 'QUEUED' }, 'Unconfirmed'),
      u.totpEnabled ? h('span', { class: 'badge' }, '2FA') : null,
    ];
    const quota = u.storageQuotaBytes === null || u.storageQuotaBytes === undefined ? 'no quota' : formatBytes(u.storageQuotaBytes);
    return h(
      'tr',
      { 'data-user': u.id, 'data-email': u.email },
      h('td', {}, h('strong', {}, u.displayName), h('br'), h('span', { class: 'meta' }, u.email), self ? h('span', { class: 'meta' }, ' (you)') : null),
      h('td', {}, roleSelect),
      h('td', { class: 'user-state' }, badges.flatMap((b) => (b ? [b, ' '] : []))),
      h(
        'td',
        {},
        `${formatBytes(u.storageUsedBytes)} of ${quota}`,
        h('br'),
        h(
          'span',
          { class: 'meta' },
          u.processingBudgetSecondsPerDay === null || u.processingBudgetSecondsPerDay === undefined
            ? 'no processing budget'
            : `${Math.round(u.processingSecondsToday)} of ${u.processingBudgetSecondsPerDay} s today`,
        ),
      ),
      h('td', { class: 'actions' }, toggle, remove, quotaForm(u)),
    );
  }

  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    filter = currentFilter();
    starts = [null];
    void load();
  });
  prev.addEventListener('click', () => {
    if (starts.length > 1) starts.pop();
    void load();
  });
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    starts.push(nextCursor);
    void load();
  });

  const th = (text: string) => h('th', { scope: 'col' }, text);
  main.append(
    filters,
    alert,
    status,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'users' },
        h('caption', {}, 'Accounts, oldest first'),
        h('thead', {}, h('tr', {}, th('User'), th('Role'), th('Status'), th('Storage and processing'), th('Actions'))),
        body,
      ),
    ),
    h('div', { class: 'pager' }, prev, pageLabel, next),
  );
  void load();
  return () => {
    stopped = true;
  };
}
