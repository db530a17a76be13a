// Resumable uploads (tus) with pause/resume that survive a page reload.
//
// A browser cannot keep a File across a reload, so what survives is the
// server-side tus upload: its URL, and the name and size of the file, are kept
// in localStorage. After a reload the library offers to continue; choosing the
// same file again resumes at the offset the server has.

import { Upload, type DetailedError } from 'tus-js-client';
import { ApiError, humanMessage } from './errors';
import { graphql, type ResultOf, type VariablesOf } from './graphql';
import { freshAccessToken, gql } from './session';

const CREATE_VIDEO = graphql(`mutation CreateVideo($i: CreateVideoInput!) { createVideo(input: $i) { id } }`);
const CREATE_UPLOAD = graphql(
  `mutation CreateUpload($i: CreateUploadInput!) { createUpload(input: $i) { id tusUrl } }`,
);
const DROP_VIDEO = graphql(`mutation Drop($id: ID!) { deleteVideo(id: $id) }`);

export type Visibility = NonNullable<VariablesOf<typeof CREATE_VIDEO>['i']['visibility']>;
export type UploadState = 'uploading' | 'paused' | 'finishing' | 'done' | 'failed';

interface PendingUpload {
  videoId: string;
  uploadUrl: string;
  fileName: string;
  fileSize: number;
  fileModified: number;
}

const PENDING_KEY = 'reelhouse.pendingUploads';
/**
 * PATCH size: about a twentieth of the file, so a reload loses little and a
 * small file still resumes part-way, within 256 KiB..8 MiB so requests stay cheap.
 */
function chunkSizeFor(size: number): number {
  return Math.round(Math.min(8 * 1024 * 1024, Math.max(256 * 1024, size / 20)));
}

function loadPending(): Record<string, PendingUpload> {
  try {
    return JSON.parse(localStorage.getItem(PENDING_KEY) ?? '{}') as Record<string, PendingUpload>;
  } catch {
    return {};
  }
}

function savePending(all: Record<string, PendingUpload>): void {
  try {
    localStorage.setItem(PENDING_KEY, JSON.stringify(all));
  } catch {
    /* no storage: resuming after a reload is not offered */
  }
}

export function pendingUpload(videoId: string): PendingUpload | undefined {
  return loadPending()[videoId];
}

export function forgetPending(videoId: string): void {
  const all = loadPending();
  delete all[videoId];
  savePending(all);
}

/** The video-ish media type for a file the browser could not type. */
function contentTypeOf(file: File): string {
  if (file.type) return file.type;
  const ext = file.name.split('.').pop()?.toLowerCase() ?? '';
  const byExt: Record<string, string> = {
    mp4: 'video/mp4', m4v: 'video/mp4', mov: 'video/quicktime', webm: 'video/webm', mkv: 'video/x-matroska',
    avi: 'video/x-msvideo', mpg: 'video/mpeg', mpeg: 'video/mpeg', ts: 'video/mp2t', ogv: 'video/ogg', '3gp': 'video/3gpp',
  };
  return byExt[ext] ?? 'application/octet-stream';
}

/** A tus error as an ApiError: the server answers refusals with `{code, message}` JSON. */
function tusError(err: Error | DetailedError): ApiError {
  const response = (err as DetailedError).originalResponse;
  if (!response) return new ApiError('NETWORK', err.message);
  try {
    const body = JSON.parse(response.getBody()) as { code?: string; message?: string };
    if (body.code) return new ApiError(body.code, body.message ?? '');
  } catch {
    /* not JSON */
  }
  const status = response.getStatus();
  if (status === 401) return new ApiError('UNAUTHENTICATED', 'please sign in again');
  if (status === 413) return new ApiError('PAYLOAD_TOO_LARGE', '');
  if (status === 404 || status === 410) return new ApiError('NOT_FOUND', 'this upload has expired');
  return new ApiError('INTERNAL', `upload failed with status ${status}`);
}

/** One upload in this page: observable state plus pause and resume. */
export class UploadController {
  state: UploadState = 'uploading';
  bytesSent = 0;
  bytesTotal: number;
  error: string | null = null;
  private readonly listeners = new Set<() => void>();
  private readonly upload: Upload;

  constructor(
    readonly videoId: string,
    file: File,
    uploadUrl: string,
  ) {
    this.bytesTotal = file.size;
    this.upload = new Upload(file, {
      uploadUrl,
      chunkSize: chunkSizeFor(file.size),
      retryDelays: [0, 1000, 3000, 5000, 10000],
      storeFingerprintForResuming: false,
      onBeforeRequest: async (req) => {
        const token = await freshAccessToken();
        if (token) req.setHeader('Authorization', `Bearer ${token}`);
      },
      onShouldRetry: (err) => {
        // 4xx are answers, not accidents (409: offset moved; retrying re-reads it).
        const status = err.originalResponse?.getStatus() ?? 0;
        return status === 0 || status === 409 || status === 423 || status === 429 || status >= 500;
      },
      onProgress: (sent, total) => {
        this.bytesSent = sent;
        this.bytesTotal = total;
        if (sent >= total && this.state === 'uploading') this.state = 'finishing';
        this.notify();
      },
      onSuccess: () => {
        this.state = 'done';
        this.bytesSent = this.bytesTotal;
        forgetPending(videoId);
        this.notify();
      },
      onError: (err) => {
        const apiError = tusError(err);
        this.state = 'failed';
        this.error = humanMessage(apiError);
        // The server refused the file for good: nothing to resume.
        if (apiError.code !== 'NETWORK') forgetPending(videoId);
        this.notify();
      },
    });
    this.upload.start();
  }

  get percent(): number {
    return this.bytesTotal > 0 ? (100 * this.bytesSent) / this.bytesTotal : 0;
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(): void {
    for (const fn of this.listeners) fn();
  }

  pause(): void {
    if (this.state !== 'uploading') return;
    this.state = 'paused';
    void this.upload.abort();
    this.notify();
  }

  resume(): void {
    if (this.state !== 'paused' && this.state !== 'failed') return;
    this.state = 'uploading';
    this.error = null;
    this.upload.start();
    this.notify();
  }
}

const active = new Map<string, UploadController>();

export function activeUpload(videoId: string): UploadController | undefined {
  return active.get(videoId);
}

/** Same-origin path of a tus URL (the app is served by the server it talks to). */
function localPath(url: string): string {
  const u = new URL(url, location.href);
  return `${u.pathname}${u.search}`;
}

/**
 * Run `attempt` again after a moment when the server had a passing problem
 * (busy database, restart, dropped connection). Only for requests that are
 * safe to repeat: a refused createUpload created nothing.
 */
/** Create the video and its upload, and start sending the file. */
export async function startUpload(file: File, title: string, visibility: Visibility): Promise<UploadController> {
  const created = await gql(CREATE_VIDEO, { i: { title, visibility } });
  const videoId = created.createVideo.id;
  let ticket: ResultOf<typeof CREATE_UPLOAD>;
  try {
    ticket = await gql(CREATE_UPLOAD, {
      i: { videoId, filename: file.name, contentType: contentTypeOf(file), size: file.size },
    });
  } catch (err) {
    // Leave no empty draft behind for a form the person will submit again.
    await gql(DROP_VIDEO, { id: videoId }).catch(() => undefined);
    throw err;
  }
  const uploadUrl = localPath(ticket.createUpload.tusUrl);
  const all = loadPending();
  all[videoId] = { videoId, uploadUrl, fileName: file.name, fileSize: file.size, fileModified: file.lastModified };
  savePending(all);
  const controller = new UploadController(videoId, file, uploadUrl);
  active.set(videoId, controller);
  return controller;
}

/** Continue an upload begun before a reload, with the same file chosen again. */
export function resumeUpload(videoId: string, file: File): UploadController {
  const pending = pendingUpload(videoId);
  if (!pending) throw new ApiError('NOT_FOUND', 'there is no unfinished upload for this video');
  if (file.size !== pending.fileSize) {
    throw new ApiError('BAD_USER_INPUT', `that is not the same file: choose "${pending.fileName}" again`);
  }
  const controller = new UploadController(videoId, file, pending.uploadUrl);
  active.set(videoId, controller);
  return controller;
}
