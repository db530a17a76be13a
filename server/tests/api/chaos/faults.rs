//! One test per fault, in the order. Each starts a deployment, starts the
//! workload, injects the fault when the workload is where the fault must land (an
//! encode running, a PATCH in flight on the replica to kill, …), lifts it, measures
//! the recovery time as that fault defines it, and checks the invariants.

use std::time::{Duration, Instant};

use entities::{job, JobStatus};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use super::cluster::{time_until, Cluster, ProxyMode, Scale};
use super::workload::{Row, Workload};

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

/// A real small filesystem (tmpfs) for the local object store, unmounted on drop.
/// Mounting needs root (CAP_SYS_ADMIN); without it the fault is recorded SKIPPED.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size_mib: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a {size_mib} MiB tmpfs (needs root / CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { path: dir.path().to_path_buf(), _dir: dir })
    }

    /// Fill every free byte with a file; returns its path once a write met ENOSPC.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(28) => break,
                Err(err) => panic!("filling the small disk: {err}"),
            }
        }
        // The last few bytes, a page at most.
        let mut small = [0u8; 512];
        while matches!(file.write(&small[..]), Ok(n) if n > 0) {
            small[0] = small[0].wrapping_add(1);
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Objects whose bytes differ from what their metadata says was committed: a
/// half-written file being served. The local store writes a temp file and renames
/// it into place, so there must be none, even after writes met ENOSPC.
fn half_written_objects(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.join("objects")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(root.join("objects")).unwrap();
            let Ok(sidecar) = std::fs::read(root.join("meta").join(relative)) else { continue };
            let sidecar: Value = serde_json::from_slice(&sidecar).unwrap_or(Value::Null);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if sidecar["size"].as_u64() != Some(size) {
                found.push(format!("{} is {size} bytes, its metadata says {}", relative.display(), sidecar["size"]));
            }
        }
    }
    found
}

#[actix_web::test]
async fn disk_full_on_the_local_backend() {
    const FAULT: &str = "disk full on the local backend (tmpfs)";
    let Some(scale) = Scale::from_env("chaos::faults::disk_full_on_the_local_backend") else { return };
    let disk = match SmallDisk::mount(192) {
        Ok(disk) => disk,
        Err(why) => return Row::skipped(FAULT, &why),
    };
    let root = disk.path.join("store");
    let root_text = root.to_string_lossy().to_string();
    // One replica (the local store is one machine's disk) and one worker process
    // sharing it. Attempts and backoff leave room for the outage: a transcode whose
    // outputs meet the full disk is retried, not failed.
    let extra = [
        ("REELHOUSE__STORAGE__BACKEND", "local"),
        ("REELHOUSE__STORAGE__LOCAL_ROOT", root_text.as_str()),
        ("REELHOUSE__JOBS__MAX_ATTEMPTS", "20"),
        ("REELHOUSE__JOBS__BACKOFF_MAX_SECS", "4"),
    ];
    let mut cluster = Cluster::start(1, 1, &extra).await;
    let workload = Workload::start(&cluster, scale).await;
    wait_for_bytes(&workload, 64 * 1024, Duration::from_secs(120)).await;
    let token = workload.users[0].token.clone();
    let address = cluster.replicas[0].address.clone();

    let filler = disk.fill();
    // Held until the fault has landed (a write met the full disk and was answered
    // 507 STORAGE_FULL), then a little longer.
    let landed = time_until(Duration::from_secs(90), || async {
        workload.observed.storage_full.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut problems = Vec::new();
    // The process keeps serving what does not need the disk.
    let (status, _, body) = me(&address, &token).await;
    if status != 200 || !body["errors"].is_null() {
        problems.push(format!("`me` while the disk was full: {status} {body}"));
    }
    std::fs::remove_file(&filler).unwrap();
    // Recovery: uploads move again once space is back.
    let recovery = uploads_move_again(&workload, Duration::from_secs(120)).await;
    let storage_full = workload.observed.storage_full.load(std::sync::atomic::Ordering::Relaxed);
    if landed.is_none() {
        problems.push("no write met the full disk (no 507 STORAGE_FULL seen): the fault did not land".into());
    }
    let row = workload.finish_with(&cluster, FAULT, recovery, problems).await;
    let half_written = half_written_objects(&root);
    cluster.stop().await;
    drop(disk);
    assert!(half_written.is_empty(), "half-written objects are served: {half_written:#?}");
    assert!(storage_full > 0);
    row.assert_survived(&cluster);
}

/// libfaketime, for a worker process whose clock is off (`apt-get install faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The environment that moves a process's wall clock by `secs` (monotonic clocks
/// untouched, so its timers run at the normal pace), after checking that it does.
fn skewed_clock_env(secs: i64) -> Result<Vec<(String, String)>, String> {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        return Err(format!("{LIBFAKETIME} is missing (apt-get install faketime)"));
    }
    let env = vec![
        ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
        ("FAKETIME".to_string(), format!("{secs:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
        ("FAKETIME_NO_CACHE".to_string(), "1".to_string()),
    ];
    let out = std::process::Command::new("date")
        .arg("+%s")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("cannot run date under libfaketime: {e}"))?;
    let skewed: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| "date printed no time")?;
    let real = chrono::Utc::now().timestamp();
    if (skewed - real - secs).abs() > 5 {
        return Err(format!("libfaketime did not move the clock by {secs} s (moved {} s)", skewed - real));
    }
    Ok(env)
}

#[actix_web::test]
async fn clock_skew_of_a_worker() {
    const FAULT: &str = "clock skew of a worker (±10 min, libfaketime)";
    let Some(scale) = Scale::from_env("chaos::faults::clock_skew_of_a_worker") else { return };
    let (ahead, behind) = match (skewed_clock_env(600), skewed_clock_env(-600)) {
        (Ok(ahead), Ok(behind)) => (ahead, behind),
        (Err(why), _) | (_, Err(why)) => return Row::skipped(FAULT, &why),
    };
    let lease_secs = 5i64; // REELHOUSE__JOBS__LEASE_SECS of every process in the cluster
    let mut cluster = Cluster::start(1, 0, &[]).await;
    for env in [&ahead, &behind] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cluster.start_worker_with(&env);
    }
    let db = cluster.db.clone();
    assert!(
        crate::helpers::eventually(600, || async {
            entities::worker::Entity::find().all(&db).await.map(|w| w.len()).unwrap_or(0) == 2
        })
        .await,
        "the skewed workers register:\n{}",
        cluster.logs()
    );
    let started = Instant::now();
    let workload = Workload::start(&cluster, scale).await;
    let total = workload.users.len() * workload.videos_per_user;

    // While the workload runs, every lease a skewed worker holds must end within one
    // lease period of the database's clock: not already over (a worker 10 min behind
    // would otherwise lose each lease at once and the job run twice), not 10 min out
    // (a worker ahead would keep a dead lease for 10 min).
    let mut problems = Vec::new();
    let (mut samples, mut first_done) = (0usize, None);
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(360) {
        let now = reelhouse::db::now(&db).await.unwrap();
        let running = job::Entity::find().filter(job::Column::Status.eq(JobStatus::Running)).all(&db).await.unwrap();
        for j in &running {
            let Some(expires) = j.lease_expires_at else { continue };
            samples += 1;
            let left = (expires - now).num_milliseconds();
            if left <= -1500 || left > (lease_secs + 2) * 1000 {
                problems.push(format!(
                    "job {} leased by {:?}: lease ends {left} ms from the database's now (lease {lease_secs} s)",
                    j.id, j.lease_owner
                ));
            }
        }
        let done =
            job::Entity::find().filter(job::Column::Status.eq(JobStatus::Succeeded)).all(&db).await.unwrap().len();
        if done > 0 && first_done.is_none() {
            first_done = Some(started.elapsed());
        }
        let unsettled = job::Entity::find()
            .filter(job::Column::Status.is_in([JobStatus::Queued, JobStatus::Running]))
            .filter(job::Column::Kind.eq(entities::JobKind::Transcode))
            .all(&db)
            .await
            .unwrap()
            .len();
        if workload.observed.sent.load(std::sync::atomic::Ordering::Relaxed) >= total && unsettled == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if samples == 0 {
        problems.push("no lease was ever seen running: the fault did not land".into());
    }
    // Done once: no transcode lost its lease and ran again.
    let transcodes =
        job::Entity::find().filter(job::Column::Kind.eq(entities::JobKind::Transcode)).all(&db).await.unwrap();
    for j in &transcodes {
        if j.attempts != 1 {
            problems.push(format!("transcode {} ran {} times (last error {:?})", j.id, j.attempts, j.last_error));
        }
    }
    problems.truncate(20);
    // Recovery: there is no outage to recover from; the column says how long until
    // the first job finished on a skewed worker.
    let row = workload.finish_with(&cluster, FAULT, first_done, problems).await;
    cluster.stop().await;
    row.assert_survived(&cluster);
}
