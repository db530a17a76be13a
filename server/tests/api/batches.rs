//! Batches (issue 20 item 6): `transcodeBatch` over the caller's videos (any for
//! admins), bounded by `jobs.max_batch_videos`, seen only by its creator and admins,
//! cancellable, fair to other users' single uploads, and followed live through
//! `batchProgress` while real encodes run. Also issue 20 item 9: a real encode's
//! progress over a real `videoProgress` subscription.

use std::time::Duration;

use entities::{job, JobStatus, Role};
use futures::StreamExt;
use reelhouse::jobs::queue;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{error_code, TestUser};
use crate::media::fixture;
use crate::runner::{harness, Harness};
use crate::subscriptions::{connect, next_json, send, Socket};

const BATCH_FIELDS: &str =
    "id status total done failed cancelled progress { percent etaSeconds } preset formats createdAt";

async fn gql(h: &Harness, user: &TestUser, query: &str, variables: Value) -> Value {
    let (status, body) = h.app.graphql_as(&user.bearer(), query, variables).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn transcode_batch(h: &Harness, user: &TestUser, filter: Value) -> Value {
    let query = format!(
        "mutation($f: VideoFilter!) {{ transcodeBatch(filter: $f, preset: LOW, formats: [HLS, WEBM]) {{ {BATCH_FIELDS} }} }}"
    );
    gql(h, user, &query, json!({ "f": filter })).await
}

/// `n` videos of `user` with an uploaded source (never decoded by these tests
/// unless a worker runs).
async fn videos_of(h: &mut Harness, user: &TestUser, n: usize) -> Vec<Uuid> {
    h.owner = Uuid::parse_str(&user.id).unwrap();
    let bytes = std::fs::read(fixture("small_320x180.mp4")).unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(h.video_with_source(bytes.clone()).await.id);
    }
    ids
}

async fn jobs_of_videos(h: &Harness, videos: &[Uuid]) -> Vec<job::Model> {
    job::Entity::find().filter(job::Column::VideoId.is_in(videos.to_vec())).all(&h.app.state.db).await.unwrap()
}

#[actix_web::test]
async fn batches_are_the_callers_bounded_private_and_cancellable() {
    let mut h = harness(|s| s.jobs.max_batch_videos = 3).await;
    let alice = h.app.register_user().await;
    let bob = h.app.register_user().await;
    let admin = h.app.create_user_with_role(Role::Admin).await;
    let alices = videos_of(&mut h, &alice, 3).await;
    let bobs = videos_of(&mut h, &bob, 1).await;

    // Alice's batch over "everything" is her three videos, nothing of Bob's.
    let body = transcode_batch(&h, &alice, json!({})).await;
    let batch = body["data"]["transcodeBatch"].clone();
    assert_eq!(batch["total"], 3, "{body}");
    assert_eq!((batch["status"].as_str(), batch["done"].as_i64()), (Some("RUNNING"), Some(0)), "{batch}");
    assert_eq!(batch["progress"], json!({ "percent": 0.0, "etaSeconds": null }), "no rate before any progress");
    assert_eq!(batch["formats"], json!(["HLS", "WEBM"]));
    let id = batch["id"].as_str().unwrap().to_string();
    let jobs = jobs_of_videos(&h, &alices).await;
    assert_eq!(jobs.len(), 3);
    for job in &jobs {
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.priority, h.app.state.settings.jobs.batch_priority, "below uploads");
        assert_eq!(job.payload, json!({ "preset": "LOW", "formats": ["HLS", "WEBM"] }));
    }
    assert!(jobs_of_videos(&h, &bobs).await.is_empty(), "Bob's video is not Alice's to batch");

    // Asking for Bob's videos by owner gives Alice nothing; so does a second batch
    // over her videos while their transcodes are queued.
    let body = transcode_batch(&h, &alice, json!({ "ownerId": bob.id })).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    let body = transcode_batch(&h, &alice, json!({ "mine": true })).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "all busy: {body}");

    // Only Alice and admins see it: Bob gets null, NOT_FOUND, an empty list.
    let one = format!("query($id: ID!) {{ batch(id: $id) {{ {BATCH_FIELDS} }} }}");
    assert_eq!(gql(&h, &bob, &one, json!({ "id": id })).await["data"]["batch"], Value::Null);
    let cancel = format!("mutation($id: ID!) {{ cancelBatch(id: $id) {{ {BATCH_FIELDS} }} }}");
    let body = gql(&h, &bob, &cancel, json!({ "id": id })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let list = "query { batches(first: 10) { edges { node { id total } } pageInfo { hasNextPage } } }";
    assert_eq!(gql(&h, &bob, list, json!({})).await["data"]["batches"]["edges"], json!([]));
    assert_eq!(gql(&h, &alice, &one, json!({ "id": id })).await["data"]["batch"]["total"], 3);
    let admins = gql(&h, &admin, list, json!({})).await;
    assert!(admins["data"]["batches"]["edges"].as_array().unwrap().iter().any(|e| e["node"]["id"] == id.as_str()));
    // Bob's subscription is refused the same way.
    let mut socket = subscribe_batch(&h, &bob, &id).await;
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{refused}");
    assert_eq!(refused["payload"]["data"], Value::Null, "{refused}");

    // Bounded: a fourth video makes "all of Alice's" more than 3.
    videos_of(&mut h, &alice, 1).await;
    let body = transcode_batch(&h, &alice, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("more than 3"), "{body}");

    // Cancelled: every queued job of the batch is CANCELLED; idempotent.
    let body = gql(&h, &alice, &cancel, json!({ "id": id })).await;
    let cancelled = &body["data"]["cancelBatch"];
    assert_eq!((cancelled["status"].as_str(), cancelled["cancelled"].as_i64()), (Some("CANCELLED"), Some(3)), "{body}");
    assert_eq!(cancelled["progress"], json!({ "percent": 100.0, "etaSeconds": 0.0 }));
    assert!(jobs_of_videos(&h, &alices).await.iter().all(|j| j.status == JobStatus::Cancelled));
    let again = gql(&h, &alice, &cancel, json!({ "id": id })).await;
    assert_eq!(again["data"]["cancelBatch"]["cancelled"], 3, "{again}");
}

#[actix_web::test]
async fn batches_do_not_hold_up_another_users_single_upload() {
    let mut h = harness(|_| {}).await;
    let alice = h.app.register_user().await;
    let bob = h.app.register_user().await;
    videos_of(&mut h, &alice, 20).await;
    let body = transcode_batch(&h, &alice, json!({})).await;
    assert_eq!(body["data"]["transcodeBatch"]["total"], 20, "{body}");

    // Bob's one transcode comes after all twenty, and is leased first.
    let bobs = videos_of(&mut h, &bob, 1).await;
    let body = gql(
        &h,
        &bob,
        "mutation($id: ID!) { transcode(videoId: $id, preset: LOW) { id } }",
        json!({ "id": bobs[0].to_string() }),
    )
    .await;
    let bob_job = body["data"]["transcode"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let settings = &h.app.state.settings.jobs;
    let lease = Duration::from_secs(60);
    let first = queue::lease(&h.app.state.db, "worker-a", lease, settings).await.unwrap().expect("a job");
    assert_eq!(first.job.id.to_string(), bob_job, "the single transcode goes before the batch");
    // Then the batch's jobs, one after the other.
    let second = queue::lease(&h.app.state.db, "worker-b", lease, settings).await.unwrap().expect("a job");
    assert_eq!(second.job.owner_id, Some(Uuid::parse_str(&alice.id).unwrap()));
}

async fn subscribe(h: &Harness, user: &TestUser, query: &str, variables: Value) -> Socket {
    let mut socket = connect(&h.app, "graphql-transport-ws").await;
    let auth = json!({ "authorization": format!("Bearer {}", user.access_token) });
    send(&mut socket, json!({ "type": "connection_init", "payload": auth })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
    socket
}

async fn subscribe_batch(h: &Harness, user: &TestUser, id: &str) -> Socket {
    let query = format!("subscription($id: ID!) {{ batchProgress(id: $id) {{ {BATCH_FIELDS} }} }}");
    subscribe(h, user, &query, json!({ "id": id })).await
}

/// The payloads of `field` until the subscription completes. A real encode may go
/// quiet for a while between stages: the wait only bounds a hang.
async fn until_complete(socket: &mut Socket, field: &str) -> Vec<Value> {
    let mut items = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(300), socket.next())
            .await
            .expect("a message within the timeout")
            .expect("socket open")
            .expect("valid frame");
        let message: Value = match frame {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        };
        match message["type"].as_str() {
            Some("next") => {
                assert!(message["payload"]["errors"].is_null(), "{message}");
                items.push(message["payload"]["data"][field].clone());
            }
            Some("complete") => return items,
            _ => panic!("{message}"),
        }
    }
}

#[actix_web::test]
async fn batches_progress_of_real_encodes_over_a_subscription() {
    let mut h = harness(|s| s.workers.embedded = true).await;
    let alice = h.app.register_user().await;
    let videos = videos_of(&mut h, &alice, 2).await;
    let body = transcode_batch(&h, &alice, json!({ "mine": true })).await;
    let id = body["data"]["transcodeBatch"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let mut socket = subscribe_batch(&h, &alice, &id).await;
    let items = until_complete(&mut socket, "batchProgress").await;
    assert!(!items.is_empty());
    let percents: Vec<f64> = items.iter().map(|b| b["progress"]["percent"].as_f64().unwrap()).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "percent never goes back: {percents:?}");
    let last = items.last().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["done"].as_i64(), last["failed"].as_i64()),
        (Some("COMPLETED"), Some(2), Some(0)),
        "{items:#?}"
    );
    assert_eq!(last["progress"], json!({ "percent": 100.0, "etaSeconds": 0.0 }));
    for v in videos {
        assert_eq!(h.video(v).await.status, entities::VideoStatus::Ready);
    }
}

#[actix_web::test]
async fn progress_of_a_real_encode_is_monotone_with_fps_and_a_falling_eta() {
    let mut h = harness(|s| s.workers.embedded = true).await;
    let alice = h.app.register_user().await;
    h.owner = Uuid::parse_str(&alice.id).unwrap();
    let video = h.video_from(&fixture("clip_720p.mp4")).await;
    let mut socket = subscribe(
        &h,
        &alice,
        "subscription($id: ID!) { videoProgress(videoId: $id) { kind progress { percent stage fps etaSeconds } } }",
        json!({ "id": video.id.to_string() }),
    )
    .await;
    // The snapshot first (PROCESSING, no job yet), then the transcode.
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "next", "{snapshot}");
    let body = gql(
        &h,
        &alice,
        "mutation($id: ID!) { transcode(videoId: $id, preset: LOW, formats: [HLS]) { id } }",
        json!({ "id": video.id.to_string() }),
    )
    .await;
    assert!(body["data"]["transcode"]["id"].is_string(), "{body}");
    let events = until_complete(&mut socket, "videoProgress").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"READY"), "{kinds:?}");
    let progress: Vec<&Value> = events.iter().filter(|e| e["kind"] == "PROGRESS").map(|e| &e["progress"]).collect();
    assert!(progress.len() >= 3, "{events:#?}");

    let percents: Vec<f64> = progress.iter().map(|p| p["percent"].as_f64().unwrap()).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "monotone: {percents:?}");
    let fps: Vec<f64> = progress.iter().filter_map(|p| p["fps"].as_f64()).collect();
    assert!(!fps.is_empty(), "the encode reports its rate: {events:#?}");
    assert!(fps.iter().all(|f| *f > 0.0), "{fps:?}");
    let etas: Vec<f64> = progress.iter().filter_map(|p| p["etaSeconds"].as_f64()).collect();
    assert!(etas.len() >= 2, "{events:#?}");
    assert!(etas.windows(2).all(|w| w[0] >= w[1]), "the ETA never goes up: {etas:?}");
    assert!(etas[0] > 0.0, "{etas:?}");
    let last = progress.last().unwrap();
    assert_eq!((last["percent"].as_f64(), last["etaSeconds"].as_f64()), (Some(100.0), Some(0.0)), "{last}");
}
