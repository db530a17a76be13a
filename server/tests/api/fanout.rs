//! Two server instances sharing PostgreSQL and Redis behave as one: an event
//! published on one reaches subscribers on the other through the Redis relay, and
//! a relay that lost Redis replays what it missed from the outbox.
//! (Needs Redis: runs with REELHOUSE_TEST_BACKEND=postgres, skips on sqlite.)

use std::time::Duration;

use entities::{VideoStatus, Visibility};
use reelhouse::events::EventKind;
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
