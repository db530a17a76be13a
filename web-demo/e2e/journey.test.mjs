// End-to-end: a person's whole journey through the web app in headless
// Chromium, against a real reelhouse server (started by scripts/test-web.sh).
//
//   REELHOUSE_URL     the server, e.g. http://127.0.0.1:38080
//   E2E_CLIP          a small H.264/AAC MP4 to upload
//   E2E_BAD_FILE      bytes that are not media, named *.mp4
//   E2E_ARTIFACTS     where screenshots and measurements go
//   E2E_LABEL         names this run in artifact file names (sqlite, s3, ...)
//   E2E_LONG_CLIP     a longer clip, for cancelling a job while it encodes
//   E2E_EARLY_CLIP    a long 720p clip, played in the page before it is Ready
//   E2E_MAIL_DIR      where the server's mails land: new accounts confirm their
//                     address through the mailed link before they upload
//   E2E_ADMIN_EMAIL, E2E_ADMIN_PASSWORD  an admin (reelhouse create-admin);
//                     without them the admin test is skipped
//   E2E_EXPECT_REFRESH=1  the server's access tokens are short-lived: the app
//                     must have refreshed its session during the journey
//   CHROMIUM          the browser binary (default /usr/bin/chromium)

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { waitForMailLink } from './accounts-helpers.mjs';

const BASE = process.env.REELHOUSE_URL ?? 'http://127.0.0.1:8080';
const CLIP = process.env.E2E_CLIP;
const BAD_FILE = process.env.E2E_BAD_FILE;
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? 'test-artifacts';
const LABEL = process.env.E2E_LABEL ?? 'run';
const EXPECT_REFRESH = process.env.E2E_EXPECT_REFRESH === '1';
const LONG_CLIP = process.env.E2E_LONG_CLIP;
const EARLY_CLIP = process.env.E2E_EARLY_CLIP;
const ADMIN_EMAIL = process.env.E2E_ADMIN_EMAIL;
const ADMIN_PASSWORD = process.env.E2E_ADMIN_PASSWORD;
const READY_TIMEOUT = 150_000;

assert.ok(CLIP, 'E2E_CLIP must name the clip to upload');
assert.ok(BAD_FILE, 'E2E_BAD_FILE must name a file that is not media');
mkdirSync(ARTIFACTS, { recursive: true });

let browser;

async function shot(page, name) {
  const path = join(ARTIFACTS, `${LABEL}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** A page that records what the person could not see: console errors, failed requests. */
const openPages = new Set();

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, baseURL: BASE });
  const page = await context.newPage();
  openPages.add(page);
  context.on('close', () => openPages.delete(page));
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  return { context, page, problems };
}

async function signUp(page, who) {
  await page.goto('/');
  // Signed out, the app asks to sign in; new people follow the link to sign up.
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  await page.getByRole('link', { name: 'Create an account' }).click();
  const email = `${who}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Display name').fill(`E2E ${who}`);
  await page.getByLabel('Password').fill('correct horse battery staple 42');
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('heading', { name: 'Your videos' }).waitFor();
  // Uploads need a confirmed address: open the link the server mailed.
  const { link } = await waitForMailLink(email, '/verify-email');
  await page.goto(link);
  await page.getByText(`${email} is confirmed`).waitFor();
  await page.getByRole('link', { name: 'Go to your videos' }).click();
  await page.getByRole('heading', { name: 'Your videos' }).waitFor();
  return email;
}

function card(page, title) {
  return page.locator('li.video-card').filter({ has: page.getByRole('heading', { name: title }) });
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required', '--mute-audio'],
  });
});

// A test that failed left its page open: keep a picture of what it showed.
afterEach(async (t) => {
  let i = 0;
  for (const page of openPages) {
    i += 1;
    await page
      .screenshot({ path: join(ARTIFACTS, `${LABEL}-FAILED-${t.name.replace(/\W+/g, '-').slice(0, 40)}-${i}.png`), fullPage: true })
      .catch(() => undefined);
    await page.context().close().catch(() => undefined);
  }
  openPages.clear();
});

after(async () => {
  await browser?.close();
});

describe(`web demo (${LABEL})`, () => {
  test('sign up, upload through the page, watch it become Ready live, play it, sign out', { timeout: 240_000 }, async () => {
    const { context, page, problems } = await newPage();
    const refreshes = [];
    page.on('request', (req) => {
      if (req.url().endsWith('/graphql') && (req.postData() ?? '').includes('refreshToken(')) refreshes.push(Date.now());
    });

    // What this Chromium can decode, for the report (HLS segments are MPEG-TS H.264 + AAC).
    await page.goto('/');
    const codecs = await page.evaluate(() => {
      const types = {
        'video/mp4; codecs="avc1.42E01E,mp4a.40.2"': 0,
        'video/mp4; codecs="avc1.64001F"': 0,
        'video/mp4; codecs="mp4a.40.2"': 0,
        'video/webm; codecs="vp9,opus"': 0,
        'video/webm; codecs="vp8,vorbis"': 0,
      };
      const v = document.createElement('video');
      return {
        mse: Object.fromEntries(Object.keys(types).map((t) => [t, window.MediaSource?.isTypeSupported(t) ?? false])),
        canPlayType: {
          'video/mp4; codecs="avc1.42E01E,mp4a.40.2"': v.canPlayType('video/mp4; codecs="avc1.42E01E,mp4a.40.2"'),
          'application/vnd.apple.mpegurl': v.canPlayType('application/vnd.apple.mpegurl'),
        },
        userAgent: navigator.userAgent,
      };
    });
    writeFileSync(join(ARTIFACTS, `${LABEL}-codecs.json`), JSON.stringify(codecs, null, 2));
    console.log(`# codecs: ${JSON.stringify(codecs.mse)}`);

    await signUp(page, 'journey');
    const signedUpAt = Date.now();
    // Opening the mailed link loaded the page afresh, which resumed the session
    // with a refresh: count only the refreshes the app makes on its own from here.
    refreshes.length = 0;
    await shot(page, '1-library-empty');

    // Upload through the form, with the upload slowed so its progress is visible.
    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    await page.getByRole('heading', { name: 'Upload a video' }).waitFor();
    const title = `Test pattern ${LABEL} ${Date.now()}`;
    await page.getByLabel('Video file').setInputFiles(CLIP);
    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Visibility').selectOption('PRIVATE');
    await shot(page, '2-upload-form');

    // Sample, inside the page, every bar value and badge the person could have seen.
    await page.evaluate((t) => {
      window.__e2eNoReload = true;
      window.__samples = { upload: [], encode: [], badges: [], encodeText: [], renditions: [] };
      setInterval(() => {
        const c = [...document.querySelectorAll('li.video-card')].find((li) => li.querySelector('h2')?.textContent === t);
        if (!c) return;
        const up = c.querySelector('progress.upload-bar');
        const enc = c.querySelector('progress.encode-bar');
        const badge = c.querySelector('.badge')?.textContent;
        const s = window.__samples;
        if (up) s.upload.push(up.value);
        if (enc) s.encode.push(enc.value);
        if (badge && s.badges[s.badges.length - 1] !== badge) s.badges.push(badge);
        const text = c.querySelector('.encode-progress .meta')?.textContent;
        if (text && s.encodeText[s.encodeText.length - 1] !== text) s.encodeText.push(text);
        for (const li of c.querySelectorAll('.renditions li')) {
          const name = li.querySelector('span')?.textContent;
          if (name && !s.renditions.includes(name)) s.renditions.push(name);
        }
      }, 40);
    }, title);

    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 20,
      downloadThroughput: -1,
      uploadThroughput: 64 * 1024,
    });

    await page.getByRole('button', { name: 'Upload' }).click();
    await page.getByRole('heading', { name: 'Your videos' }).waitFor();
    const videoCard = card(page, title);
    await videoCard.waitFor();

    // Pause part-way, check the bar holds still, resume.
    const bar = videoCard.locator('progress.upload-bar');
    await page.waitForFunction(
      (t) => {
        const c = [...document.querySelectorAll('li.video-card')].find((li) => li.querySelector('h2')?.textContent === t);
        const v = c?.querySelector('progress.upload-bar')?.value ?? 0;
        return v > 5 && v < 90;
      },
      title,
      { timeout: 30_000 },
    );
    await shot(page, '3-uploading');
    await videoCard.getByRole('button', { name: 'Pause' }).click();
    await videoCard.getByText(/Paused at/).waitFor();
    const pausedAt = await bar.evaluate((el) => el.value);
    await page.waitForTimeout(1200);
    assert.equal(await bar.evaluate((el) => el.value), pausedAt, 'a paused upload does not move');
    await shot(page, '4-paused');
    await videoCard.getByRole('button', { name: 'Resume' }).click();
    // A picture of the live encoding progress, if the page is quick enough to catch it.
    await videoCard.locator('.renditions, .badge[data-status="READY"]').first().waitFor({ timeout: READY_TIMEOUT });
    if (await videoCard.locator('.renditions').isVisible()) await shot(page, '5a-encoding');

    // Encoding progress arrives over the subscription and ends in Ready, without a reload.
    await videoCard.locator('.badge', { hasText: 'Ready' }).waitFor({ timeout: READY_TIMEOUT });
    // The in-page sampler ticks every 40 ms: let it record the badge just seen.
    await page.waitForFunction(() => window.__samples.badges.at(-1) === 'Ready', null, { timeout: 5_000 });
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const samples = await page.evaluate(() => window.__samples);
    assert.equal(await page.evaluate(() => window.__e2eNoReload), true, 'the page was never reloaded');
    const uploadValues = samples.upload;
    console.log(
      `# upload bar: ${uploadValues.length} samples, ${new Set(uploadValues).size} distinct values; ` +
        `encode bar: ${samples.encode.length} samples, max ${Math.max(0, ...samples.encode)}; badges ${samples.badges.join(' → ')}`,
    );
    const firstMoving = uploadValues.findIndex((v) => v > 0);
    assert.ok(firstMoving >= 0, 'the upload bar moved off zero');
    assert.ok(
      uploadValues.some((v, i) => i > firstMoving && v > uploadValues[firstMoving]),
      `the upload bar value increased: ${uploadValues.slice(0, 20).join(',')}`,
    );
    assert.ok(new Set(uploadValues.filter((v) => v > 0 && v < 100)).size >= 2, 'the bar showed intermediate progress');
    assert.ok(samples.badges.includes('Processing'), `Processing was shown before Ready: ${samples.badges}`);
    console.log(`# encoding texts seen: ${samples.encodeText.slice(0, 6).join(' | ')}; renditions: ${samples.renditions}`);
    assert.ok(samples.encode.some((v) => v > 0), 'live encoding progress was shown');
    assert.ok(samples.encodeText.some((t) => /Encoding \d+%/.test(t)), 'the encoding stage and percent were shown');
    assert.equal(samples.badges[samples.badges.length - 1], 'Ready');
    await videoCard.locator('img').waitFor({ timeout: 10_000 });
    await videoCard.locator('img').evaluate(
      (img) =>
        new Promise((resolve, reject) => {
          if (img.complete && img.naturalWidth > 0) resolve(true);
          img.addEventListener('load', () => resolve(true));
          img.addEventListener('error', () => reject(new Error(`thumbnail failed to load: ${img.src}`)));
        }),
    );
    await shot(page, '5-ready');

    // Play it.
    await videoCard.getByRole('link', { name: title }).click();
    await page.getByRole('heading', { name: title }).waitFor();
    const video = page.locator('video');
    await video.waitFor();
    const engine = await video.getAttribute('data-engine');
    await video.evaluate((v) => v.play());
    await page.waitForFunction(() => (document.querySelector('video')?.currentTime ?? 0) > 0.5, null, { timeout: 30_000 });
    const playback = await video.evaluate((v) => ({
      currentTime: v.currentTime,
      engine: v.dataset.engine,
      videoWidth: v.videoWidth,
      error: v.error?.message ?? null,
    }));
    console.log(`# playback: ${JSON.stringify(playback)}`);
    writeFileSync(join(ARTIFACTS, `${LABEL}-playback.json`), JSON.stringify({ engine, ...playback }, null, 2));
    assert.ok(playback.currentTime > 0, 'currentTime advances');
    assert.ok(playback.videoWidth > 0, 'frames were decoded');

    // The storyboard preview follows the pointer over the seek slider.
    const seek = page.getByLabel('Seek (with preview)');
    const box = await seek.boundingBox();
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
    const preview = page.locator('.scrub-preview');
    await preview.waitFor({ state: 'visible' });
    await page.waitForFunction(() => (document.querySelector('.scrub-frame')?.style.backgroundImage ?? '').includes('url('), null, {
      timeout: 10_000,
    });
    await shot(page, '6-playing');

    if (EXPECT_REFRESH) {
      // A quick run can reach this point before the first refresh is due (at 80 % of
      // the 8 s token's life): wait for the app's own refresh rather than racing it,
      // until the first access token has certainly expired.
      const expired = signedUpAt + 10_000;
      while (Date.now() < expired) await page.waitForTimeout(250);
      assert.ok(refreshes.length >= 1, 'the short-lived access token was refreshed by the app');
      console.log(`# session refreshed ${refreshes.length} time(s) during the journey`);
      // With the first token long expired, the app still works without asking anyone to sign in.
      await page.getByRole('link', { name: 'Library', exact: true }).click();
      await card(page, title).locator('.badge', { hasText: 'Ready' }).waitFor({ timeout: 10_000 });
    }
    // The access token never reaches storage; only the refresh token does.
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }));
    assert.ok(!stored.includes('accessToken') && !/eyJ[\w-]+\.eyJ/.test(stored), 'no access token in storage');

    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/signin');
    assert.equal(await page.evaluate(() => localStorage.getItem('reelhouse.refreshToken')), null);
    await shot(page, '7-signed-out');

    assert.deepEqual(problems.filter((p) => !p.includes('favicon')), [], 'no errors in the page');
    await context.close();
  });

  test('an upload interrupted by a page reload continues from where it stopped', { timeout: 120_000 }, async () => {
    const { context, page } = await newPage();
    await signUp(page, 'reload');
    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    const title = `Reloaded ${LABEL}`;
    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Video file').setInputFiles(CLIP);
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 64 * 1024 });
    await page.getByRole('button', { name: 'Upload' }).click();
    const bar = card(page, title).locator('progress.upload-bar');
    await bar.waitFor();
    await page.waitForFunction(() => (document.querySelector('progress.upload-bar')?.value ?? 0) > 45, null, { timeout: 30_000 });

    await page.reload();
    const offsets = [];
    page.on('request', (req) => {
      if (req.method() === 'PATCH' && req.url().includes('/uploads/')) offsets.push(Number(req.headers()['upload-offset']));
    });
    const resume = card(page, title).getByLabel(/again to resume/);
    await resume.waitFor();
    await shot(page, '9-resume-after-reload');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await resume.setInputFiles(CLIP);
    await card(page, title).locator('.badge', { hasText: /Processing|Ready/ }).waitFor({ timeout: 60_000 });
    // The resumed upload started at the offset the server had, not at zero.
    console.log(`# PATCH offsets after the reload: ${offsets.join(', ')}`);
    assert.ok(offsets.length > 0 && offsets[0] > 0, `resumed part-way: ${offsets}`);
    await context.close();
  });

  test('a file that is not a video fails with its reason, readable on a phone', { timeout: 120_000 }, async () => {
    const { context, page } = await newPage({ width: 375, height: 740 });
    await signUp(page, 'broken');
    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    const title = `Not a video ${LABEL}`;
    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Video file').setInputFiles(BAD_FILE);
    await page.getByRole('button', { name: 'Upload' }).click();

    const videoCard = card(page, title);
    await videoCard.locator('.badge', { hasText: 'Failed' }).waitFor({ timeout: 60_000 });
    const reason = (await videoCard.locator('.reason').first().textContent()).trim();
    console.log(`# failure shown: ${reason}`);
    assert.ok(reason.length > 10, `a reason is shown: "${reason}"`);
    assert.doesNotMatch(reason, /UNSUPPORTED_MEDIA|BAD_USER_INPUT|INTERNAL|undefined|\[object/, 'words, not codes');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at phone width (overflow ${overflow}px)`);
    await shot(page, '8-failed-upload-phone');

    // The same reason on a reload (it is the server's, not the page's).
    await page.reload();
    await card(page, title).locator('.badge', { hasText: 'Failed' }).waitFor();
    assert.ok(((await card(page, title).locator('.reason').textContent()) ?? '').trim().length > 10);
    await context.close();
  });

  test('a session ended elsewhere sends the person to sign in, saying why', { timeout: 60_000 }, async () => {
    const { context, page } = await newPage();
    const email = await signUp(page, 'revoked');
    // The same person signs in elsewhere and ends every session.
    const gql = async (query, variables, token) => {
      const res = await fetch(`${BASE}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      const body = await res.json();
      assert.ok(!body.errors, JSON.stringify(body.errors));
      return body.data;
    };
    const login = await gql('mutation($i: LoginInput!) { login(input: $i) { accessToken } }', {
      i: { email, password: 'correct horse battery staple 42' },
    });
    await gql('mutation { revokeAllSessions }', {}, login.login.accessToken);
    // The page finds out at its next refresh (its access token lives 8 s here) or request.
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 30_000 });
    await page.getByText('Your session has ended').waitFor();
    await shot(page, '12-session-ended');
    await context.close();
  });

  test('a long upload plays in the page while it is encoded, then as the whole ladder', { timeout: 240_000, skip: !EARLY_CLIP }, async () => {
    const { context, page } = await newPage();
    await signUp(page, 'early');
    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    const title = `Early ${LABEL}`;
    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Video file').setInputFiles(EARLY_CLIP);
    await page.getByRole('button', { name: 'Upload' }).click();
    const videoCard = card(page, title);
    await videoCard.locator('.badge', { hasText: 'Processing' }).waitFor({ timeout: 60_000 });
    // Open it while it is encoded: the page waits for PLAYABLE, then plays the lowest
    // rendition's growing playlist (the element says which rendition it plays).
    await videoCard.getByRole('link', { name: title }).click();
    await page.getByRole('heading', { name: title, level: 1 }).waitFor();
    await page.waitForFunction(
      () => {
        const v = document.querySelector('video[data-early]');
        if (v?.paused) v.play().catch(() => undefined);
        return (v?.currentTime ?? 0) > 0.5 && v.videoWidth > 0;
      },
      null,
      { timeout: 90_000, polling: 100 },
    );
    const early = await page.locator('video[data-early]').getAttribute('data-early');
    console.log(`# played ${early} before Ready`);
    assert.match(early, /^\d+p$/);
    await shot(page, '12-playing-while-encoding');
    // READY: the whole ladder replaces it in the page, without a reload.
    await page.locator('video:not([data-early])').waitFor({ timeout: 120_000 });
    await page.waitForFunction(
      () => {
        const v = document.querySelector('video');
        if (v?.paused) v.play().catch(() => undefined);
        return (v?.currentTime ?? 0) > 0.5;
      },
      null,
      { timeout: 30_000, polling: 100 },
    );
    await context.close();
  });

  test('an admin sees the workers and cancels and retries a job', { timeout: 120_000, skip: !ADMIN_EMAIL || !LONG_CLIP }, async () => {
    const { context, page } = await newPage();
    await page.goto('/');
    await page.getByLabel('Email').fill(ADMIN_EMAIL);
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Your videos' }).waitFor();

    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    const title = `Long clip ${LABEL}`;
    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Video file').setInputFiles(LONG_CLIP);
    await page.getByRole('button', { name: 'Upload' }).click();
    const videoCard = card(page, title);
    await videoCard.waitFor();
    const videoId = await videoCard.getAttribute('data-video-id');

    await page.getByRole('link', { name: 'Jobs & workers' }).click();
    await page.getByRole('heading', { name: 'Jobs and workers' }).waitFor();
    const workers = page.locator('table', { has: page.locator('caption', { hasText: 'Workers' }) }).locator('tbody tr');
    await workers.first().waitFor();
    assert.doesNotMatch(await workers.first().textContent(), /No worker/, 'a worker has announced itself');

    const row = page.locator(`tr[data-video="${videoId}"]`).first();
    await row.getByRole('button', { name: 'Cancel' }).click({ timeout: 60_000 });
    await row.locator('.badge', { hasText: 'Cancelled' }).waitFor({ timeout: 30_000 });
    await shot(page, '10-admin-cancelled');
    await row.getByRole('button', { name: 'Retry' }).click();
    await row.locator('.badge', { hasText: /Queued|Running|Succeeded/ }).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator(`tr[data-video="${videoId}"]`).count(), 1, 'retry re-queues the same job');
    await shot(page, '11-admin-retried');

    // The job's log, live: the lines so far, then the retried run's lease arriving
    // after 'retried: queued again' while the panel is open.
    await row.getByRole('button', { name: 'Log' }).click();
    const log = page.locator('ol.job-log');
    await log.locator('li', { hasText: 'retried: queued again' }).waitFor({ timeout: 30_000 });
    await page.waitForFunction(
      () => {
        const items = [...document.querySelectorAll('ol.job-log li')];
        const retried = items.findIndex((li) => li.textContent.includes('retried: queued again'));
        return retried >= 0 && items.slice(retried + 1).some((li) => /leased by \S+/.test(li.textContent));
      },
      null,
      { timeout: 60_000 },
    );
    const cursors = await log.locator('li:not([data-final])').evaluateAll((items) => items.map((li) => Number(li.dataset.cursor)));
    assert.deepEqual(cursors, [...cursors].sort((a, b) => a - b), 'lines in order');
    assert.equal(new Set(cursors).size, cursors.length, 'each line once');
    assert.doesNotMatch(await log.textContent(), /leased by a worker/, 'an admin sees which worker');
    await shot(page, '11b-admin-job-log');
    await context.close();
  });
});
