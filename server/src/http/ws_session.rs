//! `GET /graphql/ws`: one `Session` actor per WebSocket connection.
//!
//! The session speaks both subscription protocols (`graphql-transport-ws` and the
//! legacy `graphql-ws`) through async-graphql's protocol state machine, and owns
//! what the protocol library does not:
//! - credentials come in `connection_init` (`{"authorization": "Bearer …"}` or
//!   `{"x-api-key": "…"}`); bad ones close the socket with 4403; ones the database
//!   cannot check right now close it with 1013 (try again later, reason
//!   `UNAVAILABLE: …`): an outage is not a verdict about the caller;
//! - no `connection_init` within `graphql.ws_init_timeout_secs` closes with 4408;
//! - an authenticated session closes with 4403 when its token expires, and when
//!   its credentials no longer say what they said at `connection_init`: session or
//!   API key revoked, user disabled, or a different role (a demotion, or an API
//!   key's owner demoted). This is checked before every operation starts, and
//!   every `graphql.ws_recheck_ms` for the ones that keep running, and at once when
//!   an access change names the socket's user (`access`: a session revoked,
//!   an account disabled, deleted or given another role). A re-check the
//!   database cannot answer keeps the socket open and is tried again at the next
//!   interval (an operation starting meanwhile gets an `UNAVAILABLE` error);
//! - every operation costs one token of the client's `api` rate-limit bucket (the
//!   one HTTP requests use), on top of what its complexity costs; refused ones get
//!   an `error` message for their id (code `RATE_LIMITED`, `retryAfter`);
//! - frames and reassembled messages are bounded; silent peers are dropped;
//! - at most `graphql.ws_max_subscriptions` operations run at once per socket and
//!   `graphql.ws_max_subscriptions_per_user` per user: one more is answered with an
//!   `error` message for its id (code `RATE_LIMITED`);
//! - at most `graphql.ws_max_sockets_per_ip` sockets per client address (the
//!   upgrade is refused with 429) and `graphql.ws_max_sockets_per_user` per user
//!   (closed at `connection_init` with 4429, reason `RATE_LIMITED: …`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, Message, ProtocolError, WebsocketContext};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use futures::StreamExt;

use crate::auth::principal::{self, Principal, RequestAuth};
use crate::error::{AppError, ErrorCode};
use crate::graphql::AppSchema;
use crate::limits::ws::{Counted, Slot};
use crate::limits::{ip_subject, Policy};
use crate::state::AppState;

const PING_EVERY: Duration = Duration::from_secs(5);
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest single frame and largest reassembled message a client may send.
const MAX_FRAME: usize = 64 * 1024;
const MAX_MESSAGE: usize = 256 * 1024;

/// Close code for "authentication failed or lost" (graphql-transport-ws: Forbidden).
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code for "no connection_init in time" (graphql-transport-ws).
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;
/// Close code for "too many sockets for this user" (the reason starts `RATE_LIMITED`).
pub const CLOSE_TOO_MANY: u16 = 4429;
/// Close code for "credentials cannot be checked now" (RFC 6455 1013, Try Again Later).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
const FORBIDDEN_PREFIX: &str = "Forbidden: ";
/// Close reasons stay under the 123 bytes a close frame allows.
const UNAVAILABLE_REASON: &str = "UNAVAILABLE: credentials cannot be checked right now, try again later";
const RATE_LIMITED_PREFIX: &str = "RATE_LIMITED: ";

/// The credential a session was opened with, kept to re-check it.
#[derive(Debug, Clone)]
enum Credential {
    Bearer(String),
    ApiKey(String),
}

#[derive(Default)]
struct SessionAuth {
    initialised: bool,
    /// `connection_init` was refused: the close code and reason.
    refused: Option<(u16, String)>,
    credential: Option<Credential>,
    /// Who the credential said the caller was at `connection_init`; any later
    /// answer that differs (role, user, session, key) closes the socket.
    principal: Option<Principal>,
    /// Unix seconds when the access token expires.
    expires_at: Option<i64>,
    /// This socket's place among its user's (`ws_max_sockets_per_user`).
    user_slot: Option<Slot>,
    /// What `connection_init` established (the data every operation runs with).
    connection: Option<RequestAuth>,
}

pub struct Session {
    state: AppState,
    schema: AppSchema,
    /// Frames rendered once and shared by sockets (`graphql::shared_frames`).
    frames: web::Data<crate::graphql::shared_frames::SharedFrames>,
    protocol: WebSocketProtocols,
    last_heard: Instant,
    inbound: Option<async_channel::Sender<Vec<u8>>>,
    continuation: Vec<u8>,
    auth: Arc<Mutex<SessionAuth>>,
    /// The client's address and agent, for rate limits inside the socket.
    client: principal::ClientInfo,
    /// Operations the client started and that have not ended, each with its place
    /// among its user's running operations (none for anonymous sockets).
    active: HashMap<String, Option<Slot>>,
    /// Operations served with shared frames (`graphql::shared_frames`): the stream
    /// of their frames, cancelled when the client completes them.
    shared: HashMap<String, SpawnHandle>,
    /// This socket's place among its address's (`ws_max_sockets_per_ip`).
    _address_slot: Slot,
}

pub async fn graphql_ws(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
    frames: web::Data<crate::graphql::shared_frames::SharedFrames>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|value| value.to_str().ok())
        .and_then(|protocols| protocols.split(',').find_map(|p| p.trim().parse::<WebSocketProtocols>().ok()))
        .ok_or_else(|| {
            crate::error::AppError::bad_input("Sec-WebSocket-Protocol must be graphql-transport-ws or graphql-ws")
        })?;
    let ip = crate::http::client_ip::client_addr(req.peer_addr(), req.headers(), &state.trusted_proxies);
    let cap = state.settings.graphql.ws_max_sockets_per_ip;
    let address_slot = state.ws_admission.admit(Counted::SocketFrom(ip_subject(&ip)), cap).ok_or_else(|| {
        metrics::counter!("reelhouse_ws_sockets_refused_total", "per" => "address").increment(1);
        AppError::new(ErrorCode::RateLimited, format!("at most {cap} WebSockets may be open from one address"))
            .with_retry_after(1)
    })?;
    let session = Session {
        state: state.get_ref().clone(),
        schema: schema.get_ref().clone(),
        frames,
        protocol,
        last_heard: Instant::now(),
        inbound: None,
        continuation: Vec::new(),
        auth: Arc::new(Mutex::new(SessionAuth::default())),
        client: principal::ClientInfo {
            ip: Some(ip),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            request_id: crate::http::graphql::request_id(&req),
        },
        active: HashMap::new(),
        shared: HashMap::new(),
        _address_slot: address_slot,
    };
    ws::WsResponseBuilder::new(session, &req, payload).protocols(&ALL_WEBSOCKET_PROTOCOLS).frame_size(MAX_FRAME).start()
}

/// Why a `connection_init` was refused.
enum InitRefusal {
    /// Bad credentials (4403); the client-safe reason.
    Forbidden(String),
    /// The database could not check them (1013).
    Unavailable,
}

/// Check a `connection_init` payload.
async fn authenticate_init(
    state: &AppState,
    payload: &serde_json::Value,
) -> Result<(RequestAuth, Option<Credential>, Option<i64>), InitRefusal> {
    let invalid = || InitRefusal::Forbidden("invalid or expired credentials".into());
    let field = |name: &str| {
        payload
            .as_object()
            .and_then(|map| map.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)))
            .and_then(|(_, value)| value.as_str())
            .map(str::to_string)
    };
    if let Some(header) = field("authorization") {
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| InitRefusal::Forbidden("authorization must be `Bearer <access token>`".into()))?;
        let expires_at = state.tokens.verify_access_token(token).ok().map(|(claims, _)| claims.exp);
        return match principal::authenticate_access_token(state, token).await {
            auth @ RequestAuth::Authenticated(_) => Ok((auth, Some(Credential::Bearer(token.to_string())), expires_at)),
            RequestAuth::Unavailable => Err(InitRefusal::Unavailable),
            _ => Err(invalid()),
        };
    }
    if let Some(key) = field("x-api-key") {
        let mut headers = actix_web::http::header::HeaderMap::new();
        let value = key.parse().map_err(|_| invalid())?;
        headers.insert(actix_web::http::header::HeaderName::from_static(principal::API_KEY_HEADER), value);
        return match principal::authenticate(state, &headers).await {
            auth @ RequestAuth::Authenticated(_) => Ok((auth, Some(Credential::ApiKey(key)), None)),
            RequestAuth::Unavailable => Err(InitRefusal::Unavailable),
            _ => Err(invalid()),
        };
    }
    Ok((RequestAuth::Anonymous, None, None))
}

/// What the credential amounts to now.
async fn reauthenticate(state: &AppState, credential: &Credential) -> RequestAuth {
    match credential {
        Credential::Bearer(token) => principal::authenticate_access_token(state, token).await,
        Credential::ApiKey(key) => {
            let mut headers = actix_web::http::header::HeaderMap::new();
            match key.parse() {
                Ok(value) => {
                    headers.insert(actix_web::http::header::HeaderName::from_static(principal::API_KEY_HEADER), value);
                    principal::authenticate(state, &headers).await
                }
                Err(_) => RequestAuth::Invalid("bad key"),
            }
        }
    }
}

/// Why a re-check did not confirm the socket's credential.
enum RecheckFailed {
    /// Revoked, disabled, another role, expired: close with 4403.
    Lost(&'static str),
    /// The database did not answer: neither confirmed nor lost; try again later.
    Unavailable,
}

/// `Err` when the credential no longer grants exactly what it granted at
/// `connection_init` (revoked, disabled, or another role), or cannot be checked now.
fn verdict(opened_as: Option<&Principal>, now: &RequestAuth) -> Result<(), RecheckFailed> {
    use RecheckFailed::Lost;
    match (opened_as, now) {
        (Some(then), RequestAuth::Authenticated(now))
            if then.user_id == now.user_id
                && then.role == now.role
                && then.method == now.method
                && then.family_id == now.family_id
                && then.api_key_id == now.api_key_id =>
        {
            Ok(())
        }
        (_, RequestAuth::Authenticated(_)) => Err(Lost("credentials changed")),
        (_, RequestAuth::Unavailable) => Err(RecheckFailed::Unavailable),
        _ => Err(Lost("session revoked")),
    }
}

/// Re-check the socket's credential (if it has one).
async fn recheck(state: AppState, auth: Arc<Mutex<SessionAuth>>) -> Result<(), RecheckFailed> {
    let (credential, opened_as, expires_at) = match auth.lock() {
        Ok(auth) => (auth.credential.clone(), auth.principal.clone(), auth.expires_at),
        Err(_) => return Err(RecheckFailed::Lost("internal error")),
    };
    let Some(credential) = credential else { return Ok(()) };
    if expires_at.is_some_and(|exp| exp <= chrono::Utc::now().timestamp()) {
        return Err(RecheckFailed::Lost("token expired"));
    }
    let outcome = verdict(opened_as.as_ref(), &reauthenticate(&state, &credential).await);
    if matches!(outcome, Err(RecheckFailed::Unavailable)) {
        metrics::counter!("reelhouse_ws_rechecks_deferred_total").increment(1);
    }
    outcome
}

/// An access change that may concern this socket, or `Lagged`: some were missed.
enum AccessSignal {
    Changed(crate::access::AccessChange),
    Lagged,
}

impl Session {
    fn close(ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        ctx.close(Some(CloseReason { code: CloseCode::Other(code), description: Some(reason.to_string()) }));
        ctx.stop();
    }

    fn schedule_checks(&self, ctx: &mut WebsocketContext<Self>) {
        let init_timeout = Duration::from_secs(self.state.settings.graphql.ws_init_timeout_secs);
        ctx.run_later(init_timeout, |session, ctx| {
            let initialised = session.auth.lock().map(|a| a.initialised).unwrap_or(false);
            if !initialised {
                Self::close(ctx, CLOSE_INIT_TIMEOUT, "Connection initialisation timeout");
            }
        });
        ctx.run_interval(PING_EVERY, |session, ctx| {
            if session.last_heard.elapsed() > PEER_TIMEOUT {
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
        let recheck_every = Duration::from_millis(self.state.settings.graphql.ws_recheck_ms.max(50));
        ctx.run_interval(recheck_every, |session, ctx| session.recheck_now(ctx));
        let signals = futures::stream::unfold(self.state.access_signals.subscribe(), |mut rx| async move {
            use tokio::sync::broadcast::error::RecvError;
            match rx.recv().await {
                Ok(change) => Some((AccessSignal::Changed(change), rx)),
                Err(RecvError::Lagged(_)) => Some((AccessSignal::Lagged, rx)),
                Err(RecvError::Closed) => None,
            }
        });
        ctx.add_stream(signals);
    }

    /// Re-check the credential now; close with 4403 if it was lost.
    fn recheck_now(&self, ctx: &mut WebsocketContext<Self>) {
        recheck(self.state.clone(), self.auth.clone())
            .into_actor(self)
            .map(|outcome, _, ctx| match outcome {
                Err(RecheckFailed::Lost(reason)) => Self::close(ctx, CLOSE_FORBIDDEN, reason),
                // The next interval checks again; the socket stays open meanwhile.
                Err(RecheckFailed::Unavailable) => {
                    tracing::debug!("credentials could not be re-checked (database unavailable); keeping the socket")
                }
                Ok(()) => {}
            })
            .spawn(ctx);
    }
}

/// What a protocol message does to the set of running operations.
#[derive(Debug, PartialEq)]
enum Operation {
    Started(String),
    Ended(String),
}

/// Reads the `type` and `id` of a protocol message (either protocol, either way).
fn operation(message: &[u8]) -> Option<Operation> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
        id: Option<String>,
    }
    let envelope: Envelope = serde_json::from_slice(message).ok()?;
    let id = envelope.id?;
    match envelope.kind.as_str() {
        "subscribe" | "start" => Some(Operation::Started(id)),
        "complete" | "stop" | "error" => Some(Operation::Ended(id)),
        _ => None,
    }
}

/// Why an operation was not started.
enum Refusal {
    /// Answer with an `error` message for the operation's id; the socket stays.
    Operation(AppError),
    /// The credentials changed: close with 4403.
    Socket(&'static str),
}

impl Session {
    /// Answer operation `id` with an `error` message (the socket stays open).
    fn refuse_operation(&self, ctx: &mut WebsocketContext<Self>, id: &str, error: &AppError) {
        let mut extensions = serde_json::json!({ "code": error.code().as_str() });
        if let Some(secs) = error.retry_after_secs() {
            extensions["retryAfter"] = secs.into();
        }
        let error = serde_json::json!({ "message": error.message(), "extensions": extensions });
        let payload = match self.protocol {
            WebSocketProtocols::GraphQLWS => serde_json::json!([error]),
            _ => error,
        };
        ctx.text(serde_json::json!({ "type": "error", "id": id, "payload": payload }).to_string());
    }

    /// Hand a client message to the protocol state machine, in arrival order.
    fn forward(&mut self, payload: Vec<u8>, ctx: &mut WebsocketContext<Self>) {
        let Some(inbound) = self.inbound.clone() else { return };
        async move { inbound.send(payload).await }
            .into_actor(self)
            .map(|sent, _, ctx| {
                if sent.is_err() {
                    ctx.stop();
                }
            })
            .spawn(ctx);
    }

    /// A client message: an operation starting goes through admission first; the
    /// rest (and operations ending) go straight to the protocol.
    fn receive(&mut self, payload: Vec<u8>, ctx: &mut WebsocketContext<Self>) {
        match operation(&payload) {
            Some(Operation::Started(id)) if !self.active.contains_key(&id) => self.start_operation(id, payload, ctx),
            Some(Operation::Ended(id)) => {
                self.active.remove(&id);
                if let Some(frames) = self.shared.remove(&id) {
                    // As the protocol machine answers a stop of a running operation.
                    ctx.cancel_future(frames);
                    ctx.text(complete_frame(&id));
                    return;
                }
                self.forward(payload, ctx);
            }
            // A duplicate id is the protocol library's to refuse (4409).
            _ => self.forward(payload, ctx),
        }
    }

    /// Admit operation `id`: the per-socket cap, the credentials (re-checked now,
    /// so a demotion counts from the next operation on), one `api` token, and the
    /// per-user cap. The actor handles nothing else meanwhile (`ctx.wait`), so
    /// later messages cannot overtake this one.
    fn start_operation(&mut self, id: String, payload: Vec<u8>, ctx: &mut WebsocketContext<Self>) {
        let cap = self.state.settings.graphql.ws_max_subscriptions;
        if self.active.len() >= cap {
            metrics::counter!("reelhouse_ws_subscriptions_refused_total").increment(1);
            let error =
                AppError::new(ErrorCode::RateLimited, format!("at most {cap} subscriptions may run on one connection"));
            self.refuse_operation(ctx, &id, &error);
            return;
        }
        let state = self.state.clone();
        let auth = self.auth.clone();
        let subject = ip_subject(self.client.ip.as_deref().unwrap_or("unknown"));
        let admission = async move {
            recheck(state.clone(), auth).await.map_err(|failed| match failed {
                RecheckFailed::Lost(reason) => Refusal::Socket(reason),
                RecheckFailed::Unavailable => Refusal::Operation(principal::auth_unavailable()),
            })?;
            state.limiter.enforce(Policy::Api, subject, 1).await.map_err(Refusal::Operation)?;
            Ok(())
        };
        ctx.wait(admission.into_actor(self).map(move |outcome: Result<(), Refusal>, session, ctx| match outcome {
            Err(Refusal::Socket(reason)) => Self::close(ctx, CLOSE_FORBIDDEN, reason),
            Err(Refusal::Operation(error)) => session.refuse_operation(ctx, &id, &error),
            Ok(()) => {
                let user = session.auth.lock().ok().and_then(|a| a.principal.as_ref().map(|p| p.user_id));
                let slot = match user {
                    Some(user) => {
                        let cap = session.state.settings.graphql.ws_max_subscriptions_per_user;
                        match session.state.ws_admission.admit(Counted::OperationOf(user), cap) {
                            Some(slot) => Some(slot),
                            None => {
                                metrics::counter!("reelhouse_ws_subscriptions_refused_total").increment(1);
                                let error = AppError::new(
                                    ErrorCode::RateLimited,
                                    format!("at most {cap} subscriptions may run for one user"),
                                );
                                session.refuse_operation(ctx, &id, &error);
                                return;
                            }
                        }
                    }
                    None => None,
                };
                session.active.insert(id.clone(), slot);
                session.start_admitted(id, payload, ctx);
            }
        }));
    }
}

/// `{"type":"complete","id":"…"}`, as the protocol machine writes it.
fn complete_frame(id: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"type":"complete","id":{id}}}"#)
}

/// One item of a shared operation's frame stream.
enum SharedFrame {
    Text(String),
    /// The operation ended (its feed stopped, or it never started).
    End,
}

/// A shared operation's frame, with the operation's id.
struct SharedItem(String, SharedFrame);

impl Session {
    /// Run an admitted operation: a shareable subscription through shared frames,
    /// anything else through the protocol machine.
    fn start_admitted(&mut self, id: String, payload: Vec<u8>, ctx: &mut WebsocketContext<Self>) {
        #[derive(serde::Deserialize)]
        struct Start {
            payload: async_graphql::Request,
        }
        let connection = self.auth.lock().ok().and_then(|auth| auth.connection.clone());
        let request = match (self.state.settings.graphql.ws_shared_frames, connection) {
            (true, Some(connection)) => serde_json::from_slice::<Start>(&payload)
                .ok()
                .map(|start| start.payload)
                .filter(crate::graphql::shared_frames::is_shareable)
                .map(|request| (request, connection)),
            _ => None,
        };
        let Some((request, connection)) = request else {
            self.forward(payload, ctx);
            return;
        };
        let frame_type = match self.protocol {
            WebSocketProtocols::SubscriptionsTransportWS => "data",
            WebSocketProtocols::GraphQLWS => "next",
        };
        let (sink, frames) =
            self.frames.sink(self.schema.clone(), &request, frame_type, &id, crate::graphql::events::SUBSCRIBER_BUFFER);
        let request = request.data(crate::graphql::shared_frames::SharedDelivery::new(sink));
        let mut data = Data::default();
        data.insert(connection);
        data.insert(self.client.clone());
        // The operation itself runs as the protocol machine would run it (parse,
        // validation, limits, the resolver's checks); a refusal comes out as its one
        // response. A started feed sends its frames through `frames` instead.
        let prefix = crate::graphql::shared_frames::frame_prefix(frame_type, &id);
        let refusals = self.schema.execute_stream_with_session_data(request, Arc::new(data)).map(move |response| {
            let payload = crate::graphql::shared_frames::payload_text(&response);
            SharedFrame::Text(crate::graphql::shared_frames::splice(&prefix, &payload))
        });
        let operation = id.clone();
        let stream = refusals
            .chain(frames.map(SharedFrame::Text))
            .chain(futures::stream::once(async { SharedFrame::End }))
            .map(move |frame| SharedItem(operation.clone(), frame));
        let handle = ctx.add_stream(stream);
        self.shared.insert(id, handle);
    }
}

impl StreamHandler<SharedItem> for Session {
    fn handle(&mut self, SharedItem(id, frame): SharedItem, ctx: &mut Self::Context) {
        match frame {
            SharedFrame::Text(text) => ctx.text(text),
            SharedFrame::End => {
                if self.shared.remove(&id).is_some() {
                    // Gives back the user's slot too.
                    self.active.remove(&id);
                    ctx.text(complete_frame(&id));
                }
            }
        }
    }

    /// One operation's frames ended; the socket goes on.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!("reelhouse_ws_sessions").increment(1.0);
        self.schedule_checks(ctx);
        let (tx, rx) = async_channel::bounded::<Vec<u8>>(64);
        self.inbound = Some(tx);

        let state = self.state.clone();
        let auth_slot = self.auth.clone();
        let client = self.client.clone();
        let on_init = move |payload: serde_json::Value| async move {
            // The `database` breaker, as for `/graphql`: open, the init is refused
            // as unavailable (1013) at once; an outage met counts one failure.
            let result = match state.breakers.database.try_acquire() {
                Err(_) => Err(InitRefusal::Unavailable),
                Ok(permit) => {
                    let (result, outage) = crate::breaker::observe_database(authenticate_init(&state, &payload)).await;
                    if let Some(category) = outage {
                        permit.failure(category);
                    }
                    result
                }
            };
            let mut slot = auth_slot.lock().map_err(|_| async_graphql::Error::new("internal error"))?;
            slot.initialised = true;
            match result {
                Ok((auth, credential, expires_at)) => {
                    if let RequestAuth::Authenticated(principal) = &auth {
                        let cap = state.settings.graphql.ws_max_sockets_per_user;
                        let Some(user_slot) = state.ws_admission.admit(Counted::SocketOf(principal.user_id), cap)
                        else {
                            metrics::counter!("reelhouse_ws_sockets_refused_total", "per" => "user").increment(1);
                            let reason = format!("{RATE_LIMITED_PREFIX}at most {cap} WebSockets may be open per user");
                            slot.refused = Some((CLOSE_TOO_MANY, reason.clone()));
                            return Err(async_graphql::Error::new(reason));
                        };
                        slot.user_slot = Some(user_slot);
                        slot.principal = Some(principal.clone());
                    }
                    slot.credential = credential;
                    slot.expires_at = expires_at;
                    slot.connection = Some(auth.clone());
                    let mut data = Data::default();
                    data.insert(auth);
                    data.insert(client);
                    Ok(data)
                }
                Err(InitRefusal::Forbidden(reason)) => {
                    slot.refused = Some((CLOSE_FORBIDDEN, "invalid or expired credentials".into()));
                    Err(async_graphql::Error::new(format!("{FORBIDDEN_PREFIX}{reason}")))
                }
                Err(InitRefusal::Unavailable) => {
                    slot.refused = Some((CLOSE_TRY_AGAIN_LATER, UNAVAILABLE_REASON.into()));
                    Err(async_graphql::Error::new(UNAVAILABLE_REASON))
                }
            }
        };
        let protocol = self.protocol;
        WebSocket::new(self.schema.clone(), rx, protocol)
            .on_connection_init(on_init)
            .into_actor(self)
            .map(|message, session: &mut Self, ctx| match message {
                WsMessage::Text(text) => {
                    // Only `complete` (and `error`) end an operation; skip parsing `next`.
                    if !text.starts_with(r#"{"type":"next""#) && !text.starts_with(r#"{"type":"data""#) {
                        if let Some(Operation::Ended(id)) = operation(text.as_bytes()) {
                            // Gives back the user's slot too.
                            session.active.remove(&id);
                        }
                    }
                    ctx.text(text)
                }
                WsMessage::Close(code, reason) => {
                    // The protocol library closes a refused init with 1002; the
                    // graphql-transport-ws contract for it is 4403 Forbidden.
                    if reason.starts_with(RATE_LIMITED_PREFIX) {
                        Self::close(ctx, CLOSE_TOO_MANY, &reason);
                        return;
                    }
                    if reason == UNAVAILABLE_REASON {
                        Self::close(ctx, CLOSE_TRY_AGAIN_LATER, &reason);
                        return;
                    }
                    let code = if reason.starts_with(FORBIDDEN_PREFIX) { CLOSE_FORBIDDEN } else { code };
                    Self::close(ctx, code, reason.trim_start_matches(FORBIDDEN_PREFIX));
                }
            })
            .finish()
            .then(|_, session, ctx| {
                // The legacy protocol reports a refused init as a message and ends.
                let refused = session.auth.lock().ok().and_then(|a| a.refused.clone());
                match refused {
                    Some((code, reason)) => Self::close(ctx, code, &reason),
                    None => ctx.stop(),
                }
                fut::ready(())
            })
            .spawn(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!("reelhouse_ws_sessions").decrement(1.0);
    }
}

impl StreamHandler<AccessSignal> for Session {
    fn handle(&mut self, signal: AccessSignal, ctx: &mut Self::Context) {
        let opened_as = self.auth.lock().ok().and_then(|a| a.principal.as_ref().map(|p| (p.user_id, p.family_id)));
        let Some((user_id, family_id)) = opened_as else { return };
        let concerned = match signal {
            AccessSignal::Changed(change) => change.concerns(user_id, family_id),
            AccessSignal::Lagged => true,
        };
        if concerned {
            metrics::counter!("reelhouse_ws_pushed_rechecks_total").increment(1);
            self.recheck_now(ctx);
        }
    }

    /// The signal channel ends only with the process; the socket is not stopped for it.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Result<Message, ProtocolError>> for Session {
    fn handle(&mut self, message: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        let message = match message {
            Ok(message) => message,
            // A frame over `MAX_FRAME` closes with 1009 as a message over
            // `MAX_MESSAGE` does, not with a bare reset (found by the fuzzer).
            Err(ProtocolError::Overflow) => {
                Self::close(ctx, 1009, "frame too large");
                return;
            }
            Err(_) => {
                Self::close(ctx, 1002, "protocol error");
                return;
            }
        };
        self.last_heard = Instant::now();
        let payload: Option<Vec<u8>> = match message {
            Message::Ping(bytes) => {
                ctx.pong(&bytes);
                None
            }
            Message::Pong(_) | Message::Nop => None,
            Message::Text(text) => Some(text.into_bytes().to_vec()),
            Message::Binary(bytes) => Some(bytes.to_vec()),
            Message::Continuation(item) => match item {
                actix_http::ws::Item::FirstText(bytes) | actix_http::ws::Item::FirstBinary(bytes) => {
                    self.continuation = bytes.to_vec();
                    None
                }
                actix_http::ws::Item::Continue(bytes) => {
                    self.continuation.extend_from_slice(&bytes);
                    None
                }
                actix_http::ws::Item::Last(bytes) => {
                    self.continuation.extend_from_slice(&bytes);
                    Some(std::mem::take(&mut self.continuation))
                }
            },
            Message::Close(_) => {
                ctx.stop();
                None
            }
        };
        if self.continuation.len() > MAX_MESSAGE || payload.as_ref().is_some_and(|p| p.len() > MAX_MESSAGE) {
            Self::close(ctx, 1009, "message too large");
            return;
        }
        if let Some(payload) = payload {
            self.receive(payload, ctx);
        }
    }
}
