// The player: HLS through hls.js (or the browser's own HLS), MP4 as the
// fallback, and a seek slider with storyboard previews.

import type HlsType from 'hls.js';
import { formatDuration, h } from '../dom';
import { failureReason, humanMessage } from '../errors';
import { followVideo } from '../live';
import type { Cleanup } from '../router';
import { graphql, type ResultOf } from '../graphql';
import { gql } from '../session';
import { cueAt, loadStoryboard, type StoryboardCue } from '../storyboard';

const WATCH = graphql(`query Watch($id: ID!) { video(id: $id) {
  id title description status visibility duration width height error
  playbackUrl mp4Url thumbnailUrl storyboardUrl renditions { name width height bitrate playlistUrl }
  downloads { format url width height size }
} }`);
const RECORD_VIEW = graphql(
  `mutation View($id: ID!, $s: Float) { recordView(videoId: $id, watchedSeconds: $s) { counted } }`,
);

type PlayerVideo = NonNullable<ResultOf<typeof WATCH>['video']>;

export function playerView(main: HTMLElement, params: Record<string, string>): Cleanup {
  // What the current rendering holds (a player, a subscription): released before
  // the next one and when the page goes.
  const cleanups: (() => void)[] = [];
  let stopped = false;
  // Where the early rendition was when the whole ladder arrived: playback goes on there.
  let resumeAt = 0;
  // Looked again once the live feed was open: a PLAYABLE between the first query and
  // the subscription is in no snapshot.
  let caughtUp = false;
  const release = () => {
    for (const fn of cleanups.splice(0)) fn();
  };
  const heading = h('h1', {}, 'Loading…');
  const body = h('div', { class: 'player-page' });
  main.append(h('p', {}, h('a', { href: '/', 'data-link': true }, '← Library')), heading, body);

  async function load(): Promise<void> {
    let video: PlayerVideo | null;
    try {
      video = (await gql(WATCH, { id: params.id })).video;
    } catch (err) {
      body.replaceChildren(h('p', { class: 'alert', role: 'alert' }, humanMessage(err)));
      return;
    }
    if (stopped) return;
    if (!video) {
      heading.textContent = 'Video not found';
      body.replaceChildren(h('p', {}, 'It may have been deleted, or you may not have access to it.'));
      return;
    }
    heading.textContent = video.title;
    document.title = `${video.title} · reelhouse`;
    release();
    // While the ladder is encoded, its lowest rendition already plays (its playlist
    // grows until the video is READY).
    const early =
      video.status === 'PROCESSING' ? (video.renditions.find((r) => r.playlistUrl) ?? null) : null;
    if (video.status !== 'READY' && !early) {
      renderNotReady(video);
      return;
    }
    // hls.js is most of the app's weight: fetched only when something plays.
    let Hls: typeof HlsType | null = null;
    try {
      Hls = (await import('hls.js')).default;
    } catch {
      Hls = null;
    }
    if (!stopped) renderPlayer(video, Hls, video.status === 'READY' ? null : early);
  }

  function renderNotReady(video: PlayerVideo): void {
    const status = h('p', { role: 'status' });
    status.textContent =
      video.status === 'FAILED'
        ? `This video could not be processed. ${failureReason(video.error)}`
        : video.status === 'PROCESSING'
          ? 'This video is still being encoded. It will start playing here as soon as its first seconds are.'
          : 'This video has not been uploaded yet.';
    body.replaceChildren(status);
    if (video.status === 'PROCESSING' || video.status === 'UPLOADING') {
      cleanups.push(
        followVideo(video.id, (event) => {
          if (stopped) return;
          if (event.status === 'READY' || event.kind === 'PLAYABLE') {
            void load();
            return;
          }
          if (event.snapshot && event.status === 'PROCESSING' && !caughtUp) {
            caughtUp = true;
            void load();
            return;
          }
          if (event.progress) status.textContent = `Encoding: ${Math.floor(event.progress.percent)}% done.`;
          else if (event.status === 'FAILED') status.textContent = `This video could not be processed. ${failureReason(event.error)}`;
        }),
      );
    }
  }

  /** The player, on the master playlist, or on `early` (the lowest rendition, still
   * growing) until the video is READY. */
  function renderPlayer(
    video: PlayerVideo,
    Hls: typeof HlsType | null,
    early: PlayerVideo['renditions'][number] | null,
  ): void {
    const source = video.playbackUrl ?? early?.playlistUrl ?? null;
    const el = h('video', {
      controls: true,
      playsinline: true,
      preload: 'metadata',
      poster: video.thumbnailUrl ?? undefined,
      'aria-label': `Video: ${video.title}`,
    });
    const engine = h('p', { class: 'meta engine' });
    const problem = h('p', { class: 'alert', role: 'alert', hidden: true });

    // The single-file fallback: the MP4, else the WebM (when only that was made).
    const webm = video.downloads.find((d) => d.format === 'WEBM')?.url ?? null;
    const useMp4 = (why: string) => {
      const file = video.mp4Url ?? webm;
      if (!file) {
        problem.textContent = 'This browser cannot play this video.';
        problem.hidden = false;
        return;
      }
      el.src = file;
      el.dataset.engine = video.mp4Url ? 'mp4' : 'webm';
      engine.textContent = `Playing the ${video.mp4Url ? 'MP4' : 'WebM'} download (${why}).`;
    };

    const streaming = early
      ? `Playing ${early.name} while the rest is encoded`
      : 'Adaptive streaming';
    if (source && Hls?.isSupported()) {
      // A growing (EVENT) playlist plays from its start, not from its live edge.
      const hls = new Hls({ capLevelToPlayerSize: true, startPosition: 0 });
      hls.loadSource(source);
      hls.attachMedia(el);
      el.dataset.engine = 'hls.js';
      engine.textContent = `${streaming} (HLS via hls.js).`;
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        hls.destroy();
        useMp4('adaptive streaming failed');
      });
      hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => {
        const level = hls.levels[data.level];
        if (level) engine.textContent = `Adaptive streaming (HLS via hls.js), now ${level.height}p.`;
      });
      cleanups.push(() => hls.destroy());
    } else if (source && el.canPlayType('application/vnd.apple.mpegurl')) {
      el.src = source;
      el.dataset.engine = 'native-hls';
      engine.textContent = `${streaming} (native HLS).`;
      el.addEventListener('error', () => useMp4('native streaming failed'), { once: true });
    } else {
      useMp4('no HLS support in this browser');
    }

    if (resumeAt > 0) {
      const at = resumeAt;
      resumeAt = 0;
      el.addEventListener('loadedmetadata', () => (el.currentTime = at), { once: true });
    }
    if (early) {
      el.dataset.early = early.name;
      // The whole ladder replaces the early rendition once READY, where playback was.
      cleanups.push(
        followVideo(video.id, (event) => {
          if (event.status !== 'READY' || stopped) return;
          resumeAt = el.currentTime;
          void load();
        }),
      );
    }
    const scrub = scrubber(el, video);
    cleanups.push(scrub.stop);
    cleanups.push(viewBeacon(el, video.id));

    body.replaceChildren(
      h('div', { class: 'player' }, el),
      scrub.element,
      problem,
      engine,
      video.description ? h('p', {}, video.description) : '',
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Length'),
        h('dd', {}, formatDuration(video.duration)),
        h('dt', {}, 'Source'),
        h('dd', {}, video.width && video.height ? `${video.width}×${video.height}` : '—'),
        h('dt', {}, 'Renditions'),
        h('dd', {}, video.renditions.map((r) => `${r.name} (${Math.round(r.bitrate / 1000)} kbit/s)`).join(', ') || '—'),
        h('dt', {}, 'Visibility'),
        h('dd', {}, video.visibility.toLowerCase()),
      ),
      downloadLinks(video),
    );
  }

  void load();
  return () => {
    stopped = true;
    release();
  };
}

/** Links to the MP4/WebM downloads the transcode made (the MP4 of a video
 * transcoded before downloads were listed, when that is all there is). */
function downloadLinks(video: PlayerVideo): HTMLElement | string {
  const links = video.downloads.map((d) => {
    const label = d.format === 'WEBM' ? 'WebM' : 'MP4';
    const mb = (d.size / 1_000_000).toFixed(1);
    return h('a', { href: d.url, download: '', class: 'download' }, `Download ${label} (${d.width}×${d.height}, ${mb} MB)`);
  });
  if (links.length === 0 && video.mp4Url) {
    links.push(h('a', { href: video.mp4Url, download: '', class: 'download' }, 'Download MP4'));
  }
  if (links.length === 0) return '';
  const p = h('p', { class: 'downloads' });
  links.forEach((link, i) => {
    if (i > 0) p.append(' · ');
    p.append(link);
  });
  return p;
}

/** A seek slider; hovering or moving it shows the storyboard frame for that moment. */
function scrubber(el: HTMLVideoElement, video: PlayerVideo): { element: HTMLElement; stop: () => void } {
  const duration = video.duration ?? 0;
  const range = h('input', {
    type: 'range',
    min: 0,
    max: duration.toFixed(2),
    step: 0.1,
    value: 0,
    id: 'seek',
    'aria-valuetext': '0:00',
  });
  const preview = h('div', { class: 'scrub-preview', hidden: true, 'aria-hidden': 'true' });
  const frame = h('div', { class: 'scrub-frame' });
  const time = h('span', { class: 'scrub-time' });
  preview.append(frame, time);
  let cues: StoryboardCue[] = [];
  let dragging = false;

  if (video.storyboardUrl) {
    void loadStoryboard(video.storyboardUrl)
      .then((loaded) => (cues = loaded))
      .catch(() => (cues = []));
  }

  const show = (t: number) => {
    const ratio = duration > 0 ? t / duration : 0;
    preview.style.left = `${Math.min(100, Math.max(0, ratio * 100))}%`;
    time.textContent = formatDuration(t);
    const cue = cueAt(cues, t);
    if (cue) {
      frame.style.width = `${cue.w}px`;
      frame.style.height = `${cue.h}px`;
      frame.style.backgroundImage = `url("${cue.url}")`;
      frame.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
      frame.hidden = false;
    } else {
      frame.hidden = true;
    }
    preview.hidden = false;
  };
  const hide = () => {
    if (!dragging) preview.hidden = true;
  };

  range.addEventListener('pointermove', (e) => {
    const rect = range.getBoundingClientRect();
    show(Math.max(0, Math.min(1, (e.clientX - rect.left) / rect.width)) * duration);
  });
  range.addEventListener('pointerleave', hide);
  range.addEventListener('pointerdown', () => (dragging = true));
  range.addEventListener('pointerup', () => {
    dragging = false;
    hide();
  });
  range.addEventListener('input', () => {
    const t = Number(range.value);
    show(t);
    el.currentTime = t;
    range.setAttribute('aria-valuetext', formatDuration(t));
  });
  range.addEventListener('focus', () => show(Number(range.value)));
  range.addEventListener('blur', () => (preview.hidden = true));
  const onTime = () => {
    if (dragging || document.activeElement === range) return;
    range.value = String(el.currentTime);
    range.setAttribute('aria-valuetext', formatDuration(el.currentTime));
  };
  el.addEventListener('timeupdate', onTime);

  const element = h(
    'div',
    { class: 'scrubber' },
    h('label', { for: range.id }, 'Seek (with preview)'),
    h('div', { class: 'scrub-track' }, preview, range),
  );
  return { element, stop: () => el.removeEventListener('timeupdate', onTime) };
}

/** Count the view when playback starts, then report watch time every 15 s. */
function viewBeacon(el: HTMLVideoElement, videoId: string): () => void {
  let watched = 0;
  let lastTick = 0;
  let started = false;
  const send = (seconds: number) =>
    gql(RECORD_VIEW, { id: videoId, s: seconds }).catch(() => undefined);
  const onPlaying = () => {
    lastTick = performance.now();
    if (!started) {
      started = true;
      void send(0);
    }
  };
  const accumulate = () => {
    if (lastTick && !el.paused) watched += (performance.now() - lastTick) / 1000;
    lastTick = el.paused ? 0 : performance.now();
  };
  const timer = window.setInterval(() => {
    accumulate();
    if (watched >= 1) {
      void send(Math.round(watched));
      watched = 0;
    }
  }, 15_000);
  el.addEventListener('playing', onPlaying);
  el.addEventListener('pause', accumulate);
  return () => {
    window.clearInterval(timer);
    el.removeEventListener('playing', onPlaying);
    el.removeEventListener('pause', accumulate);
  };
}

