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
