// The admin "System" page: each dependency's circuit breaker (database, Redis,
// storage, webhook hosts), the job queue and the workers, refreshed every few
// seconds from `systemStatus`.

import { alertBox, h } from '../dom';
import { humanMessage } from '../errors';
import { graphql, type ResultOf } from '../graphql';
import type { Cleanup } from '../router';
import { gql, user } from '../session';

const SYSTEM_STATUS = graphql(`query SystemStatus {
  systemStatus {
    dependencies { name state failures lastError changedAt }
    queue { queued running dead }
    workers { id host capacity currentJobs version lastSeenAt }
  }
}`);

type Status = ResultOf<typeof SYSTEM_STATUS>['systemStatus'];
type BreakerState = Status['dependencies'][number]['state'];

const STATE_LABEL: Record<BreakerState, string> = {
  CLOSED: 'Up',
  HALF_OPEN: 'Probing',
  OPEN: 'Down',
};

const POLL_MS = 3000;

function ago(iso: string): string {
  const secs = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  return `${Math.round(secs / 3600)} h ago`;
}

export function systemView(main: HTMLElement): Cleanup {
  const alert = alertBox();
  const updated = h('p', { class: 'meta', 'aria-live': 'polite' });
  const dependenciesBody = h('tbody');
  const queueBody = h('tbody');
  const workersBody = h('tbody');
  let timer: number | undefined;
  let stopped = false;

  function render(status: Status): void {
    dependenciesBody.replaceChildren(
      ...status.dependencies.map((d) =>
        h(
          'tr',
          { 'data-dependency': d.name },
          h('td', {}, d.name),
          h('td', {}, h('span', { class: 'badge', 'data-state': d.state }, STATE_LABEL[d.state] ?? d.state)),
          h('td', {}, String(d.failures)),
          h('td', {}, d.lastError ?? '—'),
          h('td', {}, h('time', { datetime: d.changedAt, title: d.changedAt }, ago(d.changedAt))),
        ),
      ),
    );
    queueBody.replaceChildren(
      h('tr', {}, h('td', {}, String(status.queue.queued)), h('td', {}, String(status.queue.running)), h('td', {}, String(status.queue.dead))),
    );
    workersBody.replaceChildren(
      ...(status.workers.length
        ? status.workers.map((w) =>
            h('tr', {}, h('td', {}, w.host), h('td', {}, `${w.currentJobs}/${w.capacity}`), h('td', {}, w.version), h('td', {}, ago(w.lastSeenAt))),
          )
        : [h('tr', {}, h('td', { colspan: 4 }, 'No worker has announced itself.'))]),
    );
  }

  async function refresh(): Promise<void> {
    window.clearTimeout(timer);
    try {
      const data = await gql(SYSTEM_STATUS);
      if (stopped) return;
      alert.clear();
      render(data.systemStatus);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (err) {
      // An outage of the database answers UNAVAILABLE: said, and polled again.
      alert.show(humanMessage(err));
    }
    if (!stopped) timer = window.setTimeout(() => void refresh(), POLL_MS);
  }

  const th = (text: string) => h('th', { scope: 'col' }, text);
  const table = (caption: string, heads: string[], body: HTMLElement) =>
    h('div', { class: 'table-wrap' }, h('table', {}, h('caption', {}, caption), h('thead', {}, h('tr', {}, ...heads.map(th))), body));

  if (user()?.role !== 'ADMIN') {
    main.append(h('h1', {}, 'System'), h('p', {}, 'Only administrators can see the system status.'));
    return () => {};
  }
  main.append(
    h('h1', {}, 'System'),
    alert,
    updated,
    table('Dependencies (circuit breakers)', ['Dependency', 'State', 'Failures', 'Last error', 'Changed'], dependenciesBody),
    table('Job queue', ['Queued', 'Running', 'Dead'], queueBody),
    table('Workers', ['Host', 'Jobs', 'Version', 'Last seen'], workersBody),
  );
  void refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
