//! `GET /graphql/ws`: one `Session` actor per WebSocket connection.
//!
//! The session speaks both subscription protocols (`graphql-transport-ws` and the
//! legacy `graphql-ws`) through async-graphql's protocol state machine, and owns
//! what the protocol library does not:
//! - credentials come in `connection_init` (`{"authorization": "Bearer …"}` or
//!   `{"x-api-key": "…"}`); bad ones close the socket with 4403;
//! - no `connection_init` within `graphql.ws_init_timeout_secs` closes with 4408;
//! - an authenticated session closes with 4403 when its token expires, and when a
//!   periodic re-check (`graphql.ws_recheck_secs`) finds the session revoked, the
//!   API key revoked or the user disabled;
//! - frames and reassembled messages are bounded; silent peers are dropped;
//! - at most `graphql.ws_max_subscriptions` operations run at once per socket: one
//!   more is answered with an `error` message for its id (code `RATE_LIMITED`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, Message, ProtocolError, WebsocketContext};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;

use crate::auth::principal::{self, RequestAuth};
use crate::graphql::AppSchema;
use crate::startup::AppState;

const PING_EVERY: Duration = Duration::from_secs(5);
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest single frame and largest reassembled message a client may send.
const MAX_FRAME: usize = 64 * 1024;
const MAX_MESSAGE: usize = 256 * 1024;

/// Close code for "authentication failed or lost" (graphql-transport-ws: Forbidden).
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code for "no connection_init in time" (graphql-transport-ws).
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;
const FORBIDDEN_PREFIX: &str = "Forbidden: ";

/// The credential a session was opened with, kept to re-check it.
#[derive(Debug, Clone)]
enum Credential {
    Bearer(String),
    ApiKey(String),
}

#[derive(Default)]
struct SessionAuth {
    initialised: bool,
    /// `connection_init` carried credentials that were refused.
    refused: bool,
    credential: Option<Credential>,
    /// Unix seconds when the access token expires.
    expires_at: Option<i64>,
}

pub struct Session {
    state: AppState,
    schema: AppSchema,
    protocol: WebSocketProtocols,
    last_heard: Instant,
    inbound: Option<async_channel::Sender<Vec<u8>>>,
    continuation: Vec<u8>,
    auth: Arc<Mutex<SessionAuth>>,
    /// The client's address and agent, for rate limits inside the socket.
    client: principal::ClientInfo,
    /// Ids of the operations the client started and that have not ended.
    active: HashSet<String>,
}

pub async fn graphql_ws(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
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
    let session = Session {
        state: state.get_ref().clone(),
        schema: schema.get_ref().clone(),
        protocol,
        last_heard: Instant::now(),
        inbound: None,
        continuation: Vec::new(),
        auth: Arc::new(Mutex::new(SessionAuth::default())),
        client: principal::ClientInfo {
            ip: Some(state.client_ip(req.peer_addr(), req.headers())),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        },
        active: HashSet::new(),
    };
    ws::WsResponseBuilder::new(session, &req, payload).protocols(&ALL_WEBSOCKET_PROTOCOLS).frame_size(MAX_FRAME).start()
}

/// Check a `connection_init` payload; `Err` carries the client-safe reason.
async fn authenticate_init(
    state: &AppState,
    payload: &serde_json::Value,
) -> Result<(RequestAuth, Option<Credential>, Option<i64>), String> {
    let field = |name: &str| {
        payload
            .as_object()
            .and_then(|map| map.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)))
            .and_then(|(_, value)| value.as_str())
            .map(str::to_string)
    };
    if let Some(header) = field("authorization") {
        let token =
            header.strip_prefix("Bearer ").map(str::trim).ok_or("authorization must be `Bearer <access token>`")?;
        let expires_at = state.tokens.verify_access_token(token).ok().map(|(claims, _)| claims.exp);
        return match principal::authenticate_access_token(state, token).await {
            auth @ RequestAuth::Authenticated(_) => Ok((auth, Some(Credential::Bearer(token.to_string())), expires_at)),
            _ => Err("invalid or expired credentials".into()),
        };
    }
    if let Some(key) = field("x-api-key") {
        let mut headers = actix_web::http::header::HeaderMap::new();
        let value = key.parse().map_err(|_| "invalid or expired credentials".to_string())?;
        headers.insert(actix_web::http::header::HeaderName::from_static(principal::API_KEY_HEADER), value);
        return match principal::authenticate(state, &headers).await {
            auth @ RequestAuth::Authenticated(_) => Ok((auth, Some(Credential::ApiKey(key)), None)),
            _ => Err("invalid or expired credentials".into()),
        };
    }
    Ok((RequestAuth::Anonymous, None, None))
}

/// Is the credential still good (not revoked, user not disabled, not expired)?
async fn still_valid(state: &AppState, credential: &Credential) -> bool {
    let auth = match credential {
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
    };
    matches!(auth, RequestAuth::Authenticated(_))
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
        let recheck = Duration::from_millis(self.state.settings.graphql.ws_recheck_ms.max(50));
        ctx.run_interval(recheck, |session, ctx| {
            let (credential, expires_at) = match session.auth.lock() {
                Ok(auth) => (auth.credential.clone(), auth.expires_at),
                Err(_) => return,
            };
            let Some(credential) = credential else { return };
            if expires_at.is_some_and(|exp| exp <= chrono::Utc::now().timestamp()) {
                Self::close(ctx, CLOSE_FORBIDDEN, "token expired");
                return;
            }
            let state = session.state.clone();
            async move { still_valid(&state, &credential).await }
                .into_actor(session)
                .map(|valid, _, ctx| {
                    if !valid {
                        Self::close(ctx, CLOSE_FORBIDDEN, "session revoked");
                    }
                })
                .spawn(ctx);
        });
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

impl Session {
    /// Track the operations a client message starts or stops; refuse (with an
    /// `error` message for its id) one that would exceed the per-socket cap.
    fn admit(&mut self, payload: &[u8], ctx: &mut WebsocketContext<Self>) -> bool {
        match operation(payload) {
            Some(Operation::Started(id)) => {
                let cap = self.state.settings.graphql.ws_max_subscriptions;
                if self.active.contains(&id) || self.active.len() < cap {
                    // A duplicate id is the protocol library's to refuse (4409).
                    self.active.insert(id);
                    return true;
                }
                metrics::counter!("reelhouse_ws_subscriptions_refused_total").increment(1);
                let error = serde_json::json!({
                    "message": format!("at most {cap} subscriptions may run on one connection"),
                    "extensions": { "code": crate::error::ErrorCode::RateLimited.as_str() },
                });
                let payload = match self.protocol {
                    WebSocketProtocols::GraphQLWS => serde_json::json!([error]),
                    _ => error,
                };
                ctx.text(serde_json::json!({ "type": "error", "id": id, "payload": payload }).to_string());
                false
            }
            Some(Operation::Ended(id)) => {
                self.active.remove(&id);
                true
            }
            None => true,
        }
    }
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
            let result = authenticate_init(&state, &payload).await;
            let mut slot = auth_slot.lock().map_err(|_| async_graphql::Error::new("internal error"))?;
            slot.initialised = true;
            match result {
                Ok((auth, credential, expires_at)) => {
                    slot.credential = credential;
                    slot.expires_at = expires_at;
                    let mut data = Data::default();
                    data.insert(auth);
                    data.insert(client);
                    Ok(data)
                }
                Err(reason) => {
                    slot.refused = true;
                    Err(async_graphql::Error::new(format!("{FORBIDDEN_PREFIX}{reason}")))
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
                            session.active.remove(&id);
                        }
                    }
                    ctx.text(text)
                }
                WsMessage::Close(code, reason) => {
                    // The protocol library closes a refused init with 1002; the
                    // graphql-transport-ws contract for it is 4403 Forbidden.
                    let code = if reason.starts_with(FORBIDDEN_PREFIX) { CLOSE_FORBIDDEN } else { code };
                    Self::close(ctx, code, reason.trim_start_matches(FORBIDDEN_PREFIX));
                }
            })
            .finish()
            .then(|_, session, ctx| {
                // The legacy protocol reports a refused init as a message and ends.
                let refused = session.auth.lock().map(|a| a.refused).unwrap_or(false);
                if refused {
                    Self::close(ctx, CLOSE_FORBIDDEN, "invalid or expired credentials");
                } else {
                    ctx.stop();
                }
                fut::ready(())
            })
            .spawn(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!("reelhouse_ws_sessions").decrement(1.0);
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for Session {
    fn handle(&mut self, message: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        let Ok(message) = message else {
            ctx.stop();
            return;
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
        let payload = payload.filter(|payload| self.admit(payload, ctx));
        if let (Some(payload), Some(inbound)) = (payload, self.inbound.clone()) {
            async move { inbound.send(payload).await }
                .into_actor(self)
                .map(|sent, _, ctx| {
                    if sent.is_err() {
                        ctx.stop();
                    }
                })
                .spawn(ctx);
        }
    }
}
