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
    spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.ws_recheck_ms = 100;
    })
    .await
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

#[actix_web::test]
async fn shared_and_per_subscriber_frames_are_byte_for_byte_the_same_in_both_protocols() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let variables = json!({ "id": video.id.to_string() });

    // For each protocol and selection: two shared subscribers (one with an id that
    // needs escaping) and a per-subscriber one with each of the same ids.
    let ids = ["1", "op \"2\"\\"];
    let mut groups = Vec::new();
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for selection in SELECTIONS {
            let mut sockets = Vec::new();
            for id in ids {
                for shared in [true, false] {
                    let socket =
                        subscribe_as(&app, protocol, &owner, id, &document(selection, shared), variables.clone()).await;
                    sockets.push((id, shared, socket));
                }
            }
            groups.push((protocol, selection, sockets));
        }
    }
    let subscribers = groups.iter().map(|(_, _, s)| s.len()).sum();
    wait_for_subscribers(&app, subscribers).await;
    // One key per selection (the variables are the same), whatever the protocol.
    assert_eq!(app.state.shared_frames.open_keys(), SELECTIONS.len());

    // The first frame of each is its snapshot, made for it alone (its `at` is now).
    for (_, selection, sockets) in &mut groups {
        for (_, _, socket) in sockets.iter_mut() {
            let snapshot = next_text(socket).await;
            if !selection.contains(" at") {
                assert!(snapshot.contains(r#""kind":"#), "{snapshot}");
            }
        }
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

    for (protocol, selection, sockets) in &mut groups {
        let mut frames: Vec<(&str, bool, Vec<String>)> = Vec::new();
        for (id, shared, socket) in sockets.iter_mut() {
            let mut received = Vec::new();
            for _ in 0..4 {
                received.push(next_text(socket).await);
            }
            frames.push((id, *shared, received));
        }
        let frame_type = if *protocol == "graphql-ws" { "data" } else { "next" };
        for id in ids {
            let shared = &frames.iter().find(|(i, s, _)| *i == id && *s).unwrap().2;
            let fallback = &frames.iter().find(|(i, s, _)| *i == id && !*s).unwrap().2;
            assert_eq!(shared, fallback, "{protocol}, `{selection}`, id {id}");
            for frame in shared {
                let parsed: Value = serde_json::from_str(frame).unwrap();
                assert_eq!(parsed["type"], frame_type, "{frame}");
                assert_eq!(parsed["id"], id, "{frame}");
                assert!(parsed["payload"]["errors"].is_null(), "{frame}");
            }
        }
        // The same payload reached both ids; only the id differs.
        let one = &frames.iter().find(|(i, s, _)| *i == ids[0] && *s).unwrap().2;
        let two = &frames.iter().find(|(i, s, _)| *i == ids[1] && *s).unwrap().2;
        for (a, b) in one.iter().zip(two) {
            let a: Value = serde_json::from_str(a).unwrap();
            let b: Value = serde_json::from_str(b).unwrap();
            assert_eq!(a["payload"], b["payload"]);
        }
        let kinds: Vec<Value> = one
            .iter()
            .map(|f| {
                let v: Value = serde_json::from_str(f).unwrap();
                v["payload"]["data"]["e"]["kind"].clone()
            })
            .collect();
        assert_eq!(kinds, [json!("PROCESSING"), json!("PROGRESS"), json!("RENDITION_READY"), json!("READY")]);
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
            crate::helpers::eventually(100, || async { app.state.shared_frames.open_keys() == 0 }).await,
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
    assert_eq!(app.state.shared_frames.open_keys(), 1);

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
