//! Redis restarted in the middle of a real job: the API's relay and the worker's
//! publisher reconnect on their own, and a subscriber still gets every state event
//! of the run, once, in order, ending in exactly one READY.
//!
//! The test runs its own `redis-server` (a real process on a free port, killed with
//! SIGKILL and started again on the same port), so the shared Redis of the other
//! tests is left alone. Redis stays down until the job stored a state event that
//! nobody could publish, so the test fails if the relay does not replay. PostgreSQL only: a worker process shares the database.

use std::process::Stdio;
use std::time::Duration;

use entities::{event_outbox, job, JobStatus};
use reelhouse::config::SecretUrl;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{backend, eventually, service_env, spawn_app_with, Backend};
use crate::video_events::{events_query, next_event, progress_query, subscribe, wait_for_subscribers};

/// A `redis-server` of this test's own, restartable on the same port.
pub(crate) struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, dir: tempfile::tempdir().unwrap(), child: None };
        redis.spawn().await;
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = tokio::process::Command::new(service_env("REELHOUSE_TEST_REDIS_SERVER"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let up = eventually(100, || async {
            match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        assert!(up, "redis-server did not start on port {}", self.port);
    }

    /// SIGKILL: no goodbye to its clients.
    pub(crate) async fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().await.unwrap();
    }

    /// Subscribers of `channel` (the event relays).
    pub(crate) async fn subscribers(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return 0 };
        let answer: (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(&mut conn).await.unwrap_or_default();
        answer.1
    }
}

#[actix_web::test]
async fn a_redis_restart_in_the_middle_of_a_job_loses_no_state_event() {
    if backend() != Backend::Postgres {
        eprintln!("skipped: a worker process and Redis fan-out need REELHOUSE_TEST_BACKEND=postgres");
        return;
    }
    let mut redis = OwnRedis::start().await;
    let redis_url = redis.url();
    // The API runs no workers: every event of the job crosses Redis from a worker process.
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.redis.url = Some(SecretUrl::new(redis_url.clone()));
        crate::uploads::short_s3_prefix(s);
    })
    .await;
    let channel = format!("{}events", app.state.settings.redis.key_prefix);
    assert!(eventually(100, || async { redis.subscribers(&channel).await == 1 }).await, "relay never subscribed");

    let user = app.register_user().await;
    let video = crate::e2e::create_video(&app, &user, "PRIVATE").await;
    let mut progress = subscribe(&app, Some(&user), &progress_query(), json!({ "id": video })).await;
    assert_eq!(next_event(&mut progress).await.unwrap()["snapshot"], true);
    // The all-videos feed has no periodic outbox check of its own: what it gets after
    // the restart came through the reconnected relay and publisher.
    let feed_from = max_outbox_id(&app).await;
    let mut feed = subscribe(&app, Some(&user), &events_query(), json!({})).await;
    wait_for_subscribers(&app, 2).await;

    crate::worker_process::upload_landscape_clip(&app, &user, &video).await;

    let (mut worker, dir) = crate::worker_process::quick_redis_worker(&app.state.settings, &redis_url);

    // The job is running and reporting through Redis: now Redis goes away.
    let mut before = Vec::new();
    loop {
        let event = next_event(&mut progress).await.expect("the run goes on");
        before.push(event["kind"].as_str().unwrap().to_string());
        if event["kind"] == "PROGRESS" {
            break;
        }
    }
    let video_id = Uuid::parse_str(&video).unwrap();
    let running = job::Entity::find().filter(job::Column::VideoId.eq(video_id)).one(&app.state.db).await.unwrap();
    assert_eq!(running.map(|j| j.status), Some(JobStatus::Running), "the restart must land mid-job");
    let stored_before = max_outbox_id(&app).await;
    redis.kill().await;
    // Keep Redis down until the job stored another state event and its publisher gave
    // up on it: that event can only reach the feed through the relay's replay.
    assert!(eventually(600, || async { max_outbox_id(&app).await > stored_before }).await, "no state event stored");
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.spawn().await;
    assert!(eventually(200, || async { redis.subscribers(&channel).await == 1 }).await, "relay never resubscribed");

    let (after, _, last) = crate::e2e::watch_until_done(&mut progress).await;
    crate::worker_process::sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    let kinds: Vec<&String> = before.iter().chain(&after).collect();
    assert_eq!(last["kind"], "READY", "{kinds:?}\n{log}");
    assert_eq!(kinds.iter().filter(|k| k.as_str() == "READY").count(), 1, "{kinds:?}");

    // The feed: every stored event of the video, once each, in order.
    let stored: Vec<(i64, String)> = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .order_by_asc(event_outbox::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.id, row.kind))
        .collect();
    assert_eq!(stored.last().map(|(_, kind)| kind.as_str()), Some("READY"), "{stored:?}");
    let mut received: Vec<(i64, String)> = Vec::new();
    let collect = async {
        while received.last().map(|(_, kind)| kind.as_str()) != Some("READY") {
            let event: Value = next_event(&mut feed).await.expect("the feed goes on");
            if event["videoId"] != video.as_str() || event["kind"] == "PROGRESS" || event["snapshot"] == true {
                continue;
            }
            let cursor = event["cursor"].as_str().unwrap().parse::<i64>().unwrap();
            received.push((cursor, event["kind"].as_str().unwrap().to_string()));
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(60), collect).await.is_ok();
    assert!(done, "the feed never got READY; it got {received:?} of {stored:?}");
    // Everything stored after the feed subscribed is owed to it.
    let owed: Vec<(i64, String)> = stored.into_iter().filter(|(id, _)| *id > feed_from).collect();
    assert!(owed.len() >= 3, "UPLOADED/PROCESSING.., RENDITION_READY, READY: {owed:?}");
    assert_eq!(received, owed, "the feed got every state event once, in order");
}

async fn max_outbox_id(app: &crate::helpers::TestApp) -> i64 {
    event_outbox::Entity::find()
        .order_by_desc(event_outbox::Column::Id)
        .one(&app.state.db)
        .await
        .unwrap()
        .map_or(0, |row| row.id)
}
