//! One test per fault, in the order. Each starts a deployment, starts the
//! workload, injects the fault when the workload is where the fault must land (an
//! encode running, a PATCH in flight on the replica to kill, …), lifts it, measures
//! the recovery time as that fault defines it, and checks the invariants.

use std::time::{Duration, Instant};

use entities::{job, JobStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use super::cluster::{time_until, Cluster, ProxyMode, Scale};
use super::workload::Workload;

/// Wait (at most `limit`) for the workload to have sent at least `bytes` bytes.
async fn wait_for_bytes(workload: &Workload, bytes: u64, limit: Duration) {
    let reached =
        time_until(limit, || async { workload.observed.bytes.load(std::sync::atomic::Ordering::Relaxed) >= bytes })
            .await;
    assert!(reached.is_some(), "the workload never got going");
}

/// A transcode job RUNNING with progress reported (an encode under way).
async fn running_encode(cluster: &Cluster, limit: Duration) -> job::Model {
    let db = cluster.db.clone();
    let mut found = None;
    let started = Instant::now();
    while found.is_none() && started.elapsed() < limit {
        found = job::Entity::find()
            .filter(job::Column::Status.eq(JobStatus::Running))
            .filter(job::Column::Progress.is_not_null())
            .one(&db)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found.unwrap_or_else(|| panic!("no encode got under way:\n{}", cluster.logs()))
}

/// `{ me { id } }` on one replica: status, `Retry-After`, body.
async fn me(address: &str, token: &str) -> (u16, Option<String>, Value) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    match client
        .post(format!("{address}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            (status, retry_after, res.json().await.unwrap_or(Value::Null))
        }
        Err(err) => (0, None, json!({ "transport": err.to_string() })),
    }
}

#[actix_web::test]
async fn worker_killed_mid_encode() {
    let Some(scale) = Scale::from_env("chaos::faults::worker_killed_mid_encode") else { return };
    let mut cluster = Cluster::start(2, 2, &[]).await;
    let workload = Workload::start(&cluster, scale).await;
    let victim = running_encode(&cluster, Duration::from_secs(300)).await;
    let owner = victim.lease_owner.clone().unwrap();
    cluster.kill_worker_holding(&owner).await;
    // A replacement, as a deployment's controller would start.
    cluster.start_worker();
    let db = cluster.db.clone();
    // Recovery: the killed worker's job runs again elsewhere (or is done).
    let recovery = time_until(Duration::from_secs(180), || async {
        job::Entity::find_by_id(victim.id).one(&db).await.unwrap().is_some_and(|j| {
            matches!(j.status, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead)
                || (j.status == JobStatus::Running && j.lease_owner.as_deref() != Some(owner.as_str()))
        })
    })
    .await;
    let row = workload.finish(&cluster, "kill -9 a worker mid-encode", recovery).await;
    let job = job::Entity::find_by_id(victim.id).one(&cluster.db).await.unwrap().unwrap();
    cluster.stop().await;
    row.assert_survived(&cluster);
    assert!(job.attempts >= 2, "the killed attempt counted and another ran: {job:?}");
}

#[actix_web::test]
async fn postgres_unreachable_for_30_seconds() {
    let Some(scale) = Scale::from_env("chaos::faults::postgres_unreachable_for_30_seconds") else { return };
    let mut cluster = Cluster::start(2, 1, &[]).await;
    let workload = Workload::start(&cluster, scale).await;
    wait_for_bytes(&workload, 64 * 1024, Duration::from_secs(120)).await;
    let token = workload.users[0].token.clone();
    let replicas = cluster.balancer.in_rotation();

    cluster.pg_proxy.cut().await;
    let cut = Instant::now();
    // Throughout the outage every replica answers a signed-in caller with a typed
    // UNAVAILABLE (503, Retry-After), never a verdict about the caller.
    let mut wrong = Vec::new();
    let mut answers = 0;
    while cut.elapsed() < Duration::from_secs(30) {
        for address in &replicas {
            let (status, retry_after, body) = me(address, &token).await;
            let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default().to_string();
            answers += 1;
            if status != 503 || retry_after.is_none() || code != "UNAVAILABLE" {
                wrong.push(format!("{address}: {status} {retry_after:?} {body}"));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cluster.pg_proxy.restore().await;
    // Recovery: every replica answers `me` again (no restart).
    let recovery = time_until(Duration::from_secs(120), || async {
        for address in &replicas {
            if me(address, &token).await.0 != 200 {
                return false;
            }
        }
        true
    })
    .await;
    let row = workload.finish(&cluster, "PostgreSQL unreachable for 30 s", recovery).await;
    cluster.stop().await;
    assert!(
        wrong.is_empty(),
        "{} of {answers} answers during the outage were not a typed UNAVAILABLE: {wrong:#?}",
        wrong.len()
    );
    row.assert_survived(&cluster);
}

#[actix_web::test]
async fn redis_restarted_twice() {
    let Some(scale) = Scale::from_env("chaos::faults::redis_restarted_twice") else { return };
    let mut cluster = Cluster::start(2, 1, &[]).await;
    assert!(time_until(Duration::from_secs(30), || cluster.relays_subscribed()).await.is_some(), "relays subscribe");
    let workload = Workload::start(&cluster, scale).await;
    let mut recovery = Duration::ZERO;
    let mut recovered = true;
    for round in 0..2 {
        if round == 0 {
            running_encode(&cluster, Duration::from_secs(300)).await;
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        cluster.redis.kill().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.redis.spawn().await;
        // Recovery: every replica's relay subscribed again.
        match time_until(Duration::from_secs(60), || cluster.relays_subscribed()).await {
            Some(took) => recovery = recovery.max(took),
            None => recovered = false,
        }
    }
    let row = workload.finish(&cluster, "Redis restarted twice", recovered.then_some(recovery)).await;
    cluster.stop().await;
    row.assert_survived(&cluster);
}

/// Wait until a PATCH is in flight on `address`.
async fn patch_in_flight(workload: &Workload, address: &str) {
    let found = time_until(Duration::from_secs(180), || async { workload.observed.in_flight_on(address) > 0 }).await;
    assert!(found.is_some(), "no PATCH ever went to {address}");
    // Let some of its body arrive.
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[actix_web::test]
async fn api_replica_killed_mid_upload() {
    let Some(scale) = Scale::from_env("chaos::faults::api_replica_killed_mid_upload") else { return };
    let mut cluster = Cluster::start(2, 1, &[]).await;
    let workload = Workload::start(&cluster, scale).await;
    let victim = cluster.replicas[1].address.clone();
    patch_in_flight(&workload, &victim).await;
    let at = Instant::now();
    cluster.kill_replica(1).await;
    // Recovery: an interrupted upload resumed (on the other replica).
    let recovery = time_until(Duration::from_secs(120), || async { workload.observed.resumed_after(at).is_some() })
        .await
        .and_then(|_| workload.observed.resumed_after(at));
    let interrupted = workload.observed.interrupted_after(at);
    let row = workload.finish(&cluster, "kill -9 an API replica mid-upload", recovery).await;
    cluster.stop().await;
    assert!(!interrupted.is_empty(), "the kill landed mid-upload");
    row.assert_survived(&cluster);
}

#[actix_web::test]
async fn api_replica_sigterm_mid_upload_drains() {
    let Some(scale) = Scale::from_env("chaos::faults::api_replica_sigterm_mid_upload_drains") else { return };
    let mut cluster = Cluster::start(2, 1, &[]).await;
    let workload = Workload::start(&cluster, scale).await;
    let victim = cluster.replicas[1].address.clone();
    patch_in_flight(&workload, &victim).await;
    let at = Instant::now();
    // Out of rotation first (as an endpoint controller does), then SIGTERM.
    cluster.balancer.take_out(&victim);
    let pid = cluster.replica_pid(1);
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
    let mut server = cluster.replicas[1].server.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait()).await.unwrap().unwrap();
    // Recovery: how long the replica took to drain and exit.
    let drained = at.elapsed();
    cluster.replicas[1].server = Some(server);
    let interrupted: Vec<String> =
        workload.observed.interrupted_after(at).into_iter().filter(|a| *a == victim).collect();
    let row = workload.finish(&cluster, "SIGTERM an API replica mid-upload (drains)", Some(drained)).await;
    cluster.stop().await;
    assert!(status.success(), "the replica exits 0 after draining: {status:?}");
    assert!(interrupted.is_empty(), "a PATCH in flight at SIGTERM was cut instead of drained: {interrupted:?}");
    row.assert_survived(&cluster);
}

/// How long after `since` the workload's uploads moved again (a PATCH accepted bytes,
/// or every upload was already sent).
async fn uploads_move_again(workload: &Workload, limit: Duration) -> Option<Duration> {
    use std::sync::atomic::Ordering;
    let before = workload.observed.bytes.load(Ordering::Relaxed);
    let total = workload.users.len() * workload.videos_per_user;
    time_until(limit, || async {
        workload.observed.bytes.load(Ordering::Relaxed) > before
            || workload.observed.sent.load(Ordering::Relaxed) >= total
    })
    .await
}

#[actix_web::test]
async fn s3_stalls() {
    let Some(scale) = Scale::from_env("chaos::faults::s3_stalls") else { return };
    let mut cluster = Cluster::start_with(2, 1, &[], true).await;
    let workload = Workload::start(&cluster, scale).await;
    wait_for_bytes(&workload, 64 * 1024, Duration::from_secs(120)).await;
    let proxy = cluster.s3_proxy.as_ref().unwrap();
    proxy.set(ProxyMode::Stall);
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.set(ProxyMode::Pass);
    // Recovery: uploads move again once S3 passes bytes.
    let recovery = uploads_move_again(&workload, Duration::from_secs(120)).await;
    let row = workload.finish(&cluster, "S3 stalls 20 s (proxy holds bytes)", recovery).await;
    cluster.stop().await;
    row.assert_survived(&cluster);
}

#[actix_web::test]
async fn s3_5xx_bursts() {
    let Some(scale) = Scale::from_env("chaos::faults::s3_5xx_bursts") else { return };
    let mut cluster = Cluster::start_with(2, 1, &[], true).await;
    let workload = Workload::start(&cluster, scale).await;
    wait_for_bytes(&workload, 64 * 1024, Duration::from_secs(120)).await;
    let proxy = cluster.s3_proxy.as_ref().unwrap();
    for _ in 0..3 {
        proxy.set(ProxyMode::Fail);
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.set(ProxyMode::Pass);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let recovery = uploads_move_again(&workload, Duration::from_secs(120)).await;
    let row = workload.finish(&cluster, "S3 503 bursts (3 × 5 s)", recovery).await;
    cluster.stop().await;
    row.assert_survived(&cluster);
}

/// Webhook timings divided by 60, so 10 s of real time is 10 minutes of the
/// defaults' time: first retry after 10 s → 167 ms, longest gap 1 h → 60 s, retries
/// for 24 h → 24 min, a breaker open for 10 s → 167 ms (the lowest allowed is 100).
const WEBHOOK_TIME_DIV_60: [(&str, &str); 5] = [
    ("REELHOUSE__WEBHOOKS__BACKOFF_BASE_MS", "167"),
    ("REELHOUSE__WEBHOOKS__BACKOFF_MAX_MS", "60000"),
    ("REELHOUSE__WEBHOOKS__RETRY_FOR_SECS", "1440"),
    ("REELHOUSE__WEBHOOKS__POLL_INTERVAL_MS", "50"),
    ("REELHOUSE__BREAKERS__OPEN_MS", "167"),
];

#[actix_web::test]
async fn webhook_target_down_for_10_simulated_minutes() {
    let Some(scale) = Scale::from_env("chaos::faults::webhook_target_down_for_10_simulated_minutes") else { return };
    let mut cluster = Cluster::start(2, 1, &WEBHOOK_TIME_DIV_60).await;
    let workload = Workload::start(&cluster, scale).await;
    workload.set_webhook_target_down(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    workload.set_webhook_target_down(false);
    let refused = workload.webhooks_refused();
    // Recovery: every delivery made so far has arrived.
    let recovery = time_until(Duration::from_secs(120), || workload.webhooks_all_delivered(&cluster)).await;
    let row = workload.finish(&cluster, "webhook target down 10 min (time ÷ 60)", recovery).await;
    cluster.stop().await;
    assert!(refused > 0, "deliveries were attempted while the target was down");
    row.assert_survived(&cluster);
}
