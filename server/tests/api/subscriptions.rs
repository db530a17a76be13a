//! GraphQL subscriptions over a real WebSocket, in both protocols, and the
//! supervisor restarting the event bus actor after it panics.

use futures::{SinkExt, StreamExt};
use reelhouse::actors::Crash;
use reelhouse::events::bus::SubscriberCount;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, spawn_app, TestApp};

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, protocol: &str) -> Socket {
    let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

pub(crate) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
            .await
            .expect("a message within the timeout")
            .expect("socket open")
            .expect("valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub(crate) async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).await.unwrap();
}

/// Subscribe to `heartbeat` with graphql-transport-ws and return the first `n` seqs.
async fn heartbeats_transport_ws(app: &TestApp, n: usize) -> Vec<u64> {
    let mut socket = connect(app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq instance at } }" } })).await;
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], "1");
        let beat = &message["payload"]["data"]["heartbeat"];
        assert_eq!(beat["instance"], app.state.instance_id.as_str());
        seqs.push(beat["seq"].as_u64().unwrap());
    }
    send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    socket.close(None).await.ok();
    seqs
}

#[actix_web::test]
async fn heartbeat_subscription_streams_over_graphql_transport_ws() {
    let app = spawn_app().await;
    let seqs = heartbeats_transport_ws(&app, 3).await;
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "heartbeats arrive in order: {seqs:?}");
}

#[actix_web::test]
async fn heartbeat_subscription_streams_over_legacy_graphql_ws() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "graphql-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "7", "type": "start", "payload": { "query": "subscription { heartbeat { seq } }" } }),
    )
    .await;
    let mut last = 0;
    for _ in 0..2 {
        let mut message = next_json(&mut socket).await;
        while message["type"] == "ka" {
            message = next_json(&mut socket).await;
        }
        assert_eq!(message["type"], "data", "{message}");
        assert_eq!(message["id"], "7");
        let seq = message["payload"]["data"]["heartbeat"]["seq"].as_u64().unwrap();
        assert!(seq > last);
        last = seq;
    }
    send(&mut socket, json!({ "id": "7", "type": "stop" })).await;
}

#[actix_web::test]
async fn invalid_subscription_documents_get_an_error_message_not_a_dead_socket() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { nope }" } })).await;
    // async-graphql reports validation errors as a `next` carrying `errors` (then
    // `complete`); the spec's `error` message is accepted too.
    let message = next_json(&mut socket).await;
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        Some("next") => message["payload"]["errors"].clone(),
        _ => panic!("unexpected {message}"),
    };
    assert!(errors.to_string().contains("nope"), "{message}");
    assert!(message["payload"]["data"].is_null(), "{message}");
    // The same socket still serves a valid subscription.
    send(
        &mut socket,
        json!({ "id": "2", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } }),
    )
    .await;
    let mut message = next_json(&mut socket).await;
    while message["id"] == "1" {
        assert_eq!(message["type"], "complete", "{message}");
        message = next_json(&mut socket).await;
    }
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], "2");
}

#[actix_web::test]
async fn supervisor_restarts_the_event_bus_after_a_panic() {
    let app = spawn_app().await;
    let hubs = &app.state.hubs;
    assert_eq!(hubs.supervisor.restart_count("event_bus"), 0);
    let before = hubs.event_bus.addr();
    assert!(before.send(SubscriberCount).await.is_ok());

    before.do_send(Crash);
    assert!(
        eventually(100, || async { hubs.supervisor.restart_count("event_bus") == 1 }).await,
        "the supervisor restarts the crashed actor"
    );
    assert!(!before.connected(), "the crashed instance is gone");
    let after = hubs.event_bus.addr();
    assert!(after.connected());
    assert_eq!(after.send(SubscriberCount).await.unwrap(), 0);

    // The restarted bus serves subscriptions end to end.
    let seqs = heartbeats_transport_ws(&app, 2).await;
    assert_eq!(seqs.len(), 2);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelhouse_actor_restarts_total{actor=\"event_bus\"} 1"), "{metrics}");
}

#[actix_web::test]
async fn a_live_subscription_keeps_receiving_across_an_event_bus_restart() {
    use reelhouse::events::bus::{BusMessage, Heartbeat, Publish};

    let app = spawn_app().await;
    let hubs = &app.state.hubs;
    let mut socket = connect(&app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq instance } }" } })).await;
    assert_eq!(next_json(&mut socket).await["type"], "next");

    let crashed = hubs.event_bus.addr();
    crashed.do_send(Crash);
    assert!(eventually(100, || async { hubs.supervisor.restart_count("event_bus") == 1 }).await);
    assert!(!crashed.connected());

    // Published through the new incarnation; the subscription opened before the
    // crash receives it, with nothing but `next` messages on the way.
    let marker = Heartbeat { seq: u64::MAX / 2, at: chrono::Utc::now(), instance: "marker".into() };
    let delivered = hubs.event_bus.addr().send(Publish(BusMessage::Heartbeat(marker))).await.unwrap();
    assert!(delivered >= 1, "the old subscriber is attached to the new bus");
    loop {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "the subscription did not notice the restart: {message}");
        assert_eq!(message["id"], "1");
        if message["payload"]["data"]["heartbeat"]["instance"] == "marker" {
            break;
        }
    }
}
