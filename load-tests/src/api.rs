//! The public API over HTTP: GraphQL calls, accounts, videos and uploads. Every call is
//! counted in [`Stats`]; an error is a non-2xx status or a GraphQL `errors` array.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};

use crate::backoff::{Attempts, RetryPolicy};
use crate::stats::Stats;

/// Longest any single HTTP call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A GraphQL error as the server sent it.
#[derive(Debug, Clone)]
pub struct GqlError {
    pub code: Option<String>,
    pub message: String,
}

impl std::fmt::Display for GqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_deref().unwrap_or("no code"))
    }
}

/// The server's GraphQL endpoint plus the counters every call records into.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: reqwest::Url,
    pub stats: Arc<Stats>,
    /// How rate-limit refusals are waited for.
    pub retry: RetryPolicy,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    /// `Some(Retry-After)` when this answer refuses the call for a rate limit: HTTP
    /// 429, or (`graphql`) a GraphQL answer without data whose error is `RATE_LIMITED`
    /// (its `extensions.retryAfter` is the wait).
    pub fn rate_limited(&self, graphql: bool) -> Option<Option<Duration>> {
        let header = || {
            self.headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::backoff::parse_retry_after)
        };
        if self.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Some(header());
        }
        // Overloaded for a moment (e.g. every password-hashing slot busy): 503 with
        // `Retry-After` asks to come back later just as a 429 does.
        if self.status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            if let Some(after) = header() {
                return Some(Some(after));
            }
        }
        if !graphql || !self.body.starts_with(b"{") {
            return None;
        }
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        if v.get("data").is_some_and(|d| !d.is_null()) {
            return None;
        }
        let error = v.get("errors")?.as_array()?.first()?;
        if error.pointer("/extensions/code").and_then(Value::as_str) != Some("RATE_LIMITED") {
            return None;
        }
        let after = error
            .pointer("/extensions/retryAfter")
            .and_then(Value::as_f64)
            .map(|s| Duration::from_secs_f64(s.max(0.0)));
        Some(after.or_else(header))
    }
}

/// What one GraphQL call produced: `data`, or the errors (already counted).
pub type GqlResult = Result<Value, Vec<GqlError>>;

impl Api {
    pub fn new(target: &str, stats: Arc<Stats>) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(target).with_context(|| format!("--target {target} is not a URL"))?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base, stats, retry: RetryPolicy::default() })
    }

    pub fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base.join(path).with_context(|| format!("joining {path} to {}", self.base))
    }

    /// The graphql-ws endpoint (`ws://…/graphql/ws`).
    pub fn ws_url(&self) -> anyhow::Result<String> {
        let mut url = self.url("/graphql/ws")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|_| anyhow!("cannot make a WebSocket URL of {}", self.base))?;
        Ok(url.to_string())
    }

    /// One GraphQL call. Counts the request, its latency, and any error (status or body).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> GqlResult {
        let (result, _) = self.gql_raw(token, query, variables, &[]).await;
        result
    }

    /// Like [`Api::gql`], but errors with one of the `expected` codes are an answer, not
    /// an error (e.g. CONFLICT from `cancelJob` when the job had already finished).
    pub async fn gql_expecting(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        expected: &[&str],
    ) -> GqlResult {
        let (result, _) = self.gql_raw(token, query, variables, expected).await;
        result
    }

    /// Like [`Api::gql`], also returning the raw response body (for the API benchmark).
    pub async fn gql_raw(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        expected: &[&str],
    ) -> (GqlResult, Vec<u8>) {
        let body = json!({ "query": query, "variables": variables });
        let outcome = self
            .send_with_backoff("POST /graphql", true, || {
                let mut request = self.http.post(self.url("/graphql")?).json(&body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                Ok(request)
            })
            .await;
        match outcome {
            Err(message) => (Err(vec![self.fail(None, message)]), Vec::new()),
            Ok(answer) => {
                let result = self.judge(answer.status, &answer.body, query, expected);
                (result, answer.body.to_vec())
            }
        }
    }

    /// Send a request (built anew for each attempt), waiting out rate-limit refusals:
    /// a `429` (or, for GraphQL, an operation refused with `RATE_LIMITED` and no
    /// data) is counted in `Stats::rate_limited`, waited for per its `Retry-After`
    /// (else exponential backoff with jitter) and retried, up to the policy's total.
    /// The answer that is not a refusal is counted as a request with its latency;
    /// `Err` is a message to count as one error (transport failure, or gave up).
    pub async fn send_with_backoff(
        &self,
        what: &str,
        graphql: bool,
        build: impl Fn() -> anyhow::Result<reqwest::RequestBuilder>,
    ) -> Result<Answer, String> {
        let mut attempts = Attempts::default();
        loop {
            let request = build().map_err(|e| format!("{what}: {e:#}"))?;
            let started = Instant::now();
            let answer = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(body) => Answer { status, headers, body },
                        Err(err) => {
                            self.stats.count_request(started.elapsed());
                            return Err(format!("{what}: reading the response: {err}"));
                        }
                    }
                }
                Err(err) => {
                    self.stats.count_request(started.elapsed());
                    return Err(format!("{what}: {err}"));
                }
            };
            let Some(retry_after) = answer.rate_limited(graphql) else {
                self.stats.count_request(started.elapsed());
                return Ok(answer);
            };
            let refusal = format!("{what} (HTTP {})", answer.status.as_u16());
            match attempts.refused(&self.stats, &self.retry, &refusal, retry_after) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(attempts.gave_up(what)),
            }
        }
    }

    /// Does the target limit this harness? Sends one cheap query (not counted) and
    /// reads the `RateLimit-Policy` header the server adds when limits are on; `Some`
    /// is a note for the operator (also printed at once).
    pub async fn probe_rate_limits(&self) -> Option<String> {
        let url = self.url("/graphql").ok()?;
        let response = self.http.post(url).json(&json!({ "query": "query Probe { __typename }" })).send().await.ok()?;
        let refused = response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS;
        let policy = response.headers().get("ratelimit-policy").and_then(|v| v.to_str().ok()).map(str::to_string);
        let seen = match (refused, policy) {
            (true, _) => "it answered the start-up probe with 429".to_string(),
            (false, Some(policy)) if policy_limits(&policy) => format!("it announces RateLimit-Policy: {policy}"),
            (false, _) => return None,
        };
        let note = format!("the target rate-limits this harness ({seen}): refusals will be waited for (Retry-After, backoff) and counted apart from errors");
        crate::backoff::notice(&note);
        Some(format!("{note}; {}", crate::backoff::HOW_TO_TURN_OFF))
    }

    /// Decide whether a GraphQL answer succeeded, from its status and its body.
    fn judge(&self, status: reqwest::StatusCode, bytes: &[u8], query: &str, expected: &[&str]) -> GqlResult {
        let operation = operation_name(query);
        let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
        let errors: Vec<GqlError> = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| GqlError {
                        code: e.pointer("/extensions/code").and_then(Value::as_str).map(str::to_string),
                        message: e.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !errors.is_empty() {
            for e in &errors {
                if !e.code.as_deref().is_some_and(|c| expected.contains(&c)) {
                    self.stats.count_error(format!("{operation}: HTTP {status}: {e}"));
                }
            }
            return Err(errors);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
            return Err(vec![
                self.fail(Some(status.as_str().to_string()), format!("{operation}: HTTP {status}: {text}"))
            ]);
        }
        match parsed.and_then(|mut v| v.get_mut("data").map(Value::take)) {
            Some(data) if !data.is_null() => Ok(data),
            _ => Err(vec![self.fail(None, format!("{operation}: HTTP {status}: no data and no errors"))]),
        }
    }

    fn fail(&self, code: Option<String>, message: String) -> GqlError {
        self.stats.count_error(message.clone());
        GqlError { code, message }
    }

    /// Register a new account; returns its session.
    pub async fn register(&self, email: &str, password: &str, name: &str) -> anyhow::Result<Session> {
        let data = self
            .gql(
                None,
                "mutation Register($i: RegisterInput!) { register(input: $i) { accessToken refreshToken expiresIn user { id } } }",
                json!({ "i": { "email": email, "password": password, "displayName": name } }),
            )
            .await
            .map_err(errors_to_anyhow)?;
        Session::from_payload(&data["register"])
    }

    /// Exchange the refresh token for a new session (access tokens expire during long runs).
    pub async fn refresh(&self, session: &Session) -> anyhow::Result<Session> {
        let data = self
            .gql(
                None,
                "mutation Refresh($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken expiresIn user { id } } }",
                json!({ "t": session.refresh_token }),
            )
            .await
            .map_err(errors_to_anyhow)?;
        Session::from_payload(&data["refreshToken"])
    }

    pub async fn create_video(&self, token: &str, title: &str, visibility: &str) -> anyhow::Result<String> {
        let data = self
            .gql(
                Some(token),
                "mutation CreateVideo($i: CreateVideoInput!) { createVideo(input: $i) { id status } }",
                json!({ "i": { "title": title, "description": "made by reelhouse-load", "tags": ["load"], "visibility": visibility } }),
            )
            .await
            .map_err(errors_to_anyhow)?;
        str_at(&data, "/createVideo/id")
    }

    /// Upload `bytes` as the source of `video_id` by `method` and complete it. Records
    /// the upload's latency and throughput; returns when the server has accepted it.
    pub async fn upload(&self, token: &str, video_id: &str, bytes: &[u8], method: UploadMethod) -> anyhow::Result<()> {
        let started = Instant::now();
        if method == UploadMethod::TusCreate {
            let location = self.tus_create(token, video_id, bytes.len()).await?;
            let sending = Instant::now();
            self.tus_patch(token, &location, bytes).await?;
            self.record_upload(started, sending.elapsed(), bytes.len());
            return Ok(());
        }
        let data = self
            .gql(
                Some(token),
                "mutation CreateUpload($i: CreateUploadInput!) { createUpload(input: $i) { id method url headers { name value } tusUrl partSize parts { number url } } }",
                json!({ "i": { "videoId": video_id, "filename": "load.mp4", "contentType": "video/mp4", "size": bytes.len() } }),
            )
            .await
            .map_err(errors_to_anyhow)?;
        let ticket = &data["createUpload"];
        let ticket_id = str_at(ticket, "/id")?;
        let sending = Instant::now();
        match (method, ticket["method"].as_str()) {
            (UploadMethod::Tus | UploadMethod::TusCreate, _) => {
                self.tus_patch(token, &str_at(ticket, "/tusUrl")?, bytes).await?
            }
            (UploadMethod::Presigned, Some("PUT")) => {
                let url = str_at(ticket, "/url")?;
                let headers: Vec<(String, String)> = ticket["headers"]
                    .as_array()
                    .map(|hs| {
                        hs.iter()
                            .filter_map(|h| Some((h["name"].as_str()?.to_string(), h["value"].as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                self.put(&url, &headers, bytes.to_vec()).await?;
            }
            (UploadMethod::Presigned, _) => {
                let part_size = ticket["partSize"].as_u64().filter(|s| *s > 0).ok_or_else(|| anyhow!("no partSize"))?;
                let parts = ticket["parts"].as_array().cloned().unwrap_or_default();
                for (i, part) in parts.iter().enumerate() {
                    let start = (i as u64 * part_size) as usize;
                    let end = (start + part_size as usize).min(bytes.len());
                    let url = str_at(part, "/url")?;
                    self.put(&url, &[], bytes.get(start..end).unwrap_or_default().to_vec()).await?;
                }
            }
        }
        let sent_for = sending.elapsed();
        if method == UploadMethod::Presigned {
            self.gql(
                Some(token),
                "mutation CompleteUpload($id: ID!) { completeUpload(id: $id) { id status } }",
                json!({ "id": ticket_id }),
            )
            .await
            .map_err(errors_to_anyhow)?;
        }
        self.record_upload(started, sent_for, bytes.len());
        Ok(())
    }

    fn record_upload(&self, started: Instant, sending: Duration, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.stats;
        stats.upload.record(started.elapsed());
        stats.uploads.fetch_add(1, Relaxed);
        stats.upload_bytes.fetch_add(bytes as u64, Relaxed);
        stats.upload_micros.fetch_add(u64::try_from(sending.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// A plain HTTP PUT of bytes (presigned URL): counted as a request.
    async fn put(&self, url: &str, headers: &[(String, String)], body: Vec<u8>) -> anyhow::Result<()> {
        let url = self.url(url)?;
        let body = bytes::Bytes::from(body);
        self.send_counted("PUT presigned", || {
            let mut request = self.http.put(url.clone()).body(body.clone());
            let mut has_type = false;
            for (name, value) in headers {
                has_type |= name.eq_ignore_ascii_case("content-type");
                request = request.header(name, value);
            }
            if !has_type {
                request = request.header("content-type", "video/mp4");
            }
            Ok(request)
        })
        .await
    }

    /// One tus PATCH with the whole file (the last byte completes the upload).
    async fn tus_patch(&self, token: &str, tus_url: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let url = self.url(tus_url)?;
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.send_counted("tus PATCH", || {
            Ok(self
                .http
                .patch(url.clone())
                .bearer_auth(token)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", "0")
                .header("Content-Type", "application/offset+octet-stream")
                .body(body.clone()))
        })
        .await
    }

    /// Create a tus upload with `POST /uploads/` as a stock tus client would.
    pub async fn tus_create(&self, token: &str, video_id: &str, size: usize) -> anyhow::Result<String> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let metadata = format!("videoId {},filename {},filetype {}", b64(video_id), b64("load.mp4"), b64("video/mp4"));
        let answer = self
            .send_with_backoff("tus POST", false, || {
                Ok(self
                    .http
                    .post(self.url("/uploads/")?)
                    .bearer_auth(token)
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Length", size.to_string())
                    .header("Upload-Metadata", metadata.clone()))
            })
            .await
            .map_err(|message| self.count(message))?;
        if !answer.status.is_success() {
            let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).to_string();
            return Err(self.count(format!("tus POST: HTTP {}: {text}", answer.status)));
        }
        let location = answer
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.count("tus POST: no Location".to_string()))?;
        Ok(location.to_string())
    }

    async fn send_counted(
        &self,
        what: &str,
        build: impl Fn() -> anyhow::Result<reqwest::RequestBuilder>,
    ) -> anyhow::Result<()> {
        let answer = self.send_with_backoff(what, false, build).await.map_err(|message| self.count(message))?;
        if !answer.status.is_success() {
            let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).to_string();
            return Err(self.count(format!("{what}: HTTP {}: {text}", answer.status)));
        }
        Ok(())
    }

    fn count(&self, message: String) -> anyhow::Error {
        self.stats.count_error(message.clone());
        anyhow!(message)
    }

    /// The server's resident set size, from `GET /metrics` if it exports one (not counted
    /// as an API request). `None` when the metric is absent.
    pub async fn rss_from_metrics(&self) -> Option<u64> {
        let text = self.http.get(self.url("/metrics").ok()?).send().await.ok()?.text().await.ok()?;
        rss_from_prometheus(&text)
    }
}

/// Does a `RateLimit-Policy` header limit anything? A server with limits off still
/// announces `"api";q=4294967295;w=1` (no limit at all).
fn policy_limits(policy: &str) -> bool {
    let quota = policy.split(';').find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.trim().parse::<u64>().ok());
    quota.is_none_or(|q| q < u64::from(u32::MAX))
}

/// `process_resident_memory_bytes` (or `reelhouse_process_resident_memory_bytes`) in KiB.
pub fn rss_from_prometheus(text: &str) -> Option<u64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        let name = name.split('{').next()?;
        if name == "process_resident_memory_bytes" || name == "reelhouse_process_resident_memory_bytes" {
            value.trim().parse::<f64>().ok().map(|b| (b / 1024.0) as u64)
        } else {
            None
        }
    })
}

/// VmRSS of a local process, in KiB.
pub fn rss_from_proc(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    /// The ticket's presigned PUT (or multipart parts), then `completeUpload`.
    Presigned,
    /// The ticket's tus upload, one PATCH; the last byte completes it.
    Tus,
    /// As a stock tus client: `POST /uploads/` with metadata, then one PATCH.
    TusCreate,
}

impl UploadMethod {
    /// The three ways in turn, by a counter.
    pub fn nth(n: usize) -> Self {
        match n % 3 {
            0 => UploadMethod::Presigned,
            1 => UploadMethod::Tus,
            _ => UploadMethod::TusCreate,
        }
    }
}

/// An access token and what renews it.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: String,
    pub expires_at: Instant,
    /// How long the server made the access token valid for.
    pub lifetime: Duration,
}

impl Session {
    fn from_payload(payload: &Value) -> anyhow::Result<Self> {
        let expires_in = payload["expiresIn"].as_u64().unwrap_or(300);
        Ok(Self {
            access_token: str_at(payload, "/accessToken")?,
            refresh_token: str_at(payload, "/refreshToken")?,
            user_id: str_at(payload, "/user/id")?,
            expires_at: Instant::now() + Duration::from_secs(expires_in),
            lifetime: Duration::from_secs(expires_in),
        })
    }

    /// Worth refreshing: less than half its lifetime (at most 60 s) left, so a token
    /// handed out is good for a whole upload or encode wait.
    pub fn due(&self) -> bool {
        let margin = (self.lifetime / 2).min(Duration::from_secs(60));
        self.expires_at.saturating_duration_since(Instant::now()) < margin
    }
}

/// One user's session shared by every task acting as that user, renewed on demand.
///
/// Refresh tokens rotate and the server revokes the whole session when one is used
/// twice, so tasks sharing a user must share one `Creds` (never copies of a `Session`).
#[derive(Clone)]
pub struct Creds {
    api: Api,
    session: Arc<tokio::sync::Mutex<Session>>,
}

impl Creds {
    pub fn new(api: &Api, session: Session) -> Self {
        Self { api: api.clone(), session: Arc::new(tokio::sync::Mutex::new(session)) }
    }

    /// An access token with a useful life left (refreshed first when due; a failed
    /// refresh is counted by the call and the old token is returned).
    pub async fn token(&self) -> String {
        let mut session = self.session.lock().await;
        if session.due() {
            if let Ok(renewed) = self.api.refresh(&session).await {
                *session = renewed;
            }
        }
        session.access_token.clone()
    }

    pub async fn user_id(&self) -> String {
        self.session.lock().await.user_id.clone()
    }
}

pub fn str_at(value: &Value, pointer: &str) -> anyhow::Result<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no string at {pointer} in {value}"))
}

pub fn errors_to_anyhow(errors: Vec<GqlError>) -> anyhow::Error {
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow!(text.join("; "))
}

/// `mutation Foo(...)` → `Foo`, for error messages.
fn operation_name(query: &str) -> &str {
    query
        .split_whitespace()
        .nth(1)
        .map(|w| w.split(['(', '{']).next().unwrap_or(w))
        .filter(|w| !w.is_empty())
        .unwrap_or("query")
}

pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> anyhow::Result<()> {
    if condition {
        Ok(())
    } else {
        bail!(message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_rss_is_read_in_kib() {
        let text = "# HELP x\nreelhouse_requests_total 3\nprocess_resident_memory_bytes 2097152\n";
        assert_eq!(rss_from_prometheus(text), Some(2048));
        assert_eq!(rss_from_prometheus("reelhouse_x 1\n"), None);
    }

    #[test]
    fn an_unlimited_policy_is_no_limit() {
        assert!(policy_limits(r#""api";q=1200;w=60"#));
        assert!(!policy_limits(r#""api";q=4294967295;w=1"#));
    }

    #[test]
    fn operation_names_come_from_the_query() {
        assert_eq!(operation_name("mutation CreateVideo($i: X) { a }"), "CreateVideo");
        assert_eq!(operation_name("query Video{ a }"), "Video");
    }

    #[tokio::test]
    async fn body_errors_count_even_with_status_200() {
        let stats = Arc::new(Stats::default());
        let api = Api::new("http://127.0.0.1:1/", stats.clone()).unwrap();
        let body = br#"{"data":null,"errors":[{"message":"nope","extensions":{"code":"FORBIDDEN"}}]}"#;
        let result = api.judge(reqwest::StatusCode::OK, body, "query Q { a }", &[]);
        let errors = result.unwrap_err();
        assert_eq!(errors[0].code.as_deref(), Some("FORBIDDEN"));
        assert_eq!(Stats::get(&stats.errors), 1);
        assert!(api.judge(reqwest::StatusCode::OK, br#"{"data":{"a":1}}"#, "query Q { a }", &[]).is_ok());
        assert!(api.judge(reqwest::StatusCode::BAD_GATEWAY, b"oops", "query Q { a }", &[]).is_err());
        assert_eq!(Stats::get(&stats.errors), 2);
        assert!(api.judge(reqwest::StatusCode::OK, body, "query Q { a }", &["FORBIDDEN"]).is_err());
        assert_eq!(Stats::get(&stats.errors), 2, "an expected code is not an error");
    }
}
