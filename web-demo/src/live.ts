// Live video events over /graphql/ws (graphql-transport-ws).
//
// One WebSocket for the whole app. The access token travels in
// `connection_init`; the server closes the socket (4403) when that token
// expires, and the client reconnects with a fresh one and subscribes again.
// A subscription's first event is a snapshot, so nothing is lost across a
// reconnect.

import { print } from '@0no-co/graphql.web';
import { createClient, type Client } from 'graphql-ws';
import { graphql, type ResultOf, type VariablesOf } from './graphql';
import { freshAccessToken } from './session';

/** Encoding progress, shared by the library, the jobs page and the live events. */
export const PROGRESS_FIELDS = graphql(`
  fragment ProgressFields on Progress {
    percent
    stage
    fps
    etaSeconds
    renditions { name percent }
  }
`);
export type Progress = ResultOf<typeof PROGRESS_FIELDS>;

const VIDEO_PROGRESS = graphql(
  `subscription VideoProgress($id: ID!) {
    videoProgress(videoId: $id) {
      kind status snapshot error
      progress { ...ProgressFields }
      rendition { name }
    }
  }`,
  [PROGRESS_FIELDS],
);
const VIDEO_PROGRESS_QUERY = print(VIDEO_PROGRESS);

export type VideoEvent = ResultOf<typeof VIDEO_PROGRESS>['videoProgress'];
export type VideoStatus = VideoEvent['status'];

let client: Client | null = null;

function wsClient(): Client {
  client ??= createClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`,
    lazy: true,
    retryAttempts: Number.POSITIVE_INFINITY,
    shouldRetry: () => true,
    connectionParams: async () => {
      const token = await freshAccessToken();
      return token ? { authorization: `Bearer ${token}` } : {};
    },
  });
  return client;
}

/** Close the socket (on sign-out: the next user gets a new one). */
export function disconnectLive(): void {
  void client?.dispose();
  client = null;
}

/**
 * Follow one video until it is READY, FAILED or deleted. Returns a function
 * that stops following.
 */
export function followVideo(
  videoId: string,
  onEvent: (event: VideoEvent) => void,
  onEnd?: (error?: unknown) => void,
): () => void {
  return wsClient().subscribe<ResultOf<typeof VIDEO_PROGRESS>>(
    { query: VIDEO_PROGRESS_QUERY, variables: { id: videoId } satisfies VariablesOf<typeof VIDEO_PROGRESS> },
    {
      next: (result) => {
        if (result.data?.videoProgress) onEvent(result.data.videoProgress);
      },
      error: (err) => onEnd?.(err),
      complete: () => onEnd?.(),
    },
  );
}

const JOB_LOG = graphql(`
  subscription JobLog($jobId: ID!, $after: String) {
    jobLog(jobId: $jobId, after: $after) { cursor at level message dropped jobStatus }
  }
`);
const JOB_LOG_QUERY = print(JOB_LOG);

export type JobLogLine = ResultOf<typeof JOB_LOG>['jobLog'];

/**
 * Follow a job's log from after `after` (a line's cursor; null: from the start)
 * until the job ends (the last line carries `jobStatus`). When the socket
 * reconnects, graphql-ws subscribes again with the same variables, so lines at
 * or before the last cursor seen are dropped here: each line is shown once.
 * Returns a function that stops following.
 */
export function followJobLog(
  jobId: string,
  after: string | null,
  onLine: (line: JobLogLine) => void,
  onEnd?: (error?: unknown) => void,
): () => void {
  let last = after === null ? 0 : Number(after);
  let ended = false;
  return wsClient().subscribe<ResultOf<typeof JOB_LOG>>(
    { query: JOB_LOG_QUERY, variables: { jobId, after } satisfies VariablesOf<typeof JOB_LOG> },
    {
      next: (result) => {
        const line = result.data?.jobLog;
        if (!line || ended) return;
        const cursor = Number(line.cursor);
        const ordinary = line.dropped == null && line.jobStatus == null;
        if (ordinary && cursor <= last) return;
        if (line.dropped != null && cursor <= last) return;
        last = Math.max(last, cursor);
        if (line.jobStatus != null) ended = true;
        onLine(line);
      },
      error: (err) => onEnd?.(err),
      complete: () => onEnd?.(),
    },
  );
}
