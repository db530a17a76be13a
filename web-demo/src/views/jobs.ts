// Jobs (the caller's own; every job for admins) with cancel and retry, a live
// log of the job chosen with its Log button (`jobLog` subscription), and for
// admins the worker processes.

import { alertBox, formatDuration, h } from '../dom';
import { humanMessage } from '../errors';
import { graphql, type ResultOf } from '../graphql';
import { followJobLog, PROGRESS_FIELDS, type JobLogLine } from '../live';
import type { Cleanup } from '../router';
import { gql, user } from '../session';

// Workers only for admins (the field is admin-only): `@include(if: $admin)`.
const JOBS = graphql(
  `query Jobs($admin: Boolean!) {
    jobs(first: 50) {
      nodes { id videoId kind status attempts maxAttempts error cancelRequested createdAt progress { ...ProgressFields } }
    }
    workers @include(if: $admin) { id host capacity currentJobs version lastSeenAt }
  }`,
  [PROGRESS_FIELDS],
);
const CANCEL_JOB = graphql(`mutation CancelJob($id: ID!) { cancelJob(id: $id) { id status } }`);
const RETRY_JOB = graphql(`mutation RetryJob($id: ID!) { retryJob(id: $id) { id status } }`);

type Job = ResultOf<typeof JOBS>['jobs']['nodes'][number];
type JobStatus = Job['status'];

const STATUS_LABEL: Record<JobStatus, string> = {
  QUEUED: 'Queued',
  RUNNING: 'Running',
  SUCCEEDED: 'Succeeded',
  FAILED: 'Failed',
  CANCELLED: 'Cancelled',
  DEAD: 'Gave up',
};

const POLL_MS = 3000;

function ago(iso: string): string {
  const secs = (Date.now() - new Date(iso).getTime()) / 1000;
  return secs < 60 ? `${Math.max(0, Math.round(secs))} s ago` : `${formatDuration(secs)} ago`;
}

export function jobsView(main: HTMLElement): Cleanup {
  const admin = user()?.role === 'ADMIN';
  const alert = alertBox();
  const jobsBody = h('tbody');
  const workersBody = h('tbody');
  const status = h('p', { class: 'meta', 'aria-live': 'polite' });
  let timer: number | undefined;
  let stopped = false;

  // The live log of one job, outside the table (which is redrawn every poll).
  const logTitle = h('h2', { id: 'job-log-title' }, 'Job log');
  const logLines = h('ol', { class: 'job-log', 'aria-live': 'polite', 'aria-labelledby': 'job-log-title' });
  const logState = h('p', { class: 'meta', 'data-log-state': '' });
  const logPanel = h('section', { class: 'job-log-panel', hidden: true, 'data-log-job': '' }, logTitle, logState, logLines);
  let stopLog: (() => void) | null = null;

  function showLogLine(line: JobLogLine): void {
    const item = h(
      'li',
      { 'data-level': line.level, 'data-cursor': line.cursor, ...(line.jobStatus ? { 'data-final': line.jobStatus } : {}) },
      h('time', { datetime: line.at }, new Date(line.at).toLocaleTimeString()),
      ' ',
      h('span', { class: 'badge' }, line.level),
      ' ',
      line.message,
    );
    logLines.append(item);
    if (line.jobStatus) logState.textContent = `Ended: ${STATUS_LABEL[line.jobStatus] ?? line.jobStatus}.`;
  }

  function openLog(job: Job): void {
    stopLog?.();
    logLines.replaceChildren();
    logPanel.hidden = false;
    logPanel.dataset.logJob = job.id;
    logTitle.textContent = `Log of job …${job.id.slice(-8)}`;
    logState.textContent = 'Live.';
    stopLog = followJobLog(job.id, null, showLogLine, (err) => {
      if (err) logState.textContent = humanMessage(err);
    });
  }

  async function act(job: Job, action: 'cancelJob' | 'retryJob'): Promise<void> {
    alert.clear();
    try {
      await (action === 'cancelJob' ? gql(CANCEL_JOB, { id: job.id }) : gql(RETRY_JOB, { id: job.id }));
      status.textContent = action === 'cancelJob' ? 'Cancel requested.' : 'Job queued again.';
      await refresh();
    } catch (err) {
      alert.show(humanMessage(err));
    }
  }

  function jobRow(job: Job): HTMLTableRowElement {
    const canCancel = (job.status === 'QUEUED' || job.status === 'RUNNING') && !job.cancelRequested;
    const canRetry = job.status === 'FAILED' || job.status === 'CANCELLED' || (job.status === 'DEAD' && admin);
    const p = job.progress;
    return h(
      'tr',
      { 'data-job': job.id, 'data-video': job.videoId ?? '' },
      // Ids are time-ordered UUIDs: their tail is the part that tells them apart.
      h(
        'td',
        {},
        job.videoId
          ? h('a', { href: `/watch/${job.videoId}`, 'data-link': true, title: job.videoId }, `…${job.videoId.slice(-8)}`)
          : '—',
      ),
      h('td', {}, job.kind.toLowerCase().replace('_', ' ')),
      h('td', {}, h('span', { class: 'badge', 'data-status': job.status }, STATUS_LABEL[job.status] ?? job.status)),
      h('td', {}, job.status === 'RUNNING' && p ? `${Math.floor(p.percent)}% ${p.stage}` : job.error ?? ''),
      h('td', {}, `${job.attempts}/${job.maxAttempts}`),
      h('td', {}, ago(job.createdAt)),
      h(
        'td',
        { class: 'actions' },
        canCancel
          ? h('button', { type: 'button', class: 'secondary', 'data-key': `${job.id}:cancel`, onclick: () => act(job, 'cancelJob') }, 'Cancel')
          : null,
        canRetry
          ? h('button', { type: 'button', class: 'secondary', 'data-key': `${job.id}:retry`, onclick: () => act(job, 'retryJob') }, 'Retry')
          : null,
        h('button', { type: 'button', class: 'secondary', 'data-key': `${job.id}:log`, onclick: () => openLog(job) }, 'Log'),
      ),
    );
  }

  async function refresh(): Promise<void> {
    window.clearTimeout(timer);
    try {
      const data = await gql(JOBS, { admin });
      if (stopped) return;
      // Keyboard users keep their place across redraws: focus returns to the
      // same button, or to the other action of the same job.
      const focused = jobsBody.contains(document.activeElement) ? (document.activeElement as HTMLElement) : null;
      const focusKey = focused?.dataset.key;
      const focusJob = focused?.closest('tr')?.dataset.job;
      jobsBody.replaceChildren(
        ...(data.jobs.nodes.length ? data.jobs.nodes.map(jobRow) : [h('tr', {}, h('td', { colspan: 7 }, 'No jobs yet.'))]),
      );
      if (focused) {
        const again =
          (focusKey ? jobsBody.querySelector<HTMLElement>(`[data-key="${focusKey}"]`) : null) ??
          (focusJob ? jobsBody.querySelector<HTMLElement>(`tr[data-job="${focusJob}"] button`) : null);
        again?.focus();
      }
      if (data.workers) {
        workersBody.replaceChildren(
          ...(data.workers.length
            ? data.workers.map((w) =>
                h('tr', {}, h('td', {}, w.host), h('td', {}, `${w.currentJobs}/${w.capacity}`), h('td', {}, w.version), h('td', {}, ago(w.lastSeenAt))),
              )
            : [h('tr', {}, h('td', { colspan: 4 }, 'No worker has announced itself.'))]),
        );
      }
    } catch (err) {
      alert.show(humanMessage(err));
    }
    if (!stopped) timer = window.setTimeout(() => void refresh(), POLL_MS);
  }

  const th = (text: string) => h('th', { scope: 'col' }, text);
  main.append(
    h('h1', {}, admin ? 'Jobs and workers' : 'Your jobs'),
    alert,
    status,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        {},
        h('caption', {}, admin ? 'All jobs, newest first' : 'Processing jobs of your videos, newest first'),
        h('thead', {}, h('tr', {}, th('Video'), th('Kind'), th('Status'), th('Progress / error'), th('Attempts'), th('Created'), th('Actions'))),
        jobsBody,
      ),
    ),
    logPanel,
    admin
      ? h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            {},
            h('caption', {}, 'Workers'),
            h('thead', {}, h('tr', {}, th('Host'), th('Jobs'), th('Version'), th('Last seen'))),
            workersBody,
          ),
        )
      : '',
  );
  void refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    stopLog?.();
  };
}
