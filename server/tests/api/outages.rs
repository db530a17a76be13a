//! A database outage during authentication is answered as an outage: `UNAVAILABLE`
//! (HTTP 503 with `Retry-After`; a retryable WebSocket close), never as a verdict
//! about the caller. PostgreSQL is cut with a TCP proxy in front of the real one, so
//! the shared instance is never touched; the server is never restarted.

use std::time::Duration;

use futures::StreamExt;
use reelhouse::config::SecretUrl;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    create_postgres_database, error_code, eventually, socket_of, spawn_app_with, Credentials, TcpProxy, TestApp,
};
use crate::subscriptions::{connect, next_json, send, Socket};

/// A server whose PostgreSQL sits behind a proxy the test controls.
async fn app_with_database_behind_proxy(recheck_ms: u64) -> (TestApp, TcpProxy) {
    let db_url = create_postgres_database().await;
    let proxy = TcpProxy::start(socket_of(&db_url)).await;
    let mut proxied = url::Url::parse(&db_url).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let proxied = proxied.to_string();
    let app = spawn_app_with(|s| {
        s.database.url = Some(SecretUrl::new(proxied));
        s.database.connect_timeout_secs = 1;
        s.auth.jwt_secret = Some(reelhouse::config::Secret::new(crate::helpers::random_secret()));
        s.graphql.ws_recheck_ms = recheck_ms;
    })
    .await;
    (app, proxy)
}

/// `{ me { id } }` as `credentials`: status, `Retry-After`, body.
async fn me(app: &TestApp, credentials: &Credentials) -> (u16, Option<String>, Value) {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": "{ me { id } }" }));
    request = match credentials {
        Credentials::Anonymous => request,
        Credentials::Bearer(token) => request.bearer_auth(token),
        Credentials::ApiKey(key) => request.header("X-Api-Key", key),
    };
    let res = request.send().await.expect("graphql request");
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry_after, res.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn valid_credentials_get_unavailable_not_unauthenticated_while_the_database_is_cut() {
    let (app, mut proxy) = app_with_database_behind_proxy(60_000).await;
    let user = app.register_user().await;
    let owner = uuid::Uuid::parse_str(&user.id).unwrap();
    let key = reelhouse::auth::api_keys::create_api_key(&app.state.db, owner, entities::Role::User, "outage", None)
        .await
        .unwrap()
        .secret;
    for credentials in [user.bearer(), Credentials::ApiKey(key.clone())] {
        let (status, _, body) = me(&app, &credentials).await;
        assert_eq!((status, &body["data"]["me"]["id"]), (200, &json!(user.id)), "{body}");
    }

    proxy.cut().await;
    for credentials in [user.bearer(), Credentials::ApiKey(key.clone())] {
        let (status, retry_after, body) = me(&app, &credentials).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAVAILABLE"), "{credentials:?}: {body}");
        assert_eq!(status, 503, "{body}");
        let secs: u64 = retry_after.expect("Retry-After on a 503").parse().unwrap();
        assert!(secs >= 1);
        assert_eq!(body["errors"][0]["extensions"]["retryAfter"], json!(secs), "{body}");
    }
    // Signing in meets the same outage: UNAVAILABLE, not "bad credentials".
    let login = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
    let input = json!({ "input": { "email": user.email, "password": crate::helpers::TEST_PASSWORD } });
    let (status, body) = app.graphql(login, input).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
    assert_eq!(status, 503, "{body}");
    // A bad token is still refused as such: its signature says so without the database.
    let (status, _, body) = me(&app, &Credentials::Bearer("not.a.token".into())).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    assert_eq!(status, 200);

    proxy.restore().await;
    assert!(
        eventually(100, || async { me(&app, &user.bearer()).await.0 == 200 }).await,
        "answers again once the database returns"
    );
    for credentials in [user.bearer(), Credentials::ApiKey(key)] {
        let (_, _, body) = me(&app, &credentials).await;
        assert_eq!(body["data"]["me"]["id"], json!(user.id), "the same credentials still work: {body}");
    }
}

/// Read until the server closes the socket; returns the close code and reason.
async fn close_of(socket: &mut Socket) -> (u16, String) {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("server closes in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket error before close: {err}"),
        }
    }
}

#[actix_web::test]
async fn websocket_init_during_a_database_outage_closes_as_retryable_not_forbidden() {
    let (app, mut proxy) = app_with_database_behind_proxy(60_000).await;
    let user = app.register_user().await;

    proxy.cut().await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut socket = connect(&app, protocol).await;
        let auth = json!({ "authorization": format!("Bearer {}", user.access_token) });
        send(&mut socket, json!({ "type": "connection_init", "payload": auth })).await;
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, 1013, "{protocol}: try again later, not a verdict: {reason}");
        assert!(reason.starts_with("UNAVAILABLE"), "{protocol}: {reason}");
    }

    proxy.restore().await;
    assert!(eventually(100, || async { me(&app, &user.bearer()).await.0 == 200 }).await);
    let mut socket = connect(&app, "graphql-transport-ws").await;
    let auth = json!({ "authorization": format!("Bearer {}", user.access_token) });
    send(&mut socket, json!({ "type": "connection_init", "payload": auth })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
}

async fn deferred_rechecks(app: &TestApp) -> u64 {
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find(|line| line.starts_with("reelhouse_ws_rechecks_deferred_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn an_open_subscription_outlives_a_database_outage() {
    let (app, mut proxy) = app_with_database_behind_proxy(100).await;
    let user = app.register_user().await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    let auth = json!({ "authorization": format!("Bearer {}", user.access_token) });
    send(&mut socket, json!({ "type": "connection_init", "payload": auth })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let subscribe = json!({ "query": "subscription { heartbeat { seq } }" });
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": subscribe })).await;
    assert_eq!(next_json(&mut socket).await["type"], "next");

    proxy.cut().await;
    // Heartbeats keep coming while re-checks meet the outage (and are put off).
    let mut beats = 0u32;
    while deferred_rechecks(&app).await < 2 {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "the socket stays open during the outage: {message}");
        beats += 1;
        assert!(beats < 10_000, "no re-check met the outage");
    }

    proxy.restore().await;
    assert!(eventually(100, || async { me(&app, &user.bearer()).await.0 == 200 }).await);
    for _ in 0..5 {
        assert_eq!(next_json(&mut socket).await["type"], "next", "the stream never stopped");
    }
}
