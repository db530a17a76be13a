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
