// The stock tus-js-client (Node) against a live reelhouse server, one upload per
// tus extension: parallelUploads (concatenation), uploadDataDuringCreation
// (creation-with-upload), uploadLengthDeferred (creation-defer-length),
// overridePatchMethod (X-HTTP-Method-Override) and a resume whose HEAD shows the
// metadata. Each video must end READY. Usage: node tus.mjs BASE_URL CLIP NAME
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { Upload } from 'tus-js-client';

const [base, clipPath, name] = process.argv.slice(2);
const clip = readFileSync(clipPath);
const endpoint = `${base}/uploads/`;
const log = (...args) => console.error(`tus-js ${name}:`, ...args);
const CHUNK = 16 * 1024; // the clip is ~65 KB: several PATCHes

async function gql(query, variables, token) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) throw new Error(`${query.slice(0, 40)}…: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const email = `tus-js-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
const { register } = await gql(
  'mutation($i: RegisterInput!) { register(input: $i) { accessToken } }',
  { i: { email, password: 'correct horse battery 9', displayName: 'tus-js' } },
);
const token = register.accessToken;

async function newVideo(title) {
  const data = await gql('mutation($i: CreateVideoInput!) { createVideo(input: $i) { id } }', { i: { title, visibility: 'PRIVATE' } }, token);
  return data.createVideo.id;
}

/** Run one tus-js-client upload; resolves with the requests it saw. */
function upload(input, options) {
  const seen = [];
  return new Promise((resolve, reject) => {
    const up = new Upload(input, {
      endpoint,
      headers: { Authorization: `Bearer ${token}` },
      retryDelays: [0, 500, 1000],
      onBeforeRequest(req) {
        seen.push({ req, method: req.getMethod(), url: req.getURL(), headers: { ...req._headers } });
      },
      onAfterResponse(req, res) {
        const entry = seen.findLast((s) => s.req === req);
        if (entry) {
          entry.status = res.getStatus();
          entry.response = {
            offset: res.getHeader('Upload-Offset'),
            metadata: res.getHeader('Upload-Metadata'),
            concat: res.getHeader('Upload-Concat'),
          };
        }
      },
      onError: reject,
      onSuccess: () => resolve({ seen, url: up.url }),
      ...options,
    });
    up.start();
  });
}

const decode = (raw) =>
  Object.fromEntries(
    (raw || '').split(',').filter(Boolean).map((pair) => {
      const [k, v] = pair.trim().split(' ');
      return [k, v ? Buffer.from(v, 'base64').toString('utf8') : ''];
    }),
  );
const header = (entry, name) => {
  const key = Object.keys(entry.headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key ? entry.headers[key] : undefined;
};
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const videos = {};
const scenarios = {
  async parallelUploads() {
    const videoId = await newVideo('parallel');
    videos.parallelUploads = videoId;
    const { seen } = await upload(clip, {
      parallelUploads: 3,
      metadata: { videoId, filename: 'clip.mp4', filetype: 'video/mp4' },
      metadataForPartialUploads: { videoId },
    });
    const partials = seen.filter((s) => s.method === 'POST' && header(s, 'Upload-Concat') === 'partial');
    const finals = seen.filter((s) => s.method === 'POST' && (header(s, 'Upload-Concat') || '').startsWith('final;'));
    check(partials.length === 3 && partials.every((p) => p.status === 201), '3 partial uploads created');
    check(finals.length === 1 && finals[0].status === 201, 'one final upload created');
  },
  async uploadDataDuringCreation() {
    const videoId = await newVideo('creation-with-upload');
    videos.uploadDataDuringCreation = videoId;
    const { seen } = await upload(clip, {
      uploadDataDuringCreation: true,
      chunkSize: CHUNK,
      metadata: { videoId, filename: 'clip.mp4', filetype: 'video/mp4' },
    });
    const create = seen.find((s) => s.method === 'POST');
    check(create.status === 201 && Number(create.response.offset) === CHUNK, `the POST stored the first ${CHUNK} bytes`);
    check(seen.some((s) => s.method === 'PATCH'), 'the rest went by PATCH');
  },
  async uploadLengthDeferred() {
    const videoId = await newVideo('deferred');
    videos.uploadLengthDeferred = videoId;
    // A stream: its length is unknown until it ends.
    const stream = Readable.from((function* () {
      for (let at = 0; at < clip.length; at += 10_000) yield clip.subarray(at, at + 10_000);
    })());
    const { seen } = await upload(stream, {
      uploadLengthDeferred: true,
      chunkSize: CHUNK,
      metadata: { videoId, filename: 'clip.mp4', filetype: 'video/mp4' },
    });
    const create = seen.find((s) => s.method === 'POST');
    check(header(create, 'Upload-Defer-Length') === '1' && header(create, 'Upload-Length') === undefined, 'created with Upload-Defer-Length');
    const named = seen.filter((s) => s.method === 'PATCH' && header(s, 'Upload-Length') !== undefined);
    check(named.length === 1 && Number(header(named[0], 'Upload-Length')) === clip.length, 'a PATCH named the length');
  },
  async overridePatchMethod() {
    const videoId = await newVideo('override');
    videos.overridePatchMethod = videoId;
    const { seen } = await upload(clip, {
      overridePatchMethod: true,
      chunkSize: CHUNK,
      metadata: { videoId, filename: 'clip.mp4', filetype: 'video/mp4' },
    });
    const writes = seen.filter((s) => header(s, 'X-HTTP-Method-Override') === 'PATCH');
    check(writes.length >= 2 && writes.every((s) => s.method === 'POST' && s.status === 204), 'PATCHes went as POST + override');
    check(!seen.some((s) => s.method === 'PATCH'), 'no PATCH was sent');
  },
  async resumeShowsMetadata() {
    const videoId = await newVideo('resume');
    videos.resumeShowsMetadata = videoId;
    const metadata = { videoId, filename: 'résumé clip.mp4', filetype: 'video/mp4' };
    // Start, stop after the first chunk.
    let stopped;
    const first = await new Promise((resolve, reject) => {
      let up;
      up = new Upload(clip, {
        endpoint,
        headers: { Authorization: `Bearer ${token}` },
        chunkSize: CHUNK,
        metadata,
        onError: reject,
        onSuccess: () => reject(new Error('the first attempt should have been stopped')),
        onChunkComplete: () => {
          if (!stopped) {
            stopped = up.abort().then(() => resolve(up.url));
          }
        },
      });
      up.start();
    });
    // A new client resumes from the URL: it asks HEAD, which shows the metadata.
    const { seen } = await upload(clip, { uploadUrl: first, chunkSize: CHUNK, metadata });
    const head = seen.find((s) => s.method === 'HEAD');
    check(head && head.status === 200, 'resumed with HEAD');
    check(Number(head.response.offset) >= CHUNK, `HEAD offset ${head.response.offset}`);
    const shown = decode(head.response.metadata);
    check(shown.videoId === videoId && shown.filename === metadata.filename && shown.filetype === 'video/mp4', `HEAD metadata ${JSON.stringify(shown)}`);
    check(!seen.some((s) => s.method === 'POST'), 'no new upload was created');
    const patches = seen.filter((s) => s.method === 'PATCH');
    check(Number(header(patches[0], 'Upload-Offset')) === Number(head.response.offset), 'the first PATCH starts at the HEAD offset');
  },
};

let failed = 0;
await Promise.all(
  Object.entries(scenarios).map(async ([scenario, run]) => {
    try {
      await run();
      log(`${scenario}: upload accepted`);
    } catch (err) {
      failed += 1;
      log(`${scenario}: FAILED: ${err.stack || err}`);
    }
  }),
);

// Every accepted upload must end READY (transcoded).
const deadline = Date.now() + 240_000;
const pending = new Set(Object.keys(videos));
while (pending.size && Date.now() < deadline) {
  for (const scenario of [...pending]) {
    const { video } = await gql('query($id: ID!) { video(id: $id) { status } }', { id: videos[scenario] }, token);
    if (video.status === 'READY') {
      log(`${scenario}: READY`);
      pending.delete(scenario);
    } else if (video.status === 'FAILED' || video.status === 'DRAFT') {
      log(`${scenario}: video ${video.status}`);
      pending.delete(scenario);
      failed += 1;
    }
  }
  if (pending.size) await new Promise((r) => setTimeout(r, 500));
}
for (const scenario of pending) {
  log(`${scenario}: not READY in time`);
  failed += 1;
}
if (failed) {
  log(`${failed} failure(s)`);
  process.exit(1);
}
log('all tus extensions work with tus-js-client');
