//! `reelhouse worker` as real processes against a shared PostgreSQL database: they
//! register, drain on SIGTERM and deregister, never run the same job at once, and
//! a worker killed mid-encode loses its job to another that finishes it once.
//! PostgreSQL only (several processes on one database is the distributed mode).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use entities::{event_outbox, job, job_log, video, worker, JobKind, JobStatus, VideoStatus, Visibility};
use reelhouse::config::Settings;
use reelhouse::jobs::{enqueue, NewJob, DEFAULT_PRIORITY};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{backend, eventually, reelhouse_command, spawn_app_with, Backend, TestApp};

fn postgres_only(test: &str) -> bool {
    if backend() != Backend::Postgres {
        eprintln!(
            "{test}: skipped: several worker processes share a PostgreSQL database (REELHOUSE_TEST_BACKEND=postgres)"
        );
        return false;
    }
    true
}

/// A test app (API only) whose database and storage the worker processes share.
async fn shared_app() -> TestApp {
    spawn_app_with(|s| s.workers.embedded = false).await
}

/// `reelhouse worker` pointed at the app's database and storage.
pub(crate) fn worker_command(
    settings: &Settings,
    data_dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> tokio::process::Command {
    let mut cmd = reelhouse_command();
    cmd.arg("worker").arg("--data-dir").arg(data_dir);
    apply_shared_settings(&mut cmd, settings);
    cmd.env("REELHOUSE__WORKERS__HEARTBEAT_SECS", "1").env("REELHOUSE__JOBS__POLL_INTERVAL_MS", "50");
    for (key, value) in extra {
        cmd.env(key, value);
    }
    let log = std::fs::File::create(data_dir.join("worker.log")).unwrap();
    cmd.stdout(Stdio::null()).stderr(log);
    cmd
}

/// The settings every process of one deployment shares (database, signing secret,
/// S3), as environment variables of `cmd` (also used by the fault matrix's replicas).
pub(crate) fn apply_shared_settings(cmd: &mut tokio::process::Command, settings: &Settings) {
    if let Some(url) = &settings.database.url {
        cmd.env("REELHOUSE__DATABASE__URL", url.expose());
    }
    // Workers run with the servers' configuration (the shared signing secret included).
    if let Some(secret) = &settings.auth.jwt_secret {
        cmd.env("REELHOUSE__AUTH__JWT_SECRET", secret.expose());
    }
    let s3 = &settings.storage.s3;
    if let Some(bucket) = &s3.bucket {
        cmd.env("REELHOUSE__STORAGE__BACKEND", "s3")
            .env("REELHOUSE__STORAGE__S3__BUCKET", bucket)
            .env("REELHOUSE__STORAGE__S3__ENDPOINT", s3.endpoint.clone().unwrap_or_default())
            .env("REELHOUSE__STORAGE__S3__REGION", &s3.region)
            .env("REELHOUSE__STORAGE__S3__ACCESS_KEY_ID", s3.access_key_id.as_ref().map(|k| k.expose()).unwrap_or(""))
            .env(
                "REELHOUSE__STORAGE__S3__SECRET_ACCESS_KEY",
                s3.secret_access_key.as_ref().map(|k| k.expose()).unwrap_or(""),
            )
            .env("REELHOUSE__STORAGE__S3__FORCE_PATH_STYLE", "true")
            .env("REELHOUSE__STORAGE__S3__KEY_PREFIX", &s3.key_prefix);
    }
}

pub(crate) fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("child pid");
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
}

async fn new_job(db: &DatabaseConnection, video: Option<Uuid>, owner: Option<Uuid>, max_attempts: i32) -> job::Model {
    enqueue(
        db,
        NewJob {
            kind: JobKind::Transcode,
            video_id: video,
            owner_id: owner,
            priority: DEFAULT_PRIORITY,
            payload: json!({ "preset": "MEDIUM" }),
            max_attempts,
        },
    )
    .await
    .unwrap()
}

#[actix_web::test]
async fn worker_process_registers_drains_and_deregisters_on_sigterm() {
    if !postgres_only("worker_process_registers_drains_and_deregisters_on_sigterm") {
        return;
    }
    let app = shared_app().await;
    let db = app.state.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut child =
        worker_command(&app.state.settings, dir.path(), &[("REELHOUSE__WORKERS__CONCURRENCY", "2")]).spawn().unwrap();
    assert!(
        eventually(300, || async { worker::Entity::find().count(&db).await.unwrap_or(0) == 1 }).await,
        "the worker registers: {}",
        std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
    );
    let row = worker::Entity::find().one(&db).await.unwrap().unwrap();
    assert_eq!(row.pid as u32, child.id().unwrap());
    assert_eq!(row.capacity, 2);
    assert!(
        eventually(100, || async {
            worker::Entity::find().one(&db).await.ok().flatten().is_some_and(|w| w.last_seen_at > row.last_seen_at)
        })
        .await,
        "the worker heartbeats"
    );
    // It runs jobs (this branch's runner fails them retryably) …
    let id = new_job(&db, None, None, 50).await.id;
    assert!(
        eventually(300, || async {
            job::Entity::find_by_id(id).one(&db).await.unwrap().is_some_and(|j| j.attempts >= 1)
        })
        .await,
        "the worker leases the job"
    );
    // … and on SIGTERM stops leasing, lets the running job end, and deregisters.
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(worker::Entity::find().count(&db).await.unwrap(), 0, "deregistered on shutdown");
    let row = job::Entity::find_by_id(id).one(&db).await.unwrap().unwrap();
    assert_ne!(row.status, JobStatus::Running, "nothing left RUNNING behind: {row:?}");
    assert_eq!(row.lease_token, None);
}

#[actix_web::test]
async fn two_worker_processes_never_run_the_same_job() {
    if !postgres_only("two_worker_processes_never_run_the_same_job") {
        return;
    }
    let app = shared_app().await;
    let db = app.state.db.clone();
    let extra = [
        ("REELHOUSE__WORKERS__CONCURRENCY", "3"),
        ("REELHOUSE__JOBS__BACKOFF_BASE_SECS", "0"),
        ("REELHOUSE__JOBS__SWEEP_INTERVAL_SECS", "1"),
    ];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut children: Vec<_> =
        dirs.iter().map(|d| worker_command(&app.state.settings, d.path(), &extra).spawn().unwrap()).collect();
    // Both processes up before there is work, so they race for it (on a fast
    // machine the first one up used to finish all of it before the second started).
    assert!(
        eventually(300, || async { worker::Entity::find().count(&db).await.unwrap_or(0) == 2 }).await,
        "both workers register"
    );
    let mut ids = Vec::new();
    // With no video, the real runner fails each job permanently on its first
    // attempt: many short jobs for two processes to race for.
    for _ in 0..24 {
        ids.push(new_job(&db, None, None, 3).await.id);
    }
    let all_dead = eventually(600, || async {
        job::Entity::find().filter(job::Column::Status.eq(JobStatus::Failed)).count(&db).await.unwrap_or(0) == 24
    })
    .await;
    for child in &children {
        sigterm(child);
    }
    for child in &mut children {
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status:?}");
    }
    assert!(all_dead, "every job ended FAILED");

    // Per job, the log alternates "leased by W" and the end of that attempt: no
    // second lease while one is held, and every attempt ends before the next.
    let mut leases_by_worker: HashMap<String, usize> = HashMap::new();
    for id in ids {
        let log = job_log::Entity::find()
            .filter(job_log::Column::JobId.eq(id))
            .order_by_asc(job_log::Column::Id)
            .all(&db)
            .await
            .unwrap();
        let mut holder: Option<String> = None;
        let mut leases = 0;
        for line in &log {
            if let Some(pos) = line.message.find(" leased by ") {
                assert!(holder.is_none(), "job {id} leased while held by {holder:?}: {log:#?}");
                let who = line.message[pos + " leased by ".len()..].to_string();
                *leases_by_worker.entry(who.clone()).or_default() += 1;
                holder = Some(who);
                leases += 1;
            } else if line.message.contains("failed:")
                || line.message.starts_with("failed (")
                || line.message.contains("lost:")
                || line.message.starts_with("released")
            {
                assert!(holder.is_some(), "job {id}: an attempt ended that was not leased: {log:#?}");
                holder = None;
            }
        }
        assert_eq!(leases, 1, "job {id} ran once: {log:#?}");
        assert!(holder.is_none());
    }
    assert_eq!(leases_by_worker.values().sum::<usize>(), 24);
    eprintln!("leases per worker: {leases_by_worker:?}");
}

/// The transcode fixture clip (scripts/make-fixtures.sh), generated once.
pub(crate) fn fixture_clip() -> Vec<u8> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-fixtures.sh");
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("bash").arg(&script).arg(dir.path()).status().unwrap();
    assert!(status.success(), "make-fixtures.sh failed");
    std::fs::read(dir.path().join("clip_720p.mp4")).unwrap()
}

#[actix_web::test]
async fn a_worker_killed_mid_encode_loses_its_job_to_another_that_finishes_it_once() {
    if !postgres_only("a_worker_killed_mid_encode_loses_its_job_to_another_that_finishes_it_once") {
        return;
    }
    let app = shared_app().await;
    let db = app.state.db.clone();
    let owner = app.create_user_with_role(entities::Role::User).await;
    let owner_id = Uuid::parse_str(&owner.id).unwrap();
    let video_id = Uuid::now_v7();
    let key = reelhouse::storage::layout::source(owner_id, video_id);
    let clip = fixture_clip();
    let size = clip.len() as i64;
    app.state.store.put_bytes(&key, clip.into(), Some("video/mp4")).await.unwrap();
    let now = Utc::now();
    video::ActiveModel {
        id: Set(video_id),
        owner_id: Set(owner_id),
        title: Set("kill -9".into()),
        description: Set(String::new()),
        tags: Set(video::Tags(vec![])),
        visibility: Set(Visibility::Private),
        status: Set(VideoStatus::Processing),
        source_key: Set(Some(key)),
        source_size_bytes: Set(Some(size)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    let id = new_job(&db, Some(video_id), Some(owner_id), 3).await.id;
    let extra = [("REELHOUSE__JOBS__LEASE_SECS", "3"), ("REELHOUSE__JOBS__HEARTBEAT_SECS", "1")];
    let dir_a = tempfile::tempdir().unwrap();
    let mut a = worker_command(&app.state.settings, dir_a.path(), &extra).spawn().unwrap();
    // Mid-encode: leased, with progress reported.
    assert!(
        eventually(600, || async {
            job::Entity::find_by_id(id)
                .one(&db)
                .await
                .unwrap()
                .is_some_and(|j| j.status == JobStatus::Running && j.progress.is_some())
        })
        .await,
        "worker A starts encoding"
    );
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut b = worker_command(&app.state.settings, dir_b.path(), &extra).spawn().unwrap();
    let finished = eventually(1800, || async {
        job::Entity::find_by_id(id).one(&db).await.unwrap().is_some_and(|j| j.status == JobStatus::Succeeded)
    })
    .await;
    sigterm(&b);
    b.wait().await.unwrap();
    assert!(finished, "the job is re-leased after the lease and completes");
    let row = job::Entity::find_by_id(id).one(&db).await.unwrap().unwrap();
    assert_eq!(row.attempts, 2);
    let v = video::Entity::find_by_id(video_id).one(&db).await.unwrap().unwrap();
    assert_eq!(v.status, VideoStatus::Ready);
    let ready = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video_id))
        .filter(event_outbox::Column::Kind.eq("READY"))
        .count(&db)
        .await
        .unwrap();
    assert_eq!(ready, 1, "exactly one READY");
}

#[actix_web::test]
async fn progress_of_a_job_run_by_a_worker_process_reaches_a_subscriber_on_the_api_through_redis() {
    if !postgres_only("progress_of_a_job_run_by_a_worker_process_reaches_a_subscriber_on_the_api_through_redis") {
        return;
    }
    // The API (this test's server) runs no workers; a `reelhouse worker` process
    // runs the job. PROGRESS is never stored, so a PROGRESS seen by the subscriber
    // can only have come from the other process through Redis.
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        crate::uploads::short_s3_prefix(s);
    })
    .await;
    let user = app.register_user().await;
    let video = crate::e2e::create_video(&app, &user, "PRIVATE").await;
    let mut socket = crate::video_events::subscribe(
        &app,
        Some(&user),
        &crate::video_events::progress_query(),
        json!({ "id": video }),
    )
    .await;
    assert_eq!(crate::video_events::next_event(&mut socket).await.unwrap()["snapshot"], true);

    crate::worker_process::upload_landscape_clip(&app, &user, &video).await;

    let redis_url = app.state.settings.redis.url.as_ref().unwrap().expose().to_string();
    let (mut worker, dir) = quick_redis_worker(&app.state.settings, &redis_url);
    let (kinds, _, last) = crate::e2e::watch_until_done(&mut socket).await;
    sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(60), worker.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    assert_eq!(last["kind"], "READY", "{kinds:?}\n{log}");
    assert_eq!(kinds.iter().filter(|k| *k == "READY").count(), 1, "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "PROGRESS"), "live progress crossed processes: {kinds:?}");
    assert!(kinds.iter().any(|k| k == "RENDITION_READY"), "{kinds:?}");
}

/// A `reelhouse worker` process on the test's database, publishing through the Redis
/// at `redis_url` under the test's key prefix, encoding fast (ultrafast, 1 s segments).
/// The directory is its data dir: keep it as long as the process.
pub(crate) fn quick_redis_worker(settings: &Settings, redis_url: &str) -> (tokio::process::Child, tempfile::TempDir) {
    let extra = [
        ("REELHOUSE__REDIS__URL", redis_url),
        ("REELHOUSE__REDIS__KEY_PREFIX", settings.redis.key_prefix.as_str()),
        ("REELHOUSE__MEDIA__SPEED_PRESET", "ultrafast"),
        ("REELHOUSE__MEDIA__SEGMENT_SECONDS", "1"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let child = worker_command(settings, dir.path(), &extra).spawn().unwrap();
    (child, dir)
}

/// Upload the landscape clip to `video` with its presigned PUT ticket and complete
/// it: the video is PROCESSING with its job queued.
pub(crate) async fn upload_landscape_clip(app: &TestApp, user: &crate::helpers::TestUser, video: &str) {
    let clip = std::fs::read(crate::runner::landscape_clip()).unwrap();
    let ticket = crate::e2e::create_upload(app, user, video, clip.len()).await;
    let mut put = app.client.put(ticket["url"].as_str().unwrap()).body(clip);
    for header in ticket["headers"].as_array().unwrap() {
        put = put.header(header["name"].as_str().unwrap(), header["value"].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let body = crate::e2e::gql(
        app,
        user,
        "mutation($id: ID!) { completeUpload(id: $id) { status } }",
        json!({ "id": ticket["id"] }),
    )
    .await;
    assert_eq!(body["data"]["completeUpload"]["status"], "PROCESSING", "{body}");
}
