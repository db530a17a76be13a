//! The RateLimiter actor over HTTP: trips with Retry-After and recovers, shares
//! its buckets across instances through Redis, and follows each policy's
//! fail-open/closed choice when Redis is unreachable.

use reelhouse::actors::event_bus::Crash;
use reelhouse::config::rate_limit::{Policy, PolicySettings};
use reelhouse::config::SecretUrl;

use crate::helpers::{eventually, service_env, socket_of, spawn_app_with, TcpProxy, TestApp};

async fn get_graphiql(app: &TestApp) -> reqwest::Response {
    app.client.get(app.url("/graphql")).send().await.unwrap()
}

#[actix_web::test]
async fn api_limit_trips_with_retry_after_and_recovers() {
    let app = spawn_app_with(|s| {
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(1, 1, 2, true));
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
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(3, 60, 3, false));
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
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(100, 60, 100, false));
    })
    .await;
    let open = spawn_app_with(|s| {
        s.redis.url = Some(SecretUrl::new(proxied.clone()));
        s.redis.timeout_ms = 300;
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(2, 60, 2, true));
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
    assert!(
        eventually(100, || async { get_graphiql(&closed).await.status() == 200 }).await,
        "serves again once Redis returns"
    );
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

#[actix_web::test]
async fn expensive_queries_spend_the_budget_faster_than_cheap_ones() {
    let app = spawn_app_with(|s| {
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(20, 60, 20, true));
    })
    .await;
    let expensive: String =
        (0..30).map(|i| format!("a{i}: serverInfo {{ version mode instance startedAt }} ")).collect();
    let expensive = format!("{{ {expensive} }}");
    for _ in 0..2 {
        let (status, body) = app.graphql(&expensive, serde_json::json!({})).await;
        assert_eq!(status, 200);
        assert!(body["errors"].is_null(), "{body}");
    }
    let (_, body) = app.graphql(&expensive, serde_json::json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() >= 1, "{body}");
    assert!(body["data"].is_null(), "refused before execution: {body}");
    // A cheap query still fits in what is left.
    let (_, body) = app.graphql("{ serverInfo { version } }", serde_json::json!({})).await;
    assert_eq!(body["data"]["serverInfo"]["version"], env!("CARGO_PKG_VERSION"), "{body}");
}

#[actix_web::test]
async fn a_locked_out_attacker_does_not_lock_out_the_victim_from_another_ip() {
    let app = spawn_app_with(|_| {}).await;
    let victim = app.register_user().await;
    let login = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
    let attempt = |password: &str| serde_json::json!({ "input": { "email": victim.email, "password": password } });

    // The attacker (127.0.0.1) guesses until the `auth` bucket (burst 5) is empty.
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (_, body) = app.graphql(login, attempt("wrong password 1")).await;
        codes.push(crate::helpers::error_code(&body).unwrap_or_default());
    }
    assert_eq!(&codes[..5], &["UNAUTHENTICATED"; 5], "{codes:?}");
    assert_eq!(codes[5], "RATE_LIMITED", "{codes:?}");
    // Even the right password is refused from the attacker's address now.
    let (_, body) = app.graphql(login, attempt(crate::helpers::TEST_PASSWORD)).await;
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64().is_some(), "{body}");

    // The victim, from another address, signs in.
    let victim_client = reqwest::Client::builder().local_address(Some("127.0.0.2".parse().unwrap())).build().unwrap();
    let body: serde_json::Value = victim_client
        .post(app.url("/graphql"))
        .json(&serde_json::json!({ "query": login, "variables": attempt(crate::helpers::TEST_PASSWORD) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");
}

#[actix_web::test]
async fn forwarded_for_decides_the_bucket_only_behind_a_trusted_proxy() {
    let limited = |trusted: Vec<String>| {
        move |s: &mut reelhouse::config::Settings| {
            s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(2, 60, 2, true));
            s.server.trusted_proxies = trusted.clone();
        }
    };
    let as_client =
        |app: &TestApp, ip: &'static str| app.client.get(app.url("/graphql")).header("X-Forwarded-For", ip).send();
    // Untrusted peer: rotating X-Forwarded-For does not buy a fresh bucket.
    let app = spawn_app_with(limited(vec![])).await;
    assert_eq!(as_client(&app, "198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(as_client(&app, "198.51.100.2").await.unwrap().status(), 200);
    assert_eq!(as_client(&app, "198.51.100.3").await.unwrap().status(), 429);

    // Behind a trusted proxy each forwarded client has its own bucket.
    let app = spawn_app_with(limited(vec!["127.0.0.0/8".into()])).await;
    for _ in 0..2 {
        assert_eq!(as_client(&app, "198.51.100.1").await.unwrap().status(), 200);
    }
    assert_eq!(as_client(&app, "198.51.100.1").await.unwrap().status(), 429);
    assert_eq!(as_client(&app, "198.51.100.2").await.unwrap().status(), 200, "another client is not throttled");
}
