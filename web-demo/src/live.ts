// Live video events over /graphql/ws (graphql-transport-ws).
//
// One WebSocket for the whole app. The access token travels in
// `connection_init`; the server closes the socket (4403) when that token
// expires, and the client reconnects with a fresh one and subscribes again.
// A subscription's first event is a snapshot, so nothing is lost across a
// reconnect.

import { createClient, type Client } from 'graphql-ws';
import { freshAccessToken } from './session';

export interface Progress {
  percent: number;
  stage: string;
  fps: number | null;
  etaSeconds: number | null;
  renditions: { name: string; percent: number }[];
}

export type VideoStatus = 'DRAFT' | 'UPLOADING' | 'PROCESSING' | 'READY' | 'FAILED';

export interface VideoEvent {
  kind: string;
  status: VideoStatus;
  snapshot: boolean;
  error: string | null;
  progress: Progress | null;
  rendition: { name: string } | null;
}

export const PROGRESS_FIELDS = 'percent stage fps etaSeconds renditions { name percent }';

const VIDEO_PROGRESS = `subscription VideoProgress($id: ID!) {
  videoProgress(videoId: $id) {
    kind status snapshot error
    progress { ${PROGRESS_FIELDS} }
    rendition { name }
  }
}`;

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
  return wsClient().subscribe<{ videoProgress: VideoEvent }>(
    { query: VIDEO_PROGRESS, variables: { id: videoId } },
    {
      next: (result) => {
        if (result.data?.videoProgress) onEvent(result.data.videoProgress);
      },
      error: (err) => onEnd?.(err),
      complete: () => onEnd?.(),
    },
  );
}
