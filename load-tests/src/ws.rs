//! Live events: a graphql-ws (`graphql-transport-ws`) subscriber, and the book-keeping
//! that turns what each subscriber received into lost, duplicate and late events.
//!
//! The same reader also serves the fan-out baseline, whose WebSocket sends the very
//! bytes of a graphql-ws `next` message without the protocol around it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::api::Creds;
use crate::backoff::{Attempts, RetryPolicy};
use crate::stats::Stats;

/// The fields every subscriber asks for.
pub const EVENT_FIELDS: &str = "cursor videoId kind at seq status snapshot error progress { percent stage }";

/// How long the server may take to acknowledge `connection_init` and the first event.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which stream a subscriber reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// `videoProgress(videoId)`: ends after READY/FAILED/CANCELLED/DELETED.
    Progress,
    /// `videoEvents(videoId)`: stays open until the harness stops it.
    Events,
    /// The baseline's bare WebSocket (no graphql-ws protocol).
    Raw,
}

/// One event as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: String,
    pub seq: i64,
    pub cursor: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub snapshot: bool,
    pub status: String,
    pub received_at: DateTime<Utc>,
    pub received_instant: Instant,
}

/// Publish→receipt of every delivery of each stored event, keyed by cursor, for the
/// fan-out figures (publish to the *last* subscriber).
#[derive(Default)]
pub struct FanoutBook {
    /// cursor → (deliveries, largest latency in ms)
    events: Mutex<HashMap<String, (usize, f64)>>,
    /// Publish→receipt of every delivery of a stored event.
    pub deliveries: crate::stats::Latencies,
    /// The text of one received `next` message (the baseline republishes its bytes).
    pub sample_message: Mutex<Option<String>>,
}

impl FanoutBook {
    fn record(&self, cursor: &str, latency_ms: f64) {
        if let Ok(mut events) = self.events.lock() {
            let entry = events.entry(cursor.to_string()).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 = entry.1.max(latency_ms);
        }
        self.deliveries.record_signed_millis(latency_ms);
    }

    /// Deliveries so far of `cursor`.
    pub fn deliveries(&self, cursor: &str) -> usize {
        self.events.lock().ok().and_then(|e| e.get(cursor).map(|x| x.0)).unwrap_or(0)
    }

    /// (deliveries, publish→last receipt in ms) of every event seen.
    pub fn all(&self) -> Vec<(String, usize, f64)> {
        self.events.lock().map(|e| e.iter().map(|(k, v)| (k.clone(), v.0, v.1)).collect()).unwrap_or_default()
    }

    pub fn cursors(&self) -> Vec<String> {
        self.events.lock().map(|e| e.keys().cloned().collect()).unwrap_or_default()
    }
}

/// What one subscriber has seen so far.
#[derive(Debug, Default)]
pub struct Track {
    /// The subscription watches one encode, so a second READY is a duplicate (a video
    /// transcoded again legitimately gets another READY, with its own cursor).
    pub one_ready: bool,
    pub connected: bool,
    /// `seq` of the snapshot (where the video stood when the subscription began).
    pub snapshot_seq: Option<i64>,
    /// Highest stored `seq` received.
    pub last_seq: i64,
    /// Newest stored event received (or the snapshot's): where a reconnect resumes.
    pub last_cursor: Option<i64>,
    /// Times the feed was resumed on a new connection (its token expired, or the
    /// server ended it with `SLOW_CONSUMER`).
    pub reconnects: u32,
    pub cursors: HashSet<String>,
    /// Gaps in the stored sequence (a missing seq between two received ones).
    pub gaps: u64,
    pub duplicates: u64,
    pub ready: u32,
    pub terminal: Option<String>,
    /// Kind of the last stored event received.
    pub last_kind: Option<String>,
    pub ready_at: Option<Instant>,
    pub events: u64,
    pub ended: bool,
    pub error: Option<String>,
}

/// A running subscriber: its track and the means to stop it.
pub struct Subscriber {
    pub track: Arc<Mutex<Track>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Where a subscriber connects and what it reads.
#[derive(Clone)]
pub struct SubscribeSpec {
    pub url: String,
    /// Who subscribes (anonymous when `None`); a token that expires mid-feed is
    /// renewed and the feed resumed after its last cursor on a new connection.
    pub auth: Option<Creds>,
    pub video_id: String,
    pub feed: Feed,
    /// Count a second READY as a duplicate (one upload, one encode).
    pub one_ready: bool,
    /// How refusals for a rate limit (429 upgrade, 4429 close, `RATE_LIMITED`) are waited for.
    pub retry: RetryPolicy,
}

/// A connection refused for a rate limit: waited for and tried again, not an error.
#[derive(Debug)]
struct RateLimited {
    what: String,
    retry_after: Option<Duration>,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (rate-limited)", self.what)
    }
}

impl std::error::Error for RateLimited {}

/// Close code of a socket refused at `connection_init` for the per-user socket cap.
const CLOSE_RATE_LIMITED: u16 = 4429;

impl Subscriber {
    /// Connect and subscribe; returns once the subscription is acknowledged by its first
    /// event (the snapshot), or with an error (already counted).
    pub async fn start(
        spec: SubscribeSpec,
        stats: Arc<Stats>,
        book: Option<Arc<FanoutBook>>,
    ) -> anyhow::Result<Subscriber> {
        let track = Arc::new(Mutex::new(Track { one_ready: spec.one_ready, ..Track::default() }));
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Waiting out rate-limit refusals may take up to the policy's total before the handshake.
        let deadline = HANDSHAKE_TIMEOUT + spec.retry.max_total;
        let task = tokio::spawn(run(spec, stats.clone(), book, track.clone(), stopped, ready_tx));
        match tokio::time::timeout(deadline, ready_rx).await {
            Ok(Ok(Ok(()))) => {
                stats.subscriptions.fetch_add(1, Ordering::Relaxed);
                Ok(Subscriber { track, stop, task })
            }
            Ok(Ok(Err(message))) => {
                task.abort();
                Err(anyhow!(message))
            }
            Ok(Err(_)) => {
                task.abort();
                Err(anyhow!("subscriber task ended before subscribing"))
            }
            Err(_) => {
                task.abort();
                let message = format!("subscription: no first event within {} s", deadline.as_secs());
                stats.count_error(message.clone());
                Err(anyhow!(message))
            }
        }
    }

    /// Stop reading and close the socket; waits briefly for the task.
    pub async fn stop(self) -> Arc<Mutex<Track>> {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.track
    }

    pub fn snapshot(&self) -> TrackView {
        TrackView::of(&self.track)
    }
}

/// A copy of the interesting parts of a track.
#[derive(Debug, Clone, Default)]
pub struct TrackView {
    pub last_seq: i64,
    pub ready: u32,
    pub terminal: Option<String>,
    pub last_kind: Option<String>,
    pub ready_at: Option<Instant>,
    pub ended: bool,
    pub error: Option<String>,
}

impl TrackView {
    pub fn of(track: &Mutex<Track>) -> Self {
        match track.lock() {
            Ok(t) => Self {
                last_seq: t.last_seq,
                ready: t.ready,
                terminal: t.terminal.clone(),
                last_kind: t.last_kind.clone(),
                ready_at: t.ready_at,
                ended: t.ended,
                error: t.error.clone(),
            },
            Err(_) => Self::default(),
        }
    }
}

type Ready = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Why a connection's read loop ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Stopped by the harness, or the server completed the subscription.
    Done,
    /// The server closed the socket because the access token expired (4403).
    TokenExpired,
    /// The server ended the feed with `SLOW_CONSUMER` (this subscriber's queue stayed
    /// full): resume after the cursor it named, or from a snapshot when it named none.
    SlowConsumer { resume_after: Option<i64> },
}

/// `Some(End::SlowConsumer)` when a `next` message's errors end the feed with
/// `SLOW_CONSUMER`; its `extensions.resumeAfter` is where the server says to resume.
fn slow_consumer(errors: &Value) -> Option<End> {
    let error = errors.as_array()?.iter().find(|e| e.pointer("/extensions/code") == Some(&json!("SLOW_CONSUMER")))?;
    let resume_after = error.pointer("/extensions/resumeAfter").and_then(Value::as_str).and_then(|c| c.parse().ok());
    Some(End::SlowConsumer { resume_after })
}

/// Close code and reason of a socket closed for an expired token (`ws_session.rs`).
const CLOSE_FORBIDDEN: u16 = 4403;
const TOKEN_EXPIRED: &str = "token expired";
/// Resumes after token expiry allowed per subscriber (a token that never renews would loop).
const MAX_RECONNECTS: u32 = 1000;

async fn run(
    spec: SubscribeSpec,
    stats: Arc<Stats>,
    book: Option<Arc<FanoutBook>>,
    track: Arc<Mutex<Track>>,
    mut stopped: watch::Receiver<bool>,
    ready: Ready,
) {
    let mut ready = Some(ready);
    let mut resume = false;
    // Set by a SLOW_CONSUMER end: the server's resume cursor (`None`: a snapshot).
    let mut resume_at: Option<Option<i64>> = None;
    let mut attempts = Attempts::default();
    let outcome = loop {
        let token = match &spec.auth {
            Some(creds) => Some(creds.token().await),
            None => None,
        };
        // A resumed feed starts after the newest stored event it has (no gap, no
        // duplicate); without one yet it starts again from a snapshot.
        let after = match resume_at.take() {
            Some(cursor) => cursor,
            None if resume => track.lock().ok().and_then(|t| t.last_cursor),
            None => None,
        };
        let connection = Connection { spec: &spec, token: token.as_deref(), after };
        let outcome = connection.read(&stats, book.as_deref(), &track, &mut stopped, &mut ready).await;
        let renewable = spec.auth.is_some() && ready.is_none() && !*stopped.borrow();
        if let Some(refusal) = outcome.as_ref().err().and_then(|e| e.downcast_ref::<RateLimited>()) {
            // Refused for a rate limit: wait (Retry-After, else backoff) and connect
            // again the same way (from a snapshot, or resuming after the last cursor).
            let Some(delay) = attempts.refused(&stats, &spec.retry, &refusal.what, refusal.retry_after) else {
                break Err(anyhow!(attempts.gave_up(&refusal.what)));
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => continue,
                _ = stopped.changed() => break Ok(()),
            }
        }
        attempts = Attempts::default();
        match outcome {
            Ok(End::TokenExpired) if renewable => {
                if !one_more_resume(&track) {
                    break Err(anyhow!("token expired {MAX_RECONNECTS} times"));
                }
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                resume = true;
            }
            Ok(End::TokenExpired) => break Err(anyhow!("closed by the server: {TOKEN_EXPIRED}")),
            Ok(End::SlowConsumer { resume_after }) if !*stopped.borrow() => {
                if !one_more_resume(&track) {
                    break Err(anyhow!("ended as a slow consumer {MAX_RECONNECTS} times"));
                }
                stats.slow_consumer_resumes.fetch_add(1, Ordering::Relaxed);
                resume_at = Some(resume_after);
            }
            Ok(End::SlowConsumer { .. }) => break Ok(()),
            Ok(End::Done) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    let stopping = *stopped.borrow();
    if let Ok(mut t) = track.lock() {
        t.ended = true;
        if let Err(err) = &outcome {
            t.error = Some(err.to_string());
        }
    }
    if let Err(err) = outcome {
        if !stopping {
            let message = format!("subscription to {}: {err:#}", spec.video_id);
            stats.count_error(message.clone());
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(message));
            }
        }
    }
}

/// Count one more resume of this feed; `false` once it resumed [`MAX_RECONNECTS`]
/// times (a server that ends it every time would loop).
fn one_more_resume(track: &Mutex<Track>) -> bool {
    track
        .lock()
        .map(|mut t| {
            t.reconnects += 1;
            t.reconnects <= MAX_RECONNECTS
        })
        .unwrap_or(false)
}

/// One WebSocket connection of a subscriber.
struct Connection<'a> {
    spec: &'a SubscribeSpec,
    token: Option<&'a str>,
    /// Resume after this cursor (`videoEvents(after:)`) instead of starting from a snapshot.
    after: Option<i64>,
}

impl Connection<'_> {
    /// The subscribe message: the feed's own subscription, or, when resuming,
    /// `videoEvents(videoId, after)` (a resumed progress feed ends itself at a terminal event).
    fn subscribe_message(&self) -> Value {
        let video_id = &self.spec.video_id;
        let (query, variables) = match (self.after, self.spec.feed) {
            (Some(after), _) => (
                format!("subscription Watch($id: ID!, $after: String) {{ videoEvents(videoId: $id, after: $after) {{ {EVENT_FIELDS} }} }}"),
                json!({ "id": video_id, "after": after.to_string() }),
            ),
            (None, feed) => {
                let field = if feed == Feed::Progress { "videoProgress" } else { "videoEvents" };
                (
                    format!("subscription Watch($id: ID!) {{ {field}(videoId: $id) {{ {EVENT_FIELDS} }} }}"),
                    json!({ "id": video_id }),
                )
            }
        };
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } })
    }

    async fn read(
        &self,
        stats: &Stats,
        book: Option<&FanoutBook>,
        track: &Mutex<Track>,
        stopped: &mut watch::Receiver<bool>,
        ready: &mut Option<Ready>,
    ) -> anyhow::Result<End> {
        let spec = self.spec;
        let mut request = spec.url.as_str().into_client_request().context("WebSocket URL")?;
        if spec.feed != Feed::Raw {
            request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        }
        let connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| anyhow!("WebSocket connect timed out"))?;
        let (mut socket, _) = match connected {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status().as_u16() == 429 => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::backoff::parse_retry_after);
                return Err(RateLimited { what: "WebSocket upgrade".into(), retry_after }.into());
            }
            Err(err) => return Err(anyhow::Error::new(err).context("WebSocket connect")),
        };
        if spec.feed != Feed::Raw {
            let payload = match self.token {
                Some(token) => json!({ "authorization": format!("Bearer {token}") }),
                None => json!({}),
            };
            socket.send(Message::text(json!({ "type": "connection_init", "payload": payload }).to_string())).await?;
            loop {
                let message = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.next())
                    .await
                    .map_err(|_| anyhow!("no connection_ack"))?
                    .ok_or_else(|| anyhow!("closed before connection_ack"))??;
                if let Message::Text(text) = message {
                    let v: Value = serde_json::from_str(text.as_str()).context("graphql-ws message")?;
                    match v["type"].as_str() {
                        Some("connection_ack") => break,
                        Some("ping") => socket.send(Message::text(r#"{"type":"pong"}"#)).await?,
                        other => bail!("expected connection_ack, got {other:?}: {text}"),
                    }
                } else if let Message::Close(frame) = message {
                    if frame.as_ref().is_some_and(|f| u16::from(f.code) == CLOSE_RATE_LIMITED) {
                        return Err(
                            RateLimited { what: "WebSocket connection_init (4429)".into(), retry_after: None }.into()
                        );
                    }
                    bail!("closed before connection_ack: {frame:?}");
                }
            }
            socket.send(Message::text(self.subscribe_message().to_string())).await?;
        } else if let Some(ready) = ready.take() {
            // The baseline has no snapshot: connected is subscribed.
            if let Ok(mut t) = track.lock() {
                t.connected = true;
                t.snapshot_seq = Some(0);
            }
            let _ = ready.send(Ok(()));
        }
        loop {
            let message = tokio::select! {
                message = socket.next() => message,
                _ = stopped.changed() => {
                    if spec.feed != Feed::Raw {
                        let _ = socket.send(Message::text(r#"{"id":"1","type":"complete"}"#)).await;
                    }
                    let _ = socket.close(None).await;
                    return Ok(End::Done);
                }
            };
            let Some(message) = message else { bail!("connection closed by the server") };
            let text = match message.context("WebSocket read")? {
                Message::Text(text) => text,
                Message::Close(Some(frame))
                    if u16::from(frame.code) == CLOSE_FORBIDDEN && frame.reason.as_str() == TOKEN_EXPIRED =>
                {
                    return Ok(End::TokenExpired)
                }
                Message::Close(frame) => bail!("closed by the server: {frame:?}"),
                _ => continue,
            };
            let v: Value = serde_json::from_str(text.as_str()).context("not JSON")?;
            match v["type"].as_str() {
                Some("next") => {
                    if let Some(errors) = v.pointer("/payload/errors").filter(|e| !e.is_null()) {
                        if let Some(end) = slow_consumer(errors) {
                            let _ = socket.close(None).await;
                            return Ok(end);
                        }
                        bail!("subscription error: {errors}");
                    }
                    let Some(event) =
                        v.pointer("/payload/data").and_then(|d| d.get("videoEvents").or(d.get("videoProgress")))
                    else {
                        bail!("a next message without an event: {text}");
                    };
                    let received = parse_event(event)?;
                    if let Some(book) = book {
                        if received.kind == "PROCESSING" && !received.snapshot {
                            if let Ok(mut sample) = book.sample_message.lock() {
                                sample.get_or_insert_with(|| text.as_str().to_string());
                            }
                        }
                    }
                    observe(stats, book, track, &received);
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    // A progress feed resumed through videoEvents ends where videoProgress would.
                    let terminal = matches!(received.kind.as_str(), "READY" | "FAILED" | "CANCELLED" | "DELETED");
                    if self.after.is_some() && spec.feed == Feed::Progress && terminal && !received.snapshot {
                        let _ = socket.send(Message::text(r#"{"id":"1","type":"complete"}"#)).await;
                        let _ = socket.close(None).await;
                        return Ok(End::Done);
                    }
                }
                Some("ping") => socket.send(Message::text(r#"{"type":"pong"}"#)).await?,
                Some("pong") => {}
                Some("complete") => return Ok(End::Done),
                Some("error") => {
                    let refused = v["payload"].as_array().and_then(|errors| errors.first()).and_then(|e| {
                        (e.pointer("/extensions/code").and_then(Value::as_str) == Some("RATE_LIMITED"))
                            .then(|| e.pointer("/extensions/retryAfter").and_then(Value::as_f64))
                    });
                    if let Some(retry_after) = refused {
                        let _ = socket.close(None).await;
                        let retry_after = retry_after.map(|s| Duration::from_secs_f64(s.max(0.0)));
                        return Err(RateLimited { what: "WebSocket subscribe".into(), retry_after }.into());
                    }
                    bail!("subscription refused: {}", v["payload"])
                }
                other => bail!("unexpected message {other:?}"),
            }
        }
    }
}

fn parse_event(event: &Value) -> anyhow::Result<Received> {
    let at = event["at"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc));
    Ok(Received {
        kind: event["kind"].as_str().ok_or_else(|| anyhow!("event without kind: {event}"))?.to_string(),
        seq: event["seq"].as_i64().unwrap_or(0),
        cursor: event["cursor"].as_str().map(str::to_string),
        at,
        snapshot: event["snapshot"].as_bool().unwrap_or(false),
        status: event["status"].as_str().unwrap_or_default().to_string(),
        received_at: Utc::now(),
        received_instant: Instant::now(),
    })
}

/// Update a subscriber's track (and the run's counters) with one received event.
pub fn observe(stats: &Stats, book: Option<&FanoutBook>, track: &Mutex<Track>, event: &Received) {
    stats.events_received.fetch_add(1, Ordering::Relaxed);
    let Ok(mut t) = track.lock() else { return };
    t.events += 1;
    let cursor = event.cursor.as_deref().and_then(|c| c.parse::<i64>().ok());
    if event.snapshot {
        t.connected = true;
        // A second snapshot (a feed restarted without a cursor): what it skipped was lost.
        if t.snapshot_seq.is_some() && event.seq > t.last_seq {
            t.gaps += (event.seq - t.last_seq) as u64;
        }
        t.snapshot_seq = Some(event.seq);
        t.last_seq = t.last_seq.max(event.seq);
        t.last_cursor = t.last_cursor.max(cursor);
        if event.status == "READY" && event.kind == "READY" {
            t.terminal = Some("READY".into());
        }
        return;
    }
    let latency_ms = event.at.map(|at| (event.received_at - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    if let Some(ms) = latency_ms {
        stats.delivery.record_signed_millis(ms);
    }
    if event.kind == "PROGRESS" {
        return;
    }
    if let Some(cursor) = &event.cursor {
        if !t.cursors.insert(cursor.clone()) {
            t.duplicates += 1;
            stats.duplicate_events.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let (Some(book), Some(ms)) = (book, latency_ms) {
            book.record(cursor, ms);
        }
    }
    t.last_cursor = t.last_cursor.max(cursor);
    if event.seq > t.last_seq + 1 && t.snapshot_seq.is_some() {
        t.gaps += (event.seq - t.last_seq - 1) as u64;
    }
    t.last_seq = t.last_seq.max(event.seq);
    t.last_kind = Some(event.kind.clone());
    match event.kind.as_str() {
        "READY" => {
            t.ready += 1;
            if t.ready > 1 && t.one_ready {
                t.duplicates += 1;
                stats.duplicate_events.fetch_add(1, Ordering::Relaxed);
            }
            t.ready_at.get_or_insert(event.received_instant);
            t.terminal = Some("READY".into());
        }
        "FAILED" | "CANCELLED" | "DELETED" => t.terminal = Some(event.kind.clone()),
        _ => {}
    }
}

/// Count what a finished subscriber lost: gaps, plus stored events after its last one
/// up to the video's final `seq`. Adds to `stats.lost_events`; returns the count.
pub fn settle(stats: &Stats, track: &Mutex<Track>, final_seq: i64) -> u64 {
    let Ok(t) = track.lock() else { return 0 };
    let tail = if t.snapshot_seq.is_some() { (final_seq - t.last_seq).max(0) as u64 } else { 0 };
    let lost = t.gaps + tail;
    stats.lost_events.fetch_add(lost, Ordering::Relaxed);
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, seq: i64, cursor: Option<&str>, snapshot: bool) -> Received {
        Received {
            kind: kind.into(),
            seq,
            cursor: cursor.map(str::to_string),
            at: Some(Utc::now()),
            snapshot,
            status: "PROCESSING".into(),
            received_at: Utc::now(),
            received_instant: Instant::now(),
        }
    }

    #[test]
    fn a_slow_consumer_error_names_where_to_resume() {
        let errors = json!([{ "message": "slow", "extensions": { "code": "SLOW_CONSUMER", "resumeAfter": "41" } }]);
        assert_eq!(slow_consumer(&errors), Some(End::SlowConsumer { resume_after: Some(41) }));
        let from_snapshot =
            json!([{ "message": "slow", "extensions": { "code": "SLOW_CONSUMER", "resumeAfter": null } }]);
        assert_eq!(slow_consumer(&from_snapshot), Some(End::SlowConsumer { resume_after: None }));
        let other = json!([{ "message": "gone", "extensions": { "code": "NOT_FOUND" } }]);
        assert_eq!(slow_consumer(&other), None);
    }

    #[test]
    fn gaps_duplicates_and_tail_are_counted() {
        let stats = Stats::default();
        let track = Mutex::new(Track::default());
        observe(&stats, None, &track, &ev("PROGRESS", 0, None, true));
        observe(&stats, None, &track, &ev("UPLOADED", 1, Some("10"), false));
        observe(&stats, None, &track, &ev("UPLOADED", 1, Some("10"), false));
        observe(&stats, None, &track, &ev("PROGRESS", 1, None, false));
        observe(&stats, None, &track, &ev("RENDITION_READY", 3, Some("12"), false));
        // seq 2 is missing (a gap); 4 and 5 never came (the tail).
        assert_eq!(settle(&stats, &track, 5), 3);
        assert_eq!(Stats::get(&stats.duplicate_events), 1);
        assert_eq!(Stats::get(&stats.lost_events), 3);
        assert_eq!(Stats::get(&stats.events_received), 5);
    }

    #[test]
    fn a_second_ready_of_one_encode_is_a_duplicate() {
        let stats = Stats::default();
        let track = Mutex::new(Track { one_ready: true, ..Track::default() });
        observe(&stats, None, &track, &ev("PROGRESS", 0, None, true));
        observe(&stats, None, &track, &ev("READY", 1, Some("1"), false));
        observe(&stats, None, &track, &ev("READY", 2, Some("2"), false));
        assert_eq!(Stats::get(&stats.duplicate_events), 1);
        assert_eq!(settle(&stats, &track, 2), 0);
    }

    #[test]
    fn a_resumed_feed_knows_its_cursor_and_a_second_snapshot_counts_what_it_skipped() {
        let stats = Stats::default();
        let track = Mutex::new(Track::default());
        observe(&stats, None, &track, &ev("PROGRESS", 2, Some("40"), true));
        assert_eq!(track.lock().unwrap().last_cursor, Some(40));
        observe(&stats, None, &track, &ev("PROCESSING", 3, Some("41"), false));
        observe(&stats, None, &track, &ev("PROGRESS", 3, None, false));
        assert_eq!(track.lock().unwrap().last_cursor, Some(41), "PROGRESS has no cursor");
        // Restarted from a snapshot at seq 6: seq 4..=6 never reached this subscriber.
        observe(&stats, None, &track, &ev("PROGRESS", 6, Some("44"), true));
        assert_eq!(settle(&stats, &track, 6), 3);
        assert_eq!(track.lock().unwrap().last_cursor, Some(44));
    }

    #[test]
    fn a_video_transcoded_again_may_be_ready_again() {
        let stats = Stats::default();
        let track = Mutex::new(Track::default());
        observe(&stats, None, &track, &ev("READY", 3, None, true));
        observe(&stats, None, &track, &ev("PROCESSING", 4, Some("4"), false));
        observe(&stats, None, &track, &ev("READY", 5, Some("5"), false));
        observe(&stats, None, &track, &ev("PROCESSING", 6, Some("6"), false));
        observe(&stats, None, &track, &ev("READY", 7, Some("7"), false));
        assert_eq!(Stats::get(&stats.duplicate_events), 0);
        assert_eq!(settle(&stats, &track, 7), 0);
    }
}
