//! Generated GraphQL requests sent over HTTP POST, HTTP GET and graphql-transport-ws,
//! anonymous or signed in, each answer judged: no 5xx (a 503 with `Retry-After`
//! excepted), every GraphQL error with a string `extensions.code`, every non-GraphQL
//! error body JSON with a `code`, no WebSocket closed with 1011 (internal error).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::schema::{generate, Generated, Known, OpKind, Schema};
use super::{case_rng, forbidden_status, untyped_graphql_error, Tally};

/// The stream number of GraphQL cases in [`case_rng`].
pub const STREAM: u64 = 1;
/// Longest a subscription is watched before the fuzzer ends it.
const SUBSCRIPTION_WATCH: Duration = Duration::from_millis(400);
/// Longest GET URL sent (hyper refuses longer ones).
const MAX_GET_URL: usize = 60_000;
/// Longest any one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Everything the GraphQL workers share.
pub struct Target {
    pub http: reqwest::Client,
    pub base: String,
    pub schema: Schema,
    pub known: Known,
    /// The signed-in caller's access token (renewed by the runner).
    pub token: Arc<RwLock<String>>,
    pub tally: Arc<Tally>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Post,
    Get,
    Ws,
}

/// Run cases `from..to` (every `step`th, starting at `from`: one worker's share).
pub async fn run_worker(target: Arc<Target>, cases: Vec<u64>, sent: Arc<AtomicU64>) {
    // One socket per worker and identity, reopened when the server closes it.
    let mut sockets: [Option<Socket>; 2] = [None, None];
    for index in cases {
        let mut rng = case_rng(target.seed, STREAM, index);
        let generated = generate(&target.schema, &mut rng, &target.known);
        let signed_in = rng.gen_bool(0.5);
        let transport = match rng.gen_range(0..100) {
            0..=59 => Transport::Post,
            60..=74 => Transport::Get,
            _ => Transport::Ws,
        };
        // Subscriptions go over the socket most of the time (HTTP refuses them, which
        // is worth checking too).
        let transport =
            if generated.operation == OpKind::Subscription && rng.gen_bool(0.8) { Transport::Ws } else { transport };
        target.tally.class(&format!("graphql {} {}", generated.class, op_name(generated.operation)));
        let case = format!(
            "graphql#{index} ({} {:?} {})",
            generated.class,
            transport,
            if signed_in { "signed-in" } else { "anonymous" }
        );
        let token = if signed_in { Some(target.token.read().await.clone()) } else { None };
        match transport {
            Transport::Post => post(&target, &case, &generated, token.as_deref(), &mut rng).await,
            Transport::Get => get(&target, &case, &generated, token.as_deref()).await,
            Transport::Ws => {
                let slot = &mut sockets[usize::from(signed_in)];
                ws(&target, &case, index, &generated, token.as_deref(), slot).await
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    for socket in sockets.iter_mut().flatten() {
        let _ = socket.close(None).await;
    }
}

/// The seed corpus: `*.graphql` files, one document each (a first line
/// `# variables: {...}` gives its variables), sorted by name.
pub fn load_corpus(dir: &std::path::Path) -> anyhow::Result<Vec<(String, Generated)>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "graphql"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let (variables, query) = match text.strip_prefix("# variables:") {
            Some(rest) => {
                let (line, query) = rest.split_once('\n').unwrap_or((rest, ""));
                (serde_json::from_str(line.trim()).unwrap_or(json!({})), query.to_string())
            }
            None => (json!({}), text),
        };
        let operation = if query.trim_start().starts_with("subscription") {
            OpKind::Subscription
        } else if query.trim_start().starts_with("mutation") {
            OpKind::Mutation
        } else {
            OpKind::Query
        };
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        out.push((name, Generated { class: "corpus", query: Some(query), variables, raw: None, operation }));
    }
    Ok(out)
}

/// Send every corpus document over each transport, anonymous and signed in.
pub async fn run_corpus(target: Arc<Target>, corpus: Vec<(String, Generated)>, sent: Arc<AtomicU64>) {
    let mut sockets: [Option<Socket>; 2] = [None, None];
    let mut rng = case_rng(target.seed, STREAM, u64::MAX);
    for (index, (name, generated)) in corpus.iter().enumerate() {
        for signed_in in [false, true] {
            for transport in [Transport::Post, Transport::Get, Transport::Ws] {
                target.tally.class("graphql corpus");
                let case =
                    format!("corpus {name} ({transport:?} {})", if signed_in { "signed-in" } else { "anonymous" });
                let token = if signed_in { Some(target.token.read().await.clone()) } else { None };
                match transport {
                    Transport::Post => post(&target, &case, generated, token.as_deref(), &mut rng).await,
                    Transport::Get => get(&target, &case, generated, token.as_deref()).await,
                    Transport::Ws => {
                        let slot = &mut sockets[usize::from(signed_in)];
                        ws(&target, &case, u64::MAX - index as u64, generated, token.as_deref(), slot).await
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for socket in sockets.iter_mut().flatten() {
        let _ = socket.close(None).await;
    }
}

fn op_name(op: OpKind) -> &'static str {
    match op {
        OpKind::Query => "query",
        OpKind::Mutation => "mutation",
        OpKind::Subscription => "subscription",
    }
}

fn input_text(g: &Generated) -> String {
    match (&g.query, &g.raw) {
        (_, Some(raw)) => format!("raw body {:?}", String::from_utf8_lossy(raw)),
        (Some(q), None) => format!("{q}\nvariables: {}", g.variables),
        (None, None) => String::new(),
    }
}

/// Judge an HTTP answer to a GraphQL request.
fn judge_http(target: &Target, name: &str, case: &str, input: &str, status: u16, retry_after: bool, body: &[u8]) {
    target.tally.answer(name, status);
    let text = String::from_utf8_lossy(body);
    if forbidden_status(status, retry_after) {
        target.tally.fail(name, case, format!("HTTP {status}"), input, &text);
        return;
    }
    if status == 200 && body.is_empty() {
        target.tally.fail(name, case, "HTTP 200 with an empty body", input, "");
        return;
    }
    if body.is_empty() {
        return; // e.g. 405 to a HEAD-like refusal: nothing to judge
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            if let Some(error) = untyped_graphql_error(&value) {
                target.tally.fail(name, case, "a GraphQL error without extensions.code", input, &error.to_string());
            } else if status >= 400 && value.get("errors").is_none() && !value.get("code").is_some_and(Value::is_string)
            {
                target.tally.fail(name, case, format!("HTTP {status} without a typed error"), input, &text);
            }
        }
        Err(_) => target.tally.fail(name, case, format!("HTTP {status}: the body is not JSON"), input, &text),
    }
}

async fn post(target: &Target, case: &str, g: &Generated, token: Option<&str>, rng: &mut impl Rng) {
    let mut request = target.http.post(format!("{}/graphql", target.base));
    let body = match &g.raw {
        Some(raw) => raw.clone(),
        None => serde_json::to_vec(&json!({ "query": g.query, "variables": g.variables })).unwrap_or_default(),
    };
    let content_type = match rng.gen_range(0..20) {
        0 => "text/plain",
        1 => "application/graphql",
        2 => "application/json; charset=latin1",
        3 => "multipart/form-data; boundary=x",
        _ => "application/json",
    };
    let accept = match rng.gen_range(0..6) {
        0 => "application/graphql-response+json",
        1 => "text/html",
        2 => "*/*",
        _ => "application/json",
    };
    request = request.header("content-type", content_type).header("accept", accept).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send_and_judge(target, "graphql POST", case, &input_text(g), request).await;
}

async fn get(target: &Target, case: &str, g: &Generated, token: Option<&str>) {
    let url = match (&g.query, &g.raw) {
        (_, Some(raw)) => {
            // Raw bytes as the query string, percent-encoded where they must be.
            let encoded: String = url::form_urlencoded::byte_serialize(raw).collect();
            format!("{}/graphql?query={encoded}&variables={}", target.base, &encoded[..encoded.len().min(200)])
        }
        (Some(q), None) => {
            let mut url = match reqwest::Url::parse(&format!("{}/graphql", target.base)) {
                Ok(url) => url,
                Err(_) => return,
            };
            url.query_pairs_mut().append_pair("query", q).append_pair("variables", &g.variables.to_string());
            url.to_string()
        }
        (None, None) => return,
    };
    if url.len() > MAX_GET_URL {
        // Longer than HTTP clients (and hyper) will send at all.
        target.tally.answer("graphql GET", "not sent (URL too long)");
        return;
    }
    let mut request = target.http.get(url).header("accept", "application/graphql-response+json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send_and_judge(target, "graphql GET", case, &input_text(g), request).await;
}

async fn send_and_judge(target: &Target, name: &str, case: &str, input: &str, request: reqwest::RequestBuilder) {
    match request.timeout(ANSWER_TIMEOUT).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            match response.bytes().await {
                Ok(body) => judge_http(target, name, case, input, status, retry_after, &body),
                Err(err) => {
                    target.tally.answer(name, "body-error");
                    target.tally.fail(name, case, format!("reading the answer failed: {err}"), input, "");
                }
            }
        }
        Err(err) => {
            // The server may refuse an oversized request by closing the connection
            // after answering 413; anything else is a failure.
            target.tally.answer(name, "transport-error");
            target.tally.fail(name, case, format!("no answer: {err}"), input, "");
        }
    }
}

async fn open_socket(target: &Target, token: Option<&str>) -> anyhow::Result<Socket> {
    let url = format!("{}/graphql/ws", target.base.replacen("http", "ws", 1));
    let mut request = url.as_str().into_client_request().context("WebSocket URL")?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio::time::timeout(ANSWER_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| anyhow!("WebSocket handshake timed out"))??;
    let payload = match token {
        Some(token) => json!({ "authorization": format!("Bearer {token}") }),
        None => json!({}),
    };
    socket.send(Message::text(json!({ "type": "connection_init", "payload": payload }).to_string())).await?;
    loop {
        let message = tokio::time::timeout(ANSWER_TIMEOUT, socket.next())
            .await
            .map_err(|_| anyhow!("no connection_ack"))?
            .ok_or_else(|| anyhow!("closed before connection_ack"))??;
        if let Message::Text(text) = &message {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            match v["type"].as_str() {
                Some("connection_ack") => return Ok(socket),
                Some("ping") => socket.send(Message::text(json!({ "type": "pong" }).to_string())).await?,
                _ => return Err(anyhow!("expected connection_ack, got {text}")),
            }
        } else if let Message::Close(frame) = message {
            return Err(anyhow!("closed before connection_ack: {frame:?}"));
        }
    }
}

/// How a socket ended, as a tally key; 1011 (internal error) breaks the rules.
fn close_key(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> (String, bool) {
    match frame {
        Some(f) => (format!("close {}", u16::from(f.code)), f.code == CloseCode::Error),
        None => ("close (no frame)".to_string(), false),
    }
}

async fn ws(target: &Target, case: &str, index: u64, g: &Generated, token: Option<&str>, slot: &mut Option<Socket>) {
    const NAME: &str = "graphql WebSocket";
    let input = input_text(g);
    if slot.is_none() {
        match open_socket(target, token).await {
            Ok(socket) => *slot = Some(socket),
            Err(err) if token.is_some() && format!("{err:#}").contains("4403") => {
                // Fuzzed mutations (logout, revokeAllSessions) revoke the fuzzing
                // user's session now and then; the runner signs in again.
                target.tally.answer(NAME, "init refused 4403 (session revoked by a fuzzed mutation)");
                return;
            }
            Err(err) => {
                target.tally.answer(NAME, "connect-error");
                target.tally.fail(NAME, case, format!("cannot open a socket: {err:#}"), &input, "");
                return;
            }
        }
    }
    let Some(socket) = slot.as_mut() else { return };
    let id = format!("op{index}");
    let frame = match &g.raw {
        Some(raw) => match String::from_utf8(raw.clone()) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(raw.clone()),
        },
        None => Message::text(
            json!({ "id": id, "type": "subscribe", "payload": { "query": g.query, "variables": g.variables } })
                .to_string(),
        ),
    };
    if let Err(err) = socket.send(frame).await {
        target.tally.answer(NAME, "send-error");
        // A socket the server closed on an earlier case: not this case's fault.
        *slot = None;
        let _ = err;
        return;
    }
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    let watch_until = tokio::time::Instant::now() + SUBSCRIPTION_WATCH;
    loop {
        let until = if g.operation == OpKind::Subscription { watch_until } else { deadline };
        let next = tokio::time::timeout_at(until, socket.next()).await;
        let message = match next {
            Err(_) if g.operation == OpKind::Subscription => {
                // Still streaming: end it as a client would.
                let _ = socket.send(Message::text(json!({ "id": id, "type": "complete" }).to_string())).await;
                target.tally.answer(NAME, "subscription ended by client");
                return;
            }
            Err(_) => {
                if g.raw.is_some() {
                    // Raw frames need not be answered at all.
                    target.tally.answer(NAME, "no answer (raw)");
                    return;
                }
                target.tally.answer(NAME, "timeout");
                target.tally.fail(NAME, case, "no answer within 30 s", &input, "");
                *slot = None;
                return;
            }
            Ok(None) => {
                target.tally.answer(NAME, "closed (no frame)");
                *slot = None;
                return;
            }
            Ok(Some(Err(err))) => {
                target.tally.answer(NAME, "protocol-error");
                if g.raw.is_none() {
                    target.tally.fail(NAME, case, format!("socket error: {err}"), &input, "");
                }
                *slot = None;
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let kind = v["type"].as_str().unwrap_or("");
                if kind == "ping" {
                    let _ = socket.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                    continue;
                }
                if v["id"].as_str() != Some(id.as_str()) {
                    continue; // an answer to an earlier case
                }
                match kind {
                    "next" => {
                        if let Some(error) = untyped_graphql_error(&v["payload"]) {
                            target.tally.fail(
                                NAME,
                                case,
                                "a GraphQL error without extensions.code",
                                &input,
                                &error.to_string(),
                            );
                        }
                        if g.operation != OpKind::Subscription {
                            // A query or mutation: `complete` follows.
                            continue;
                        }
                        target.tally.answer(NAME, "next");
                        // One event is enough: end it.
                        let _ = socket.send(Message::text(json!({ "id": id, "type": "complete" }).to_string())).await;
                        return;
                    }
                    "error" => {
                        target.tally.answer(NAME, "error");
                        if let Some(error) = untyped_graphql_error(&json!({ "errors": v["payload"] })) {
                            target.tally.fail(
                                NAME,
                                case,
                                "an error message without extensions.code",
                                &input,
                                &error.to_string(),
                            );
                        }
                        return;
                    }
                    "complete" => {
                        target.tally.answer(NAME, "complete");
                        return;
                    }
                    _ => {
                        target.tally.answer(NAME, format!("message {kind}"));
                        return;
                    }
                }
            }
            Message::Close(frame) => {
                let (key, internal) = close_key(frame.as_ref());
                target.tally.answer(NAME, &key);
                if internal {
                    target.tally.fail(NAME, case, "closed with 1011 (internal error)", &input, &format!("{frame:?}"));
                }
                *slot = None;
                return;
            }
            Message::Ping(payload) => {
                let _ = socket.send(Message::Pong(payload)).await;
            }
            _ => {}
        }
    }
}

/// After the run: the server still answers a plain query correctly.
pub async fn still_answers(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .timeout(ANSWER_TIMEOUT)
        .send()
        .await
        .context("POST /graphql after the run")?;
    let status = response.status();
    let body: Value = response.json().await.context("the answer after the run is not JSON")?;
    if !status.is_success() || body.pointer("/data/__typename").and_then(Value::as_str) != Some("Query") {
        return Err(anyhow!("after the run, {{ __typename }} answered HTTP {status}: {body}"));
    }
    Ok(())
}
