//! The WebSocket `Session` actor: credentials in `connection_init`, 4403 for bad
//! ones, 4408 without init, and the socket closed when the session is revoked,
//! the user disabled or the token expires.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app_with, TestApp};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, protocol: &str) -> Socket {
    let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.expect("websocket connects").0
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).await.unwrap();
}

/// Read until the server closes; returns the close code and reason, and the text
/// messages seen on the way.
async fn until_closed(socket: &mut Socket) -> (u16, String, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("server closes in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string(), seen),
            Some(Ok(Message::Close(None))) | None => return (u16::from(CloseCode::Status), String::new(), seen),
            Some(Ok(Message::Text(text))) => seen.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket error before close: {err}"),
        }
    }
}

async fn next_text(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("message in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Open an authenticated graphql-transport-ws session with a live heartbeat stream.
async fn subscribed(app: &TestApp, token: &str) -> Socket {
    let mut socket = connect(app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
        .await;
    assert_eq!(next_text(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } }),
    )
    .await;
    assert_eq!(next_text(&mut socket).await["type"], "next");
    socket
}

async fn fast_app() -> TestApp {
    spawn_app_with(|s| {
        s.graphql.ws_init_timeout_secs = 1;
        s.graphql.ws_recheck_ms = 100;
    })
    .await
}

#[actix_web::test]
async fn no_connection_init_closes_with_4408() {
    let app = fast_app().await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    let (code, reason, _) = until_closed(&mut socket).await;
    assert_eq!(code, 4408, "{reason}");
}

#[actix_web::test]
async fn a_bad_token_closes_with_4403_in_both_protocols() {
    let app = fast_app().await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut socket = connect(&app, protocol).await;
        send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": "Bearer not.a.token" } }))
            .await;
        let (code, reason, seen) = until_closed(&mut socket).await;
        assert_eq!(code, 4403, "{protocol}: {reason} {seen:?}");
        assert!(seen.iter().all(|m| m["type"] != "connection_ack"), "{protocol}: no ack for a bad token");
    }
}

#[actix_web::test]
async fn anonymous_sessions_may_use_public_subscriptions() {
    let app = fast_app().await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(next_text(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } }),
    )
    .await;
    assert_eq!(next_text(&mut socket).await["type"], "next");
}

#[actix_web::test]
async fn revoking_all_sessions_closes_open_subscriptions() {
    let app = fast_app().await;
    let user = app.register_user().await;
    let other = app.login(&user.email, crate::helpers::TEST_PASSWORD).await;
    let mut socket = subscribed(&app, &user.access_token).await;

    let (status, body) = app.graphql_as(&other.bearer(), "mutation { revokeAllSessions }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["revokeAllSessions"], true, "{body}");

    let (code, reason, _) = until_closed(&mut socket).await;
    assert_eq!(code, 4403);
    assert_eq!(reason, "session revoked");
}

#[actix_web::test]
async fn an_expiring_token_closes_the_socket() {
    let app = spawn_app_with(|s| {
        s.auth.access_token_ttl_secs = 2;
        s.graphql.ws_recheck_ms = 100;
    })
    .await;
    let user = app.register_user().await;
    let mut socket = subscribed(&app, &user.access_token).await;
    let (code, reason, seen) = until_closed(&mut socket).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason == "token expired" || reason == "session revoked", "{reason}");
    assert!(!seen.is_empty(), "events flowed until expiry");
}

#[actix_web::test]
async fn oversized_messages_close_the_socket() {
    let app = fast_app().await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    let huge = "x".repeat(300 * 1024);
    let _ = socket.send(Message::Text(huge.into())).await;
    let next = tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("closed in time");
    match next {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    // The server keeps serving others.
    assert_eq!(app.client.get(app.url("/health")).send().await.unwrap().status(), 200);
}

#[actix_web::test]
async fn one_socket_runs_a_bounded_number_of_subscriptions_and_gets_room_back_when_one_ends() {
    let app = spawn_app_with(|s| s.graphql.ws_max_subscriptions = 2).await;
    let user = app.register_user().await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    let token = format!("Bearer {}", user.access_token);
    send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": token } })).await;
    assert_eq!(next_text(&mut socket).await["type"], "connection_ack");
    let subscribe = |id: &str| json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } });
    for id in ["1", "2", "3"] {
        send(&mut socket, subscribe(id)).await;
    }
    // The third is refused for its id; the socket stays open and the first two run.
    let mut refused = None;
    let mut running = std::collections::HashSet::new();
    while refused.is_none() || running.len() < 2 {
        let message = next_text(&mut socket).await;
        match message["type"].as_str() {
            Some("error") => refused = Some(message),
            Some("next") => {
                running.insert(message["id"].as_str().unwrap().to_string());
            }
            _ => panic!("unexpected {message}"),
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused["id"], "3");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    assert_eq!(running, ["1", "2"].map(String::from).into());

    // Ending one makes room for another.
    send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    send(&mut socket, subscribe("4")).await;
    loop {
        let message = next_text(&mut socket).await;
        assert_ne!(message["type"], "error", "{message}");
        if message["id"] == "4" {
            assert_eq!(message["type"], "next");
            break;
        }
    }
}

/// Send one operation and read until its `complete`/`error` or the socket closes.
/// Returns the messages for `id` and, when the server closed, the close code.
async fn run_operation(socket: &mut Socket, id: &str, query: &str, variables: Value) -> (Vec<Value>, Option<u16>) {
    send(socket, json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })).await;
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("an answer in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["id"] != id {
                    continue;
                }
                let done = matches!(message["type"].as_str(), Some("complete" | "error"));
                seen.push(message);
                if done {
                    return (seen, None);
                }
            }
            Some(Ok(Message::Close(frame))) => return (seen, Some(frame.map_or(1005, |f| u16::from(f.code)))),
            None => return (seen, Some(1006)),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket error: {err}"),
        }
    }
}

async fn init(socket: &mut Socket, payload: Value) {
    send(socket, json!({ "type": "connection_init", "payload": payload })).await;
    assert_eq!(next_text(socket).await["type"], "connection_ack");
}

const SET_ROLE: &str = "mutation($id: ID!, $role: Role!) { setUserRole(id: $id, role: $role) { role } }";

async fn role_of(app: &TestApp, id: &str) -> entities::Role {
    use sea_orm::EntityTrait;
    let id = uuid::Uuid::parse_str(id).unwrap();
    entities::user::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap().role
}

#[actix_web::test]
async fn a_demoted_admin_cannot_promote_itself_back_over_its_open_socket() {
    // A long re-check interval: the demotion must count on the very next operation.
    let app = spawn_app_with(|s| s.graphql.ws_recheck_ms = 600_000).await;
    let admin = app.create_user_with_role(entities::Role::Admin).await;
    let other_admin = app.create_user_with_role(entities::Role::Admin).await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    init(&mut socket, json!({ "authorization": format!("Bearer {}", admin.access_token) })).await;
    let (seen, closed) = run_operation(&mut socket, "1", "{ me { role } }", json!({})).await;
    assert_eq!(closed, None);
    assert_eq!(seen[0]["payload"]["data"]["me"]["role"], "ADMIN", "{seen:?}");

    let (_, body) = app.graphql_as(&other_admin.bearer(), SET_ROLE, json!({ "id": admin.id, "role": "USER" })).await;
    assert_eq!(body["data"]["setUserRole"]["role"], "USER", "{body}");

    let (seen, closed) = run_operation(&mut socket, "2", SET_ROLE, json!({ "id": admin.id, "role": "ADMIN" })).await;
    assert!(seen.iter().all(|m| m["type"] != "next" || m["payload"]["data"].is_null()), "{seen:?}");
    assert_eq!(closed, Some(4403), "the socket closes once its role changed: {seen:?}");
    assert_eq!(role_of(&app, &admin.id).await, entities::Role::User, "the demotion stands");
}

async fn create_api_key(app: &TestApp, owner: &crate::helpers::TestUser) -> (String, String) {
    let (_, body) = app
        .graphql_as(&owner.bearer(), r#"mutation { createApiKey(name: "ws") { apiKey { id } secret } }"#, json!({}))
        .await;
    let payload = &body["data"]["createApiKey"];
    (payload["apiKey"]["id"].as_str().unwrap().to_string(), payload["secret"].as_str().unwrap().to_string())
}

#[actix_web::test]
async fn an_api_key_socket_closes_when_its_owner_is_demoted() {
    let app = fast_app().await;
    let owner = app.create_user_with_role(entities::Role::Admin).await;
    let other_admin = app.create_user_with_role(entities::Role::Admin).await;
    let (_, secret) = create_api_key(&app, &owner).await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    init(&mut socket, json!({ "x-api-key": secret })).await;
    let (seen, _) = run_operation(&mut socket, "1", "{ me { role } }", json!({})).await;
    assert_eq!(seen[0]["payload"]["data"]["me"]["role"], "ADMIN", "{seen:?}");
    send(
        &mut socket,
        json!({ "id": "2", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } }),
    )
    .await;

    let (_, body) = app.graphql_as(&other_admin.bearer(), SET_ROLE, json!({ "id": owner.id, "role": "USER" })).await;
    assert_eq!(body["data"]["setUserRole"]["role"], "USER", "{body}");

    // Heartbeats keep coming until then, so bound the whole wait.
    let (code, reason, _) =
        tokio::time::timeout(Duration::from_secs(30), until_closed(&mut socket)).await.expect("closed in time");
    assert_eq!(code, 4403, "{reason}");
}

#[actix_web::test]
async fn a_revoked_api_key_closes_its_socket() {
    let app = fast_app().await;
    let owner = app.register_user().await;
    let (id, secret) = create_api_key(&app, &owner).await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    init(&mut socket, json!({ "x-api-key": secret })).await;
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } }),
    )
    .await;
    assert_eq!(next_text(&mut socket).await["type"], "next");
    let (_, body) =
        app.graphql_as(&owner.bearer(), "mutation($id: ID!) { revokeApiKey(id: $id) }", json!({ "id": id })).await;
    assert_eq!(body["data"]["revokeApiKey"], true, "{body}");
    let (code, reason, _) =
        tokio::time::timeout(Duration::from_secs(30), until_closed(&mut socket)).await.expect("closed in time");
    assert_eq!(code, 4403, "{reason}");
}

#[actix_web::test]
async fn every_operation_over_a_socket_costs_an_api_token() {
    use reelhouse::config::rate_limit::{Policy, PolicySettings};
    let app = spawn_app_with(|s| {
        s.rate_limit.policies.insert(Policy::Api, PolicySettings::new(6, 3600, 6, true));
    })
    .await;
    let mut socket = connect(&app, "graphql-transport-ws").await; // the upgrade costs one
    init(&mut socket, json!({})).await;
    let mut answered = 0;
    let mut refused = None;
    for i in 0..20 {
        let (seen, closed) = run_operation(&mut socket, &i.to_string(), "{ serverInfo { version } }", json!({})).await;
        assert_eq!(closed, None, "{seen:?}");
        match seen[0]["type"].as_str() {
            Some("next") if seen[0]["payload"]["errors"].is_null() => answered += 1,
            _ => {
                refused = Some(seen[0].clone());
                break;
            }
        }
    }
    let refused = refused.expect("the socket's operations ran out of api tokens");
    assert_eq!(answered, 5, "one token each after the upgrade's: {refused}");
    let error = if refused["type"] == "error" { &refused["payload"][0] } else { &refused["payload"]["errors"][0] };
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{refused}");
    assert!(error["extensions"]["retryAfter"].as_u64().is_some_and(|s| s >= 1), "{refused}");
}

#[actix_web::test]
async fn sockets_per_address_are_capped() {
    let app = spawn_app_with(|s| s.graphql.ws_max_sockets_per_ip = 2).await;
    let first = connect(&app, "graphql-transport-ws").await;
    let _second = connect(&app, "graphql-transport-ws").await;
    let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["code"], "RATE_LIMITED", "{body}");
        }
        other => panic!("a third socket from one address must be refused, got {other:?}"),
    }
    // Closing one gives the room back.
    drop(first);
    let app = &app;
    assert!(
        crate::helpers::eventually(100, || async move {
            let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
            request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
            tokio_tungstenite::connect_async(request).await.is_ok()
        })
        .await
    );
}

#[actix_web::test]
async fn sockets_and_subscriptions_per_user_are_capped() {
    let app = spawn_app_with(|s| {
        s.graphql.ws_max_sockets_per_user = 2;
        s.graphql.ws_max_subscriptions_per_user = 2;
    })
    .await;
    let user = app.register_user().await;
    let auth = json!({ "authorization": format!("Bearer {}", user.access_token) });
    let mut a = connect(&app, "graphql-transport-ws").await;
    init(&mut a, auth.clone()).await;
    let mut b = connect(&app, "graphql-transport-ws").await;
    init(&mut b, auth.clone()).await;

    // Subscriptions count across the user's sockets.
    let heartbeat = |id: &str| json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } });
    send(&mut a, heartbeat("1")).await;
    assert_eq!(next_text(&mut a).await["type"], "next");
    send(&mut b, heartbeat("1")).await;
    assert_eq!(next_text(&mut b).await["type"], "next");
    send(&mut b, heartbeat("2")).await;
    let refused = loop {
        let message = next_text(&mut b).await;
        if message["id"] == "2" {
            break message;
        }
    };
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");

    // A third socket of the same user is refused at init.
    let mut c = connect(&app, "graphql-transport-ws").await;
    send(&mut c, json!({ "type": "connection_init", "payload": auth })).await;
    let (code, reason, seen) = until_closed(&mut c).await;
    assert_eq!(code, 4429, "{reason} {seen:?}");
    assert!(reason.starts_with("RATE_LIMITED"), "{reason}");
    // Another user is not affected.
    let other = app.register_user().await;
    let mut d = connect(&app, "graphql-transport-ws").await;
    init(&mut d, json!({ "authorization": format!("Bearer {}", other.access_token) })).await;
}
