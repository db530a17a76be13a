//! `/metrics` of a live server and of a `reelhouse worker`'s health port: every
//! `# TYPE` has its `# HELP`, the names dashboards and alerts use are there, the
//! queue gauges read the database, and the standard `process_*` metrics are served.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use entities::{job, worker, JobKind, JobStatus};
use reelhouse::jobs::{enqueue, NewJob, DEFAULT_PRIORITY};
use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{backend, eventually, socket_of, spawn_app_with, strip_ansi, Backend, TcpProxy};

/// Names that have a `# TYPE` line, and names that have a `# HELP` line.
fn type_and_help(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            helps.insert(name.to_string());
        }
    }
    (types, helps)
}

fn assert_every_type_has_help(text: &str) -> BTreeMap<String, String> {
    let (types, helps) = type_and_help(text);
    assert!(!types.is_empty(), "no metrics at all:\n{text}");
    let missing: Vec<_> = types.keys().filter(|name| !helps.contains(*name)).collect();
    assert!(missing.is_empty(), "# TYPE without # HELP: {missing:?}\n{text}");
    types
}

/// The value of the sample line that starts with `series ` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' '))).and_then(|v| v.parse().ok())
}

async fn queued_job(db: &sea_orm::DatabaseConnection) -> job::Model {
    enqueue(
        db,
        NewJob {
            kind: JobKind::Transcode,
            video_id: None,
            owner_id: None,
            priority: DEFAULT_PRIORITY,
            payload: json!({}),
            max_attempts: 3,
        },
    )
    .await
    .unwrap()
}

#[actix_web::test]
async fn metrics_have_help_and_the_queue_gauges_read_the_database() {
    // No workers in this process: the queued job stays queued.
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.telemetry.queue_metrics_secs = 1;
        // API processes sweep leases and forget workers unseen for 3 × lease_secs:
        // long enough here that the stale worker below is counted, not forgotten.
        s.jobs.lease_secs = 7200;
    })
    .await;
    let db = &app.state.db;

    // A job waiting two minutes, a DEAD one, and a worker that stopped heartbeating.
    let waiting = queued_job(db).await;
    let mut waiting = waiting.into_active_model();
    waiting.run_after = Set(Utc::now() - chrono::TimeDelta::seconds(120));
    waiting.update(db).await.unwrap();
    let dead = queued_job(db).await;
    let mut dead = dead.into_active_model();
    dead.status = Set(JobStatus::Dead);
    dead.update(db).await.unwrap();
    let long_ago = Utc::now() - chrono::TimeDelta::hours(1);
    worker::ActiveModel {
        id: Set(Uuid::now_v7()),
        host: Set("gone-host".into()),
        pid: Set(1),
        capacity: Set(1),
        current_jobs: Set(0),
        version: Set("0".into()),
        started_at: Set(long_ago),
        last_seen_at: Set(long_ago),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();

    // Traffic: probes, GraphQL, a sign-up (password hashing, storage of nothing).
    for path in ["/health", "/ready", "/no-such-page"] {
        app.client.get(app.url(path)).send().await.unwrap();
    }
    let (status, _) = app.graphql("{ serverInfo { version } }", json!({})).await;
    assert_eq!(status, 200);
    app.register_user().await;

    let scrape = || async { app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let ready = eventually(100, || async {
        let text = scrape().await;
        // A reading spans three queries: one that began before the rows above were
        // all written may mix old and new; wait for one that saw them all.
        // QUEUED: the job above and the sign-up's verification mail (SEND_MAIL).
        sample(&text, "reelhouse_jobs{status=\"QUEUED\"}") == Some(2.0)
            && sample(&text, "reelhouse_jobs{status=\"DEAD\"}") == Some(1.0)
            && sample(&text, "reelhouse_workers{state=\"stale\"}") == Some(1.0)
            && sample(&text, "reelhouse_jobs_oldest_queued_age_seconds").is_some_and(|age| age >= 110.0)
    })
    .await;
    let text = scrape().await;
    assert!(ready, "the queue gauges never showed the database's jobs and workers:\n{text}");

    let types = assert_every_type_has_help(&text);
    assert_eq!(sample(&text, "reelhouse_jobs{status=\"DEAD\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "reelhouse_jobs{status=\"RUNNING\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "reelhouse_workers{state=\"live\"}"), Some(0.0), "{text}");
    let age = sample(&text, "reelhouse_jobs_oldest_queued_age_seconds").expect("oldest queued age");
    // The gauge loop takes its clock reading before its queries, so a reading that
    // began just before the row was written sees it a moment younger than 120 s.
    assert!((110.0..3600.0).contains(&age), "the job has waited two minutes, not {age} s");
    assert_eq!(sample(&text, "reelhouse_dependency_up{dependency=\"database\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "reelhouse_dependency_up{dependency=\"storage\"}"), Some(1.0), "{text}");
    if backend() == Backend::Postgres {
        assert_eq!(sample(&text, "reelhouse_dependency_up{dependency=\"redis\"}"), Some(1.0), "{text}");
    }

    // The names the dashboard and the alerts use, and their types.
    for (name, kind) in [
        ("reelhouse_http_requests_total", "counter"),
        ("reelhouse_http_request_duration_seconds", "histogram"),
        ("reelhouse_dependency_up", "gauge"),
        ("reelhouse_jobs", "gauge"),
        ("reelhouse_jobs_oldest_queued_age_seconds", "gauge"),
        ("reelhouse_workers", "gauge"),
        ("reelhouse_storage_operation_duration_seconds", "histogram"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name} missing or mistyped:\n{text}");
    }
    // Every reelhouse_ metric on the page is one telemetry::METRICS describes.
    let described: BTreeSet<&str> = reelhouse::telemetry::METRICS.iter().map(|m| m.name).collect();
    for name in types.keys().filter(|n| n.starts_with("reelhouse_")) {
        assert!(described.contains(name.as_str()), "{name} is not in telemetry::METRICS");
    }
    let rss = sample(&text, "process_resident_memory_bytes").expect("resident memory");
    assert!(rss > 1024.0 * 1024.0, "{rss}");
}

/// The address `reelhouse worker` logged for its health port.
async fn health_address(log: &std::path::Path) -> Option<String> {
    for _ in 0..600 {
        let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
        if let Some(idx) = text.find("worker health on http://") {
            let rest = &text[idx + "worker health on ".len()..];
            return Some(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ":/.[]".contains(*c)).collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[actix_web::test]
async fn worker_health_port_serves_live_ready_and_metrics() {
    if backend() != Backend::Postgres {
        eprintln!("worker_health_port_serves_live_ready_and_metrics: skipped: worker processes share a PostgreSQL database (REELHOUSE_TEST_BACKEND=postgres)");
        return;
    }
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let dir = tempfile::tempdir().unwrap();
    // The worker reaches Redis through a proxy the test can cut.
    let redis = app.state.settings.redis.url.as_ref().expect("postgres runs have redis").expose().to_string();
    let mut proxy = TcpProxy::start(socket_of(&redis)).await;
    let redis_url = format!("redis://127.0.0.1:{}", proxy.port);
    let mut child = crate::worker_process::worker_command(
        &app.state.settings,
        dir.path(),
        &[
            ("REELHOUSE__WORKERS__HEALTH_BIND", "127.0.0.1:0"),
            ("REELHOUSE__WORKERS__CONCURRENCY", "2"),
            ("REELHOUSE__REDIS__URL", &redis_url),
            ("REELHOUSE__REDIS__KEY_PREFIX", &app.state.settings.redis.key_prefix),
        ],
    )
    .spawn()
    .unwrap();
    let log = dir.path().join("worker.log");
    let base = health_address(&log)
        .await
        .unwrap_or_else(|| panic!("no health address in the log:\n{}", std::fs::read_to_string(&log).unwrap()));

    let live = app.client.get(format!("{base}/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    for dependency in ["database", "storage", "redis"] {
        assert_eq!(body["checks"][dependency]["ok"], true, "{body}");
    }
    // The API's routes are not there.
    let graphql = app.client.get(format!("{base}/graphql")).send().await.unwrap();
    assert_eq!(graphql.status(), 404);

    let scrape = || async { app.client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap() };
    assert!(
        eventually(100, || async {
            sample(&scrape().await, "reelhouse_worker_last_heartbeat_timestamp_seconds").is_some_and(|t| t > 0.0)
        })
        .await,
        "the worker's heartbeat is exported:\n{}",
        scrape().await
    );
    let text = scrape().await;
    let types = assert_every_type_has_help(&text);
    assert_eq!(sample(&text, "reelhouse_worker_capacity"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "reelhouse_dependency_up{dependency=\"database\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "reelhouse_worker_busy_ratio"), Some(0.0), "an idle worker: {text}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "reelhouse_worker_running_jobs",
        "reelhouse_worker_busy_ratio",
    ] {
        assert!(types.contains_key(name), "{name} missing:\n{text}");
    }

    // A dependency gone: not ready (503 naming it, no address), still live.
    proxy.cut().await;
    let ready = app.client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["ok"], false, "{body}");
    assert!(body["reason"].as_str().unwrap_or_default().starts_with("redis"), "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "no addresses: {body}");
    assert_eq!(sample(&scrape().await, "reelhouse_dependency_up{dependency=\"redis\"}"), Some(0.0));
    assert_eq!(app.client.get(format!("{base}/live")).send().await.unwrap().status(), 200);
    proxy.restore().await;
    assert!(
        eventually(100, || async { app.client.get(format!("{base}/ready")).send().await.unwrap().status() == 200 })
            .await,
        "ready again once Redis is back"
    );

    crate::worker_process::sigterm(&child);
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("worker exits").unwrap();
    assert!(exit.success(), "{exit:?}");
}
