//! `/ready` follows its dependencies: 503 with a reason while one is unreachable,
//! 200 again once it returns. The services are cut with a TCP proxy in front of the
//! real PostgreSQL and Redis, so the shared instances are never touched.

use reelhouse::config::SecretUrl;

use crate::helpers::{create_postgres_database, eventually, service_env, socket_of, spawn_app_with, TcpProxy};

async fn ready_status(app: &crate::helpers::TestApp) -> (u16, serde_json::Value) {
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[actix_web::test]
async fn ready_turns_503_when_redis_is_unreachable_and_recovers() {
    let redis_url = service_env("REELHOUSE_TEST_REDIS_URL");
    let mut proxy = TcpProxy::start(socket_of(&redis_url)).await;
    let proxied = format!("redis://127.0.0.1:{}", proxy.port);
    let app = spawn_app_with(|s| s.redis.url = Some(SecretUrl::new(proxied))).await;

    assert!(eventually(50, || async { ready_status(&app).await.0 == 200 }).await, "ready with Redis up");

    proxy.cut().await;
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["redis"]["ok"], false);
    assert!(body["reason"].as_str().unwrap().starts_with("redis"), "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "reasons must not leak addresses: {body}");
    // Health is about the process, not its dependencies.
    assert_eq!(app.client.get(app.url("/health")).send().await.unwrap().status(), 200);

    proxy.restore().await;
    assert!(eventually(100, || async { ready_status(&app).await.0 == 200 }).await, "ready again after Redis returns");
}

#[actix_web::test]
async fn ready_turns_503_when_the_database_is_unreachable_and_recovers() {
    let db_url = create_postgres_database().await;
    let mut proxy = TcpProxy::start(socket_of(&db_url)).await;
    let mut proxied = url::Url::parse(&db_url).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let proxied = proxied.to_string();
    let app = spawn_app_with(|s| {
        s.database.url = Some(SecretUrl::new(proxied));
        s.database.connect_timeout_secs = 1;
        s.auth.jwt_secret = Some(reelhouse::config::Secret::new(crate::helpers::random_secret()));
    })
    .await;
    assert_eq!(ready_status(&app).await.0, 200);

    proxy.cut().await;
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"]["ok"], false);
    assert!(body["reason"].as_str().unwrap().contains("database"), "{body}");

    proxy.restore().await;
    assert!(
        eventually(100, || async { ready_status(&app).await.0 == 200 }).await,
        "ready again after the database returns"
    );
}

async fn loops_of(app: &crate::helpers::TestApp) -> serde_json::Value {
    ready_status(app).await.1["loops"].clone()
}

#[actix_web::test]
async fn ready_reports_every_background_loop_and_a_panicking_loop_is_restarted_and_counted() {
    use reelhouse::actors::Backoff;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    let app = spawn_app_with(|_| {}).await;
    let loops = loops_of(&app).await;
    let mut expected = vec!["event_pruner", "queue_metrics", "upload_sweeper", "webhook_delivery"];
    if app.state.redis.is_some() {
        expected.push("event_relay");
    }
    for name in expected {
        assert_eq!(loops[name]["running"], true, "{name}: {loops}");
        assert_eq!(loops[name]["restarts"], 0, "{name}: {loops}");
        assert!(loops[name]["last_start"].is_string(), "{name}: {loops}");
    }

    // A loop that panics twice, then runs: restarted, counted, shown.
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    let backoff = Backoff { initial: std::time::Duration::from_millis(1), max: std::time::Duration::from_millis(4) };
    app.state.hubs.supervisor.supervise("test_flaky", backoff, move || {
        let counter = counter.clone();
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("test_flaky fails on purpose");
            }
            std::future::pending::<()>().await;
        }
    });
    assert!(
        eventually(100, || async {
            let loops = loops_of(&app).await;
            loops["test_flaky"]["restarts"] == 2 && loops["test_flaky"]["running"] == true
        })
        .await,
        "restarted twice and running: {}",
        loops_of(&app).await
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelhouse_loop_restarts_total{loop=\"test_flaky\"} 2"), "{metrics}");
    assert!(!loops_of(&app).await.to_string().contains("on purpose"), "no panic text in /ready");
}
