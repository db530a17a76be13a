//! Regression tests for what `reelhouse-fuzz` (scripts/test-fuzz.sh) found, one per
//! finding, named after it. Inputs are kept in `server/tests/fuzz-corpus/`.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, TestApp};

/// Documents async-graphql refuses by itself (syntax, validation, the parser's
/// recursion limit, input coercion, a subscription over HTTP), from the corpus.
fn untyped_before() -> Vec<(&'static str, String, Value)> {
    vec![
        ("syntax", "subscriptio\"unterminatedn F { heartbeat { instance } }".into(), json!({})),
        ("unknown argument", "query { serverInfo(bogus: 1) { version } }".into(), json!({})),
        ("unknown field", "query { serverInfo { noSuchField } }".into(), json!({})),
        ("missing argument", "mutation { createApiKey { apiKey { id } } }".into(), json!({})),
        ("wrong argument type", "mutation { cancelJob(id: 18446744073709551615) { status } }".into(), json!({})),
        ("unused variable", "query($v: [Int]) { __typename }".into(), json!({ "v": null })),
        ("operation defined twice", "query A { __typename }\nquery A { __typename }".into(), json!({})),
        ("recursion limit", format!("{}{}", "{ a ".repeat(600), "}".repeat(600)), json!({})),
        (
            "input coercion",
            "query($v: ID!) { videoStats(videoId: $v, to: \"ijqshvy\") { day } }".into(),
            json!({ "v": "01a24ca0-8ff4-72c4-8f51-8985af6a996e" }),
        ),
        ("subscription over HTTP", "subscription { heartbeat { instance } }".into(), json!({})),
    ]
}

fn assert_typed(what: &str, body: &Value) {
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{what}: no errors in {body}"));
    assert!(!errors.is_empty(), "{what}: no errors in {body}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{what}: {error}");
    }
}

async fn ws_connect(app: &TestApp) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let mut socket = tokio_tungstenite::connect_async(request).await.expect("websocket connects").0;
    socket.send(Message::Text(json!({ "type": "connection_init", "payload": {} }).to_string().into())).await.unwrap();
    loop {
        let message = socket.next().await.unwrap().unwrap();
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "connection_ack", "{v}");
            return socket;
        }
    }
}

/// Found by the fuzzer: errors made by async-graphql itself reached clients with a
/// message and no `extensions.code`, over HTTP POST, GET and WebSocket alike.
#[tokio::test]
async fn graphql_errors_made_before_resolvers_carry_a_code() {
    let app = spawn_app().await;
    for (what, query, variables) in untyped_before() {
        let (status, body) = app.graphql(&query, variables.clone()).await;
        assert!(status < 500, "{what}: HTTP {status}");
        assert_typed(&format!("POST {what}"), &body);

        if what != "subscription over HTTP" {
            let mut url = reqwest::Url::parse(&app.url("/graphql")).unwrap();
            url.query_pairs_mut().append_pair("query", &query).append_pair("variables", &variables.to_string());
            let res = app.client.get(url).header("accept", "application/json").send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            // Mutations over GET are refused (405) before GraphQL; the rest answer GraphQL.
            if status != 405 {
                assert_typed(&format!("GET {what}"), &body);
            }
        }
    }

    let mut socket = ws_connect(&app).await;
    for (i, (what, query, variables)) in untyped_before().into_iter().enumerate() {
        if what == "subscription over HTTP" || what == "recursion limit" {
            continue; // a valid subscription over the socket; a frame over 64 KiB
        }
        let id = format!("q{i}");
        let subscribe = json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } });
        socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next()).await.unwrap().unwrap().unwrap();
            let Message::Text(text) = message else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] != id.as_str() {
                continue;
            }
            match v["type"].as_str() {
                Some("error") => assert_typed(&format!("WebSocket {what}"), &json!({ "errors": v["payload"] })),
                Some("next") => assert_typed(&format!("WebSocket {what}"), &v["payload"]),
                other => panic!("WebSocket {what}: {other:?} {v}"),
            }
            break;
        }
    }
}
