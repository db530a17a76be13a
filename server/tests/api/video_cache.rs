//! The video-row cache: `video(id)` answered from memory, forgotten the moment the
//! video changes, on this instance and (through Redis) on every other. Each test
//! first writes behind the cache's back (no event, no announcement) and checks the
//! old answer is still served: that is what makes the later checks able to fail.
//! The two-instance tests need Redis and a shared database
//! (REELHOUSE_TEST_BACKEND=postgres) and skip on sqlite.

use chrono::Utc;
use entities::{rendition, video, RenditionStatus, VideoStatus, Visibility};
use reelhouse::events::EventKind;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fanout::{second_instance, wait_for_relays};
use crate::helpers::{backend, eventually, spawn_app_with, Backend, TestApp, TestUser};
use crate::video_events::{insert_video, next_event, subscribe, transition_on, wait_for_subscribers};

const VIDEO: &str = "query($id: ID!) { video(id: $id) { id title status visibility renditions { name } } }";

async fn video_as(app: &TestApp, who: &TestUser, id: Uuid) -> Value {
    let (status, body) = app.graphql_as(&who.bearer(), VIDEO, json!({ "id": id.to_string() })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["video"].clone()
}

async fn create_public_video(app: &TestApp, owner: &TestUser) -> Uuid {
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation { createVideo(input: { title: \"hot\", visibility: PUBLIC }) { id } }",
            json!({}),
        )
        .await;
    Uuid::parse_str(body["data"]["createVideo"]["id"].as_str().unwrap_or_else(|| panic!("{body}"))).unwrap()
}

/// Change the title in the database only: no event, no announcement.
async fn retitle_behind_the_cache(app: &TestApp, id: Uuid, title: &str) {
    video::Entity::update_many()
        .col_expr(video::Column::Title, sea_orm::sea_query::Expr::value(title))
        .filter(video::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
}

async fn trusted(app: &TestApp) {
    let ok = eventually(100, || async { app.state.access_signals.videos().is_trusted() }).await;
    assert!(ok, "the video cache never became trusted (relay not subscribed)");
}

async fn update_visibility(app: &TestApp, owner: &TestUser, id: Uuid, visibility: &str) {
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            &format!("mutation($id: ID!) {{ updateVideo(id: $id, input: {{ visibility: {visibility} }}) {{ id }} }}"),
            json!({ "id": id.to_string() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

fn lookups(metrics: &str, outcome: &str) -> f64 {
    let prefix = format!("reelhouse_video_cache_lookups_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// One instance: a second read is a hit (no database: a change written behind the
/// cache's back is not seen), and `updateVideo` drops the entry at once, so the
/// next read sees the change, visibility included.
#[actix_web::test]
async fn a_cached_video_is_answered_from_memory_until_it_changes() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    trusted(&app).await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let id = create_public_video(&app, &owner).await;
    assert_eq!(video_as(&app, &stranger, id).await["title"], "hot");
    assert!(app.state.access_signals.videos().cached(id).is_some(), "cached after one read");

    retitle_behind_the_cache(&app, id, "changed behind its back").await;
    assert_eq!(video_as(&app, &stranger, id).await["title"], "hot", "a hit does not read the database");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(lookups(&metrics, "hit") >= 1.0, "hits are counted:\n{metrics}");
    assert!(lookups(&metrics, "miss") >= 1.0, "misses are counted");

    update_visibility(&app, &owner, id, "PRIVATE").await;
    assert!(video_as(&app, &stranger, id).await.is_null(), "made private, still shown to a stranger");
    assert_eq!(video_as(&app, &owner, id).await["title"], "changed behind its back", "read again after the change");
}

#[actix_web::test]
async fn the_video_cache_is_bounded_by_its_capacity() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.video_cache_capacity = 3;
    })
    .await;
    trusted(&app).await;
    let owner = app.register_user().await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id = create_public_video(&app, &owner).await;
        assert_eq!(video_as(&app, &owner, id).await["id"], id.to_string());
        assert!(app.state.access_signals.videos().len() <= 3);
        ids.push(id);
    }
    // Evicted videos are read again, not lost.
    for id in ids {
        assert_eq!(video_as(&app, &owner, id).await["id"], id.to_string());
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let evicted = metrics.lines().find_map(|l| {
        l.strip_prefix("reelhouse_video_cache_evictions_total ").and_then(|v| v.trim().parse::<f64>().ok())
    });
    assert!(evicted.is_some_and(|n| n >= 1.0), "evictions are counted:\n{metrics}");
}

fn skip() -> bool {
    if backend() != Backend::Postgres {
        eprintln!("skipped: two instances need Redis and a shared database (REELHOUSE_TEST_BACKEND=postgres)");
        return true;
    }
    false
}

/// Visibility changes, hiding and deletion made on A apply to the very next read
/// on B, whose cache held the video.
#[actix_web::test]
async fn visibility_hiding_and_deletion_reach_the_cache_of_another_instance_at_once() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let b = second_instance(&a, None).await;
    wait_for_relays(&a, 2).await;
    trusted(&a).await;
    trusted(&b).await;
    let owner = a.register_user().await;
    let stranger = a.register_user().await;
    let moderator = a.create_user_with_role(entities::Role::Moderator).await;
    let id = create_public_video(&a, &owner).await;

    // B holds it, and serves it from memory.
    assert_eq!(video_as(&b, &stranger, id).await["title"], "hot");
    retitle_behind_the_cache(&a, id, "retitled").await;
    assert_eq!(video_as(&b, &stranger, id).await["title"], "hot", "B's second read is a hit");

    // Made private on A: hidden from the stranger on B at once.
    update_visibility(&a, &owner, id, "PRIVATE").await;
    let seen = video_as(&b, &stranger, id).await;
    assert!(seen.is_null(), "made private on A, still served to a stranger by B: {seen}");
    assert_eq!(video_as(&b, &owner, id).await["visibility"], "PRIVATE");

    // Public again (B caches it again), then hidden by a moderator on A.
    update_visibility(&a, &owner, id, "PUBLIC").await;
    assert_eq!(video_as(&b, &stranger, id).await["title"], "retitled");
    assert!(b.state.access_signals.videos().cached(id).is_some());
    let (_, body) = a
        .graphql_as(
            &moderator.bearer(),
            "mutation($id: ID!) { hideVideo(id: $id, reason: \"spam\") { id } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let seen = video_as(&b, &stranger, id).await;
    assert!(seen.is_null(), "hidden on A, still served to a stranger by B: {seen}");

    // Deleted on A: gone on B, for its owner too.
    assert_eq!(video_as(&b, &owner, id).await["id"], id.to_string());
    assert!(b.state.access_signals.videos().cached(id).is_some());
    let (_, body) = a
        .graphql_as(&owner.bearer(), "mutation($id: ID!) { deleteVideo(id: $id) }", json!({ "id": id.to_string() }))
        .await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    let seen = video_as(&b, &owner, id).await;
    assert!(seen.is_null(), "deleted on A, still served by B: {seen}");
}

/// A rendition that became ready (its row written, RENDITION_READY published by
/// A, as a worker there does) is in B's very next answer once B heard the event.
#[actix_web::test]
async fn a_rendition_becoming_ready_reaches_the_cache_of_another_instance() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let b = second_instance(&a, None).await;
    wait_for_relays(&a, 2).await;
    trusted(&b).await;
    let owner = a.register_user().await;
    let video = insert_video(&a, &owner, Visibility::Private, VideoStatus::Processing).await;
    let seen = video_as(&b, &owner, video.id).await;
    assert_eq!((seen["status"].as_str(), seen["renditions"].as_array().map(Vec::len)), (Some("PROCESSING"), Some(0)));

    // A subscriber on B tells when B's relay has forwarded the event.
    let mut socket =
        subscribe(&b, Some(&owner), &crate::video_events::progress_query(), json!({ "id": video.id.to_string() }))
            .await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
    wait_for_subscribers(&b, 1).await;

    let now = Utc::now();
    rendition::ActiveModel {
        id: Set(Uuid::now_v7()),
        video_id: Set(video.id),
        name: Set("360p".into()),
        width: Set(640),
        height: Set(360),
        bitrate: Set(800_000),
        codecs: Set("avc1.64001e".into()),
        playlist_key: Set(format!("videos/{}/hls/360p/index.m3u8", video.id)),
        status: Set(RenditionStatus::Ready),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&a.state.db)
    .await
    .unwrap();
    let seen = video_as(&b, &owner, video.id).await;
    assert_eq!(seen["renditions"], json!([]), "written without an event: B still answers from memory");

    transition_on(&a, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p")).await;
    assert_eq!(next_event(&mut socket).await.unwrap()["kind"], "RENDITION_READY");
    let seen = video_as(&b, &owner, video.id).await;
    assert_eq!(seen["renditions"], json!([{ "name": "360p" }]), "B heard RENDITION_READY and served the old row");
}
