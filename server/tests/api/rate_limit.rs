//! The RateLimiter actor over HTTP: trips with Retry-After and recovers, shares
//! its buckets across instances through Redis, and follows each policy's
//! fail-open/closed choice when Redis is unreachable.

use reelhouse::actors::event_bus::Crash;
use reelhouse::config::rate_limit::PolicySettings;
use reelhouse::config::SecretUrl;

use crate::helpers::{eventually, service_env, socket_of, spawn_app_with, TcpProxy, TestApp};

async fn get_graphiql(app: &TestApp) -> reqwest::Response {
    app.client.get(app.url("/graphql")).send().await.unwrap()
}

#[actix_web::test]
async fn api_limit_trips_with_retry_after_and_recovers() {
    let app = spawn_app_with(|s| {
        s.rate_limit.policies.insert("api".into(), PolicySettings::new(1, 1, 2, true));
    })
    .await;
    for remaining in ["1", "0"] {
        let res = get_graphiql(&app).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-policy"], "\"api\";q=1;w=1");
        let limit = res.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(limit.starts_with(&format!("\"api\";r={remaining};")), "{limit}");
    }
    let refused = get_graphiql(&app).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, 1);
    assert!(refused.headers().contains_key("ratelimit-policy"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");

    // Probes are never throttled.
    assert_eq!(app.client.get(app.url("/health")).send().await.unwrap().status(), 200);

    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(get_graphiql(&app).await.status(), 200, "the bucket refills after Retry-After");
}

#[actix_web::test]
async fn two_instances_on_one_redis_share_a_limit() {
    let redis_url = service_env("REELHOUSE_TEST_REDIS_URL");
    let prefix = format!("rh-test-shared-{}:", uuid::Uuid::new_v4().simple());
    let configure = |s: &mut reelhouse::config::Settings| {
        s.redis.url = Some(SecretUrl::new(redis_url.clone()));
        s.redis.key_prefix = prefix.clone();
        s.rate_limit.policies.insert("api".into(), PolicySettings::new(3, 60, 3, false));
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_with(configure).await;
    assert_eq!(get_graphiql(&a).await.status(), 200);
    assert_eq!(get_graphiql(&a).await.status(), 200);
    assert_eq!(get_graphiql(&b).await.status(), 200);
    let refused = get_graphiql(&b).await;
    assert_eq!(refused.status(), 429, "B sees the requests A counted");
    assert_eq!(get_graphiql(&a).await.status(), 429, "and A sees B's");
}

#[actix_web::test]
async fn unreachable_redis_fails_closed_or_open_per_policy() {
    let mut proxy = TcpProxy::start(socket_of(&service_env("REELHOUSE_TEST_REDIS_URL"))).await;
    let proxied = format!("redis://127.0.0.1:{}", proxy.port);
    let closed = spawn_app_with(|s| {
        s.redis.url = Some(SecretUrl::new(proxied.clone()));
        s.redis.timeout_ms = 300;
        s.rate_limit.policies.insert("api".into(), PolicySettings::new(100, 60, 100, false));
    })
    .await;
    let open = spawn_app_with(|s| {
        s.redis.url = Some(SecretUrl::new(proxied.clone()));
        s.redis.timeout_ms = 300;
        s.rate_limit.policies.insert("api".into(), PolicySettings::new(2, 60, 2, true));
    })
    .await;
    assert_eq!(get_graphiql(&closed).await.status(), 200);

    proxy.cut().await;
    let refused = get_graphiql(&closed).await;
    assert_eq!(refused.status(), 429, "fail-closed refuses while Redis is down");
    assert_eq!(refused.headers()["retry-after"], "1");
    // Fail-open falls back to this process's own buckets: still limited.
    assert_eq!(get_graphiql(&open).await.status(), 200);
    assert_eq!(get_graphiql(&open).await.status(), 200);
    assert_eq!(get_graphiql(&open).await.status(), 429, "local buckets keep limiting");

    proxy.restore().await;
    assert!(eventually(100, || async { get_graphiql(&closed).await.status() == 200 }).await, "serves again once Redis returns");
}

#[actix_web::test]
async fn supervisor_restarts_a_crashed_rate_limiter() {
    let app = spawn_app_with(|_| {}).await;
    app.state.hubs.rate_limiter.addr().do_send(Crash);
    let supervisor = &app.state.hubs.supervisor;
    assert!(eventually(100, || async { supervisor.restart_count("rate_limiter") == 1 }).await);
    let res = get_graphiql(&app).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("ratelimit"), "the new limiter answers");
}
