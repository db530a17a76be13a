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

/// Found by the fuzzer (seed 6009051882030, `tus#247` step 0): a PATCH of no bytes
/// at the end of a partial upload whose bytes were all in (stored as one short
/// part, waiting for its final upload) met "inconsistent offset and parts" and
/// answered 500. Now it is a 204 at the same offset, with or without a checksum,
/// and the partial upload still goes whole into its final upload.
#[actix_web::test]
async fn an_empty_patch_at_the_end_of_a_full_partial_upload_is_204_not_500() {
    use base64::Engine as _;
    use sha2::Digest as _;

    let app = spawn_app().await;
    let user = app.register_user().await;
    let (status, body) =
        app.graphql_as(&user.bearer(), "mutation { createVideo(input: { title: \"t\" }) { id } }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let video = body["data"]["createVideo"]["id"].as_str().unwrap().to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // Not a video: a partial upload is any piece of a file (its final upload says what it is).
    let bytes: Vec<u8> = (0..16617u32).map(|i| (i * 7 % 251) as u8).collect();
    let created = app
        .client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Concat", "partial")
        .header("Upload-Length", bytes.len().to_string())
        .header(
            "Upload-Metadata",
            format!("videoId {},filename {},filetype {}", b64(&video), b64("fuzz.mp4"), b64("video/mp4")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let url = created.headers()["location"].to_str().unwrap().to_string();
    let url = if url.starts_with("http") { url } else { app.url(&url) };
    let patch = |offset: usize, body: Vec<u8>, checksum: Option<String>| {
        let mut request = app
            .client
            .patch(&url)
            .bearer_auth(&user.access_token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string());
        if let Some(checksum) = checksum {
            request = request.header("Upload-Checksum", checksum);
        }
        request.body(body).send()
    };
    let res = patch(0, bytes.clone(), None).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["upload-offset"], bytes.len().to_string().as_str());

    let empty_sha256 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b""));
    for checksum in [Some(format!("sha256 {empty_sha256}")), None] {
        let res = patch(bytes.len(), Vec::new(), checksum.clone()).await.unwrap();
        let status = res.status().as_u16();
        let offset = res.headers().get("upload-offset").map(|v| v.to_str().unwrap().to_string());
        let text = res.text().await.unwrap();
        assert_eq!(status, 204, "checksum {checksum:?}: {text}");
        assert_eq!(offset.as_deref(), Some(bytes.len().to_string().as_str()));
    }
    // Bytes past the end are still refused, and the offset stays.
    let res = patch(bytes.len(), vec![1, 2, 3], None).await.unwrap();
    assert_eq!(res.status(), 413);
    let head =
        app.client.head(&url).bearer_auth(&user.access_token).header("Tus-Resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], bytes.len().to_string().as_str());

    // The partial upload is whole: a final upload takes it (and then refuses the
    // joined file, which is no video, as any completion would).
    let path = reqwest::Url::parse(&url).unwrap().path().to_string();
    let joined = app
        .client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Concat", format!("final;{path}"))
        .header(
            "Upload-Metadata",
            format!("videoId {},filename {},filetype {}", b64(&video), b64("fuzz.mp4"), b64("video/mp4")),
        )
        .send()
        .await
        .unwrap();
    let status = joined.status();
    let body: Value = joined.json().await.unwrap();
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["code"], "UNSUPPORTED_MEDIA", "{body}");
}

/// Found by the fuzzer (seed 6009051882030, `media#560`, PostgreSQL + S3 only):
/// `Range: bytes=18446744073709551615-` was passed to S3 as written; S3-compatible
/// stores refuse positions past `i64::MAX` (400 InvalidArgument), answered 500.
/// Now such a start is 416 with the object's size on both backends, and a huge end
/// or suffix means what it says (to the end; the whole object).
#[actix_web::test]
async fn ranges_past_i64_are_416_or_clamped_not_500() {
    use entities::{video, Visibility};
    use reelhouse::storage::layout::Outputs;
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    let app = spawn_app().await;
    let user = app.register_user().await;
    let (status, body) =
        app.graphql_as(&user.bearer(), "mutation { createVideo(input: { title: \"t\" }) { id } }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let id = uuid::Uuid::parse_str(body["data"]["createVideo"]["id"].as_str().unwrap()).unwrap();
    let row = video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap();
    let version = "v0000000001";
    let content: Vec<u8> = (0..100u8).collect();
    let key = Outputs::new(row.owner_id, id, Some(version)).key("mp4/video.mp4");
    app.state.store.put_bytes(&key, bytes::Bytes::from(content.clone()), Some("video/mp4")).await.unwrap();
    let mut active: video::ActiveModel = row.into();
    active.visibility = Set(Visibility::Public);
    active.output_version = Set(Some(version.into()));
    active.update(&app.state.db).await.unwrap();

    let url = app.url(&format!("/media/{id}/{version}/mp4/video.mp4"));
    let get = |range: &'static str| app.client.get(&url).header("Range", range).send();

    let res = get("bytes=18446744073709551615-").await.unwrap();
    assert_eq!(res.status(), 416, "{:?}", res.text().await);
    assert_eq!(res.headers()["content-range"], "bytes */100");
    let res = get("bytes=9223372036854775808-9223372036854775809").await.unwrap();
    assert_eq!(res.status(), 416);

    let res = get("bytes=90-18446744073709551615").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 90-99/100");
    assert_eq!(res.bytes().await.unwrap(), &content[90..]);

    let res = get("bytes=-18446744073709551615").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 0-99/100");
    assert_eq!(res.bytes().await.unwrap(), &content[..]);
}
