//! Two server instances sharing PostgreSQL and Redis behave as one: an event
//! published on one reaches subscribers on the other through the Redis relay, and
//! a relay that lost Redis replays what it missed from the outbox.
//! (Needs Redis: runs with REELHOUSE_TEST_BACKEND=postgres, skips on sqlite.)

use std::time::Duration;

use entities::{VideoStatus, Visibility};
use reelhouse::events::EventKind;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::helpers::{backend, service_env, socket_of, spawn_app_with, Backend, TcpProxy, TestApp};
use crate::video_events::{insert_video, next_event, subscribe, transition_on, wait_for_subscribers};

fn skip() -> bool {
    if backend() != Backend::Postgres {
        eprintln!("skipped: fan-out needs Redis and a shared database (REELHOUSE_TEST_BACKEND=postgres)");
        return true;
    }
    false
}

/// A second instance on the first one's database, storage, Redis prefix and keys.
pub(crate) async fn second_instance(first: &TestApp, redis_url: Option<String>) -> TestApp {
    second_instance_with(first, redis_url, |_| {}).await
}

/// [`second_instance`], with `customize` applied last.
pub(crate) async fn second_instance_with(
    first: &TestApp,
    redis_url: Option<String>,
    customize: impl FnOnce(&mut reelhouse::config::Settings),
) -> TestApp {
    let shared = first.state.settings.clone();
    spawn_app_with(move |s| {
        s.database = shared.database.clone();
        s.storage = shared.storage.clone();
        s.redis.key_prefix = shared.redis.key_prefix.clone();
        if let Some(url) = redis_url {
            s.redis.url = Some(reelhouse::config::SecretUrl::new(url));
        }
        s.auth = shared.auth.clone();
        s.workers.embedded = false;
        s.database.migrate_on_start = false;
        customize(s);
    })
    .await
}

/// Relays subscribed to the deployment's channel (one per instance).
async fn relays(app: &TestApp) -> i64 {
    let redis = app.state.redis.as_ref().unwrap();
    let mut conn = redis.connection().await.unwrap();
    let channel = reelhouse::events::fanout::channel(redis);
    let answer: (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
    answer.1
}

pub(crate) async fn wait_for_relays(app: &TestApp, n: i64) {
    let ok = crate::helpers::eventually(100, || async { relays(app).await >= n }).await;
    assert!(ok, "relays never subscribed");
}

#[actix_web::test]
async fn an_event_published_on_one_instance_reaches_a_subscriber_on_another() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let b = second_instance(&a, None).await;
    wait_for_relays(&a, 2).await;
    let owner = a.register_user().await;
    let video = insert_video(&a, &owner, Visibility::Private, VideoStatus::Processing).await;

    let mut socket =
        subscribe(&b, Some(&owner), &crate::video_events::progress_query(), json!({ "id": video.id.to_string() }))
            .await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
    wait_for_subscribers(&b, 1).await;

    transition_on(&a, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p")).await;
    transition_on(&a, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let got = [next_event(&mut socket).await.unwrap(), next_event(&mut socket).await.unwrap()];
    assert_eq!(got.iter().map(|e| e["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["RENDITION_READY", "READY"]);
}

#[actix_web::test]
async fn after_a_redis_outage_the_relay_replays_what_it_missed() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let mut proxy = TcpProxy::start(socket_of(&service_env("REELHOUSE_TEST_REDIS_URL"))).await;
    let b = second_instance(&a, Some(format!("redis://127.0.0.1:{}", proxy.port))).await;
    wait_for_relays(&a, 2).await;
    let owner = a.register_user().await;

    // The all-videos feed has no periodic outbox check: only the relay's replay
    // can bring back an event published while B was cut off from Redis.
    let mut feed = subscribe(&b, Some(&owner), &crate::video_events::events_query(), json!({})).await;
    wait_for_subscribers(&b, 1).await;

    proxy.cut().await;
    wait_for_relays(&a, 1).await; // B's relay is gone from the channel
    let video = insert_video(&a, &owner, Visibility::Private, VideoStatus::Processing).await;
    transition_on(&a, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore().await;

    let event = next_event(&mut feed).await.unwrap();
    assert_eq!(
        (event["videoId"].as_str(), event["kind"].as_str()),
        (Some(video.id.to_string().as_str()), Some("READY"))
    );
}

/// A video made private through one instance ends a stranger's subscription on the
/// other at once: the change travels through Redis to the other instance's feeds,
/// with the periodic re-check ten minutes away.
#[actix_web::test]
async fn a_video_made_private_on_one_instance_ends_a_strangers_stream_on_another_at_once() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.ws_recheck_ms = 600_000;
    })
    .await;
    let b = second_instance_with(&a, None, |s| s.graphql.ws_recheck_ms = 600_000).await;
    wait_for_relays(&a, 2).await;
    let owner = a.register_user().await;
    let stranger = a.register_user().await;
    let video = insert_video(&a, &owner, Visibility::Public, VideoStatus::Processing).await;
    let query = crate::video_events::progress_query();
    let mut socket = subscribe(&b, Some(&stranger), &query, json!({ "id": video.id.to_string() })).await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
    wait_for_subscribers(&b, 1).await;

    crate::video_events::make_private(&a, &owner, video.id).await;
    let end = next_event(&mut socket).await.unwrap_err();
    assert_eq!(end["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{end}");
}

/// Prometheus counter `name` (summed over its labels) on `app`'s `/metrics`.
async fn counter(app: &TestApp, name: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Two instances; the owner's PROCESSING video; a subscriber to its events on `b`,
/// which learns of events through the Redis relay alone (its outbox polls and
/// re-checks are ten minutes away).
struct Relayed {
    a: TestApp,
    b: TestApp,
    owner: crate::helpers::TestUser,
    video: entities::video::Model,
    socket: crate::subscriptions::Socket,
}

async fn relayed_only() -> Relayed {
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let b = second_instance_with(&a, None, |s| {
        s.graphql.ws_recheck_ms = 600_000;
        s.events.tail_poll_ms = 600_000;
    })
    .await;
    wait_for_relays(&a, 2).await;
    let owner = a.register_user().await;
    let video = insert_video(&a, &owner, Visibility::Private, VideoStatus::Processing).await;
    let query = crate::video_events::events_query();
    let mut socket = subscribe(&b, Some(&owner), &query, json!({ "id": video.id.to_string() })).await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
    wait_for_subscribers(&b, 1).await;
    Relayed { a, b, owner, video, socket }
}

/// A burst (many encodes' progress, and stored events) published on one instance is
/// sent to Redis in pipelines, not one round trip per event, and reaches a
/// subscriber on the other instance complete and in order through the relay alone
/// (the other instance's outbox polls are ten minutes away).
#[actix_web::test]
async fn a_burst_published_on_one_instance_goes_to_redis_in_batches_and_arrives_whole_and_in_order() {
    if skip() {
        return;
    }
    let Relayed { a, b: _b, owner: _, video, mut socket } = relayed_only().await;

    // Stored first (not yet published), then all of it published in one go, as a
    // burst of progress from many encodes would be.
    let mut stored = Vec::new();
    for _ in 0..40 {
        stored.push(
            crate::video_events::transition(&a, video.id, VideoStatus::Processing, EventKind::Processing, None, false)
                .await,
        );
    }
    let row = entities::video::Entity::find_by_id(video.id).one(&a.state.db).await.unwrap().unwrap();
    let publisher = a.state.publisher();
    let batches_before = counter(&a, "reelhouse_redis_publish_batches_total").await;
    let sent_before = counter(&a, "reelhouse_redis_published_events_total").await;
    let job = uuid::Uuid::now_v7();
    for (i, event) in stored.iter().enumerate() {
        for p in 0..20 {
            let progress = reelhouse::events::ProgressInfo {
                percent: (i * 20 + p) as f64 / 10.0,
                stage: "encoding".into(),
                ..Default::default()
            };
            publisher.publish(reelhouse::events::progress_event(&row, event.seq, job, progress));
        }
        publisher.publish(event.clone());
    }
    let total = (stored.len() * 21) as f64;
    let sent = crate::helpers::eventually(100, || async {
        counter(&a, "reelhouse_redis_published_events_total").await - sent_before >= total
    })
    .await;
    assert!(sent, "not every event reached redis");
    let batches = counter(&a, "reelhouse_redis_publish_batches_total").await - batches_before;
    assert!(batches >= 1.0 && batches < total / 4.0, "{total} events took {batches} round trips");

    let mut seqs = Vec::new();
    while seqs.len() < stored.len() {
        let event = next_event(&mut socket).await.unwrap();
        if event["kind"] != "PROGRESS" {
            seqs.push(event["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, stored.iter().map(|e| e.seq).collect::<Vec<_>>(), "every stored event once, in order");
}

/// When Redis cannot keep up and the publisher's queue is full, PROGRESS beyond the
/// bound is dropped (and counted), but a stored event is never dropped: it goes out
/// on its own and reaches a subscriber on another instance (which here has nothing
/// but Redis to learn of it: its outbox tail is off).
#[actix_web::test]
async fn a_stored_event_published_while_the_redis_queue_is_full_still_reaches_another_instance() {
    if skip() {
        return;
    }
    let Relayed { a, b: _b, owner, video, mut socket } = relayed_only().await;
    let busy = insert_video(&a, &owner, Visibility::Private, VideoStatus::Processing).await;

    let stored =
        crate::video_events::transition(&a, video.id, VideoStatus::Processing, EventKind::Processing, None, false)
            .await;
    let busy_row = entities::video::Entity::find_by_id(busy.id).one(&a.state.db).await.unwrap().unwrap();
    let publisher = a.state.publisher();
    let dropped_before = counter(&a, "reelhouse_events_publish_dropped_total").await;
    // Nothing yields in this loop, so the sending task cannot drain the queue: as if
    // Redis had stalled. Another video's progress fills it and overflows it by 100.
    let job = uuid::Uuid::now_v7();
    for i in 0..reelhouse::events::fanout::QUEUED + 100 {
        let progress = reelhouse::events::ProgressInfo { percent: i as f64 / 100.0, ..Default::default() };
        publisher.publish(reelhouse::events::progress_event(&busy_row, busy_row.event_seq, job, progress));
    }
    publisher.publish(stored.clone());
    let dropped = counter(&a, "reelhouse_events_publish_dropped_total").await - dropped_before;
    assert!(dropped >= 100.0, "progress beyond the bound is dropped and counted: {dropped}");

    let event = next_event(&mut socket).await.expect("the stored event arrives through redis");
    assert_eq!(event["kind"], "PROCESSING", "{event}");
    assert_eq!(event["seq"].as_i64(), Some(stored.seq), "{event}");
}
