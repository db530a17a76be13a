// The library: the user's videos with live upload and encoding progress.

import { alertBox, formatBytes, formatDuration, h } from '../dom';
import { failureReason, humanMessage } from '../errors';
import { graphql, type ResultOf } from '../graphql';
import { followVideo, PROGRESS_FIELDS, type Progress, type VideoEvent, type VideoStatus } from '../live';
import type { Cleanup } from '../router';
import { gql } from '../session';
import { activeUpload, forgetPending, pendingUpload, resumeUpload, type UploadController } from '../uploads';

const VIDEO_FIELDS = graphql(
  `fragment LibraryVideo on Video {
    id title status visibility duration thumbnailUrl error progress { ...ProgressFields }
  }`,
  [PROGRESS_FIELDS],
);
export type LibraryVideo = ResultOf<typeof VIDEO_FIELDS>;

const VIDEO = graphql(`query Video($id: ID!) { video(id: $id) { ...LibraryVideo } }`, [VIDEO_FIELDS]);
const LIBRARY = graphql(
  `query Library {
    videos(first: 50, filter: { mine: true }) { edges { node { ...LibraryVideo } } pageInfo { hasNextPage } }
  }`,
  [VIDEO_FIELDS],
);

const STATUS_LABEL: Record<VideoStatus, string> = {
  DRAFT: 'Draft',
  UPLOADING: 'Uploading',
  PROCESSING: 'Processing',
  READY: 'Ready',
  FAILED: 'Failed',
};

const STAGE_LABEL: Record<string, string> = {
  probing: 'Inspecting',
  encoding: 'Encoding',
  packaging: 'Packaging',
  uploading: 'Storing',
};

function progressBar(label: string, percent: number, cls = ''): HTMLProgressElement {
  const bar = h('progress', { max: 100, 'aria-label': label, class: cls });
  bar.value = Math.max(0, Math.min(100, percent));
  bar.textContent = `${Math.round(percent)}%`;
  return bar;
}

function encodingSummary(p: Progress): string {
  const parts = [`${STAGE_LABEL[p.stage] ?? p.stage} ${Math.floor(p.percent)}%`];
  if (p.fps) parts.push(`${Math.round(p.fps)} fps`);
  if (p.etaSeconds !== null && p.etaSeconds !== undefined) parts.push(`about ${formatDuration(p.etaSeconds)} left`);
  return parts.join(' · ');
}

export function libraryView(main: HTMLElement): Cleanup {
  const videos = new Map<string, { video: LibraryVideo; card: HTMLElement }>();
  const follows = new Map<string, () => void>();
  const uploadWatches = new Map<string, () => void>();
  const alert = alertBox();
  const announcer = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
  const grid = h('ul', { class: 'grid', 'aria-label': 'Your videos' });
  const empty = h(
    'p',
    { class: 'empty', hidden: true },
    'No videos yet. ',
    h('a', { href: '/upload', 'data-link': true }, 'Upload your first video'),
    '.',
  );
  let stopped = false;

  main.append(
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, 'Your videos'),
      h('a', { href: '/upload', 'data-link': true, class: 'button' }, 'Upload a video'),
    ),
    alert,
    announcer,
    empty,
    grid,
  );

  function uploadSection(video: LibraryVideo, upload: UploadController): HTMLElement {
    const pause = h('button', { type: 'button', class: 'secondary', onclick: () => upload.pause() }, 'Pause');
    const resume = h('button', { type: 'button', class: 'secondary', onclick: () => upload.resume() }, 'Resume');
    const text =
      upload.state === 'failed'
        ? 'Upload stopped.'
        : upload.state === 'finishing' || upload.state === 'done'
          ? 'Upload complete, checking the file…'
          : `${upload.state === 'paused' ? 'Paused at' : 'Uploading'} ${formatBytes(upload.bytesSent)} of ${formatBytes(upload.bytesTotal)} (${Math.floor(upload.percent)}%)`;
    return h(
      'div',
      { class: 'upload-progress' },
      progressBar(`Upload progress of ${video.title}`, upload.percent, 'upload-bar'),
      h('p', { class: 'meta' }, text),
      upload.state === 'failed' && upload.error ? h('p', { class: 'reason' }, upload.error) : null,
      upload.state === 'uploading' ? pause : null,
      upload.state === 'paused' || (upload.state === 'failed' && video.status === 'UPLOADING') ? resume : null,
    );
  }

  function resumeSection(video: LibraryVideo): HTMLElement | null {
    const pending = pendingUpload(video.id);
    if (!pending) return null;
    const input = h('input', { type: 'file', accept: 'video/*', id: `resume-${video.id}` });
    const err = h('p', { class: 'reason', role: 'alert', hidden: true });
    input.addEventListener('change', () => {
      const file = input.files?.[0];
      if (!file) return;
      try {
        resumeUpload(video.id, file);
        renderCard(video.id);
      } catch (e) {
        err.textContent = humanMessage(e);
        err.hidden = false;
      }
    });
    return h(
      'div',
      { class: 'upload-progress' },
      h('p', { class: 'meta' }, `The upload of “${pending.fileName}” (${formatBytes(pending.fileSize)}) was interrupted.`),
      h('label', { for: input.id, class: 'file-label' }, `Choose “${pending.fileName}” again to resume`),
      input,
      err,
    );
  }

  function renderCard(id: string): void {
    const entry = videos.get(id);
    if (!entry) return;
    const { video, card } = entry;
    const ready = video.status === 'READY';
    const watchHref = `/watch/${encodeURIComponent(video.id)}`;
    const thumb = video.thumbnailUrl
      ? h('img', { src: video.thumbnailUrl, alt: '', loading: 'lazy', width: 320, height: 180 })
      : h('div', { class: 'thumb-placeholder', 'aria-hidden': 'true' }, ready ? '▶' : video.status === 'FAILED' ? '⚠' : '…');
    const upload = activeUpload(video.id);
    if (upload && !uploadWatches.has(id)) uploadWatches.set(id, upload.onChange(() => renderCard(id)));

    let body: (HTMLElement | null)[] = [];
    const uploading =
      upload &&
      (upload.state === 'uploading' ||
        upload.state === 'paused' ||
        upload.state === 'finishing' ||
        (upload.state === 'done' && (video.status === 'UPLOADING' || video.status === 'DRAFT')) ||
        (upload.state === 'failed' && video.status !== 'FAILED'));
    if (upload && uploading) {
      body = [uploadSection(video, upload)];
    } else if (video.status === 'UPLOADING' || (video.status === 'DRAFT' && pendingUpload(video.id))) {
      body = [resumeSection(video) ?? h('p', { class: 'meta' }, 'Waiting for the upload to finish…')];
    } else if (video.status === 'PROCESSING') {
      const p = video.progress;
      body = [
        h(
          'div',
          { class: 'encode-progress' },
          progressBar(`Encoding progress of ${video.title}`, p?.percent ?? 0, 'encode-bar'),
          h('p', { class: 'meta' }, p ? encodingSummary(p) : 'Waiting for a worker…'),
          p?.renditions.length
            ? h(
                'ul',
                { class: 'renditions', 'aria-label': 'Renditions' },
                p.renditions.map((r) =>
                  h('li', {}, h('span', {}, r.name), progressBar(`${r.name} progress`, r.percent), h('span', {}, `${Math.floor(r.percent)}%`)),
                ),
              )
            : null,
        ),
      ];
    } else if (video.status === 'FAILED') {
      body = [h('p', { class: 'reason' }, video.error || !upload?.error ? failureReason(video.error) : upload.error)];
    } else if (ready) {
      body = [h('p', { class: 'meta' }, [formatDuration(video.duration), video.visibility.toLowerCase()].filter(Boolean).join(' · '))];
    }

    card.replaceChildren(
      ready ? h('a', { href: watchHref, 'data-link': true, class: 'thumb', tabindex: '-1', 'aria-hidden': 'true' }, thumb) : h('div', { class: 'thumb' }, thumb),
      h(
        'div',
        { class: 'card-body' },
        // A video being encoded opens too: its page plays it as soon as it is PLAYABLE.
        h('h2', {}, ready || video.status === 'PROCESSING' ? h('a', { href: watchHref, 'data-link': true }, video.title) : video.title),
        h('span', { class: 'badge', 'data-status': video.status }, STATUS_LABEL[video.status] ?? video.status),
        ...body,
      ),
    );
  }

  async function refreshVideo(id: string): Promise<void> {
    try {
      const data = await gql(VIDEO, { id });
      const entry = videos.get(id);
      if (!entry || stopped) return;
      if (!data.video) {
        entry.card.remove();
        videos.delete(id);
        return;
      }
      entry.video = data.video;
      renderCard(id);
    } catch {
      /* the live event already updated the card; the thumbnail comes on the next visit */
    }
  }

  function onEvent(id: string, event: VideoEvent): void {
    const entry = videos.get(id);
    if (!entry) return;
    const before = entry.video.status;
    entry.video.status = event.status;
    if (event.progress) entry.video.progress = event.progress;
    if (event.error) entry.video.error = event.error;
    renderCard(id);
    if (before !== event.status) {
      if (event.status === 'READY') {
        announcer.textContent = `“${entry.video.title}” is ready to watch.`;
        void refreshVideo(id);
      } else if (event.status === 'FAILED') {
        announcer.textContent = `“${entry.video.title}” failed: ${failureReason(event.error)}`;
        forgetPending(id);
      }
    }
  }

  function follow(id: string): void {
    if (follows.has(id)) return;
    follows.set(
      id,
      followVideo(
        id,
        (event) => onEvent(id, event),
        () => follows.delete(id),
      ),
    );
  }

  async function load(): Promise<void> {
    try {
      const data = await gql(LIBRARY);
      if (stopped) return;
      const list = data.videos.edges.map((e) => e.node);
      empty.hidden = list.length > 0;
      for (const video of list) {
        const card = h('li', { class: 'video-card', 'data-video-id': video.id });
        videos.set(video.id, { video, card });
        grid.append(card);
        renderCard(video.id);
        if (video.status === 'UPLOADING' || video.status === 'PROCESSING' || activeUpload(video.id)) follow(video.id);
      }
      if (data.videos.pageInfo.hasNextPage) main.append(h('p', { class: 'meta' }, 'Showing your 50 newest videos.'));
    } catch (err) {
      alert.show(humanMessage(err));
    }
  }

  grid.setAttribute('aria-busy', 'true');
  void load().finally(() => grid.removeAttribute('aria-busy'));

  return () => {
    stopped = true;
    for (const stop of follows.values()) stop();
    for (const stop of uploadWatches.values()) stop();
  };
}
