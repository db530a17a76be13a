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
    app_behind_proxy_with(recheck_ms, |_| {}).await
}

async fn app_behind_proxy_with(
    recheck_ms: u64,
    customize: impl FnOnce(&mut reelhouse::config::Settings),
) -> (TestApp, TcpProxy) {
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
        customize(s);
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

/// A plain HTTP call's status and `Retry-After`.
async fn status_of(request: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
    let res = request.send().await.expect("request");
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry_after, res.text().await.unwrap_or_default())
}

/// A WebSocket upgrade refused with an HTTP status (the breaker is open), or the
/// close code of the socket after its first message.
async fn ws_outcome(app: &TestApp, path: &str, protocol: &str, first: Value) -> Result<u16, u16> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url(path).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("{path}: {err}"),
        Ok((mut socket, _)) => {
            socket.send(Message::Text(first.to_string().into())).await.unwrap();
            Ok(close_of(&mut socket).await.0)
        }
    }
}

const STATUS_QUERY: &str = "{ systemStatus { dependencies { name state failures lastError } \
                            queue { queued running dead asOf } workers { id } workersAsOf } }";

/// Every door that reads the database for a caller (tus, `/media`, `/storage`, the
/// worker channel's `hello`, a subscription's `connection_init`) answers a database
/// outage as `UNAVAILABLE` (503 + `Retry-After`, or a retryable close), both while
/// the `database` breaker counts failures and once it is open (then without asking
/// the database); an admin still reads `systemStatus`, from memory.
#[actix_web::test]
async fn every_door_answers_unavailable_during_a_database_outage_and_admins_still_read_system_status() {
    let (app, mut proxy) = app_behind_proxy_with(60_000, |s| {
        s.storage.backend = Some(reelhouse::config::StorageBackend::Local);
        s.workers.embedded = false;
        s.breakers.failure_threshold = 3;
        s.breakers.open_ms = 1_000;
    })
    .await;
    let admin = app.create_user_with_role(entities::Role::Admin).await;
    let user = app.register_user().await;
    let owner = uuid::Uuid::parse_str(&user.id).unwrap();
    let video = crate::uploads::new_video(&app, owner).await;
    let tus = crate::tus::tus_session(&app, &user, video, 1000).await;
    let (worker_token, _) = crate::remote_workers::mint_token(&app, &admin, 1).await;
    // Signed in but never seen since: no session cache entry, so `connection_init`
    // needs the database.
    let fresh = [app.register_user().await, app.register_user().await];
    let b64 = |text: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
    let tus_metadata =
        format!("videoId {},filename {},filetype {}", b64(&video.to_string()), b64("a.mp4"), b64("video/mp4"));
    let (status, before) = app.graphql_as(&admin.bearer(), STATUS_QUERY, json!({})).await;
    assert_eq!(status, 200, "{before}");
    let read_at = before["data"]["systemStatus"]["queue"]["asOf"].clone();
    assert!(read_at.is_string(), "{before}");
    let media = app.url(&format!("/media/{video}/hls/master.m3u8"));

    proxy.cut().await;
    // Twice round: first the breaker counts the outage, then it is open.
    for (round, fresh) in ["meeting the outage", "breaker open"].into_iter().zip(&fresh) {
        let head = app.client.head(&tus).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0");
        let patch = app
            .client
            .patch(&tus)
            .bearer_auth(&user.access_token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", "0")
            .body(vec![0u8; 10]);
        let create = app
            .client
            .post(app.url("/uploads/"))
            .bearer_auth(&user.access_token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "10")
            .header("Upload-Metadata", tus_metadata.as_str());
        let get_media = app.client.get(&media);
        for (door, request) in [("tus HEAD", head), ("tus PATCH", patch), ("tus POST", create), ("/media", get_media)] {
            let (status, retry_after, body) = status_of(request).await;
            assert_eq!(status, 503, "{round}: {door}: {body}");
            assert!(retry_after.is_some(), "{round}: {door}: 503 without Retry-After");
            if door != "tus HEAD" {
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                assert_eq!(body["code"], "UNAVAILABLE", "{round}: {door}: {body}");
            }
        }
        let hello = crate::remote_workers::hello(&worker_token, 1);
        match ws_outcome(&app, "/workers/ws", "reelhouse-worker.v1", hello).await {
            Ok(code) => assert_eq!(code, 1013, "{round}: a worker's hello is told to come back, not refused"),
            Err(status) => assert_eq!(status, 503, "{round}: worker channel upgrade"),
        }
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", fresh.access_token) } });
        match ws_outcome(&app, "/graphql/ws", "graphql-transport-ws", init).await {
            Ok(code) => assert_eq!(code, 1013, "{round}: connection_init"),
            Err(status) => assert_eq!(status, 503, "{round}: subscription upgrade"),
        }

        // The admin reads systemStatus from memory: the queue as last read, dated.
        let (status, body) = app.graphql_as(&admin.bearer(), STATUS_QUERY, json!({})).await;
        assert_eq!(status, 200, "{round}: {body}");
        assert!(body["errors"].is_null(), "{round}: {body}");
        let status = &body["data"]["systemStatus"];
        assert_eq!(status["queue"]["asOf"], read_at, "{round}: the last reading, with its time: {body}");
        let database = status["dependencies"].as_array().unwrap().iter().find(|d| d["name"] == "database").unwrap();
        if round == "meeting the outage" {
            // Enough failures were met to open the breaker.
            assert!(
                eventually(100, || async {
                    let (_, body) = app.graphql_as(&admin.bearer(), STATUS_QUERY, json!({})).await;
                    body["data"]["systemStatus"]["dependencies"]
                        .as_array()
                        .is_some_and(|all| all.iter().any(|d| d["name"] == "database" && d["state"] != "CLOSED"))
                })
                .await,
                "the database breaker opened: {body}"
            );
        } else {
            assert_ne!(database["state"], "CLOSED", "{body}");
        }
    }
    // With the breaker open, /storage answers 503 at once too (its signature is
    // not even looked at: the upload gate behind it needs the database).
    let (status, retry_after, body) = status_of(app.client.put(app.url("/storage/a/b?x=1")).body("x")).await;
    if status != 503 {
        // Half-open at that moment: the breaker let a probe through, which the gate
        // (or the signature check) answered; never a 500.
        assert!(status < 500, "/storage: {status} {body}");
    } else {
        assert!(retry_after.is_some());
    }
    // A non-admin is still refused systemStatus (its role is in the signed claims).
    let (_, body) = app.graphql_as(&user.bearer(), STATUS_QUERY, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");

    proxy.restore().await;
    assert!(
        eventually(200, || async { me(&app, &user.bearer()).await.0 == 200 }).await,
        "answers again once the database returns"
    );
    let (_, after) = app.graphql_as(&admin.bearer(), STATUS_QUERY, json!({})).await;
    assert!(after["data"]["systemStatus"]["queue"]["asOf"].as_str() > read_at.as_str(), "a fresh reading: {after}");
    let (status, _, _) =
        status_of(app.client.head(&tus).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0")).await;
    assert_eq!(status, 200, "the upload is still there");
}
