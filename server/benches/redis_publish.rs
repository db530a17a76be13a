//! PUBLISH/s to an empty Redis (a channel nobody subscribes to): reelhouse's event
//! publisher under a burst, against a plain client, measured in the same run.
//!
//! - `plain client`: one connection sending the very payloads, already serialised,
//!   as pipelines of 256 PUBLISH commands, one round trip after another: what Redis
//!   takes from a client that does nothing else (the baseline, 1.00x); and the same
//!   client serialising each envelope first (the work any publisher must do).
//! - `one task per event`: what `Publisher::publish` did before the batching
//!   publisher, a spawned task per event, each its own PUBLISH.
//! - `batched publisher`: `events::fanout::RedisPublisher`, which `Publisher::publish`
//!   uses: serialises each event and queues it; one task sends what waits as pipelines.
//!
//! Each figure counts the PUBLISH commands Redis itself recorded (`INFO commandstats`),
//! so an event counts once it reached Redis. Prints a Markdown table; ratios only, no
//! thresholds. Environment: `REELHOUSE_BENCH_REDIS_URL` (default redis://127.0.0.1:6379),
//! `BENCH_PUBLISH_EVENTS` (default 200000), `BENCH_RUNS` (default 3, medians).
// A benchmark whose Redis is gone has nothing to report: it stops with the reason.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use entities::{VideoStatus, Visibility};
use reelhouse::config::{RedisSettings, SecretUrl};
use reelhouse::events::fanout::{self, RedisPublisher, QUEUED};
use reelhouse::events::{DomainEvent, EventKind, ProgressInfo, EVENT_VERSION};
use reelhouse::redis_client::RedisHandle;
use uuid::Uuid;

/// A PROGRESS event as an encode reports it.
fn progress(i: usize) -> DomainEvent {
    DomainEvent {
        version: EVENT_VERSION,
        kind: EventKind::Progress,
        video_id: Uuid::now_v7(),
        owner_id: Uuid::now_v7(),
        visibility: Visibility::Public,
        status: VideoStatus::Processing,
        seq: 3,
        cursor: None,
        at: Utc::now(),
        error: None,
        rendition: None,
        job_id: Some(Uuid::now_v7()),
        progress: Some(ProgressInfo {
            percent: (i % 1000) as f64 / 10.0,
            stage: "encoding".into(),
            fps: Some(61.5),
            eta_seconds: Some(12.0),
            ..Default::default()
        }),
    }
}

/// PUBLISH commands Redis has run since it started.
async fn publishes(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// Wait until Redis has run `target` PUBLISH commands in all.
async fn reached(conn: &mut redis::aio::MultiplexedConnection, target: u64) {
    while publishes(conn).await < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A plain client on one connection: `payload(i)` of every event, as pipelines of 256
/// PUBLISH commands, one round trip after another.
async fn plain_client(client: &redis::Client, channel: &str, n: usize, payload: impl Fn(usize) -> String) -> Duration {
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let started = Instant::now();
    for first in (0..n).step_by(256) {
        let mut pipe = redis::pipe();
        for i in first..(first + 256).min(n) {
            pipe.cmd("PUBLISH").arg(channel).arg(payload(i)).ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("PUBLISH");
    }
    started.elapsed()
}

async fn task_per_event(
    redis: &Arc<RedisHandle>,
    stats: &mut redis::aio::MultiplexedConnection,
    events: &[DomainEvent],
) -> Duration {
    let target = publishes(stats).await + events.len() as u64;
    let started = Instant::now();
    for event in events {
        let (redis, event) = (redis.clone(), event.clone());
        tokio::spawn(async move { fanout::publish(&redis, "bench", &event).await });
    }
    reached(stats, target).await;
    started.elapsed()
}

async fn batched(
    publisher: &RedisPublisher,
    stats: &mut redis::aio::MultiplexedConnection,
    events: &[DomainEvent],
) -> Duration {
    let target = publishes(stats).await + events.len() as u64;
    let started = Instant::now();
    for event in events {
        // A burst never larger than the queue: beyond it progress would be dropped
        // by design, which is not what this measures. Sleeping (not spinning) while
        // it drains leaves the cores to the sender and to Redis.
        while publisher.queued() >= QUEUED - 256 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publisher.publish(event);
    }
    reached(stats, target).await;
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("REELHOUSE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let n: usize = std::env::var("BENCH_PUBLISH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let prefix = format!("bench-publish-{}:", Uuid::now_v7());
    let settings = RedisSettings {
        url: Some(SecretUrl::new(url.clone())),
        key_prefix: prefix.clone(),
        ..RedisSettings::default()
    };
    let redis = Arc::new(RedisHandle::new(&settings).expect("redis settings").expect("a redis url"));
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut stats = client.get_multiplexed_async_connection().await.expect("redis");
    let channel = fanout::channel(&redis);
    let events: Vec<DomainEvent> = (0..n).map(progress).collect();
    // The plain client sends what the publisher would: the same envelopes.
    let payloads: Vec<String> = events
        .iter()
        .map(|event| {
            serde_json::to_string(&fanout::Envelope {
                origin: "bench".into(),
                sent_at: Utc::now(),
                event: event.clone(),
            })
            .expect("serialise")
        })
        .collect();
    let publisher = RedisPublisher::start(redis.clone(), "bench");
    let (mut plain, mut serialising, mut per_event, mut batch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let pre_serialised = |i: usize| payloads[i].clone();
        plain.push(n as f64 / plain_client(&client, &channel, n, pre_serialised).await.as_secs_f64());
        let serialise = |i: usize| {
            let envelope = fanout::Envelope { origin: "bench".into(), sent_at: Utc::now(), event: events[i].clone() };
            serde_json::to_string(&envelope).expect("serialise")
        };
        serialising.push(n as f64 / plain_client(&client, &channel, n, serialise).await.as_secs_f64());
        per_event.push(n as f64 / task_per_event(&redis, &mut stats, &events).await.as_secs_f64());
        batch.push(n as f64 / batched(&publisher, &mut stats, &events).await.as_secs_f64());
    }
    let (plain, serialising) = (median(plain), median(serialising));
    let (per_event, batch) = (median(per_event), median(batch));
    println!("### PUBLISH/s to an empty Redis ({n} PROGRESS events, medians of {runs} runs)\n");
    println!("| path | events/s | vs plain client | vs plain client serialising |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| plain client, payloads pre-serialised (pipelines of 256) | {plain:.0} | 1.00x | |");
    println!(
        "| plain client serialising each envelope (pipelines of 256) | {serialising:.0} | {:.2}x | 1.00x |",
        serialising / plain
    );
    println!(
        "| one task per event (before) | {per_event:.0} | {:.2}x | {:.2}x |",
        per_event / plain,
        per_event / serialising
    );
    println!("| batched publisher (now) | {batch:.0} | {:.2}x | {:.2}x |", batch / plain, batch / serialising);
}
