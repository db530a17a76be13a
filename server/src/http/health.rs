//! `/health` (the process lives), `/ready` (its dependencies answer), `/metrics`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use sea_orm::ConnectionTrait;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::startup::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    checks: std::collections::BTreeMap<&'static str, Check>,
    /// Liveness of the supervised background loops (detail only: a loop waiting to
    /// restart does not make the process unready; its dependencies decide that).
    loops: std::collections::BTreeMap<&'static str, crate::actors::LoopStatus>,
}

async fn timed<F, T, E>(fut: F) -> Result<(), &'static str>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => {
            tracing::warn!(error = ?err, "readiness check failed");
            Err("unreachable")
        }
        Err(_) => Err("timed out"),
    }
}

/// 200 when the database, storage and (if configured) Redis answer; otherwise 503
/// with the failing dependency named. Reasons are generic: no hosts, no errors.
/// `loops` reports each supervised background loop: running, restarts, last start,
/// finished.
#[tracing::instrument(skip_all)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let db = timed(state.db.execute_unprepared("SELECT 1"));
    let store = timed(state.store.check());
    let redis = async {
        match &state.redis {
            Some(redis) => Some(timed(redis.ping()).await),
            None => None,
        }
    };
    let (db, store, redis) = tokio::join!(db, store, redis);

    let mut checks = std::collections::BTreeMap::new();
    checks.insert("database", Check { ok: db.is_ok(), backend: crate::db::backend_name(&state.db), reason: db.err() });
    checks.insert("storage", Check { ok: store.is_ok(), backend: state.store.backend(), reason: store.err() });
    if let Some(redis) = redis {
        checks.insert("redis", Check { ok: redis.is_ok(), backend: "redis", reason: redis.err() });
    }
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, check)| !check.ok)
        .map(|(name, check)| format!("{name}: {}", check.reason.unwrap_or("failing")))
        .collect();
    for (name, check) in &checks {
        metrics::gauge!("reelhouse_dependency_up", "dependency" => *name).set(if check.ok { 1.0 } else { 0.0 });
    }
    let loops = state.hubs.supervisor.loops().snapshot();
    if failing.is_empty() {
        HttpResponse::Ok().json(Readiness { status: "ready", reason: None, checks, loops })
    } else {
        HttpResponse::ServiceUnavailable().json(Readiness {
            status: "unavailable",
            reason: Some(failing.join("; ")),
            checks,
            loops,
        })
    }
}

/// `/metrics` on the main listener: not there when `telemetry.metrics_bind` gives
/// it a listener of its own.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if state.settings.telemetry.metrics_bind.is_some() {
        return Err(AppError::not_found("page"));
    }
    metrics_here(req, state).await
}

/// `/metrics` wherever it is served, behind `telemetry.metrics_token` when set.
pub async fn metrics_here(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if let Some(token) = &state.settings.telemetry.metrics_token {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared as digests: equal length, so the comparison time says nothing.
        if Sha256::digest(presented.as_bytes()) != Sha256::digest(token.expose().as_bytes()) {
            return Err(AppError::unauthenticated("metrics need the bearer token of telemetry.metrics_token"));
        }
    }
    record_process_metrics();
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render()))
}

/// The process's resident memory and open descriptors, read at scrape time (Linux
/// `/proc`; elsewhere they are simply not exported).
fn record_process_metrics() {
    let rss_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    });
    if let Some(kib) = rss_kib {
        metrics::gauge!("reelhouse_process_resident_memory_bytes").set(kib * 1024.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("reelhouse_process_open_fds").set(fds.count() as f64);
    }
}
