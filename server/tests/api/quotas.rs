//! Quotas count what is stored (source plus every output), and a daily processing
//! budget holds back one user's jobs without stopping anyone else's.

use entities::VideoStatus;
use reelhouse::jobs::queue;
use reelhouse::jobs::runner::{JobError, JobOutput};
use reelhouse::jobs::{enqueue, NewJob, DEFAULT_PRIORITY};
use reelhouse::repo::{usage, videos as repo_videos};
use reelhouse::storage::layout;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::spawn_app_with;
use crate::media::fixture;
use crate::runner::harness;

/// The source's size as completion records it.
async fn with_size(h: &crate::runner::Harness, video: entities::video::Model, size: u64) -> entities::video::Model {
    use sea_orm::{ActiveModelTrait, Set};
    entities::video::ActiveModel { id: Set(video.id), source_size_bytes: Set(Some(size as i64)), ..Default::default() }
        .update(&h.app.state.db)
        .await
        .unwrap()
}

#[actix_web::test]
async fn outputs_count_against_the_quota_and_a_transcode_over_it_fails_typed_leaving_nothing() {
    let source = std::fs::read(fixture("clip_720p.mp4")).unwrap();
    let source_len = source.len() as u64;
    // Room for the source and a little more: not for a ladder.
    let h = harness(|s| s.uploads.quota_bytes_per_user = source_len + 2_000).await;
    let video = with_size(&h, h.video_with_source(source.clone()).await, source_len).await;
    let job = h.transcode_job(&video, serde_json::Value::Null).await;
    let (result, _) = h.run(&job).await;
    match result {
        Err(JobError::Permanent { code, reason }) => {
            assert_eq!(code, reelhouse::jobs::FailureCode::QuotaExceeded);
            assert!(reason.contains("storage quota"), "{reason}");
        }
        other => panic!("expected QUOTA_EXCEEDED, got {other:?}"),
    }
    assert!(h.scratch_is_empty());
    // Nothing of the refused transcode stays in storage or in the catalogue.
    assert_eq!(h.leftover_outputs(video.id).await, 0, "the refused run's version is removed");
    assert!(!h.exists(&layout::Outputs::new(h.owner, video.id, None).poster()).await);
    assert!(h.renditions(video.id).await.is_empty());
    let used = repo_videos::storage_used_bytes(&h.app.state.db, h.owner).await.unwrap();
    assert_eq!(used, source_len as i64, "only the source is counted");

    // With room, the outputs are recorded on the video and counted for the owner.
    let h = harness(|s| s.uploads.quota_bytes_per_user = 1 << 40).await;
    let video = with_size(&h, h.video_with_source(source).await, source_len).await;
    let job = h.transcode_job(&video, serde_json::Value::Null).await;
    let (result, _) = h.run(&job).await;
    let output = result.unwrap();
    let JobOutput::Transcoded(out) = &output else { panic!("not a transcode") };
    assert!(out.output_bytes > 10_000, "{}", out.output_bytes);
    h.apply_success(&job, &output).await;
    let stored = h.video(video.id).await;
    assert_eq!(stored.status, VideoStatus::Ready);
    assert_eq!(stored.output_bytes, out.output_bytes as i64);
    let used = repo_videos::storage_used_bytes(&h.app.state.db, h.owner).await.unwrap();
    assert_eq!(used, source_len as i64 + stored.output_bytes);
}

#[actix_web::test]
async fn an_owner_over_the_daily_processing_budget_waits_while_others_run() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.jobs.processing_budget_secs_per_day = 60;
    })
    .await;
    let db = app.state.db.clone();
    let heavy = app.create_user_with_role(entities::Role::User).await;
    let light = app.create_user_with_role(entities::Role::User).await;
    let heavy_id = Uuid::parse_str(&heavy.id).unwrap();
    let light_id = Uuid::parse_str(&light.id).unwrap();
    let job_of = |owner: Uuid, priority: i32| NewJob {
        kind: entities::JobKind::DeleteObjects,
        video_id: None,
        owner_id: Some(owner),
        priority,
        payload: json!({ "prefix": format!("users/{owner}/nothing/") }),
        max_attempts: 3,
    };
    // The heavy user's job would run first (higher priority) were it not for the budget.
    let held = enqueue(&db, job_of(heavy_id, DEFAULT_PRIORITY + 10)).await.unwrap();
    let other = enqueue(&db, job_of(light_id, DEFAULT_PRIORITY)).await.unwrap();
    usage::add_processing_seconds(&db, heavy_id, 45.0).await.unwrap();
    usage::add_processing_seconds(&db, heavy_id, 30.0).await.unwrap();
    assert_eq!(usage::processing_seconds_today(&db, heavy_id).await.unwrap(), 75.0);

    let lease = std::time::Duration::from_secs(30);
    let first = queue::lease(&db, "w1", lease, &app.state.settings.jobs).await.unwrap().expect("a job");
    assert_eq!(first.job.id, other.id, "the owner over budget is passed over");
    assert!(queue::lease(&db, "w1", lease, &app.state.settings.jobs).await.unwrap().is_none());

    // The wait is visible to its owner.
    let (status, body) = app
        .graphql_as(
            &heavy.bearer(),
            "query($id: ID!) { job(id: $id) { status waitingFor } me { processingSecondsToday processingBudgetSecondsPerDay } }",
            json!({ "id": held.id.to_string() }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["job"]["status"], "QUEUED", "{body}");
    assert_eq!(body["data"]["job"]["waitingFor"], "PROCESSING_BUDGET", "{body}");
    assert_eq!(body["data"]["me"]["processingSecondsToday"], 75.0, "{body}");
    assert_eq!(body["data"]["me"]["processingBudgetSecondsPerDay"], 60, "{body}");
}

#[actix_web::test]
async fn every_attempt_is_charged_to_its_owner() {
    let app = spawn_app_with(|s| s.workers.concurrency = Some(1)).await;
    let user = app.create_user_with_role(entities::Role::User).await;
    let owner = Uuid::parse_str(&user.id).unwrap();
    enqueue(
        &app.state.db,
        NewJob {
            kind: entities::JobKind::DeleteObjects,
            video_id: None,
            owner_id: Some(owner),
            priority: DEFAULT_PRIORITY,
            payload: json!({ "prefix": format!("users/{owner}/nothing/") }),
            max_attempts: 3,
        },
    )
    .await
    .unwrap();
    let db = app.state.db.clone();
    let charged = crate::helpers::eventually(100, || {
        let db = db.clone();
        async move { usage::processing_seconds_today(&db, owner).await.unwrap() > 0.0 }
    })
    .await;
    assert!(charged, "the embedded worker recorded no processing time");
}
