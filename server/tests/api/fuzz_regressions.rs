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

async fn ws_connect(
    app: &TestApp,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
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
#[actix_web::test]
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
            let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
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

/// Found by the fuzzer: an unversioned `/media` path with a percent-encoded NUL or
/// CR/LF was redirected to the current version with the decoded bytes in
/// `Location`, an invalid header, answered 500. Now such paths are 404 and every
/// redirect's path is percent-encoded.
#[actix_web::test]
async fn unversioned_media_paths_with_control_characters_are_not_found_not_500() {
    use entities::{video, Visibility};
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    let app = spawn_app().await;
    let user = app.register_user().await;
    let (status, body) =
        app.graphql_as(&user.bearer(), "mutation { createVideo(input: { title: \"t\" }) { id } }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let id = uuid::Uuid::parse_str(body["data"]["createVideo"]["id"].as_str().unwrap()).unwrap();
    // A public video with an output version: what unversioned paths redirect from.
    let row = video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap();
    let mut active: video::ActiveModel = row.into();
    active.visibility = Set(Visibility::Public);
    active.output_version = Set(Some("v0000000001".into()));
    active.update(&app.state.db).await.unwrap();

    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for bad in ["hls/%00/master.m3u8", "hls/master.m3u8%00.jpg", "hls/%0d%0aX-Injected:%20yes", "hls/%0a"] {
        let res = no_redirects.get(app.url(&format!("/media/{id}/{bad}"))).send().await.unwrap();
        assert_eq!(res.status(), 404, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "NOT_FOUND", "{bad}: {body}");
    }
    // A path that is a valid key but not a valid header goes out percent-encoded.
    let res = no_redirects.get(app.url(&format!("/media/{id}/hls/%F0%9F%92%A5%20x.ts?x=1"))).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.ends_with(&format!("/media/{id}/v0000000001/hls/%F0%9F%92%A5%20x.ts?x=1")), "{location}");
    // And the plain case is unchanged.
    let res = no_redirects.get(app.url(&format!("/media/{id}/hls/master.m3u8?x=1"))).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        format!("{}/media/{id}/v0000000001/hls/master.m3u8?x=1", app.address).as_str()
    );
}

/// Found by the fuzzer: a WebSocket frame over 64 KiB reset the connection without
/// a close frame; now it closes with 1009 as the README says.
#[actix_web::test]
async fn an_oversized_websocket_frame_closes_with_1009() {
    let app = spawn_app().await;
    let mut socket = ws_connect(&app).await;
    let query = format!("{{ __typename {} }}", "a ".repeat(40_000));
    let subscribe = json!({ "id": "big", "type": "subscribe", "payload": { "query": query } });
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    loop {
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(20), socket.next()).await.expect("closed in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
                return;
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a close frame"),
            Some(Err(err)) => panic!("socket error instead of a close frame: {err}"),
            Some(Ok(_)) => {}
        }
    }
}
