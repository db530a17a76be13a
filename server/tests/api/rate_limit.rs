//! The RateLimiter actor over HTTP: trips with Retry-After and recovers, shares
//! its buckets across instances through Redis, and follows each policy's
//! fail-open/closed choice when Redis is unreachable.

use reelhouse::actors::Crash;
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

#[actix_web::test]
async fn ipv6_clients_share_one_bucket_per_64() {
    let app = spawn_app_with(|s| {
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(2, 60, 2, true));
        s.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let as_client = |ip: &'static str| app.client.get(app.url("/graphql")).header("X-Forwarded-For", ip).send();
    assert_eq!(as_client("2001:db8:0:7::1").await.unwrap().status(), 200);
    assert_eq!(as_client("2001:db8:0:7::2").await.unwrap().status(), 200);
    assert_eq!(as_client("2001:db8:0:7:abcd::3").await.unwrap().status(), 429, "same /64, same bucket");
    assert_eq!(as_client("2001:db8:0:8::1").await.unwrap().status(), 200, "another /64 is another client");
}

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";

async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> (u16, serde_json::Value) {
    let res = app
        .client
        .post(app.url("/graphql"))
        .header("X-Forwarded-For", ip)
        .json(
            &serde_json::json!({ "query": LOGIN, "variables": { "input": { "email": email, "password": password } } }),
        )
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[actix_web::test]
async fn failed_sign_ins_from_many_addresses_back_off_the_account() {
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.0/8".into()];
        s.auth.login_backoff_after_failures = 3;
        s.auth.login_backoff_base_secs = 60;
    })
    .await;
    let victim = app.register_user().await;
    let bystander = app.register_user().await;
    let code = |body: &serde_json::Value| crate::helpers::error_code(body).unwrap_or_default();

    // A success forgets earlier failures.
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(code(&login_from(&app, ip, &victim.email, "wrong password 1").await.1), "UNAUTHENTICATED");
    }
    let (_, body) = login_from(&app, "198.51.100.3", &victim.email, crate::helpers::TEST_PASSWORD).await;
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");

    // One guess from each of three addresses: no per-address bucket is near empty...
    for ip in ["198.51.100.11", "198.51.100.12", "198.51.100.13"] {
        assert_eq!(code(&login_from(&app, ip, &victim.email, "wrong password 1").await.1), "UNAUTHENTICATED");
    }
    // ...but the account now backs off, whoever asks and whatever the password.
    let (_, body) = login_from(&app, "198.51.100.14", &victim.email, crate::helpers::TEST_PASSWORD).await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64().is_some_and(|s| s >= 1), "{body}");
    // The email's spelling does not matter, and other accounts are untouched.
    let shouting = victim.email.to_uppercase();
    assert_eq!(code(&login_from(&app, "198.51.100.15", &shouting, "wrong password 1").await.1), "RATE_LIMITED");
    let (_, body) = login_from(&app, "198.51.100.14", &bystander.email, crate::helpers::TEST_PASSWORD).await;
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");
}

#[actix_web::test]
async fn a_full_password_hashing_pool_answers_unavailable_with_retry_after() {
    let app = spawn_app_with(|s| s.auth.max_concurrent_password_hashes = Some(1)).await;
    let user = app.register_user().await;
    let held = app.state.password_hashing.try_reserve().expect("the pool has room");
    let res = app
        .client
        .post(app.url("/graphql"))
        .json(&serde_json::json!({ "query": LOGIN, "variables": { "input": { "email": user.email, "password": crate::helpers::TEST_PASSWORD } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(crate::helpers::error_code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
    assert!(body["data"].is_null(), "{body}");

    drop(held);
    let (status, body) = login_from(&app, "127.0.0.1", &user.email, crate::helpers::TEST_PASSWORD).await;
    assert_eq!(status, 200);
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");
}
