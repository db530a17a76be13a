//! Serialise once, send many: a live event becomes the bytes of a GraphQL response
//! once per (operation document + operation name + variables, visibility class), and
//! every subscription with that key sends those bytes, spliced into a frame that
//! carries its own operation id.
//!
//! The bytes come from async-graphql itself: the subscription's own document is
//! executed once with the event handed to the resolver ([`RenderOne`]), so a shared
//! frame is byte for byte what per-subscriber execution would have sent for the same
//! event (the tests compare both). Only the id is spliced into a prefix computed once
//! per subscription; the payload is never parsed or serialised again.
//!
//! What is shared is only the rendering. Whether a subscriber may receive an event is
//! still decided per subscriber by its feed (`graphql::events`) before it asks for
//! bytes, and the visibility class (owner or moderator vs everyone else) is part of
//! the key, so bytes rendered for one class never reach the other.
//!
//! Which subscriptions take this path: a `subscription` operation whose only root
//! selection is `videoEvents` or `videoProgress` (any selection below it), on a
//! session that completed `connection_init`, with `graphql.ws_shared_frames` on.
//! Everything else runs through async-graphql's protocol machine per subscriber (the
//! fallback path).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use crate::events::feed::{SubscriberQueue, Undelivered, VisibilityClass};
use crate::events::DomainEvent;
use crate::graphql::events::VideoEvent;
use crate::graphql::AppSchema;
use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Request, Response, Variables};
use futures::stream::{self, BoxStream};
use futures::StreamExt;

/// Renders kept per key and class: enough for the events in flight at once (a live
/// event is rendered by the first subscriber that reaches it and found by the rest).
const RECENT_RENDERS: usize = 32;

/// Root fields whose events can be shared.
const SHAREABLE_FIELDS: [&str; 2] = ["videoEvents", "videoProgress"];

/// Whether `request` is a subscription the shared path serves.
pub fn is_shareable(request: &Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), None) => &operation.node,
        // One named operation, run without naming it.
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => match operations.values().next() {
            Some(operation) => &operation.node,
            None => return false,
        },
        (DocumentOperations::Multiple(operations), Some(name)) => match operations.get(name) {
            Some(operation) => &operation.node,
            None => return false,
        },
        _ => return false,
    };
    if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
        return false;
    }
    match operation.selection_set.node.items.as_slice() {
        [only] => match &only.node {
            Selection::Field(field) => {
                field.node.directives.is_empty() && SHAREABLE_FIELDS.contains(&field.node.name.node.as_str())
            }
            _ => false,
        },
        _ => false,
    }
}

/// What identifies a rendering: the document, the operation and the variables.
#[derive(Debug, Hash, PartialEq, Eq)]
struct RenderKey {
    query: String,
    operation_name: Option<String>,
    /// The variables as JSON (async-graphql keeps them in a sorted map, so equal
    /// variables give equal text).
    variables: String,
}

/// Recent events of one key and class with their payload text, oldest first.
type RecentRenders = tokio::sync::Mutex<VecDeque<(DomainEvent, Arc<str>)>>;

/// The renders of one key, shared by its subscriptions while any is open.
struct KeyEntry {
    key: Arc<RenderKey>,
    variables: Variables,
    /// Recent renders per visibility class: the event and its payload text.
    recent: [RecentRenders; 2],
}

/// The keys of the open shared subscriptions of this process.
#[derive(Default)]
pub struct SharedFrames {
    keys: Mutex<HashMap<Arc<RenderKey>, Weak<KeyEntry>>>,
}

impl SharedFrames {
    /// The entry for `request`'s key, joined or created.
    fn entry(&self, request: &Request) -> Arc<KeyEntry> {
        let key = Arc::new(RenderKey {
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
        });
        let Ok(mut keys) = self.keys.lock() else {
            // A poisoned map only costs sharing: this subscription renders alone.
            return Arc::new(KeyEntry::new(key, request.variables.clone()));
        };
        if let Some(entry) = keys.get(&key).and_then(Weak::upgrade) {
            return entry;
        }
        // Forget the keys nobody uses any more before the map grows.
        if keys.len() >= 64 && keys.len().is_power_of_two() {
            keys.retain(|_, entry| entry.strong_count() > 0);
        }
        let entry = Arc::new(KeyEntry::new(key.clone(), request.variables.clone()));
        keys.insert(key, Arc::downgrade(&entry));
        entry
    }

    /// The sink operation `id`'s feed renders into, and the frames it produces.
    pub fn sink(
        &self,
        schema: AppSchema,
        request: &Request,
        frame_type: &str,
        id: &str,
        buffer: usize,
    ) -> (FrameSink, BoxStream<'static, String>) {
        let (frames, stream) = SubscriberQueue::bounded(buffer);
        let sink = FrameSink { frames, entry: self.entry(request), schema, prefix: frame_prefix(frame_type, id) };
        (sink, stream)
    }

    /// Keys with at least one open subscription (for tests and diagnostics).
    pub fn open_keys(&self) -> usize {
        self.keys.lock().map(|keys| keys.values().filter(|e| e.strong_count() > 0).count()).unwrap_or(0)
    }
}

impl KeyEntry {
    fn new(key: Arc<RenderKey>, variables: Variables) -> Self {
        Self { key, variables, recent: Default::default() }
    }
}

/// `{"type":"next","id":"…","payload":`, exactly as async-graphql's protocol machine
/// writes a frame's start; the payload and a closing `}` follow.
pub fn frame_prefix(frame_type: &str, id: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"type":"{frame_type}","id":{id},"payload":"#)
}

/// A whole frame: the prefix, the payload, the closing brace.
pub fn splice(prefix: &str, payload: &str) -> String {
    let mut frame = String::with_capacity(prefix.len() + payload.len() + 1);
    frame.push_str(prefix);
    frame.push_str(payload);
    frame.push('}');
    frame
}

/// The payload text of a response, as the protocol machine would write it.
pub fn payload_text(response: &Response) -> String {
    serde_json::to_string(response).unwrap_or_else(|_| {
        r#"{"data":null,"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#.into()
    })
}

/// The feed's side of a shared subscription: it hands events (already authorised
/// for this subscriber) and gets frames sent.
pub struct FrameSink {
    frames: SubscriberQueue<String>,
    entry: Arc<KeyEntry>,
    schema: AppSchema,
    prefix: String,
}

impl FrameSink {
    /// Send `event` (`snapshot`: the subscription's first, per-subscriber event).
    /// While the queue is full, waits at most `patience` for room.
    pub async fn send_event(
        &self,
        event: &DomainEvent,
        snapshot: bool,
        class: VisibilityClass,
        patience: std::time::Duration,
    ) -> Result<(), Undelivered> {
        let payload = if snapshot {
            // A snapshot is made for one subscriber (its time is now): nothing to share.
            metrics::counter!("reelhouse_event_renders_total", "path" => "shared").increment(1);
            self.render(Ok(VideoEvent::from_domain(event, true))).await
        } else {
            self.shared_render(event, class).await
        };
        self.frames.push(splice(&self.prefix, &payload), patience).await
    }

    /// End the subscription with an error (rendered for this subscriber alone),
    /// after the frames already queued; never waits for room.
    pub async fn send_error(&self, error: async_graphql::Error) {
        let payload = self.render(Err(error)).await;
        self.frames.last_word(splice(&self.prefix, &payload));
    }

    /// The subscriber went away.
    pub async fn closed(&self) {
        self.frames.closed().await
    }

    async fn shared_render(&self, event: &DomainEvent, class: VisibilityClass) -> Arc<str> {
        // Held while rendering: the other subscribers of this key wait for these
        // bytes instead of rendering them again.
        let mut recent = self.entry.recent[class as usize].lock().await;
        if let Some((_, payload)) = recent.iter().rev().find(|(seen, _)| seen == event) {
            metrics::counter!("reelhouse_event_render_reuses_total").increment(1);
            return payload.clone();
        }
        metrics::counter!("reelhouse_event_renders_total", "path" => "shared").increment(1);
        let payload = self.render(Ok(VideoEvent::from_domain(event, false))).await;
        if recent.len() >= RECENT_RENDERS {
            recent.pop_front();
        }
        recent.push_back((event.clone(), payload.clone()));
        payload
    }

    /// Execute this key's document with `item` as the subscription's one event.
    async fn render(&self, item: async_graphql::Result<VideoEvent>) -> Arc<str> {
        let key = &self.entry.key;
        let mut request =
            Request::new(key.query.clone()).variables(self.entry.variables.clone()).data(RenderOne::new(item));
        if let Some(name) = &key.operation_name {
            request = request.operation_name(name.clone());
        }
        let response = self.schema.execute_stream(request).next().await.unwrap_or_default();
        Arc::from(payload_text(&response))
    }
}

/// Request data of a render: the subscription resolver yields this one event instead
/// of starting a feed. Only the server puts it in a request.
pub struct RenderOne(Mutex<Option<async_graphql::Result<VideoEvent>>>);

impl RenderOne {
    fn new(item: async_graphql::Result<VideoEvent>) -> Self {
        Self(Mutex::new(Some(item)))
    }

    /// The stream the resolver returns while rendering.
    pub fn stream(&self) -> BoxStream<'static, async_graphql::Result<VideoEvent>> {
        let item = self.0.lock().ok().and_then(|mut item| item.take());
        stream::iter(item).boxed()
    }
}

/// Request data of a shared subscription: the sink its feed sends into.
pub struct SharedDelivery(Mutex<Option<FrameSink>>);

impl SharedDelivery {
    pub fn new(sink: FrameSink) -> Self {
        Self(Mutex::new(Some(sink)))
    }

    /// The sink, once (the resolver's feed takes it).
    pub fn take(&self) -> Option<FrameSink> {
        self.0.lock().ok().and_then(|mut sink| sink.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> Request {
        Request::new(query)
    }

    #[test]
    fn only_one_video_events_root_field_is_shared() {
        assert!(is_shareable(&request("subscription { videoEvents { seq kind } }")));
        assert!(is_shareable(&request(
            "subscription S($v: ID!) { p: videoProgress(videoId: $v) { ...F } } fragment F on VideoEvent { seq }"
        )));
        assert!(!is_shareable(&request("subscription { heartbeat }")));
        assert!(!is_shareable(&request("subscription { videoEvents { seq } b: videoEvents { seq } }")));
        assert!(!is_shareable(&request("subscription { ... on Subscription { videoEvents { seq } } }")));
        assert!(!is_shareable(&request("subscription { videoEvents @skip(if: false) { seq } }")));
        assert!(!is_shareable(&request("query { videoEvents { seq } }")));
        assert!(!is_shareable(&request("subscription {")));
        let mut named = request("subscription A { videoEvents { seq } } subscription B { heartbeat }");
        assert!(!is_shareable(&named));
        named.operation_name = Some("A".into());
        assert!(is_shareable(&named));
    }

    #[test]
    fn a_frame_is_the_protocol_machines_frame() {
        let prefix = frame_prefix("next", "op \"1\"");
        let frame = splice(&prefix, r#"{"data":{"x":1}}"#);
        let expected = serde_json::json!({"type": "next", "id": "op \"1\"", "payload": {"data": {"x": 1}}});
        assert_eq!(serde_json::from_str::<serde_json::Value>(&frame).unwrap(), expected);
        assert_eq!(frame, r#"{"type":"next","id":"op \"1\"","payload":{"data":{"x":1}}}"#);
    }
}
