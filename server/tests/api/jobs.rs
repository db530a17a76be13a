//! The durable job queue (directly against the database), the embedded worker
//! runtime, and the jobs GraphQL API. Runs on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use entities::{job, job_log, video, worker, JobKind, JobStatus, Role, VideoStatus, Visibility};
use reelhouse::events::Publisher;
use reelhouse::jobs::queue::{self, QueueError};
use reelhouse::jobs::runner::{JobError, JobOutput};
use reelhouse::jobs::{enqueue, NewJob, DEFAULT_PRIORITY};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{error_code, eventually, spawn_app_with, TestApp};

const LEASE: Duration = Duration::from_secs(30);

/// A server whose in-process scheduler does not touch the queue.
async fn queue_app() -> TestApp {
    spawn_app_with(|s| {
        s.workers.embedded = false;
        // The process's own lease sweeper must not race the sweeps these tests make.
        s.jobs.sweep_interval_secs = 3600;
        s.jobs.backoff_base_secs = 1;
        s.jobs.backoff_max_secs = 600;
    })
    .await
}

async fn insert_video(db: &DatabaseConnection, owner: Uuid, with_source: bool) -> video::Model {
    let now = Utc::now();
    video::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(owner),
        title: Set("clip".into()),
        description: Set(String::new()),
        tags: Set(video::Tags(vec![])),
        visibility: Set(Visibility::Private),
        status: Set(if with_source { VideoStatus::Ready } else { VideoStatus::Draft }),
        source_key: Set(with_source.then(|| format!("videos/{owner}/source"))),
        source_size_bytes: Set(with_source.then_some(1000)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
}

async fn new_job(
    db: &DatabaseConnection,
    owner: Option<Uuid>,
    video: Option<Uuid>,
    priority: i32,
    max: i32,
) -> job::Model {
    enqueue(
        db,
        NewJob {
            kind: JobKind::Transcode,
            video_id: video,
            owner_id: owner,
            priority,
            payload: json!({ "preset": "MEDIUM" }),
            max_attempts: max,
        },
    )
    .await
    .unwrap()
}

async fn reload(db: &DatabaseConnection, id: Uuid) -> job::Model {
    job::Entity::find_by_id(id).one(db).await.unwrap().unwrap()
}

async fn log_messages(db: &DatabaseConnection, id: Uuid) -> Vec<String> {
    job_log::Entity::find()
        .filter(job_log::Column::JobId.eq(id))
        .order_by_asc(job_log::Column::Id)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect()
}

/// Make a backed-off job runnable now (instead of waiting out its back-off).
async fn run_now(db: &DatabaseConnection, id: Uuid) {
    job::ActiveModel { id: Set(id), run_after: Set(Utc::now() - chrono::Duration::seconds(1)), ..Default::default() }
        .update(db)
        .await
        .unwrap();
}

async fn user_id(app: &TestApp, role: Role) -> (crate::helpers::TestUser, Uuid) {
    let user = app.create_user_with_role(role).await;
    let id = Uuid::parse_str(&user.id).unwrap();
    (user, id)
}

#[actix_web::test]
async fn concurrent_leasers_never_get_the_same_job() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let mut ids = HashSet::new();
    for _ in 0..12 {
        ids.insert(new_job(&db, None, None, DEFAULT_PRIORITY, 3).await.id);
    }
    let settings = app.state.settings.clone();
    let mut tasks = Vec::new();
    for n in 0..20 {
        let db = db.clone();
        let settings = settings.clone();
        tasks.push(tokio::spawn(async move {
            queue::lease(&db, &format!("leaser-{n}"), LEASE, &settings.jobs).await.unwrap()
        }));
    }
    let mut leased = Vec::new();
    for task in tasks {
        if let Some(job) = task.await.unwrap() {
            leased.push(job);
        }
    }
    let distinct: HashSet<Uuid> = leased.iter().map(|l| l.job.id).collect();
    assert_eq!(distinct.len(), leased.len(), "a job was leased twice");
    assert_eq!(distinct, ids, "every job leased exactly once");
    let tokens: HashSet<Uuid> = leased.iter().map(|l| l.token).collect();
    assert_eq!(tokens.len(), leased.len());
    for l in &leased {
        let row = reload(&db, l.job.id).await;
        assert_eq!(row.status, JobStatus::Running);
        assert_eq!(row.attempts, 1);
        assert_eq!(row.lease_token, Some(l.token));
        assert!(row.lease_expires_at.unwrap() > Utc::now());
    }
    assert!(queue::lease(&db, "late", LEASE, &settings.jobs).await.unwrap().is_none());
}

#[actix_web::test]
async fn priority_first_then_fair_across_owners() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let (_, a) = user_id(&app, Role::User).await;
    let (_, b) = user_id(&app, Role::User).await;
    let mut a_jobs = Vec::new();
    for _ in 0..20 {
        a_jobs.push(new_job(&db, Some(a), None, DEFAULT_PRIORITY, 3).await.id);
    }
    let b_job = new_job(&db, Some(b), None, DEFAULT_PRIORITY, 3).await.id;
    let urgent = new_job(&db, Some(a), None, DEFAULT_PRIORITY + 10, 3).await.id;

    let first = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(first.job.id, urgent, "higher priority first");
    let second = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(second.job.id, b_job, "B's one job is not starved by A's twenty");
    // With nothing running, the owner served longest ago goes first: finish both,
    // then a new B job still comes before A's backlog.
    let output = JobOutput::ObjectsDeleted { count: 0 };
    let publisher = Publisher::default();
    queue::complete(&db, &publisher, &settings.jobs, first.job.id, first.token, &output).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    queue::complete(&db, &publisher, &settings.jobs, second.job.id, second.token, &output).await.unwrap();
    let third = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(third.job.id, a_jobs[0], "then A's oldest");
    let b_again = new_job(&db, Some(b), None, DEFAULT_PRIORITY, 3).await.id;
    let fourth = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(fourth.job.id, b_again, "A runs one, so B's new job goes next");
}

#[actix_web::test]
async fn heartbeat_keeps_a_long_job_from_being_swept() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let publisher = Publisher::default();
    let id = new_job(&db, None, None, DEFAULT_PRIORITY, 3).await.id;
    let short = Duration::from_secs(3);
    let leased = queue::lease(&db, "w", short, &settings.jobs).await.unwrap().unwrap();
    // Twelve renewals 500 ms apart outlive the 3 s lease twice over.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = queue::heartbeat(&db, id, leased.token, short).await.unwrap();
        assert!(state.owned);
        assert!(!state.cancel_requested);
        assert_eq!(queue::sweep_expired(&db, &publisher, &settings.jobs).await.unwrap(), 0);
    }
    let row = reload(&db, id).await;
    assert_eq!(row.status, JobStatus::Running);
    assert_eq!(row.lease_token, Some(leased.token));
    assert_eq!(row.attempts, 1);
}

#[actix_web::test]
async fn expired_lease_is_swept_re_leased_and_the_stale_token_is_refused() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let publisher = Publisher::default();
    let id = new_job(&db, None, None, DEFAULT_PRIORITY, 3).await.id;
    let first = queue::lease(&db, "dead-worker", Duration::ZERO, &settings.jobs).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(queue::sweep_expired(&db, &publisher, &settings.jobs).await.unwrap(), 1);
    let row = reload(&db, id).await;
    assert_eq!(row.status, JobStatus::Queued);
    assert_eq!(row.last_error.as_deref(), Some("worker lost (lease expired)"));
    assert_eq!(row.lease_token, None);

    let second = queue::lease(&db, "live-worker", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(second.job.id, id);
    assert_ne!(second.token, first.token);
    assert_eq!(second.job.attempts, 2);

    // The presumed-dead worker comes back and tries to finish: refused, nothing applied.
    let output = JobOutput::ObjectsDeleted { count: 3 };
    let stale = queue::complete(&db, &publisher, &settings.jobs, id, first.token, &output).await;
    assert!(matches!(stale, Err(QueueError::LeaseLost)), "{stale:?}");
    let failed = queue::fail(&db, &publisher, &settings.jobs, id, first.token, &JobError::Cancelled).await;
    assert!(matches!(failed, Err(QueueError::LeaseLost)), "{failed:?}");
    assert!(!queue::heartbeat(&db, id, first.token, LEASE).await.unwrap().owned);
    let row = reload(&db, id).await;
    assert_eq!(row.status, JobStatus::Running);
    assert_eq!(row.lease_token, Some(second.token));
    assert_eq!(row.finished_at, None);
    assert!(!log_messages(&db, id).await.iter().any(|m| m == "succeeded" || m == "cancelled"));

    // The current holder finishes once.
    let done = queue::complete(&db, &publisher, &settings.jobs, id, second.token, &output).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.finished_at.is_some());
    assert_eq!(done.lease_token, None);
    let again = queue::complete(&db, &publisher, &settings.jobs, id, second.token, &output).await;
    assert!(matches!(again, Err(QueueError::LeaseLost)));
    let log = log_messages(&db, id).await;
    assert_eq!(log.iter().filter(|m| *m == "succeeded").count(), 1, "{log:?}");
    assert!(log.iter().any(|m| m.contains("lease of dead-worker expired")), "{log:?}");
}

#[actix_web::test]
async fn retries_back_off_exponentially_with_jitter() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let publisher = Publisher::default();
    let error = JobError::Retryable("storage hiccup".into());

    // One job failing again and again waits longer each time.
    let id = new_job(&db, None, None, DEFAULT_PRIORITY, 6).await.id;
    let mut previous = chrono::Duration::zero();
    for attempt in 1..=5 {
        let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
        assert_eq!(leased.job.attempts, attempt);
        let before = Utc::now();
        let row = queue::fail(&db, &publisher, &settings.jobs, id, leased.token, &error).await.unwrap();
        assert_eq!(row.status, JobStatus::Queued);
        assert_eq!(row.last_error.as_deref(), Some("storage hiccup"));
        let wait = row.run_after - before;
        // Equal jitter: between half and all of base × 2^(attempt-1).
        let ceiling = chrono::Duration::seconds(1 << (attempt - 1));
        assert!(wait <= ceiling + chrono::Duration::milliseconds(100), "attempt {attempt}: {wait}");
        assert!(wait >= ceiling / 2 - chrono::Duration::milliseconds(100), "attempt {attempt}: {wait}");
        assert!(wait >= previous - chrono::Duration::milliseconds(100), "back-off grows: {wait} after {previous}");
        previous = wait;
        if attempt < 5 {
            run_now(&db, id).await;
        }
    }

    // Many jobs failing at once do not all come back at the same instant.
    let mut delays = HashSet::new();
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(new_job(&db, None, None, DEFAULT_PRIORITY + 1, 6).await.id);
    }
    for _ in 0..8 {
        let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
        let before = Utc::now();
        let row = queue::fail(&db, &publisher, &settings.jobs, leased.job.id, leased.token, &error).await.unwrap();
        delays.insert((row.run_after - before).num_milliseconds() / 10);
    }
    assert!(delays.len() > 1, "jitter spreads retries: {delays:?}");
    // Nothing is runnable before its back-off.
    assert!(queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().is_none());
}

#[actix_web::test]
async fn dead_after_max_attempts_then_an_admin_revives_it() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let publisher = Publisher::default();
    let (owner, owner_id) = user_id(&app, Role::User).await;
    let (admin, _) = user_id(&app, Role::Admin).await;
    let video = insert_video(&db, owner_id, true).await;
    let id = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 2).await.id;
    let error = JobError::Retryable("encoder ran out of memory".into());
    for attempt in 1..=2 {
        let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
        let row = queue::fail(&db, &publisher, &settings.jobs, id, leased.token, &error).await.unwrap();
        if attempt == 1 {
            assert_eq!(row.status, JobStatus::Queued);
            run_now(&db, id).await;
        } else {
            assert_eq!(row.status, JobStatus::Dead);
            assert!(row.finished_at.is_some());
        }
    }
    assert!(queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().is_none(), "DEAD is not leased");

    let query = "query($id: ID!) { job(id: $id) { id status attempts maxAttempts error log { at level message } } }";
    let (_, body) = app.graphql_as(&owner.bearer(), query, json!({ "id": id.to_string() })).await;
    let job = &body["data"]["job"];
    assert_eq!(job["status"], "DEAD", "{body}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["maxAttempts"], 2);
    assert_eq!(job["error"], "encoder ran out of memory");
    let log: Vec<String> =
        job["log"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap().into()).collect();
    assert!(log.iter().any(|m| m.contains("no attempts left")), "{log:?}");
    assert_eq!(log.iter().filter(|m| m.contains("leased by a worker")).count(), 2, "owners see no worker ids: {log:?}");
    // Admins see which worker ran each attempt.
    let (_, body) = app.graphql_as(&admin.bearer(), query, json!({ "id": id.to_string() })).await;
    let admin_log = body["data"]["job"]["log"].as_array().unwrap().clone();
    assert_eq!(admin_log.iter().filter(|l| l["message"].as_str().unwrap().ends_with("leased by w")).count(), 2);

    let (_, body) =
        app.graphql_as(&admin.bearer(), "query { jobs(status: DEAD) { edges { node { id } } } }", json!({})).await;
    let dead: Vec<&str> =
        body["data"]["jobs"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap()).collect();
    assert_eq!(dead, vec![id.to_string()], "admins see DEAD jobs");

    let retry = "mutation($id: ID!) { retryJob(id: $id) { id status attempts } }";
    let (_, body) = app.graphql_as(&owner.bearer(), retry, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "only admins revive DEAD jobs: {body}");
    // Not while another transcode of the video is queued.
    let other = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 2).await.id;
    let (_, body) = app.graphql_as(&admin.bearer(), retry, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    queue::cancel(&db, &publisher, &settings.jobs, other).await.unwrap();
    let (_, body) = app.graphql_as(&admin.bearer(), retry, json!({ "id": id.to_string() })).await;
    assert_eq!(body["data"]["retryJob"]["status"], "QUEUED", "{body}");
    assert_eq!(body["data"]["retryJob"]["attempts"], 0);
    let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(leased.job.id, id);
    assert_eq!(leased.job.attempts, 1);
    // A job that is not finished cannot be retried.
    let (_, body) = app.graphql_as(&admin.bearer(), retry, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
}

#[actix_web::test]
async fn cancel_a_queued_and_a_running_job() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let publisher = Publisher::default();
    let (owner, owner_id) = user_id(&app, Role::User).await;
    let video = insert_video(&db, owner_id, true).await;
    let cancel = "mutation($id: ID!) { cancelJob(id: $id) { id status cancelRequested } }";

    let queued = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 3).await.id;
    let (_, body) = app.graphql_as(&owner.bearer(), cancel, json!({ "id": queued.to_string() })).await;
    assert_eq!(body["data"]["cancelJob"]["status"], "CANCELLED", "{body}");
    assert!(queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().is_none(), "a cancelled job is not leased");

    let running = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 3).await.id;
    let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(leased.job.id, running);
    let (_, body) = app.graphql_as(&owner.bearer(), cancel, json!({ "id": running.to_string() })).await;
    assert_eq!(body["data"]["cancelJob"]["status"], "RUNNING", "{body}");
    assert_eq!(body["data"]["cancelJob"]["cancelRequested"], true);
    // The worker learns it on its next check and acknowledges.
    let state = queue::lease_state(&db, running, leased.token).await.unwrap();
    assert!(state.owned && state.cancel_requested);
    assert!(queue::heartbeat(&db, running, leased.token, LEASE).await.unwrap().cancel_requested);
    let row = queue::fail(&db, &publisher, &settings.jobs, running, leased.token, &JobError::Cancelled).await.unwrap();
    assert_eq!(row.status, JobStatus::Cancelled);
    assert!(row.finished_at.is_some());
    // Cancelling a finished job is a conflict; the owner may retry a cancelled one.
    let (_, body) = app.graphql_as(&owner.bearer(), cancel, json!({ "id": running.to_string() })).await;
    assert_eq!(body["data"]["cancelJob"]["status"], "CANCELLED", "cancel is idempotent: {body}");
    let retry = "mutation($id: ID!) { retryJob(id: $id) { status } }";
    let (_, body) = app.graphql_as(&owner.bearer(), retry, json!({ "id": running.to_string() })).await;
    assert_eq!(body["data"]["retryJob"]["status"], "QUEUED", "{body}");
    let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    let output = JobOutput::ObjectsDeleted { count: 0 };
    queue::complete(&db, &publisher, &settings.jobs, running, leased.token, &output).await.unwrap();
    let (_, body) = app.graphql_as(&owner.bearer(), cancel, json!({ "id": running.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
}

#[actix_web::test]
async fn job_api_is_scoped_to_owners_and_admins() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let (owner, owner_id) = user_id(&app, Role::User).await;
    let (stranger, _) = user_id(&app, Role::User).await;
    let (admin, _) = user_id(&app, Role::Admin).await;
    let (viewer, viewer_id) = user_id(&app, Role::Viewer).await;
    let video = insert_video(&db, owner_id, true).await;
    let draft = insert_video(&db, owner_id, false).await;

    let transcode = "mutation($v: ID!, $p: TranscodePreset) { transcode(videoId: $v, preset: $p) { id videoId kind status priority attempts } }";
    let (_, body) = app.graphql_as(&owner.bearer(), transcode, json!({ "v": video.id.to_string(), "p": "HIGH" })).await;
    let job = &body["data"]["transcode"];
    assert_eq!(job["status"], "QUEUED", "{body}");
    assert_eq!(job["kind"], "TRANSCODE");
    assert_eq!(job["videoId"], video.id.to_string());
    let job_id = Uuid::parse_str(job["id"].as_str().unwrap()).unwrap();
    assert_eq!(reload(&db, job_id).await.payload, json!({ "preset": "HIGH", "formats": ["HLS", "MP4"] }));
    let (_, body) = app.graphql_as(&owner.bearer(), transcode, json!({ "v": video.id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "one transcode at a time: {body}");
    let (_, body) = app.graphql_as(&owner.bearer(), transcode, json!({ "v": draft.id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "no source yet: {body}");
    let (_, body) = app.graphql_as(&stranger.bearer(), transcode, json!({ "v": video.id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "a private video is invisible: {body}");
    let viewer_video = insert_video(&db, viewer_id, true).await;
    let (_, body) = app.graphql_as(&viewer.bearer(), transcode, json!({ "v": viewer_video.id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "VIEWER cannot transcode: {body}");
    let (_, body) =
        app.graphql_as(&crate::helpers::Credentials::Anonymous, transcode, json!({ "v": video.id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");

    let one = "query($id: ID!) { job(id: $id) { id status } }";
    let (_, body) = app.graphql_as(&owner.bearer(), one, json!({ "id": job_id.to_string() })).await;
    assert_eq!(body["data"]["job"]["id"], job_id.to_string(), "{body}");
    let (_, body) = app.graphql_as(&admin.bearer(), one, json!({ "id": job_id.to_string() })).await;
    assert_eq!(body["data"]["job"]["id"], job_id.to_string(), "{body}");
    let (_, body) = app.graphql_as(&stranger.bearer(), one, json!({ "id": job_id.to_string() })).await;
    assert!(body["data"]["job"].is_null(), "{body}");
    assert!(body["errors"].is_null(), "{body}");

    let cancel = "mutation($id: ID!) { cancelJob(id: $id) { status } }";
    let (_, body) = app.graphql_as(&stranger.bearer(), cancel, json!({ "id": job_id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    assert_eq!(reload(&db, job_id).await.status, JobStatus::Queued, "the stranger changed nothing");
    let retry = "mutation($id: ID!) { retryJob(id: $id) { status } }";
    let (_, body) = app.graphql_as(&stranger.bearer(), retry, json!({ "id": job_id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");

    // Listing: own jobs only, admins all; keyset pages do not repeat or skip.
    let other_video = insert_video(&db, Uuid::parse_str(&stranger.id).unwrap(), true).await;
    for _ in 0..4 {
        new_job(&db, Uuid::parse_str(&stranger.id).ok(), Some(other_video.id), DEFAULT_PRIORITY, 3).await;
    }
    let list = "query($after: String) { jobs(first: 2, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
    let collect = |app: &TestApp, user: crate::helpers::TestUser| {
        let list = list.to_string();
        let app_url = app.url("/graphql");
        let client = app.client.clone();
        async move {
            let mut ids = Vec::new();
            let mut after = serde_json::Value::Null;
            loop {
                let body: serde_json::Value = client
                    .post(&app_url)
                    .bearer_auth(&user.access_token)
                    .json(&json!({ "query": list, "variables": { "after": after } }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let page = &body["data"]["jobs"];
                for edge in page["edges"].as_array().unwrap_or_else(|| panic!("{body}")) {
                    ids.push(edge["node"]["id"].as_str().unwrap().to_string());
                }
                if page["pageInfo"]["hasNextPage"] != true {
                    break;
                }
                after = page["pageInfo"]["endCursor"].clone();
            }
            ids
        }
    };
    let owner_ids = collect(&app, owner.clone()).await;
    assert_eq!(owner_ids, vec![job_id.to_string()]);
    let stranger_ids = collect(&app, stranger.clone()).await;
    assert_eq!(stranger_ids.len(), 4);
    assert!(!stranger_ids.contains(&job_id.to_string()));
    let admin_ids = collect(&app, admin.clone()).await;
    assert_eq!(admin_ids.len(), 5);
    assert_eq!(admin_ids.iter().collect::<HashSet<_>>().len(), 5, "no repeats across pages");
    let mut sorted = admin_ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(admin_ids, sorted, "newest first, stable");

    // Workers: admins only.
    let workers = "query { workers { id host capacity currentJobs lastSeenAt } }";
    let (_, body) = app.graphql_as(&owner.bearer(), workers, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let (_, body) = app.graphql_as(&admin.bearer(), workers, json!({})).await;
    assert_eq!(body["data"]["workers"], json!([]), "no embedded worker here: {body}");
}

#[actix_web::test]
async fn embedded_workers_fail_a_job_whose_source_is_gone_for_good() {
    // The in-process scheduler leases the job and the real runner finds no source
    // object: a permanent failure (no retries), the video FAILED with the reason.
    let app = spawn_app_with(|s| {
        s.workers.embedded = true;
        s.workers.heartbeat_secs = 1;
        s.jobs.poll_interval_ms = 50;
        s.jobs.sweep_interval_secs = 1;
    })
    .await;
    let db = app.state.db.clone();
    let (admin, _) = user_id(&app, Role::Admin).await;
    let (_, owner_id) = user_id(&app, Role::User).await;
    let mut video = insert_video(&db, owner_id, true).await;
    let mut active: video::ActiveModel = video.clone().into();
    active.status = Set(VideoStatus::Processing);
    video = active.update(&db).await.unwrap();
    let id = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 3).await.id;
    assert!(
        eventually(300, || async { reload(&db, id).await.status == JobStatus::Failed }).await,
        "job ends FAILED: {:?} / {:?}",
        reload(&db, id).await,
        log_messages(&db, id).await
    );
    let row = reload(&db, id).await;
    assert_eq!(row.attempts, 1, "a permanent failure is not retried");
    let reason = row.last_error.clone().unwrap_or_default();
    assert!(!reason.is_empty() && !reason.contains("videos/"), "readable, no storage keys: {reason}");
    let log = log_messages(&db, id).await;
    assert_eq!(log.iter().filter(|m| m.contains("leased by")).count(), 1, "{log:?}");
    let failed = video::Entity::find_by_id(video.id).one(&db).await.unwrap().unwrap();
    assert_eq!(failed.status, VideoStatus::Failed);
    assert!(failed.error.is_some());

    // The attempt is counted by kind and result (just after the row changed).
    let scrape = || async { app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let counted = "reelhouse_job_attempts_total{kind=\"TRANSCODE\",result=\"FAILED\"} 1";
    assert!(eventually(100, || async { scrape().await.lines().any(|l| l == counted) }).await, "{}", scrape().await);
    let metrics = scrape().await;
    assert!(metrics.contains("reelhouse_job_attempt_duration_seconds_count{kind=\"TRANSCODE\"} 1"), "{metrics}");
    // And the failure by its typed code (a permanent one: not RETRYABLE).
    let failures: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("reelhouse_job_failures_total{kind=\"TRANSCODE\"")).collect();
    assert_eq!(failures.len(), 1, "{metrics}");
    assert!(failures[0].ends_with("} 1") && !failures[0].contains("RETRYABLE"), "{failures:?}");

    // The in-process worker is registered and visible to admins.
    let (_, body) = app.graphql_as(&admin.bearer(), "query { workers { id capacity currentJobs } }", json!({})).await;
    let workers = body["data"]["workers"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(workers.len(), 1, "{body}");
    assert_eq!(workers[0]["capacity"], 1);
    assert_eq!(worker::Entity::find().all(&db).await.unwrap().len(), 1);
}

#[actix_web::test]
async fn reported_progress_is_kept_on_the_job_and_log_lines_are_bounded() {
    use reelhouse::events::{ProgressInfo, RenditionProgressInfo};
    use reelhouse::jobs::reporter::QueueReporter;
    use reelhouse::jobs::runner::JobReporter;

    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.jobs.log_max_lines = 5;
    })
    .await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let (owner, owner_id) = user_id(&app, Role::User).await;
    let video = insert_video(&db, owner_id, true).await;
    let id = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 3).await.id;
    let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    let reporter = QueueReporter::start(
        db.clone(),
        Publisher::new(Some(app.state.hubs.event_bus.clone())),
        id,
        Some(video.id),
        leased.token,
        &settings.jobs,
    );
    reporter.progress(ProgressInfo { percent: 5.0, stage: "probing".into(), ..Default::default() });
    reporter.progress(ProgressInfo {
        percent: 42.5,
        stage: "encoding".into(),
        fps: Some(88.0),
        eta_seconds: Some(12.0),
        renditions: vec![RenditionProgressInfo { name: "720p".into(), percent: 40.0, fps: Some(30.0) }],
    });
    for n in 0..10 {
        reporter.log(entities::LogLevel::Warn, format!("warning {n}"));
    }
    assert!(
        eventually(100, || async {
            reload(&db, id).await.progress.is_some_and(|p| p["stage"] == "encoding")
                && log_messages(&db, id).await.last().is_some_and(|m| m == "warning 9")
        })
        .await,
        "progress stored and log written: {:?}",
        reload(&db, id).await.progress
    );
    // The encode rate is a metric too: one sample, the report that carried an fps.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# HELP reelhouse_encode_fps "), "{metrics}");
    assert!(metrics.lines().any(|l| l == "reelhouse_encode_fps_count 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "reelhouse_encode_fps_sum 88"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "reelhouse_encode_fps_bucket{le=\"120\"} 1"), "{metrics}");
    let query = "query($id: ID!) { job(id: $id) { status progress { percent stage fps etaSeconds renditions { name percent } } log { cursor level message dropped } } }";
    let (_, body) = app.graphql_as(&owner.bearer(), query, json!({ "id": id.to_string() })).await;
    let job = &body["data"]["job"];
    assert_eq!(job["status"], "RUNNING", "{body}");
    assert_eq!(
        job["progress"],
        json!({ "percent": 42.5, "stage": "encoding", "fps": 88.0, "etaSeconds": 12.0,
                "renditions": [{ "name": "720p", "percent": 40.0 }] })
    );
    let log: Vec<&str> = job["log"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    // The lease line and ten warnings: the newest 5 are kept, after a marker saying
    // that the 6 before them were dropped.
    assert_eq!(log[1..], ["warning 5", "warning 6", "warning 7", "warning 8", "warning 9"], "the newest 5 lines");
    assert_eq!(job["log"][0]["dropped"], 6, "{body}");
    assert_eq!(job["log"][0]["cursor"], "6", "{body}");
    assert_eq!(job["log"][1]["cursor"], "7", "{body}");
    assert_eq!(job["log"][1]["dropped"], json!(null));
    assert_eq!(job["log"][1]["level"], "WARN");

    // Once the lease is gone, a late report of the old run is not stored.
    queue::fail(&db, &Publisher::default(), &settings.jobs, id, leased.token, &JobError::Cancelled).await.unwrap();
    assert!(!queue::store_progress(&db, id, leased.token, json!({ "percent": 99.0, "stage": "late" })).await.unwrap());
    assert_eq!(reload(&db, id).await.progress.unwrap()["stage"], "encoding");
}

#[actix_web::test]
async fn shutdown_release_refunds_the_attempt_and_the_sweeper_forgets_silent_workers() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let publisher = Publisher::default();
    let id = new_job(&db, None, None, DEFAULT_PRIORITY, 3).await.id;
    let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    let row = queue::release(&db, &settings.jobs, id, leased.token, "worker shutting down").await.unwrap();
    assert_eq!(row.status, JobStatus::Queued);
    assert_eq!(row.attempts, 0, "a shutdown does not use up an attempt");
    assert_eq!(row.lease_token, None);
    assert!(matches!(queue::release(&db, &settings.jobs, id, leased.token, "again").await, Err(QueueError::LeaseLost)));
    let again = queue::lease(&db, "w2", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(again.job.id, id);
    assert_eq!(again.job.attempts, 1);

    // A worker row not seen for three lease periods is removed; a fresh one stays.
    let now = Utc::now();
    let row = |id: Uuid, seen: chrono::DateTime<Utc>| worker::ActiveModel {
        id: Set(id),
        host: Set("h".into()),
        pid: Set(1),
        capacity: Set(1),
        current_jobs: Set(0),
        version: Set("x".into()),
        started_at: Set(seen),
        last_seen_at: Set(seen),
        ..Default::default()
    };
    let (gone, alive) = (Uuid::now_v7(), Uuid::now_v7());
    row(gone, now - chrono::Duration::seconds(settings.jobs.lease_secs as i64 * 3 + 5)).insert(&db).await.unwrap();
    row(alive, now).insert(&db).await.unwrap();
    queue::sweep_expired(&db, &publisher, &settings.jobs).await.unwrap();
    let left: Vec<Uuid> = worker::Entity::find().all(&db).await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(left, vec![alive]);
}

/// Run this process's worker runtime against the app's database with `runner` in
/// place of the transcode runner; send on the returned channel to stop it.
fn start_workers(
    app: &TestApp,
    runner: reelhouse::jobs::scheduler::RunFn,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let deps = reelhouse::worker::WorkerDeps {
        db: app.state.db.clone(),
        store: app.state.store.clone(),
        settings: app.state.settings.clone(),
        publisher: Publisher::new(Some(app.state.hubs.event_bus.clone())),
        scratch_dir: app.data_dir.path().join("scratch"),
        runner: Some(runner),
        mailer: app.state.mailer.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = actix_rt::spawn(async move {
        reelhouse::worker::run_until(deps, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, handle)
}

async fn runtime_app(concurrency: usize) -> TestApp {
    spawn_app_with(move |s| {
        s.workers.embedded = false;
        s.workers.concurrency = Some(concurrency);
        s.workers.heartbeat_secs = 1;
        s.jobs.backoff_base_secs = 0;
        s.jobs.poll_interval_ms = 50;
    })
    .await
}

#[actix_web::test]
async fn the_scheduler_completes_jobs_and_survives_a_panicking_runner() {
    use reelhouse::events::ProgressInfo;
    let app = runtime_app(1).await;
    let db = app.state.db.clone();
    let runner: reelhouse::jobs::scheduler::RunFn = std::sync::Arc::new(|_ctx, job, _cancel, reporter| {
        Box::pin(async move {
            if job.payload["mode"] == "panic" {
                panic!("runner bug");
            }
            reporter.progress(ProgressInfo { percent: 100.0, stage: "uploading".into(), ..Default::default() });
            reporter.log(entities::LogLevel::Info, "all done".into());
            Ok(JobOutput::ObjectsDeleted { count: 7 })
        })
    });
    let panicky = enqueue(
        &db,
        NewJob {
            kind: JobKind::DeleteObjects,
            video_id: None,
            owner_id: None,
            priority: DEFAULT_PRIORITY + 1,
            payload: json!({ "mode": "panic" }),
            max_attempts: 2,
        },
    )
    .await
    .unwrap()
    .id;
    let fine = new_job(&db, None, None, DEFAULT_PRIORITY, 2).await.id;
    let (stop, handle) = start_workers(&app, runner);
    assert!(
        eventually(300, || async {
            reload(&db, panicky).await.status == JobStatus::Dead
                && reload(&db, fine).await.status == JobStatus::Succeeded
        })
        .await,
        "{:?} {:?}",
        reload(&db, panicky).await,
        reload(&db, fine).await
    );
    let dead = reload(&db, panicky).await;
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.last_error.as_deref(), Some("the job runner crashed"));
    let done = reload(&db, fine).await;
    assert_eq!(done.attempts, 1);
    assert!(
        eventually(50, || async { log_messages(&db, fine).await.contains(&"all done".to_string()) }).await,
        "the runner's log line is kept"
    );
    // The worker is still serving after the panics.
    let later = new_job(&db, None, None, DEFAULT_PRIORITY, 2).await.id;
    assert!(eventually(300, || async { reload(&db, later).await.status == JobStatus::Succeeded }).await);
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(worker::Entity::find().all(&db).await.unwrap().len(), 0, "deregistered");
}

#[actix_web::test]
async fn cancel_stops_a_running_job_and_shutdown_requeues_the_rest() {
    use reelhouse::events::ProgressInfo;
    use std::sync::atomic::Ordering;
    let app = runtime_app(2).await;
    let db = app.state.db.clone();
    let (owner, owner_id) = user_id(&app, Role::User).await;
    let video = insert_video(&db, owner_id, true).await;
    // A long pipeline: runs until told to stop.
    let runner: reelhouse::jobs::scheduler::RunFn = std::sync::Arc::new(|_ctx, _job, cancel, reporter| {
        Box::pin(async move {
            let mut percent = 0.0;
            loop {
                if cancel.load(Ordering::SeqCst) {
                    return Err(JobError::Cancelled);
                }
                percent = f64::min(percent + 0.1, 99.0);
                reporter.progress(ProgressInfo { percent, stage: "encoding".into(), ..Default::default() });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let first = new_job(&db, Some(owner_id), Some(video.id), DEFAULT_PRIORITY, 3).await.id;
    let second = new_job(&db, None, None, DEFAULT_PRIORITY, 3).await.id;
    let (stop, handle) = start_workers(&app, runner);
    assert!(
        eventually(300, || async {
            let (a, b) = (reload(&db, first).await, reload(&db, second).await);
            a.status == JobStatus::Running && b.status == JobStatus::Running && a.progress.is_some()
        })
        .await,
        "both jobs run"
    );
    assert!(
        eventually(100, || async {
            worker::Entity::find().one(&db).await.unwrap().is_some_and(|w| w.current_jobs == 2)
        })
        .await,
        "the worker's heartbeat reports its running jobs"
    );
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation($id: ID!) { cancelJob(id: $id) { status cancelRequested } }",
            json!({ "id": first.to_string() }),
        )
        .await;
    assert_eq!(body["data"]["cancelJob"]["cancelRequested"], true, "{body}");
    assert!(
        eventually(100, || async { reload(&db, first).await.status == JobStatus::Cancelled }).await,
        "the running pipeline stops and the cancel is acknowledged"
    );
    assert_eq!(reload(&db, second).await.status, JobStatus::Running, "the other job runs on");
    let workers = worker::Entity::find().all(&db).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].capacity, 2);

    // Shutdown: no new leases; the job that does not finish within the drain
    // timeout is stopped and goes back to the queue without losing an attempt.
    stop.send(()).unwrap();
    handle.await.unwrap();
    let row = reload(&db, second).await;
    assert_eq!(row.status, JobStatus::Queued, "{row:?}");
    assert_eq!(row.attempts, 0);
    assert_eq!(row.lease_token, None);
    assert!(log_messages(&db, second).await.iter().any(|m| m == "released: worker shutting down"));
    assert_eq!(worker::Entity::find().all(&db).await.unwrap().len(), 0, "deregistered");
}

/// `setJobPriority` (admins): the queue orders by the new priority at once; owners
/// and moderators may not; finished jobs and out-of-range values are refused typed;
/// each change is in the job's log and the audit log.
#[actix_web::test]
async fn admins_reorder_the_queue_with_set_job_priority() {
    let app = queue_app().await;
    let db = app.state.db.clone();
    let settings = app.state.settings.clone();
    let (owner, owner_id) = user_id(&app, Role::User).await;
    let (moderator, _) = user_id(&app, Role::Moderator).await;
    let (admin, admin_id) = user_id(&app, Role::Admin).await;
    let first = new_job(&db, Some(owner_id), None, DEFAULT_PRIORITY, 3).await.id;
    let last = new_job(&db, Some(owner_id), None, DEFAULT_PRIORITY, 3).await.id;
    let mutation = "mutation($id: ID!, $p: Int!) { setJobPriority(id: $id, priority: $p) { id priority status } }";

    for caller in [&owner, &moderator] {
        let (_, body) = app.graphql_as(&caller.bearer(), mutation, json!({ "id": last, "p": 50 })).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    }
    assert_eq!(reload(&db, last).await.priority, DEFAULT_PRIORITY);

    let (_, body) = app.graphql_as(&admin.bearer(), mutation, json!({ "id": last, "p": 50 })).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["setJobPriority"]["priority"], 50, "{body}");
    // Leases see it at once: the later job now runs first.
    let leased = queue::lease(&db, "w", LEASE, &settings.jobs).await.unwrap().unwrap();
    assert_eq!(leased.job.id, last);
    assert!(log_messages(&db, last).await.iter().any(|m| m == "priority set to 50"));
    let (_, body) = app
        .graphql_as(
            &admin.bearer(),
            "query { auditLog(first: 10, filter: { action: JOB_PRIORITY_CHANGED }) { edges { node { actor { id } targetId } } } }",
            json!({}),
        )
        .await;
    let edges = body["data"]["auditLog"]["edges"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(edges.len(), 1, "{body}");
    assert_eq!(edges[0]["node"]["actor"]["id"], admin_id.to_string(), "{body}");
    assert_eq!(edges[0]["node"]["targetId"], last.to_string(), "{body}");

    // Out of range: BAD_USER_INPUT, nothing changed.
    let (_, body) = app.graphql_as(&admin.bearer(), mutation, json!({ "id": first, "p": 100_000 })).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    assert_eq!(reload(&db, first).await.priority, DEFAULT_PRIORITY);
    // A finished job: CONFLICT.
    let output = JobOutput::ObjectsDeleted { count: 0 };
    queue::complete(&db, &Publisher::default(), &settings.jobs, leased.job.id, leased.token, &output).await.unwrap();
    let (_, body) = app.graphql_as(&admin.bearer(), mutation, json!({ "id": last, "p": 1 })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    // An unknown job: NOT_FOUND.
    let (_, body) = app.graphql_as(&admin.bearer(), mutation, json!({ "id": Uuid::now_v7(), "p": 1 })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
}
