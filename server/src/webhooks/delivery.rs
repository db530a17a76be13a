//! Sending deliveries: claim due rows, POST them signed, log the attempt, schedule
//! the retry or give up, and disable endpoints that keep failing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use chrono::{DateTime, Utc};
use entities::{webhook_delivery, webhook_endpoint};
use rand::Rng;
use sea_orm::{DatabaseConnection, DbErr};

use super::secrets::SecretBox;
use super::target::{self, TargetError};
use crate::breaker::{Breaker, Breakers};
use crate::config::webhooks::WebhookSettings;
use crate::repo::webhooks as store;

/// Seconds a claim outlives the request timeout before another sender may retry.
const CLAIM_GRACE_SECS: i64 = 30;

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// Any other answer.
    Rejected { status: u16, body: String },
    /// No answer: connection error, timeout. `category` is what the host's
    /// breaker records (`connection refused`, `timed out`, ...).
    Unreachable { error: String, category: &'static str },
    /// The target was not attempted (internal address, bad URL, does not resolve).
    Refused { error: String },
}

impl AttemptOutcome {
    fn metric_label(&self) -> &'static str {
        match self {
            AttemptOutcome::Delivered { .. } => "success",
            AttemptOutcome::Rejected { .. } => "http_error",
            AttemptOutcome::Unreachable { .. } => "network_error",
            AttemptOutcome::Refused { .. } => "refused",
        }
    }

    fn status_code(&self) -> Option<i32> {
        match self {
            AttemptOutcome::Delivered { status } | AttemptOutcome::Rejected { status, .. } => Some(i32::from(*status)),
            _ => None,
        }
    }

    fn error(&self) -> Option<String> {
        match self {
            AttemptOutcome::Delivered { .. } => None,
            AttemptOutcome::Rejected { status, body } if body.is_empty() => Some(format!("HTTP {status}")),
            AttemptOutcome::Rejected { status, body } => Some(format!("HTTP {status}: {body}")),
            AttemptOutcome::Unreachable { error, .. } | AttemptOutcome::Refused { error } => Some(error.clone()),
        }
    }
}

/// Retry delay after `attempts` failed attempts: exponential, capped, with jitter
/// that only shortens it by up to a quarter, so successive gaps still grow.
pub fn backoff(settings: &WebhookSettings, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(0);
    let ceiling = settings.backoff_base_ms.saturating_mul(1u64 << exponent).min(settings.backoff_max_ms.max(1));
    let quarter = ceiling / 4;
    let cut = if quarter > 0 { rand::thread_rng().gen_range(0..=quarter) } else { 0 };
    Duration::from_millis(ceiling - cut)
}

/// The delivery loop of one process; runs until the process ends. Started under
/// the supervisor's `supervise` (startup), which restarts it after a panic.
pub async fn run(
    db: DatabaseConnection,
    settings: Arc<WebhookSettings>,
    secrets: Arc<SecretBox>,
    breakers: Option<Breakers>,
) {
    let idle = Duration::from_millis(settings.poll_interval_ms.max(10));
    loop {
        match deliver_due_with(&db, &settings, &secrets, breakers.as_ref()).await {
            Ok(sent) if sent > 0 => continue,
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "webhook delivery loop: database error"),
        }
        tokio::time::sleep(idle).await;
    }
}

/// Claim and attempt the deliveries due now (at most `settings.concurrency`, in
/// parallel); returns how many were attempted. Tests call this to step deliveries.
pub async fn deliver_due(
    db: &DatabaseConnection,
    settings: &WebhookSettings,
    secrets: &SecretBox,
) -> Result<usize, DbErr> {
    deliver_due_with(db, settings, secrets, None).await
}

/// [`deliver_due`] with a circuit breaker per target host (`host:port`): while a
/// host's breaker is open its deliveries are put off until it may be probed again,
/// without an attempt counted or logged, so an outage never burns a delivery's
/// attempts or its retry window's budget of tries.
pub async fn deliver_due_with(
    db: &DatabaseConnection,
    settings: &WebhookSettings,
    secrets: &SecretBox,
    breakers: Option<&Breakers>,
) -> Result<usize, DbErr> {
    let now = Utc::now();
    let due = store::due_deliveries(db, now, u64::try_from(settings.concurrency.max(1)).unwrap_or(1)).await?;
    let claim_until = now
        + chrono::Duration::milliseconds(i64::try_from(settings.timeout_ms).unwrap_or(i64::MAX / 4))
        + chrono::Duration::seconds(CLAIM_GRACE_SECS);
    let mut claimed = Vec::new();
    for delivery in due {
        if store::claim_delivery(db, delivery.id, now, claim_until).await? {
            claimed.push(delivery);
        }
    }
    let count = claimed.len();
    let results =
        futures::future::join_all(claimed.into_iter().map(|d| attempt(db, settings, secrets, breakers, d))).await;
    for result in results {
        result?;
    }
    Ok(count)
}

/// One attempt of a claimed delivery, recorded, in a span that continues the trace
/// that recorded the event (its `traceparent` also goes to the receiver).
async fn attempt(
    db: &DatabaseConnection,
    settings: &WebhookSettings,
    secrets: &SecretBox,
    breakers: Option<&Breakers>,
    delivery: webhook_delivery::Model,
) -> Result<(), DbErr> {
    let span = tracing::info_span!(
        "webhook attempt",
        otel.name = "webhook delivery",
        otel.kind = "client",
        delivery_id = %delivery.id,
        endpoint_id = %delivery.endpoint_id,
        event = %delivery.event_kind,
    );
    crate::telemetry::traces::set_parent(&span, delivery.trace_parent.as_deref());
    let result = attempt_in_span(db, settings, secrets, breakers, delivery).instrument(span.clone()).await;
    if let Err(err) = &result {
        span.in_scope(|| tracing::error!(error = %err, "recording a webhook attempt failed"));
    }
    result
}

async fn attempt_in_span(
    db: &DatabaseConnection,
    settings: &WebhookSettings,
    secrets: &SecretBox,
    breakers: Option<&Breakers>,
    delivery: webhook_delivery::Model,
) -> Result<(), DbErr> {
    let Some(endpoint) = store::find(db, delivery.endpoint_id).await? else {
        return Ok(()); // deleted: its deliveries go with it
    };
    if !endpoint.enabled {
        store::fail_delivery(db, delivery, "the endpoint is disabled").await?;
        return Ok(());
    }
    let breaker = breakers.and_then(|b| target_authority(&endpoint.url).map(|host| b.webhook_host(&host)));
    let permit = match breaker.as_deref().map(Breaker::try_acquire) {
        Some(Err(rejected)) => return defer(db, settings, delivery, rejected.retry_after).await,
        Some(Ok(permit)) => Some(permit),
        None => None,
    };
    let started = Instant::now();
    let at = Utc::now();
    let outcome = send(settings, secrets, &endpoint, &delivery).await;
    let latency = started.elapsed();
    if let Some(permit) = permit {
        match &outcome {
            AttemptOutcome::Delivered { .. } => permit.success(),
            AttemptOutcome::Rejected { status, .. } if *status >= 500 => permit.failure("server error"),
            // The host answered; what it said is about this delivery, not its health.
            AttemptOutcome::Rejected { .. } => permit.success(),
            AttemptOutcome::Unreachable { category, .. } => permit.failure(category),
            // Never sent: says nothing about the host.
            AttemptOutcome::Refused { .. } => drop(permit),
        }
    }
    metrics::counter!("reelhouse_webhook_attempts_total", "outcome" => outcome.metric_label()).increment(1);
    metrics::histogram!("reelhouse_webhook_attempt_duration_seconds").record(latency.as_secs_f64());
    tracing::info!(outcome = outcome.metric_label(), status = ?outcome.status_code(), latency_ms = latency.as_millis() as u64, "webhook attempt");
    record_attempt(db, settings, &endpoint, delivery, at, latency, outcome).await
}

/// `host:port` of a target URL: what its breaker is keyed by.
fn target_authority(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?))
}

/// The host's breaker is open: give the claimed delivery back, due when the host
/// may be probed again (or at its normal next retry, if that is later). No attempt
/// is counted or logged.
async fn defer(
    db: &DatabaseConnection,
    settings: &WebhookSettings,
    delivery: webhook_delivery::Model,
    open_for: Duration,
) -> Result<(), DbErr> {
    let wait = open_for.max(backoff(settings, delivery.attempts.max(1)));
    let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
    metrics::counter!("reelhouse_webhook_deferred_total").increment(1);
    tracing::info!(wait_ms = wait.as_millis() as u64, "webhook delivery deferred: the host's circuit breaker is open");
    store::put_off_delivery(db, delivery.id, next).await
}

/// POST the delivery to the endpoint (after the SSRF check on the resolved addresses).
async fn send(
    settings: &WebhookSettings,
    secrets: &SecretBox,
    endpoint: &webhook_endpoint::Model,
    delivery: &webhook_delivery::Model,
) -> AttemptOutcome {
    let url = match target::parse(&endpoint.url) {
        Ok(url) => url,
        Err(err) => return AttemptOutcome::Refused { error: err.to_string() },
    };
    let addrs = match target::resolve(&url, settings.allow_private_targets).await {
        Ok(addrs) => addrs,
        Err(err @ (TargetError::Refused(_) | TargetError::Invalid(_))) => {
            return AttemptOutcome::Refused { error: err.to_string() }
        }
        Err(TargetError::Unresolvable(error)) => {
            return AttemptOutcome::Unreachable { error, category: "does not resolve" }
        }
    };
    let client = match client_for(settings, &url, &addrs) {
        Ok(client) => client,
        Err(err) => {
            return AttemptOutcome::Unreachable {
                error: format!("building the HTTP client: {err}"),
                category: "connection failed",
            }
        }
    };
    let body = match serde_json::to_vec(&delivery.payload) {
        Ok(body) => body,
        Err(err) => return AttemptOutcome::Refused { error: format!("serialising the payload: {err}") },
    };
    let timestamp = Utc::now().timestamp();
    let secret = match secrets.open(endpoint.id, &endpoint.secret) {
        Ok(secret) => secret,
        // Not the receiver's fault, and not retried into success: said plainly.
        Err(err) => return AttemptOutcome::Refused { error: format!("cannot sign: {err}") },
    };
    let headers = match super::signing::signature_headers(
        &secret,
        &delivery.id.to_string(),
        timestamp,
        &body,
        settings.legacy_headers,
    ) {
        Ok(headers) => headers,
        Err(err) => return AttemptOutcome::Refused { error: format!("cannot sign: {err}") },
    };
    let mut request = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    // The receiver can continue the trace that recorded the event.
    if let Some(traceparent) = crate::telemetry::traces::current_traceparent() {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(body);
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            let error = if err.is_timeout() { "timed out".to_string() } else { format!("request failed: {err}") };
            let chain = format!("{err:?}").to_ascii_lowercase();
            let category = if err.is_timeout() {
                "timed out"
            } else if chain.contains("refused") {
                "connection refused"
            } else if chain.contains("reset") || chain.contains("closed") {
                "connection reset"
            } else {
                "connection failed"
            };
            return AttemptOutcome::Unreachable { error, category };
        }
    };
    let status = response.status().as_u16();
    if response.status().is_success() {
        return AttemptOutcome::Delivered { status };
    }
    // A little of the body explains the failure to the owner; the rest is ignored.
    let mut snippet = Vec::new();
    while snippet.len() < settings.max_response_bytes {
        match tokio::time::timeout(Duration::from_secs(1), response.chunk()).await {
            Ok(Ok(Some(chunk))) => snippet.extend_from_slice(&chunk),
            _ => break,
        }
    }
    snippet.truncate(settings.max_response_bytes.min(200));
    AttemptOutcome::Rejected { status, body: String::from_utf8_lossy(&snippet).trim().to_string() }
}

/// The client for one attempt: pinned to the addresses just checked (no second
/// lookup to rebind), no redirects, and no proxy. A proxy from `HTTP(S)_PROXY`
/// would make the connection to an address nobody checked (the proxy's, which is
/// typically internal), and the proxy would resolve the name again itself.
pub fn client_for(
    settings: &WebhookSettings,
    url: &url::Url,
    addrs: &[SocketAddr],
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .timeout(Duration::from_millis(settings.timeout_ms))
        .user_agent(concat!("reelhouse-webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(url::Host::Domain(domain)) = url.host() {
        builder = builder.resolve_to_addrs(domain, addrs);
    }
    builder.build()
}

/// Log the attempt and move the delivery (and, on a final failure, the endpoint) on.
async fn record_attempt(
    db: &DatabaseConnection,
    settings: &WebhookSettings,
    endpoint: &webhook_endpoint::Model,
    delivery: webhook_delivery::Model,
    at: DateTime<Utc>,
    latency: Duration,
    outcome: AttemptOutcome,
) -> Result<(), DbErr> {
    let error = outcome.error().map(|e| truncate(&e, 1000));
    let txn = crate::db::begin_write(db).await?;
    let attempt = store::NewAttempt {
        delivery_id: delivery.id,
        at,
        status_code: outcome.status_code(),
        latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
        error: error.clone(),
    };
    store::insert_attempt(&txn, attempt).await?;
    let attempts = delivery.attempts.saturating_add(1);
    let window_end = delivery.window_started_at
        + chrono::Duration::seconds(i64::try_from(settings.retry_for_secs).unwrap_or(i64::MAX / 4));
    let now = Utc::now();
    let end = if let AttemptOutcome::Delivered { .. } = outcome {
        store::reset_failures(&txn, endpoint.id).await?;
        store::AttemptEnd::Delivered
    } else {
        let next = now + chrono::Duration::from_std(backoff(settings, attempts)).unwrap_or(chrono::Duration::zero());
        if next > window_end {
            store::AttemptEnd::Failed
        } else {
            store::AttemptEnd::RetryAt(next)
        }
    };
    let failed_for_good = matches!(end, store::AttemptEnd::Failed);
    store::settle_delivery(&txn, delivery, outcome.status_code(), error.clone(), end, now).await?;
    if failed_for_good {
        count_failure(&txn, settings, endpoint.id, error.as_deref().unwrap_or("failed")).await?;
    }
    txn.commit().await
}

/// One more delivery failed for good; disable the endpoint at the threshold.
async fn count_failure(
    txn: &sea_orm::DatabaseTransaction,
    settings: &WebhookSettings,
    endpoint_id: uuid::Uuid,
    last_error: &str,
) -> Result<(), DbErr> {
    let Some(endpoint) = store::add_failure(txn, endpoint_id).await? else {
        return Ok(());
    };
    if endpoint.enabled && endpoint.consecutive_failures >= settings.disable_after_failures {
        let failures = endpoint.consecutive_failures;
        let reason = truncate(
            &format!("disabled after {failures} consecutive failed deliveries; last error: {last_error}"),
            500,
        );
        store::disable(txn, endpoint, reason).await?;
        metrics::counter!("reelhouse_webhook_endpoints_disabled_total").increment(1);
        tracing::warn!(%endpoint_id, failures, "webhook endpoint disabled");
    }
    Ok(())
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
