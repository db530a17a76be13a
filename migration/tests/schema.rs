//! The whole migration chain against real databases: SQLite in memory and a fresh
//! PostgreSQL database per test. Rows go in and come out through the entities, so
//! the entities and the migrations are checked against each other.
// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use entities::prelude::*;
use entities::{
    account_token, api_key, event_outbox, job, job_log, moderation_action, refresh_token, refresh_token_family,
    rendition, totp_recovery_code, upload, user, video, video_daily_stat, video_view, worker, AccountTokenPurpose,
    JobKind, JobStatus, LogLevel, ModerationActionKind, RenditionStatus, Role, UploadMethod, UploadStatus, VideoStatus,
    Visibility,
};
use migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, IntoActiveModel, Iterable, ModelTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    SqlErr, Statement,
};
use serde_json::json;
use uuid::Uuid;

const TABLES: [&str; 22] = [
    "users",
    "refresh_token_families",
    "refresh_tokens",
    "api_keys",
    "videos",
    "uploads",
    "renditions",
    "jobs",
    "job_logs",
    "events_outbox",
    "workers",
    "video_views",
    "video_daily_stats",
    "moderation_actions",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "account_tokens",
    "totp_recovery_codes",
    "worker_tokens",
    "batches",
    "batch_jobs",
];

/// PostgreSQL keeps microseconds; compare what the database can hold.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn assert_unique_violation<T: std::fmt::Debug>(result: Result<T, DbErr>, what: &str) {
    match result {
        Err(err) => assert!(
            matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
            "{what}: expected a unique violation, got {err:?}"
        ),
        Ok(row) => panic!("{what}: duplicate accepted: {row:?}"),
    }
}

fn assert_foreign_key_violation<T: std::fmt::Debug>(result: Result<T, DbErr>, what: &str) {
    match result {
        Err(err) => assert!(
            matches!(err.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))),
            "{what}: expected a foreign key violation, got {err:?}"
        ),
        Ok(row) => panic!("{what}: dangling reference accepted: {row:?}"),
    }
}

async fn assert_tables(db: &DatabaseConnection, present: bool) {
    let manager = SchemaManager::new(db);
    for table in TABLES {
        assert_eq!(
            manager.has_table(table).await.unwrap(),
            present,
            "table {table} should {}exist",
            if present { "" } else { "not " }
        );
    }
}

fn sample_user(email: &str, role: Role) -> user::Model {
    let at = now();
    user::Model {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        display_name: "Ada".to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role,
        disabled: false,
        storage_quota_bytes: Some(5 * 1024 * 1024 * 1024),
        email_verified_at: Some(at),
        processing_budget_secs_per_day: Some(3600),
        deleted_at: Some(at),
        created_at: at,
        updated_at: at,
        totp_secret: Some(format!("enc1:kid:{}", "A".repeat(150))),
        totp_enabled_at: Some(at),
        totp_last_step: Some(59_000_000_000),
    }
}

/// Inserts `model` as given (every column set) and returns what the insert reported.
async fn insert_user(db: &DatabaseConnection, model: &user::Model) -> Result<user::Model, DbErr> {
    model.clone().into_active_model().reset_all().insert(db).await
}

async fn exercise_schema(db: &DatabaseConnection) {
    Migrator::up(db, None).await.unwrap();
    assert!(Migrator::get_pending_migrations(db).await.unwrap().is_empty());
    assert_tables(db, true).await;
    // A second `up` has nothing to do and must not fail.
    Migrator::up(db, None).await.unwrap();

    // users: every column round-trips, the role is stored as its public spelling,
    // and the email is unique.
    let ada = sample_user("ada@example.com", Role::Moderator);
    assert_eq!(insert_user(db, &ada).await.unwrap(), ada);
    assert_eq!(User::find_by_id(ada.id).one(db).await.unwrap(), Some(ada.clone()));
    let stored_role: Option<String> =
        User::find_by_id(ada.id).select_only().column(user::Column::Role).into_tuple().one(db).await.unwrap();
    assert_eq!(stored_role.as_deref(), Some("MODERATOR"));
    assert_unique_violation(
        insert_user(db, &sample_user("ada@example.com", Role::User)).await,
        "second user with the same email",
    );
    let viewer = sample_user("viewer@example.com", Role::Viewer);
    let viewer = user::ActiveModel { storage_quota_bytes: Set(None), ..viewer.into_active_model().reset_all() }
        .insert(db)
        .await
        .unwrap();
    assert_eq!(viewer.role, Role::Viewer);
    assert_eq!(viewer.storage_quota_bytes, None);
    let admins = User::find().filter(user::Column::Role.eq(Role::Admin)).all(db).await.unwrap();
    assert!(admins.is_empty());

    // refresh tokens: rotation links one token to the next.
    let family = refresh_token_family::Model {
        id: Uuid::now_v7(),
        user_id: ada.id,
        created_at: now(),
        last_used_at: now(),
        revoked_at: None,
        revoked_reason: None,
        user_agent: Some("curl/8".to_owned()),
        ip: Some("2001:db8::1".to_owned()),
    };
    assert_eq!(family.clone().into_active_model().reset_all().insert(db).await.unwrap(), family);
    let first = refresh_token::Model {
        id: Uuid::now_v7(),
        family_id: family.id,
        token_hash: "hash-one".to_owned(),
        created_at: now(),
        expires_at: now() + chrono::Duration::days(30),
        rotated_at: None,
        replaced_by: None,
    };
    first.clone().into_active_model().reset_all().insert(db).await.unwrap();
    let second = refresh_token::Model { id: Uuid::now_v7(), token_hash: "hash-two".to_owned(), ..first.clone() };
    second.clone().into_active_model().reset_all().insert(db).await.unwrap();
    let rotated_at = now();
    let mut rotate = first.clone().into_active_model();
    rotate.rotated_at = Set(Some(rotated_at));
    rotate.replaced_by = Set(Some(second.id));
    let first = rotate.update(db).await.unwrap();
    assert_eq!(RefreshToken::find_by_id(first.id).one(db).await.unwrap().unwrap().replaced_by, Some(second.id));
    assert_eq!(first.rotated_at, Some(rotated_at));
    assert_unique_violation(
        refresh_token::Model { id: Uuid::now_v7(), ..second.clone() }.into_active_model().reset_all().insert(db).await,
        "second refresh token with the same hash",
    );

    // api keys
    let key = api_key::Model {
        id: Uuid::now_v7(),
        user_id: ada.id,
        name: "ci".to_owned(),
        role: Role::User,
        prefix: "rh_live_ab12".to_owned(),
        secret_hash: "secret-hash".to_owned(),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    assert_eq!(key.clone().into_active_model().reset_all().insert(db).await.unwrap(), key);
    assert_unique_violation(
        api_key::Model { id: Uuid::now_v7(), ..key.clone() }.into_active_model().reset_all().insert(db).await,
        "second api key with the same secret hash",
    );

    // account tokens: every column round-trips, the purpose is stored as its public
    // spelling, the hash is unique, and the user must exist.
    let token = account_token::Model {
        id: Uuid::now_v7(),
        user_id: ada.id,
        purpose: AccountTokenPurpose::ChangeEmail,
        token_hash: "ab".repeat(32),
        new_email: Some("ada@new.example".to_owned()),
        expires_at: now(),
        used_at: Some(now()),
        created_at: now(),
    };
    assert_eq!(token.clone().into_active_model().reset_all().insert(db).await.unwrap(), token);
    let stored_purpose: Option<String> = AccountToken::find_by_id(token.id)
        .select_only()
        .column(account_token::Column::Purpose)
        .into_tuple()
        .one(db)
        .await
        .unwrap();
    assert_eq!(stored_purpose.as_deref(), Some("CHANGE_EMAIL"));
    assert_unique_violation(
        account_token::Model { id: Uuid::now_v7(), ..token.clone() }.into_active_model().reset_all().insert(db).await,
        "second account token with the same hash",
    );
    assert_foreign_key_violation(
        account_token::Model {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            token_hash: "cd".repeat(32),
            ..token.clone()
        }
        .into_active_model()
        .reset_all()
        .insert(db)
        .await,
        "account token of a missing user",
    );

    // TOTP recovery codes: hashes are unique.
    let recovery = totp_recovery_code::Model {
        id: Uuid::now_v7(),
        user_id: ada.id,
        code_hash: "ab".repeat(32),
        used_at: Some(now()),
        created_at: now(),
    };
    assert_eq!(recovery.clone().into_active_model().reset_all().insert(db).await.unwrap(), recovery);
    assert_unique_violation(
        totp_recovery_code::Model { id: Uuid::now_v7(), used_at: None, ..recovery.clone() }
            .into_active_model()
            .reset_all()
            .insert(db)
            .await,
        "second recovery code with the same hash",
    );

    // videos: tags are a JSON array of strings in the database.
    let at = now();
    let clip = video::Model {
        id: Uuid::now_v7(),
        owner_id: ada.id,
        title: "Cats in 4K".to_owned(),
        description: "A long\ndescription".to_owned(),
        tags: video::Tags(vec!["cats".to_owned(), "4k".to_owned(), "été".to_owned()]),
        visibility: Visibility::Unlisted,
        status: VideoStatus::Processing,
        error: None,
        duration_ms: Some(12_345),
        width: Some(3840),
        height: Some(2160),
        frame_rate: Some(29.97),
        rotation: Some(90),
        has_audio: Some(true),
        container: Some("mp4".to_owned()),
        video_codec: Some("h264".to_owned()),
        audio_codec: Some("aac".to_owned()),
        source_key: Some("users/u/videos/v/source".to_owned()),
        source_size_bytes: Some(9_000_000_000),
        hidden_at: None,
        hidden_reason: None,
        created_at: at,
        updated_at: at,
        deleted_at: None,
        event_seq: 0,
        output_bytes: 123_456_789,
        output_version: Some("v0123456789".to_owned()),
        downloads: Some(video::Downloads(vec![video::Download {
            format: "WEBM".to_owned(),
            key: "users/u/videos/v/out/v0123456789/mp4/video.webm".to_owned(),
            width: 1280,
            height: 720,
            bytes: 42,
        }])),
    };
    assert_eq!(clip.clone().into_active_model().reset_all().insert(db).await.unwrap(), clip);
    assert_eq!(Video::find_by_id(clip.id).one(db).await.unwrap(), Some(clip.clone()));
    let raw: Option<(serde_json::Value, String, String)> = Video::find_by_id(clip.id)
        .select_only()
        .columns([video::Column::Tags, video::Column::Visibility, video::Column::Status])
        .into_tuple()
        .one(db)
        .await
        .unwrap();
    assert_eq!(raw, Some((json!(["cats", "4k", "été"]), "UNLISTED".to_owned(), "PROCESSING".to_owned())));
    let processing = Video::find()
        .filter(video::Column::Status.eq(VideoStatus::Processing))
        .filter(video::Column::Visibility.ne(Visibility::Private))
        .all(db)
        .await
        .unwrap();
    assert_eq!(processing, vec![clip.clone()]);

    // uploads
    let at = now();
    let tus = upload::Model {
        id: Uuid::now_v7(),
        video_id: clip.id,
        user_id: ada.id,
        method: UploadMethod::Tus,
        status: UploadStatus::Open,
        filename: "cats.mp4".to_owned(),
        content_type: "video/mp4".to_owned(),
        declared_size: 9_000_000_000,
        checksum_sha256: Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned()),
        offset_bytes: 5_242_880,
        object_key: "users/u/videos/v/source".to_owned(),
        s3_upload_id: Some("mpu-1".to_owned()),
        parts: Some(json!([{ "number": 1, "etag": "\"abc\"" }])),
        expires_at: at + chrono::Duration::hours(24),
        failure_reason: None,
        created_at: at,
        updated_at: at,
        completed_at: None,
        staging_swept_at: None,
    };
    assert_eq!(tus.clone().into_active_model().reset_all().insert(db).await.unwrap(), tus);
    assert_eq!(Upload::find_by_id(tus.id).one(db).await.unwrap(), Some(tus.clone()));
    let mut completing = tus.clone().into_active_model();
    completing.status = Set(UploadStatus::Completed);
    completing.method = Set(UploadMethod::Multipart);
    completing.completed_at = Set(Some(now()));
    completing.update(db).await.unwrap();
    let reread = Upload::find_by_id(tus.id).one(db).await.unwrap().unwrap();
    assert_eq!((reread.status, reread.method), (UploadStatus::Completed, UploadMethod::Multipart));
    assert_foreign_key_violation(
        upload::Model { id: Uuid::now_v7(), video_id: Uuid::now_v7(), ..tus.clone() }
            .into_active_model()
            .reset_all()
            .insert(db)
            .await,
        "upload for a video that does not exist",
    );

    // renditions: one name per video.
    let hd = rendition::Model {
        id: Uuid::now_v7(),
        video_id: clip.id,
        name: "720p".to_owned(),
        width: 1280,
        height: 720,
        bitrate: 3_000_000,
        codecs: "avc1.64001f,mp4a.40.2".to_owned(),
        playlist_key: "users/u/videos/v/hls/720p/index.m3u8".to_owned(),
        status: RenditionStatus::Pending,
        created_at: now(),
        updated_at: now(),
    };
    assert_eq!(hd.clone().into_active_model().reset_all().insert(db).await.unwrap(), hd);
    assert_unique_violation(
        rendition::Model { id: Uuid::now_v7(), ..hd.clone() }.into_active_model().reset_all().insert(db).await,
        "second rendition with the same name for one video",
    );

    // jobs and their logs
    let at = now();
    let transcode = job::Model {
        id: Uuid::now_v7(),
        video_id: Some(clip.id),
        owner_id: Some(ada.id),
        kind: JobKind::Transcode,
        status: JobStatus::Queued,
        priority: 10,
        payload: json!({ "preset": "MEDIUM", "renditions": ["360p", "720p"] }),
        attempts: 0,
        max_attempts: 5,
        run_after: at,
        lease_owner: Some("worker-1".to_owned()),
        lease_token: Some(Uuid::new_v4()),
        lease_expires_at: Some(at + chrono::Duration::seconds(30)),
        last_error: None,
        progress: None,
        cancel_requested: false,
        created_at: at,
        updated_at: at,
        finished_at: None,
        trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    };
    assert_eq!(transcode.clone().into_active_model().reset_all().insert(db).await.unwrap(), transcode);
    let cleanup = job::Model {
        id: Uuid::now_v7(),
        kind: JobKind::DeleteObjects,
        status: JobStatus::Dead,
        priority: 0,
        progress: Some(json!({ "percent": 12.5 })),
        lease_owner: None,
        lease_token: None,
        lease_expires_at: None,
        last_error: Some("boom".to_owned()),
        ..transcode.clone()
    };
    cleanup.clone().into_active_model().reset_all().insert(db).await.unwrap();
    let leasable = Job::find()
        .filter(job::Column::Status.eq(JobStatus::Queued))
        .filter(job::Column::RunAfter.lte(now()))
        .order_by_desc(job::Column::Priority)
        .all(db)
        .await
        .unwrap();
    assert_eq!(leasable, vec![transcode.clone()]);
    assert_eq!(Job::find_by_id(cleanup.id).one(db).await.unwrap(), Some(cleanup.clone()));
    let kind: Option<String> =
        Job::find_by_id(cleanup.id).select_only().column(job::Column::Kind).into_tuple().one(db).await.unwrap();
    assert_eq!(kind.as_deref(), Some("DELETE_OBJECTS"));

    let mut log_ids = Vec::new();
    for (seq, level, message) in [(1, LogLevel::Info, "started"), (2, LogLevel::Warn, "slow")] {
        let line = job_log::ActiveModel {
            job_id: Set(transcode.id),
            seq: Set(seq),
            at: Set(now()),
            level: Set(level),
            message: Set(message.to_owned()),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        assert_eq!((line.level, line.message.as_str()), (level, message));
        log_ids.push(line.id);
    }
    assert!(log_ids[0] < log_ids[1], "job log ids must increase: {log_ids:?}");
    // seq is the job's own line sequence: one line per (job, seq).
    let twice = job_log::ActiveModel {
        job_id: Set(transcode.id),
        seq: Set(2),
        at: Set(now()),
        level: Set(LogLevel::Info),
        message: Set("again".to_owned()),
        ..Default::default()
    }
    .insert(db)
    .await;
    assert!(twice.is_err(), "a second line with the same seq must be refused");
    let lines = transcode.find_related(JobLog).all(db).await.unwrap();
    assert_eq!(lines.len(), 2);

    // outbox: the id is an increasing global cursor, seq is unique per video.
    let mut cursors = Vec::new();
    for seq in 1..=2 {
        let event = event_outbox::ActiveModel {
            video_id: Set(clip.id),
            owner_id: Set(ada.id),
            kind: Set("PROGRESS".to_owned()),
            seq: Set(seq),
            visibility: Set(Visibility::Private),
            payload: Set(json!({ "v": 1, "percent": seq * 10 })),
            created_at: Set(now()),
            published_at: Set(None),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        assert_eq!(EventOutbox::find_by_id(event.id).one(db).await.unwrap(), Some(event.clone()));
        assert_eq!((event.seq, event.visibility), (seq, Visibility::Private));
        cursors.push(event.id);
    }
    assert!(cursors[0] < cursors[1], "outbox ids must increase: {cursors:?}");
    assert_unique_violation(
        event_outbox::ActiveModel {
            video_id: Set(clip.id),
            owner_id: Set(ada.id),
            kind: Set("READY".to_owned()),
            seq: Set(2),
            visibility: Set(Visibility::Public),
            payload: Set(json!({})),
            created_at: Set(now()),
            published_at: Set(None),
            ..Default::default()
        }
        .insert(db)
        .await,
        "second outbox row with the same (video_id, seq)",
    );
    let after_first: Vec<i64> = EventOutbox::find()
        .select_only()
        .column(event_outbox::Column::Id)
        .filter(event_outbox::Column::Id.gt(cursors[0]))
        .into_tuple()
        .all(db)
        .await
        .unwrap();
    assert_eq!(after_first, vec![cursors[1]]);

    // workers
    let box1 = worker::Model {
        id: Uuid::now_v7(),
        host: "gpu-1".to_owned(),
        pid: 4242,
        capacity: 4,
        current_jobs: 1,
        version: "0.1.0".to_owned(),
        started_at: now(),
        last_seen_at: now(),
        kind: "REMOTE".to_owned(),
        name: Some("gpu box".to_owned()),
        tags: "gpu,fast".to_owned(),
        state: "BUSY".to_owned(),
        gstreamer_version: Some("1.24.2".to_owned()),
        token_id: Some(Uuid::now_v7()),
    };
    assert_eq!(box1.clone().into_active_model().reset_all().insert(db).await.unwrap(), box1);

    // views: one row per viewer per window; daily stats: one row per video per day;
    // moderation actions keep who decided what and why.
    let window = now();
    let view = video_view::Model {
        id: Uuid::now_v7(),
        video_id: clip.id,
        viewer_key: format!("a:{}", "f".repeat(64)),
        window_start: window,
        watch_seconds: 12.5,
        created_at: now(),
        updated_at: now(),
    };
    assert_eq!(view.clone().into_active_model().reset_all().insert(db).await.unwrap(), view);
    assert_unique_violation(
        video_view::Model { id: Uuid::now_v7(), ..view.clone() }.into_active_model().reset_all().insert(db).await,
        "second view of the same viewer in the same window",
    );
    let day = video_daily_stat::Model {
        video_id: clip.id,
        day: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
        views: 3_000_000_000,
        watch_seconds: 1.25,
    };
    assert_eq!(day.clone().into_active_model().reset_all().insert(db).await.unwrap(), day);
    assert_unique_violation(day.clone().into_active_model().reset_all().insert(db).await, "second row for one day");
    let hide = moderation_action::Model {
        id: Uuid::now_v7(),
        video_id: clip.id,
        moderator_id: ada.id,
        action: ModerationActionKind::Hide,
        reason: Some("spam".to_owned()),
        created_at: now(),
    };
    assert_eq!(hide.clone().into_active_model().reset_all().insert(db).await.unwrap(), hide);

    // Deleting a video takes its uploads and renditions with it; its jobs stay,
    // unlinked, and the outbox keeps its history.
    Video::delete_by_id(clip.id).exec(db).await.unwrap();
    assert_eq!(Upload::find_by_id(tus.id).one(db).await.unwrap(), None);
    assert_eq!(Rendition::find_by_id(hd.id).one(db).await.unwrap(), None);
    assert_eq!(VideoView::find_by_id(view.id).one(db).await.unwrap(), None);
    assert!(VideoDailyStat::find().all(db).await.unwrap().is_empty());
    assert_eq!(ModerationAction::find_by_id(hide.id).one(db).await.unwrap(), None);
    let orphan = Job::find_by_id(transcode.id).one(db).await.unwrap().unwrap();
    assert_eq!((orphan.video_id, orphan.owner_id), (None, Some(ada.id)));
    assert_eq!(EventOutbox::find().all(db).await.unwrap().len(), 2);

    // Deleting a user takes their sessions and keys with them.
    User::delete_by_id(ada.id).exec(db).await.unwrap();
    assert_eq!(RefreshTokenFamily::find_by_id(family.id).one(db).await.unwrap(), None);
    assert_eq!(RefreshToken::find_by_id(second.id).one(db).await.unwrap(), None);
    assert_eq!(ApiKey::find_by_id(key.id).one(db).await.unwrap(), None);
    assert_eq!(TotpRecoveryCode::find_by_id(recovery.id).one(db).await.unwrap(), None);
    assert_eq!(AccountToken::find_by_id(token.id).one(db).await.unwrap(), None);
    assert_eq!(Job::find_by_id(transcode.id).one(db).await.unwrap().unwrap().owner_id, None);

    // The whole chain goes down and comes back up.
    Migrator::down(db, None).await.unwrap();
    assert_tables(db, false).await;
    assert!(Migrator::get_applied_migrations(db).await.unwrap().is_empty());
    Migrator::up(db, None).await.unwrap();
    assert_tables(db, true).await;
    assert_eq!(User::find().all(db).await.unwrap(), vec![]);
    let again = sample_user("ada@example.com", Role::Admin);
    assert_eq!(insert_user(db, &again).await.unwrap(), again);
}

/// Accounts made before addresses were checked count as verified (since their creation).
#[tokio::test]
async fn the_account_mail_migration_takes_existing_accounts_as_verified() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let before = Migrator::migrations().iter().position(|m| m.name() == "m20261206_000007_account_mail").unwrap();
    Migrator::up(&db, Some(u32::try_from(before).unwrap())).await.unwrap();
    let (id, at) = (Uuid::now_v7(), now());
    db.execute(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "INSERT INTO users (id, email, display_name, password_hash, role, disabled, storage_quota_bytes, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            id.into(),
            "old@example.com".into(),
            "Old".into(),
            "x".into(),
            "USER".into(),
            false.into(),
            Option::<i64>::None.into(),
            at.into(),
            at.into(),
        ],
    ))
    .await
    .unwrap();
    // This migration backfills; the later ones only add columns the full model reads.
    Migrator::up(&db, None).await.unwrap();
    let user = User::find_by_id(id).one(&db).await.unwrap().unwrap();
    assert_eq!(user.email_verified_at, Some(at));
    db.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_migrations_round_trip() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    exercise_schema(&db).await;
    db.close().await.unwrap();
}

/// A uniquely named database created through the admin connection, so parallel
/// runs never share state; the caller drops it whether the test passed or not.
struct ScratchPostgres {
    admin: DatabaseConnection,
    name: String,
    url: String,
}

impl ScratchPostgres {
    async fn create() -> Self {
        let base = std::env::var("REELHOUSE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let mut options = ConnectOptions::new(base.clone());
        options.connect_timeout(Duration::from_secs(10)).max_connections(1).sqlx_logging(false);
        let admin = Database::connect(options).await.unwrap_or_else(|err| {
            panic!(
                "PostgreSQL at {base} is unreachable ({err}); start it, point \
                 REELHOUSE_TEST_PG_URL at one, or set REELHOUSE_TEST_SKIP_PG=1"
            )
        });
        let name = format!("reelhouse_test_{}", Uuid::new_v4().simple());
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&format!("/{name}"));
        Self { admin, name, url: url.into() }
    }

    async fn drop_database(self) {
        self.admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
            .unwrap();
        self.admin.close().await.unwrap();
    }
}

#[tokio::test]
async fn postgres_migrations_round_trip() {
    if std::env::var("REELHOUSE_TEST_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("REELHOUSE_TEST_SKIP_PG=1: skipping the PostgreSQL migration test");
        return;
    }
    let scratch = ScratchPostgres::create().await;
    let url = scratch.url.clone();
    // Run the body in its own task so a failed assertion still lets us drop the database.
    let outcome = tokio::spawn(async move {
        let db = Database::connect(&url).await.unwrap();
        exercise_schema(&db).await;
        assert_postgres_column_types(&db).await;
        db.close().await.unwrap();
    })
    .await;
    scratch.drop_database().await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// PostgreSQL gets the native types, not text stand-ins.
async fn assert_postgres_column_types(db: &DatabaseConnection) {
    for (table, column, expected) in [
        ("users", "id", "uuid"),
        ("users", "created_at", "timestamp with time zone"),
        ("users", "disabled", "boolean"),
        ("videos", "tags", "jsonb"),
        ("videos", "frame_rate", "double precision"),
        ("jobs", "payload", "jsonb"),
        ("jobs", "lease_token", "uuid"),
        ("events_outbox", "id", "bigint"),
        ("job_logs", "id", "bigint"),
    ] {
        let row = db
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT data_type FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                [table.into(), column.into()],
            ))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{table}.{column} is missing"));
        let data_type: String = row.try_get("", "data_type").unwrap();
        assert_eq!(data_type, expected, "{table}.{column}");
    }
}

/// Every stored spelling fits its column and matches the serde spelling, so a value
/// reads the same in the database and in JSON.
#[test]
fn enum_values_fit_their_columns_and_match_serde() {
    fn check<E>(width: usize)
    where
        E: ActiveEnum<Value = String> + Iterable + serde::Serialize + std::fmt::Debug + PartialEq,
    {
        let mut seen = std::collections::HashSet::new();
        for variant in E::iter() {
            let stored = variant.to_value();
            assert!(stored.len() <= width, "{variant:?} -> {stored} is wider than {width}");
            assert!(seen.insert(stored.clone()), "{stored} is used twice");
            assert_eq!(serde_json::to_value(&variant).unwrap(), json!(stored));
            assert_eq!(E::try_from_value(&stored).unwrap(), variant);
        }
    }
    check::<Role>(16);
    check::<Visibility>(16);
    check::<VideoStatus>(16);
    check::<UploadMethod>(16);
    check::<UploadStatus>(16);
    check::<RenditionStatus>(16);
    check::<JobKind>(32);
    check::<JobStatus>(16);
    check::<LogLevel>(16);
    check::<ModerationActionKind>(16);
    check::<entities::WebhookDeliveryStatus>(16);
    check::<AccountTokenPurpose>(32);
}

#[test]
fn migrations_are_uniquely_named_and_in_order() {
    let names: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 24);
}
