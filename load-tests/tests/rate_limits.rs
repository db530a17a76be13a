//! The harness against a rate-limiting server: a tiny actix server answers 429 with
//! `Retry-After` (HTTP calls and WebSocket upgrades) or a GraphQL `RATE_LIMITED`
//! error, and the harness must wait, retry, count the refusals apart from errors,
//! and give up (one error) once a call has backed off its whole budget.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: helpers may panic too

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use reelhouse_load::api::Api;
use reelhouse_load::backoff::RetryPolicy;
use reelhouse_load::report::Report;
use reelhouse_load::stats::Stats;
use reelhouse_load::ws::{Feed, SubscribeSpec, Subscriber};
use serde_json::json;

#[derive(Clone, Copy)]
enum Mode {
    /// The first `n` calls: 429 with `Retry-After: secs`; then data.
    RefuseFirst { n: usize, secs: u64 },
    /// Every call: 429 with `Retry-After: 0`.
    RefuseAll,
    /// The first call: 200 with a GraphQL `RATE_LIMITED` error and no data; then data.
    GraphqlRefusal,
    /// The first call: 503 (busy) with `Retry-After: 1`; then data.
    BusyFirst,
}

#[derive(Clone)]
struct Hits {
    count: Arc<AtomicUsize>,
    at: Arc<Mutex<Vec<Instant>>>,
}

impl Hits {
    fn record(&self) -> usize {
        self.at.lock().unwrap().push(Instant::now());
        self.count.fetch_add(1, Ordering::SeqCst)
    }

    fn gaps(&self) -> Vec<Duration> {
        let at = self.at.lock().unwrap();
        at.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

fn refused(secs: u64) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header(("Retry-After", secs.to_string()))
        .content_type("application/json")
        .body(r#"{"code":"RATE_LIMITED","message":"slow down"}"#)
}

/// A server on a free port in its own thread; returns its URL and its hit log.
fn serve(mode: Mode) -> (String, Hits) {
    let hits = Hits { count: Arc::new(AtomicUsize::new(0)), at: Arc::new(Mutex::new(Vec::new())) };
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = hits.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let hits = shared.clone();
                let ws_hits = shared.clone();
                App::new()
                    .route(
                        "/graphql",
                        web::post().to(move || {
                            let n = hits.record();
                            async move {
                                match mode {
                                    Mode::RefuseFirst { n: first, secs } if n < first => refused(secs),
                                    Mode::RefuseAll => refused(0),
                                    Mode::GraphqlRefusal if n == 0 => HttpResponse::Ok().json(json!({
                                        "data": null,
                                        "errors": [{ "message": "slow down", "extensions": { "code": "RATE_LIMITED", "retryAfter": 1 } }]
                                    })),
                                    Mode::BusyFirst if n == 0 => {
                                        HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "1")).finish()
                                    }
                                    _ => HttpResponse::Ok().json(json!({ "data": { "a": 1 } })),
                                }
                            }
                        }),
                    )
                    .route(
                        "/graphql/ws",
                        web::get().to(move || {
                            ws_hits.record();
                            async move { refused(0) }
                        }),
                    )
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), hits)
}

fn quick() -> RetryPolicy {
    RetryPolicy { base: Duration::from_millis(50), cap: Duration::from_millis(200), max_total: Duration::from_secs(1) }
}

#[tokio::test]
async fn http_429_waits_for_retry_after_and_is_not_an_error() {
    let (url, hits) = serve(Mode::RefuseFirst { n: 2, secs: 1 });
    let stats = Arc::new(Stats::default());
    let api = Api::new(&url, stats.clone()).unwrap();
    let started = Instant::now();
    let data = api.gql(None, "query Q { a }", json!({})).await.expect("answered after backing off");
    assert_eq!(data["a"], 1);
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After: 1 honoured twice: {:?}", started.elapsed());
    assert_eq!(hits.count.load(Ordering::SeqCst), 3);
    assert!(hits.gaps().iter().all(|g| *g >= Duration::from_millis(990)), "{:?}", hits.gaps());
    assert_eq!(Stats::get(&stats.errors), 0, "{:?}", stats.error_samples());
    assert_eq!(Stats::get(&stats.rate_limited), 2);
    assert_eq!(Stats::get(&stats.requests), 1, "refusals are not requests");

    let report = Report::from_stats(&stats, 1.0);
    assert_eq!(report.rate_limited, 2);
    assert_eq!(report.errors, 0);
    assert!(report.rate_limit_wait_s >= 2.0, "{}", report.rate_limit_wait_s);
    let note = report.rate_limit_note.clone().unwrap();
    assert!(note.contains("REELHOUSE__RATE_LIMIT__ENABLED=false") && note.contains("rate_limit.enabled"), "{note}");
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["rate_limited"], 2);
    assert_eq!(v["errors"], 0);
    assert!(report.human().contains("rate-limited  2 refusals (not counted as errors)"), "{}", report.human());
}

#[tokio::test]
async fn a_call_refused_past_its_budget_is_one_error_not_a_spin() {
    let (url, hits) = serve(Mode::RefuseAll);
    let stats = Arc::new(Stats::default());
    let mut api = Api::new(&url, stats.clone()).unwrap();
    api.retry = quick();
    let started = Instant::now();
    assert!(api.gql(None, "query Q { a }", json!({})).await.is_err());
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(700) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    let n = hits.count.load(Ordering::SeqCst);
    // A spin would be thousands; 50..200 ms waits within 1 s are a handful.
    assert!((4..=30).contains(&n), "{n} calls");
    assert_eq!(Stats::get(&stats.rate_limited), n as u64);
    assert_eq!(Stats::get(&stats.errors), 1);
    assert!(stats.error_samples()[0].contains("still rate-limited"), "{:?}", stats.error_samples());
}

#[tokio::test]
async fn a_graphql_rate_limited_error_is_waited_for() {
    let (url, hits) = serve(Mode::GraphqlRefusal);
    let stats = Arc::new(Stats::default());
    let api = Api::new(&url, stats.clone()).unwrap();
    let started = Instant::now();
    assert!(api.gql(None, "query Q { a }", json!({})).await.is_ok());
    assert!(started.elapsed() >= Duration::from_secs(1), "extensions.retryAfter honoured");
    assert_eq!(hits.count.load(Ordering::SeqCst), 2);
    assert_eq!(Stats::get(&stats.rate_limited), 1);
    assert_eq!(Stats::get(&stats.errors), 0, "{:?}", stats.error_samples());
}

#[tokio::test]
async fn a_busy_503_with_retry_after_is_waited_for() {
    let (url, hits) = serve(Mode::BusyFirst);
    let stats = Arc::new(Stats::default());
    let api = Api::new(&url, stats.clone()).unwrap();
    let started = Instant::now();
    assert!(api.gql(None, "query Q { a }", json!({})).await.is_ok());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(hits.count.load(Ordering::SeqCst), 2);
    assert_eq!(Stats::get(&stats.rate_limited), 1);
    assert_eq!(Stats::get(&stats.errors), 0, "{:?}", stats.error_samples());
}

#[tokio::test]
async fn a_websocket_upgrade_refused_with_429_backs_off_then_gives_up_once() {
    let (url, hits) = serve(Mode::RefuseAll);
    let stats = Arc::new(Stats::default());
    let api = Api::new(&url, stats.clone()).unwrap();
    let spec = SubscribeSpec {
        url: api.ws_url().unwrap(),
        auth: None,
        video_id: "v".into(),
        feed: Feed::Progress,
        one_ready: true,
        retry: quick(),
    };
    let started = Instant::now();
    let outcome = Subscriber::start(spec, stats.clone(), None).await;
    assert!(outcome.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let n = hits.count.load(Ordering::SeqCst);
    assert!((4..=30).contains(&n), "{n} upgrades");
    assert_eq!(Stats::get(&stats.rate_limited), n as u64);
    assert_eq!(Stats::get(&stats.errors), 1, "{:?}", stats.error_samples());
    assert!(stats.rate_limit_samples()[0].contains("WebSocket upgrade"), "{:?}", stats.rate_limit_samples());
}
