//! `/health` (the process lives), `/ready` (its dependencies answer), `/metrics`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use sea_orm::ConnectionTrait;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The reason of a dependency whose circuit breaker is open.
const CIRCUIT_OPEN: &str = "circuit open";

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
    /// Left out where there are none (a worker's health port).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    loops: std::collections::BTreeMap<&'static str, crate::actors::LoopStatus>,
    /// Each circuit breaker: state, consecutive failures, the last failure's
    /// category (never a host or an error text) and when the state changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    breakers: Vec<crate::breaker::BreakerSnapshot>,
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

/// The dependencies a process checks for readiness: the database, storage and
/// (if configured) Redis. Each result also sets `reelhouse_dependency_up{dependency}`.
pub struct DependencyChecks {
    checks: std::collections::BTreeMap<&'static str, Check>,
}

impl DependencyChecks {
    /// Check every dependency at once, each within [`CHECK_TIMEOUT`].
    pub async fn run(
        db: &sea_orm::DatabaseConnection,
        store: &dyn crate::storage::ObjectStore,
        redis: Option<&crate::redis_client::RedisHandle>,
    ) -> Self {
        Self::run_with_breakers(db, store, redis, None).await
    }

    /// [`Self::run`] through the circuit breakers: a dependency whose breaker is
    /// open is reported failing (`circuit open`) without being called, and the
    /// database check counts as a call of the `database` breaker (storage and
    /// Redis are behind theirs already).
    pub async fn run_with_breakers(
        db: &sea_orm::DatabaseConnection,
        store: &dyn crate::storage::ObjectStore,
        redis: Option<&crate::redis_client::RedisHandle>,
        breakers: Option<&crate::breaker::Breakers>,
    ) -> Self {
        let db_check = async {
            let permit = match breakers.map(|b| b.database.try_acquire()) {
                Some(Err(_)) => return Err(CIRCUIT_OPEN),
                Some(Ok(permit)) => Some(permit),
                None => None,
            };
            match tokio::time::timeout(CHECK_TIMEOUT, db.execute_unprepared("SELECT 1")).await {
                Ok(Ok(_)) => {
                    if let Some(permit) = permit {
                        permit.success();
                    }
                    Ok(())
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = ?err, "readiness check failed");
                    if let Some(permit) = permit {
                        permit.failure(crate::breaker::database_failure_category(&err).unwrap_or("query failed"));
                    }
                    Err("unreachable")
                }
                Err(_) => {
                    if let Some(permit) = permit {
                        permit.failure("timed out");
                    }
                    Err("timed out")
                }
            }
        };
        let open = |breaker: Option<&std::sync::Arc<crate::breaker::Breaker>>| {
            breaker.is_some_and(|b| b.state() == crate::breaker::BreakerState::Open)
        };
        let store_open = open(breakers.map(|b| &b.storage)) && store.backend() != "local";
        let redis_open = open(breakers.and_then(|b| b.redis.as_ref()));
        let store_check = async move {
            if store_open {
                return Err(CIRCUIT_OPEN);
            }
            timed(store.check()).await
        };
        let redis_check = async {
            match redis {
                Some(_) if redis_open => Some(Err(CIRCUIT_OPEN)),
                Some(redis) => Some(timed(redis.ping()).await),
                None => None,
            }
        };
        let (db_result, store_result, redis_result) = tokio::join!(db_check, store_check, redis_check);
        let mut checks = std::collections::BTreeMap::new();
        checks.insert(
            "database",
            Check { ok: db_result.is_ok(), backend: crate::db::backend_name(db), reason: db_result.err() },
        );
        checks.insert(
            "storage",
            Check { ok: store_result.is_ok(), backend: store.backend(), reason: store_result.err() },
        );
        if let Some(redis) = redis_result {
            checks.insert("redis", Check { ok: redis.is_ok(), backend: "redis", reason: redis.err() });
        }
        for (name, check) in &checks {
            metrics::gauge!("reelhouse_dependency_up", "dependency" => *name).set(if check.ok { 1.0 } else { 0.0 });
        }
        Self { checks }
    }

    /// `name: reason` of each failing dependency.
    fn failing(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|(_, check)| !check.ok)
            .map(|(name, check)| format!("{name}: {}", check.reason.unwrap_or("failing")))
            .collect()
    }

    /// 200 with the checks when all answer, else 503 naming the failing ones.
    pub fn response(self) -> HttpResponse {
        let failing = self.failing();
        let loops = std::collections::BTreeMap::new();
        readiness(self.checks, failing, loops, Vec::new())
    }
}

fn readiness(
    checks: std::collections::BTreeMap<&'static str, Check>,
    failing: Vec<String>,
    loops: std::collections::BTreeMap<&'static str, crate::actors::LoopStatus>,
    breakers: Vec<crate::breaker::BreakerSnapshot>,
) -> HttpResponse {
    if failing.is_empty() {
        HttpResponse::Ok().json(Readiness { status: "ready", reason: None, checks, loops, breakers })
    } else {
        HttpResponse::ServiceUnavailable().json(Readiness {
            status: "unavailable",
            reason: Some(failing.join("; ")),
            checks,
            loops,
            breakers,
        })
    }
}

/// 200 when the database, storage and (if configured) Redis answer; otherwise 503
/// with the failing dependency named. Reasons are generic: no hosts, no errors.
/// `loops` reports each supervised background loop: running, restarts, last start,
/// finished.
#[tracing::instrument(skip_all)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let checks = DependencyChecks::run_with_breakers(
        &state.db,
        state.store.as_ref(),
        state.redis.as_deref(),
        Some(&state.breakers),
    )
    .await;
    let failing = checks.failing();
    let loops = state.hubs.supervisor.loops().snapshot();
    readiness(checks.checks, failing, loops, state.breakers.snapshot())
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
    render_metrics(&req, state.settings.telemetry.metrics_token.as_ref(), &state.metrics)
}

/// The Prometheus text (with the `process_*` metrics read now), or 401 when `token`
/// is set and the request does not present it as a bearer token.
pub fn render_metrics(
    req: &HttpRequest,
    token: Option<&crate::config::Secret>,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> Result<HttpResponse, AppError> {
    if let Some(token) = token {
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
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::telemetry::render_metrics(handle)))
}
