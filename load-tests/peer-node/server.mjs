// The fan-out benchmark's peer (scripts/bench-load.py, issue 19): a GraphQL
// subscription server as a team would build it on Node.js from the npm registry,
// serving the same subscription reelhouse does, to compare against in the same run.
//
// - `videoEvents(videoId: ID, after: String): VideoEvent!` with reelhouse's
//   VideoEvent fields, over graphql-transport-ws (graphql-ws's `useServer` on `ws`)
//   at /graphql/ws; graphql-js executes and serialises every event per subscriber.
// - Events come from Redis through graphql-redis-subscriptions (one subscriber
//   connection per process, fanned out to every iterator, as reelhouse's relay
//   does): the benchmark PUBLISHes each event, as JSON, on the channel `reelhouse-peer`.
// - Like reelhouse, a subscription starts with a snapshot event (`snapshot: true`).
//
// Usage: node server.mjs --port N --redis-url redis://…; prints `listening on HOST:PORT`.
// GET /health answers 200 once Redis is subscribed.

import http from "node:http";
import { parseArgs } from "node:util";

import { buildSchema } from "graphql";
import { RedisPubSub } from "graphql-redis-subscriptions";
import { useServer } from "graphql-ws/use/ws";
import Redis from "ioredis";
import { WebSocketServer } from "ws";

const CHANNEL = "reelhouse-peer";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    "redis-url": { type: "string", default: "redis://127.0.0.1:6379" },
  },
});

const schema = buildSchema(`
  enum EventKind { UPLOADED PROCESSING PROGRESS RENDITION_READY READY FAILED CANCELLED DELETED }
  enum VideoStatus { DRAFT UPLOADING PROCESSING READY FAILED }
  type Progress { percent: Float! stage: String! fps: Float etaSeconds: Float }
  type VideoEventRendition { name: String! }
  type VideoEvent {
    cursor: String
    videoId: ID!
    kind: EventKind!
    at: String!
    seq: Int!
    status: VideoStatus!
    progress: Progress
    rendition: VideoEventRendition
    error: String
    snapshot: Boolean!
  }
  type Query { health: Boolean! }
  type Subscription { videoEvents(videoId: ID, after: String): VideoEvent! }
`);

const options = { retryStrategy: (times) => Math.min(times * 100, 2000) };
const pubsub = new RedisPubSub({
  publisher: new Redis(values["redis-url"], options),
  subscriber: new Redis(values["redis-url"], options),
});

function iterator() {
  // 2.7 renamed asyncIterator; keep working with either.
  return typeof pubsub.asyncIterableIterator === "function"
    ? pubsub.asyncIterableIterator(CHANNEL)
    : pubsub.asyncIterator(CHANNEL);
}

/// A subscription's events: a snapshot first (as reelhouse sends), then every event
/// published on the channel.
async function* videoEvents(args) {
  const events = iterator();
  yield {
    cursor: "0",
    videoId: args?.videoId ?? "peer",
    kind: "PROCESSING",
    at: new Date().toISOString(),
    seq: 0,
    status: "PROCESSING",
    progress: null,
    rendition: null,
    error: null,
    snapshot: true,
  };
  try {
    for await (const event of events) yield event;
  } finally {
    await events.return?.();
  }
}

// buildSchema has no resolvers; the subscription field gets its source stream and
// its per-event resolver here (graphql-js then executes the selection per subscriber).
const field = schema.getSubscriptionType().getFields().videoEvents;
field.subscribe = (_root, args) => videoEvents(args);
field.resolve = (event) => event;

let subscribed = false;
pubsub.subscribe(CHANNEL, () => {}).then(() => {
  subscribed = true;
});

const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(subscribed ? 200 : 503).end(subscribed ? "ok" : "starting");
    return;
  }
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, path: "/graphql/ws" });
useServer({ schema }, wss);

server.listen(Number(values.port), values.host, () => {
  const { address, port } = server.address();
  console.log(`listening on ${address}:${port}`);
});
