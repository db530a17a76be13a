//! Serialise once, send many (`graphql::shared_frames`): a `videoEvents` or
//! `videoProgress` subscription gets frames rendered once per (document + variables,
//! visibility class); any other subscription runs per subscriber. Both must put the
//! very same bytes on the wire, in both protocols, and a subscriber that may not see
//! a video never gets the bytes rendered for one that may.

use entities::{video, VideoStatus, Visibility};
use futures::StreamExt;
use reelhouse::events::{self, EventKind, ProgressInfo};
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp, TestUser};
use crate::subscriptions::{connect, send, Socket};
use crate::video_events::{insert_video, transition_on, wait_for_subscribers};

async fn app() -> TestApp {
    // The periodic re-checks play no part here: left at their default period.
    spawn_app_with(|s| s.workers.embedded = false).await
}

/// The next text frame exactly as it came off the wire.
async fn next_text(socket: &mut Socket) -> String {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
            .await
            .expect("a message within the timeout")
            .expect("socket open")
            .expect("valid frame");
        match message {
            Message::Text(text) => {
                let text = text.to_string();
                // The legacy protocol's keep-alives are not part of a stream.
                if !text.starts_with(r#"{"type":"ka""#) {
                    return text;
                }
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// A socket of `protocol`, initialised as `user`, running `query` as operation `id`.
async fn subscribe_as(
    app: &TestApp,
    protocol: &str,
    user: &TestUser,
    id: &str,
    query: &str,
    variables: Value,
) -> Socket {
    let mut socket = connect(app, protocol).await;
    let payload = json!({ "authorization": format!("Bearer {}", user.access_token) });
    send(&mut socket, json!({ "type": "connection_init", "payload": payload })).await;
    let ack: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
    assert_eq!(ack["type"], "connection_ack");
    let start = if protocol == "graphql-ws" { "start" } else { "subscribe" };
    send(&mut socket, json!({ "id": id, "type": start, "payload": { "query": query, "variables": variables } })).await;
    socket
}

async fn stored_video(app: &TestApp, id: Uuid) -> video::Model {
    video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap()
}

/// Selection sets a dashboard might use: plain, nested, aliased, with fragments and
/// `__typename`, and one with the event's time.
const SELECTIONS: [&str; 4] = [
    "cursor videoId kind seq status snapshot error rendition { name } progress { percent stage }",
    "kind seq __typename",
    "...F s: status p: progress { percent } at",
    "... on VideoEvent { kind } rendition { __typename name } seq",
];

fn document(selection: &str, shared: bool) -> String {
    // `@include(if: true)` changes nothing in the response, but a root field with a
    // directive is not shared: that subscription runs per subscriber.
    let directive = if shared { "" } else { " @include(if: true)" };
    let fragments = if selection.contains("...F") { " fragment F on VideoEvent { cursor kind }" } else { "" };
    format!("subscription($id: ID!) {{ e: videoEvents(videoId: $id){directive} {{ {selection} }} }}{fragments}")
}

/// Operation ids: plain, and one that needs escaping in JSON.
fn operation_id(selection: usize, plain: bool) -> String {
    if plain {
        selection.to_string()
    } else {
        format!("op \"{selection}\"\\")
    }
}

/// Start every selection under both ids on one socket; `shared` picks the document.
async fn start_all(app: &TestApp, protocol: &str, user: &TestUser, shared: bool, variables: &Value) -> Socket {
    let mut socket = subscribe_as(app, protocol, user, "0", &document(SELECTIONS[0], shared), variables.clone()).await;
    let start = if protocol == "graphql-ws" { "start" } else { "subscribe" };
    for (index, selection) in SELECTIONS.iter().enumerate() {
        for plain in [true, false] {
            let id = operation_id(index, plain);
            if id == "0" {
                continue;
            }
            let payload = json!({ "query": document(selection, shared), "variables": variables });
            send(&mut socket, json!({ "id": id, "type": start, "payload": payload })).await;
        }
    }
    socket
}

/// The next `n` frames of `socket`, by operation id, in arrival order.
async fn frames_by_id(socket: &mut Socket, n: usize) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut frames = std::collections::BTreeMap::<String, Vec<String>>::new();
    for _ in 0..n {
        let text = next_text(socket).await;
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let id = parsed["id"].as_str().unwrap_or_else(|| panic!("{text}")).to_string();
        frames.entry(id).or_default().push(text);
    }
    frames
}

#[actix_web::test]
async fn shared_and_per_subscriber_frames_are_byte_for_byte_the_same_in_both_protocols() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let variables = json!({ "id": video.id.to_string() });
    let operations = SELECTIONS.len() * 2;

    // Per protocol, a socket of shared subscriptions and one of per-subscriber ones,
    // each running every selection under two ids.
    let mut sockets = Vec::new();
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for shared in [true, false] {
            sockets.push((protocol, shared, start_all(&app, protocol, &owner, shared, &variables).await));
        }
    }
    wait_for_subscribers(&app, sockets.len() * operations).await;
    // One key per selection (the variables are the same), whatever the protocol.
    assert_eq!(app.shared_frames.open_keys(), SELECTIONS.len());

    // The first frame of each operation is its snapshot, made for it alone (its
    // `at` is now): read and set aside.
    for (_, _, socket) in &mut sockets {
        let snapshots = frames_by_id(socket, operations).await;
        assert_eq!(snapshots.len(), operations, "{snapshots:?}");
    }

    let stored = transition_on(&app, video.id, VideoStatus::Processing, EventKind::Processing, None).await;
    let progress = ProgressInfo { percent: 42.5, stage: "encoding \"hq\"".into(), ..Default::default() };
    app.state.publisher().publish(events::progress_event(
        &stored_video(&app, video.id).await,
        stored.seq,
        Uuid::now_v7(),
        progress,
    ));
    transition_on(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p")).await;
    transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;

    let mut received = Vec::new();
    for (protocol, shared, socket) in &mut sockets {
        received.push((*protocol, *shared, frames_by_id(socket, operations * 4).await));
    }
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let of = |shared: bool| &received.iter().find(|(p, s, _)| *p == protocol && *s == shared).unwrap().2;
        let (shared, fallback) = (of(true), of(false));
        assert_eq!(shared.len(), operations);
        for (id, frames) in shared {
            assert_eq!(Some(frames), fallback.get(id), "{protocol}, operation {id}: shared vs per subscriber");
        }
        let frame_type = if protocol == "graphql-ws" { "data" } else { "next" };
        for (index, _) in SELECTIONS.iter().enumerate() {
            let plain = &shared[&operation_id(index, true)];
            let escaped = &shared[&operation_id(index, false)];
            let mut kinds = Vec::new();
            for (a, b) in plain.iter().zip(escaped) {
                let a: Value = serde_json::from_str(a).unwrap();
                let b: Value = serde_json::from_str(b).unwrap();
                assert_eq!(a["type"], frame_type, "{a}");
                assert!(a["payload"]["errors"].is_null(), "{a}");
                // The same payload under both ids; only the id differs.
                assert_eq!(a["payload"], b["payload"]);
                assert_eq!(b["id"], operation_id(index, false));
                kinds.push(a["payload"]["data"]["e"]["kind"].clone());
            }
            assert_eq!(kinds, [json!("PROCESSING"), json!("PROGRESS"), json!("RENDITION_READY"), json!("READY")]);
        }
    }
}

#[actix_web::test]
async fn completing_a_shared_subscription_answers_complete_and_frees_its_key() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let variables = json!({ "id": video.id.to_string() });
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut socket =
            subscribe_as(&app, protocol, &owner, "9", &document("kind seq", true), variables.clone()).await;
        let snapshot: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
        assert_eq!(snapshot["payload"]["data"]["e"]["kind"], "PROCESSING", "{snapshot}");
        let stop = if protocol == "graphql-ws" { "stop" } else { "complete" };
        send(&mut socket, json!({ "id": "9", "type": stop })).await;
        assert_eq!(next_text(&mut socket).await, r#"{"type":"complete","id":"9"}"#);
        assert!(
            crate::helpers::eventually(100, || async { app.shared_frames.open_keys() == 0 }).await,
            "the feed ended with its operation"
        );
        // The socket and its operation slot are still usable: the same id runs again.
        let start = if protocol == "graphql-ws" { "start" } else { "subscribe" };
        let again = json!({ "id": "9", "type": start, "payload": { "query": document("kind seq", true), "variables": variables } });
        send(&mut socket, again).await;
        let snapshot: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
        assert_eq!(snapshot["id"], "9", "{snapshot}");
    }
}

#[actix_web::test]
async fn a_refused_shared_subscription_gets_the_same_error_frames_as_the_protocol_machine() {
    let app = app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let variables = json!({ "id": video.id.to_string() });
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut received = Vec::new();
        for shared in [true, false] {
            let mut socket =
                subscribe_as(&app, protocol, &stranger, "1", &document("kind", shared), variables.clone()).await;
            let refusal = next_text(&mut socket).await;
            let end = next_text(&mut socket).await;
            received.push((refusal, end));
        }
        assert_eq!(received[0], received[1], "{protocol}");
        let refusal: Value = serde_json::from_str(&received[0].0).unwrap();
        assert_eq!(refusal["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{refusal}");
        assert_eq!(received[0].1, r#"{"type":"complete","id":"1"}"#);
    }
}

#[actix_web::test]
async fn a_subscriber_that_may_not_see_a_video_never_gets_the_bytes_rendered_for_its_owner() {
    let app = app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let private = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let public = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    // The all-videos feed, the very same document for both: one key, two classes.
    let query = "subscription { videoEvents { videoId kind seq } }";
    let mut owners = subscribe_as(&app, "graphql-transport-ws", &owner, "1", query, json!({})).await;
    let mut strangers = subscribe_as(&app, "graphql-transport-ws", &stranger, "1", query, json!({})).await;
    wait_for_subscribers(&app, 2).await;
    assert_eq!(app.shared_frames.open_keys(), 1);

    transition_on(&app, private.id, VideoStatus::Processing, EventKind::Processing, None).await;
    let progress = ProgressInfo { percent: 10.0, stage: "encoding".into(), ..Default::default() };
    app.state.publisher().publish(events::progress_event(
        &stored_video(&app, private.id).await,
        1,
        Uuid::now_v7(),
        progress,
    ));
    transition_on(&app, public.id, VideoStatus::Processing, EventKind::Processing, None).await;

    let owner_frames = [next_text(&mut owners).await, next_text(&mut owners).await, next_text(&mut owners).await];
    assert!(owner_frames[0].contains(&private.id.to_string()), "{}", owner_frames[0]);
    assert!(owner_frames[1].contains(&private.id.to_string()), "{}", owner_frames[1]);
    assert!(owner_frames[2].contains(&public.id.to_string()), "{}", owner_frames[2]);
    // The stranger's first frame is the public video's: nothing of the private one
    // (neither the stored event nor the progress) came before it.
    let first = next_text(&mut strangers).await;
    assert!(first.contains(&public.id.to_string()), "{first}");
    assert!(!first.contains(&private.id.to_string()), "{first}");
    assert_eq!(first, owner_frames[2], "the same bytes for the same visible event");
}
