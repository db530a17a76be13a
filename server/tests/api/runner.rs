//! The job runner end to end, without the queue: a source object in storage becomes a
//! READY video (sqlite run: local store; postgres run: S3). Sources are generated with
//! GStreamer (scripts/make-fixtures.sh through `media::fixture`, plus one landscape
//! clip with audio made here).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use entities::{event_outbox, job, rendition, user, video, JobKind, LogLevel, RenditionStatus, Role, VideoStatus};
use futures::StreamExt;
use reelhouse::config::media::LadderRung;
use reelhouse::config::Settings;
use reelhouse::events::{self, ProgressInfo};
use reelhouse::jobs::runner::{self, JobContext, JobError, JobOutput, JobReporter, TranscodeOutput};
use reelhouse::jobs::{enqueue, FailureCode, NewJob};
use reelhouse::media::cancel_flag;
use reelhouse::storage::layout::{self, Outputs};
use reelhouse::storage::StoreError;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp};
use crate::media::fixture;

/// A 3 s 640x360 clip with audio, made once per test process.
pub(crate) fn landscape_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| make_clip("landscape_640x360.mp4", 75))
}

/// A 24 s 640x360 clip with audio (long enough to be seen encoding), made once per
/// test process.
pub(crate) fn long_clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| make_clip("long_640x360.mp4", 600))
}

/// `frames` of a moving ball at 25 fps, 640x360, with a sine tone as long.
fn make_clip(name: &str, frames: u32) -> PathBuf {
    reelhouse::media::init_gstreamer("warning").unwrap();
    let dir = std::env::temp_dir().join(format!("reelhouse-runner-fixture-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let audio_buffers = frames * 48000 / 25 / 1024 + 2;
    let pipeline = format!(
        "mp4mux name=mux faststart=true ! filesink location={} \
         videotestsrc num-buffers={frames} pattern=ball background-color=0xff3070b0 \
         ! video/x-raw,format=I420,width=640,height=360,framerate=25/1 \
         ! x264enc speed-preset=ultrafast key-int-max=25 bframes=0 ! h264parse ! queue ! mux. \
         audiotestsrc num-buffers={audio_buffers} samplesperbuffer=1024 wave=sine ! audio/x-raw,rate=48000,channels=2 \
         ! audioconvert ! avenc_aac ! aacparse ! queue ! mux.",
        out.display()
    );
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "generating {name} failed");
    out
}

/// Collects what the runner reports; optionally wakes a waiter on the first
/// encoding progress.
#[derive(Default)]
pub(crate) struct Collect {
    progress: Mutex<Vec<ProgressInfo>>,
    logs: Mutex<Vec<(LogLevel, String)>>,
    pub(crate) on_encoding: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl JobReporter for Collect {
    fn progress(&self, progress: ProgressInfo) {
        if progress.stage == "encoding" && progress.percent > 2.0 {
            if let Some(tx) = self.on_encoding.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
        self.progress.lock().unwrap().push(progress);
    }

    fn log(&self, level: LogLevel, message: String) {
        self.logs.lock().unwrap().push((level, message));
    }
}

pub(crate) struct Harness {
    pub(crate) app: TestApp,
    pub(crate) ctx: JobContext,
    pub(crate) scratch: tempfile::TempDir,
    pub(crate) owner: Uuid,
}

pub(crate) async fn harness(customize: impl FnOnce(&mut Settings)) -> Harness {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.media.speed_preset = "ultrafast".into();
        s.media.segment_seconds = 1;
        customize(s);
    })
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let ctx = JobContext {
        db: app.state.db.clone(),
        store: app.state.store.clone(),
        settings: app.state.settings.clone(),
        publisher: events::Publisher::new(Some(app.state.hubs.event_bus.clone())),
        scratch_dir: scratch.path().to_path_buf(),
        mailer: app.state.mailer.clone(),
    };
    let now = Utc::now();
    let owner = Uuid::now_v7();
    user::ActiveModel {
        id: Set(owner),
        email: Set(format!("{}@example.com", owner.simple())),
        display_name: Set("Runner Test".into()),
        password_hash: Set("not-a-hash".into()),
        role: Set(Role::User),
        disabled: Set(false),
        storage_quota_bytes: Set(None),
        email_verified_at: Set(Some(now)),
        processing_budget_secs_per_day: Set(None),
        deleted_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    Harness { app, ctx, scratch, owner }
}

impl Harness {
    /// A PROCESSING video whose source object holds `bytes`.
    pub(crate) async fn video_with_source(&self, bytes: Vec<u8>) -> video::Model {
        let id = Uuid::now_v7();
        let key = layout::source(self.owner, id);
        self.ctx.store.put_bytes(&key, bytes.into(), Some("video/mp4")).await.unwrap();
        let now = Utc::now();
        video::ActiveModel {
            id: Set(id),
            owner_id: Set(self.owner),
            title: Set("clip".into()),
            description: Set(String::new()),
            tags: Set(video::Tags::default()),
            visibility: Set(entities::Visibility::Private),
            status: Set(VideoStatus::Processing),
            source_key: Set(Some(key)),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&self.app.state.db)
        .await
        .unwrap()
    }

    pub(crate) async fn video_from(&self, source: &Path) -> video::Model {
        self.video_with_source(std::fs::read(source).unwrap()).await
    }

    pub(crate) async fn transcode_job(&self, video: &video::Model, payload: serde_json::Value) -> job::Model {
        enqueue(
            &self.app.state.db,
            NewJob {
                kind: JobKind::Transcode,
                video_id: Some(video.id),
                owner_id: Some(self.owner),
                priority: 0,
                payload,
                max_attempts: 3,
            },
        )
        .await
        .unwrap()
    }

    pub(crate) async fn run(&self, job: &job::Model) -> (Result<JobOutput, JobError>, Arc<Collect>) {
        let reporter = Arc::new(Collect::default());
        let result = runner::run(&self.ctx, job, cancel_flag(), reporter.clone()).await;
        (result, reporter)
    }

    pub(crate) async fn apply_success(&self, job: &job::Model, output: &JobOutput) -> Vec<events::DomainEvent> {
        let txn = self.app.state.db.begin().await.unwrap();
        let events = runner::apply_success(&txn, job, output, &self.ctx.settings.jobs).await.unwrap();
        txn.commit().await.unwrap();
        events
    }

    async fn apply_failure(&self, job: &job::Model, reason: &str) -> Vec<events::DomainEvent> {
        let txn = self.app.state.db.begin().await.unwrap();
        let events = runner::apply_failure(&txn, job, reason, &self.ctx.settings.jobs).await.unwrap();
        txn.commit().await.unwrap();
        events
    }

    /// Transcode `source` to a READY video; returns the job's output.
    pub(crate) async fn transcode_ok(
        &self,
        source: &Path,
        payload: serde_json::Value,
    ) -> (video::Model, TranscodeOutput, Arc<Collect>) {
        let video = self.video_from(source).await;
        let job = self.transcode_job(&video, payload).await;
        let (result, reporter) = self.run(&job).await;
        let output = match result {
            Ok(output) => output,
            Err(err) => panic!("transcode failed: {err:?}; logs {:?}", reporter.logs.lock().unwrap()),
        };
        assert!(self.scratch_is_empty(), "scratch left behind");
        let events = self.apply_success(&job, &output).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, events::EventKind::Ready);
        let JobOutput::Transcoded(out) = output else { panic!("not a transcode output") };
        (self.video(video.id).await, *out, reporter)
    }

    pub(crate) async fn video(&self, id: Uuid) -> video::Model {
        video::Entity::find_by_id(id).one(&self.app.state.db).await.unwrap().unwrap()
    }

    pub(crate) async fn renditions(&self, id: Uuid) -> Vec<rendition::Model> {
        rendition::Entity::find()
            .filter(rendition::Column::VideoId.eq(id))
            .order_by_asc(rendition::Column::Height)
            .all(&self.app.state.db)
            .await
            .unwrap()
    }

    async fn event_kinds(&self, id: Uuid) -> Vec<String> {
        event_outbox::Entity::find()
            .filter(event_outbox::Column::VideoId.eq(id))
            .order_by_asc(event_outbox::Column::Seq)
            .all(&self.app.state.db)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub(crate) async fn object(&self, key: &str) -> Vec<u8> {
        let got = self.ctx.store.get(key, None).await.unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let mut body = got.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    }

    pub(crate) async fn exists(&self, key: &str) -> bool {
        match self.ctx.store.head(key).await {
            Ok(_) => true,
            Err(StoreError::NotFound { .. }) => false,
            Err(e) => panic!("{key}: {e:?}"),
        }
    }

    /// Where `video`'s current outputs live.
    pub(crate) fn outputs(&self, video: &video::Model) -> Outputs {
        Outputs::new(video.owner_id, video.id, video.output_version.as_deref())
    }

    /// How many objects sit under any output version of video `id` (removing them:
    /// for checks that nothing is left).
    pub(crate) async fn leftover_outputs(&self, id: Uuid) -> u64 {
        self.ctx.store.delete_prefix(&layout::outputs_root(self.owner, id)).await.unwrap()
    }

    /// The DELETE_OBJECTS jobs of this harness's owner, oldest first.
    pub(crate) async fn delete_jobs(&self) -> Vec<job::Model> {
        job::Entity::find()
            .filter(job::Column::Kind.eq(JobKind::DeleteObjects))
            .filter(job::Column::OwnerId.eq(self.owner))
            .order_by_asc(job::Column::CreatedAt)
            .all(&self.app.state.db)
            .await
            .unwrap()
    }

    pub(crate) fn scratch_is_empty(&self) -> bool {
        std::fs::read_dir(self.scratch.path()).unwrap().next().is_none()
    }
}

fn stage_index(stage: &str) -> usize {
    ["probing", "encoding", "packaging", "uploading"]
        .iter()
        .position(|s| *s == stage)
        .unwrap_or_else(|| panic!("unknown stage {stage}"))
}

fn stream_infs(master: &str) -> Vec<&str> {
    master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect()
}

fn media_lines(playlist: &str) -> Vec<&str> {
    playlist.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

#[actix_web::test]
async fn runner_transcodes_a_landscape_clip_end_to_end() {
    let h = harness(|_| {}).await;
    let (video, out, reporter) = h.transcode_ok(landscape_clip(), serde_json::Value::Null).await;

    // 640x360 never upscales: the default ladder (1080/720/480/360) gives 360p only.
    assert_eq!(out.renditions.len(), 1, "{:?}", out.renditions);
    let rung = &out.renditions[0];
    assert_eq!((rung.name.as_str(), rung.width, rung.height), ("360p", 640, 360));
    assert!(rung.codecs.starts_with("avc1.") && rung.codecs.contains("mp4a.40.2"), "{}", rung.codecs);

    // Everything sits under the run's own output version, which the video now names.
    let version = video.output_version.clone().expect("the video names its output version");
    assert_eq!(out.output_version.as_deref(), Some(version.as_str()));
    assert!(layout::is_output_version(&version), "{version}");
    let o = h.outputs(&video);
    assert!(o.prefix().ends_with(&format!("/out/{version}/")), "{}", o.prefix());
    assert_eq!(out.master_playlist_key, o.hls_master());
    assert!(out.thumbnail_keys.iter().all(|k| k.starts_with(o.prefix())), "{:?}", out.thumbnail_keys);
    assert!(!h.exists(&Outputs::new(h.owner, video.id, None).hls_master()).await, "nothing unversioned");
    assert!(h.delete_jobs().await.is_empty(), "a first transcode replaces nothing");

    let master = String::from_utf8(h.object(&o.hls_master()).await).unwrap();
    let infs = stream_infs(&master);
    assert_eq!(infs.len(), 1, "{master}");
    for attr in ["BANDWIDTH=", "RESOLUTION=640x360", "CODECS=\"avc1."] {
        assert!(infs[0].contains(attr), "{master}");
    }
    assert!(media_lines(&master).contains(&"360p/index.m3u8"), "{master}");
    let playlist = String::from_utf8(h.object(&o.hls_playlist("360p")).await).unwrap();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let segments = media_lines(&playlist);
    assert!(segments.len() >= 2, "{playlist}");
    for segment in segments {
        assert!(!segment.contains('/'), "segments are named relatively: {segment}");
        let key = o.hls_segment("360p", segment);
        let meta = h.ctx.store.head(&key).await.unwrap();
        assert!(meta.size > 0);
    }

    let rows = h.renditions(video.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, RenditionStatus::Ready);
    assert_eq!((rows[0].width, rows[0].height), (640, 360));
    assert_eq!(rows[0].codecs, rung.codecs, "apply_success replaces the provisional codecs");
    assert!(rows[0].bitrate > 0);

    // MP4 download (MEDIUM by default): an ftyp box first.
    let download = out.download.clone().unwrap();
    assert_eq!(out.downloads, vec![download.clone()], "MP4 alone by default");
    assert_eq!(download.key, o.download("video.mp4"));
    assert_eq!(download.preset, "MEDIUM");
    let mp4 = h.object(&download.key).await;
    assert_eq!(&mp4[4..8], b"ftyp");

    // Poster: a JPEG, not black.
    let poster = h.object(&o.poster()).await;
    assert_eq!(&poster[..2], &[0xFF, 0xD8]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &poster).unwrap();
    let frame = reelhouse::media::thumbs::load_jpeg(file.path()).unwrap();
    assert!(frame.mean_luma() > 20.0, "poster luma {}", frame.mean_luma());
    for key in &out.thumbnail_keys {
        assert_eq!(&h.object(key).await[..2], &[0xFF, 0xD8], "{key}");
    }
    assert!(!out.thumbnail_keys.is_empty());

    // Storyboard: the VTT names the sprite relatively, one cue per tile.
    let sprite = h.object(&o.storyboard_image()).await;
    assert_eq!(&sprite[..2], &[0xFF, 0xD8]);
    let vtt = String::from_utf8(h.object(&o.storyboard_vtt()).await).unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let cues: Vec<&str> = vtt.lines().filter(|l| l.contains("#xywh=")).collect();
    assert_eq!(cues.len() as u32, out.storyboard.tiles, "{vtt}");
    assert!(cues.iter().all(|c| c.starts_with("storyboard.jpg#xywh=")), "{vtt}");
    // One tile a second (the default storyboard interval) over the probed duration.
    let expected_tiles = (out.probe.duration_ms as f64 / 1000.0).ceil() as u32;
    assert_eq!(out.storyboard.tiles, expected_tiles);

    // The video is READY with its probe facts; RENDITION_READY came before the one READY.
    assert_eq!(video.status, VideoStatus::Ready);
    assert_eq!(video.error, None);
    assert_eq!((video.width, video.height, video.has_audio), (Some(640), Some(360), Some(true)));
    let duration = video.duration_ms.unwrap();
    assert!((2800..=3200).contains(&duration), "{duration}");
    let kinds = h.event_kinds(video.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "READY").count(), 1, "{kinds:?}");
    let ready_at = kinds.iter().position(|k| k == "READY").unwrap();
    let rendition_at = kinds.iter().position(|k| k == "RENDITION_READY").expect("RENDITION_READY recorded");
    assert!(rendition_at < ready_at, "{kinds:?}");

    // Progress: never backwards, stages in order, ends at 100.
    let progress = reporter.progress.lock().unwrap().clone();
    assert!(progress.windows(2).all(|w| w[1].percent >= w[0].percent), "{progress:?}");
    let stages: Vec<usize> = progress.iter().map(|p| stage_index(&p.stage)).collect();
    assert!(stages.windows(2).all(|w| w[1] >= w[0]), "{stages:?}");
    for stage in 0..4 {
        assert!(stages.contains(&stage), "stage {stage} never reported: {stages:?}");
    }
    assert_eq!(progress.last().unwrap().percent, 100.0);
    assert!(progress.iter().any(|p| p.stage == "encoding" && p.renditions.iter().any(|r| r.name == "360p")));
    let logs = reporter.logs.lock().unwrap();
    assert!(logs.iter().any(|(_, m)| m.starts_with("encoding:")), "{logs:?}");
}

#[actix_web::test]
async fn runner_ladder_with_240_lines_gives_two_rungs_from_an_audio_less_source() {
    let h = harness(|s| {
        s.media.ladder = vec![
            LadderRung { lines: 720, video_bitrate_kbps: 2800 },
            LadderRung { lines: 360, video_bitrate_kbps: 800 },
            LadderRung { lines: 240, video_bitrate_kbps: 400 },
        ];
    })
    .await;
    let (video, out, _) = h.transcode_ok(&fixture("no_audio.mp4"), serde_json::json!({ "preset": "LOW" })).await;
    let dims: Vec<(&str, u32, u32)> = out.renditions.iter().map(|r| (r.name.as_str(), r.width, r.height)).collect();
    assert_eq!(dims, vec![("360p", 640, 360), ("240p", 426, 240)]);
    assert!(out.renditions.iter().all(|r| !r.codecs.contains("mp4a")), "{:?}", out.renditions);

    let o = h.outputs(&video);
    let master = String::from_utf8(h.object(&o.hls_master()).await).unwrap();
    assert_eq!(stream_infs(&master).len(), 2, "{master}");
    assert!(master.contains("RESOLUTION=640x360") && master.contains("RESOLUTION=426x240"), "{master}");
    for name in ["360p", "240p"] {
        assert!(h.exists(&o.hls_playlist(name)).await, "{name}");
    }
    let rows = h.renditions(video.id).await;
    let rows: Vec<(String, i32, i32, RenditionStatus)> =
        rows.into_iter().map(|r| (r.name, r.width, r.height, r.status)).collect();
    assert_eq!(
        rows,
        vec![
            ("240p".to_string(), 426, 240, RenditionStatus::Ready),
            ("360p".to_string(), 640, 360, RenditionStatus::Ready)
        ]
    );
    assert_eq!(video.has_audio, Some(false));
    let download = out.download.clone().unwrap();
    assert_eq!(download.preset, "LOW");
    assert_eq!(&h.object(&download.key).await[4..8], b"ftyp");
    // The lowest rung is the one published early.
    let outbox = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video.id))
        .filter(event_outbox::Column::Kind.eq("RENDITION_READY"))
        .all(&h.app.state.db)
        .await
        .unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].payload["rendition"], "240p");
}

#[actix_web::test]
async fn runner_re_transcode_writes_a_new_version_and_retires_the_old_one_after_the_grace() {
    let h = harness(|s| {
        s.media.ladder = vec![
            LadderRung { lines: 360, video_bitrate_kbps: 800 },
            LadderRung { lines: 240, video_bitrate_kbps: 400 },
        ];
    })
    .await;
    let (video, first, _) = h.transcode_ok(&fixture("no_audio.mp4"), serde_json::Value::Null).await;
    assert_eq!(first.renditions.len(), 2);
    let old = h.outputs(&video);
    let old_version = video.output_version.clone().unwrap();
    let segments_of = |o: &Outputs, text: Vec<u8>| -> Vec<String> {
        String::from_utf8(text)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|name| o.hls_segment("360p", name))
            .collect()
    };
    let old_segments = segments_of(&old, h.object(&old.hls_playlist("360p")).await);
    assert!(!old_segments.is_empty());
    let old_keys = [old.hls_master(), old.hls_playlist("240p"), old.download("video.mp4"), old.poster()];

    // The same video again, now with a one-rung ladder.
    let mut settings = (*h.ctx.settings).clone();
    settings.media.ladder = vec![LadderRung { lines: 360, video_bitrate_kbps: 800 }];
    let ctx = JobContext { settings: Arc::new(settings), ..h.ctx.clone() };
    let job = h.transcode_job(&video, serde_json::Value::Null).await;
    let output = runner::run(&ctx, &job, cancel_flag(), Arc::new(Collect::default())).await.unwrap();

    // Until the new run is applied the video plays the old version, whole: a
    // re-transcode publishes no early rung and writes nothing under the old version.
    assert_eq!(h.video(video.id).await.output_version.as_deref(), Some(old_version.as_str()));
    assert!(h.renditions(video.id).await.iter().all(|r| r.playlist_key.starts_with(old.prefix())));
    assert_eq!(segments_of(&old, h.object(&old.hls_playlist("360p")).await), old_segments);

    let applied_at = Utc::now();
    h.apply_success(&job, &output).await;
    let after = h.video(video.id).await;
    let new = h.outputs(&after);
    assert_ne!(after.output_version.as_deref(), Some(old_version.as_str()));
    assert_ne!(new.prefix(), old.prefix());
    let rows = h.renditions(video.id).await;
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["360p"]);
    assert_eq!(rows[0].playlist_key, new.hls_playlist("360p"));
    let master = String::from_utf8(h.object(&new.hls_master()).await).unwrap();
    assert_eq!(stream_infs(&master).len(), 1, "{master}");
    let new_segments = segments_of(&new, h.object(&new.hls_playlist("360p")).await);
    for key in &new_segments {
        assert!(h.exists(key).await, "{key}");
    }

    // The old version stays for the grace period (players that loaded its playlists
    // finish them); a DELETE_OBJECTS job, not tied to the video, is due after it.
    for key in old_segments.iter().chain(&old_keys) {
        assert!(h.exists(key).await, "{key} is kept through the grace period");
    }
    let retire = h.delete_jobs().await;
    assert_eq!(retire.len(), 1, "{retire:?}");
    let retire = &retire[0];
    assert_eq!(retire.payload, serde_json::json!({ "prefixes": [old.prefix()] }));
    assert_eq!(retire.video_id, None, "never taken for the video's running job");
    let grace = chrono::Duration::seconds(h.ctx.settings.jobs.retired_outputs_grace_secs as i64);
    let due = applied_at + grace - chrono::Duration::seconds(1);
    assert!(retire.run_after >= due, "due {} < {due}", retire.run_after);

    // When it runs, exactly the old version goes.
    match h.run(retire).await.0 {
        Ok(JobOutput::ObjectsDeleted { count }) => assert!(count as usize >= old_segments.len() + old_keys.len()),
        other => panic!("{other:?}"),
    }
    for key in old_segments.iter().chain(&old_keys) {
        assert!(!h.exists(key).await, "{key} survived its retirement");
    }
    for key in new_segments.iter().chain([&new.hls_master(), &new.download("video.mp4"), &new.poster()]) {
        assert!(h.exists(key).await, "{key} of the current version was removed");
    }
    assert_eq!(h.event_kinds(video.id).await.iter().filter(|k| *k == "READY").count(), 2);
    assert_eq!(h.video(video.id).await.status, VideoStatus::Ready);
}

/// A first transcode publishes its lowest rung early under its own version; a
/// later attempt that replaces that rung, or a failure that drops it, retires the
/// version nothing names any more.
#[actix_web::test]
async fn runner_early_rungs_of_abandoned_first_attempts_are_retired() {
    let h = harness(|_| {}).await;
    let video = h.video_from(landscape_clip()).await;
    let version_of = |row: &rendition::Model| layout::version_prefix(h.owner, video.id, &row.playlist_key).unwrap();

    // Attempt A runs to the end but is never applied (its lease was lost).
    let a = h.transcode_job(&video, serde_json::Value::Null).await;
    assert!(h.run(&a).await.0.is_ok());
    let rows = h.renditions(video.id).await;
    assert_eq!(rows.len(), 1, "the early rung is published");
    let a_prefix = version_of(&rows[0]);
    assert!(h.exists(&rows[0].playlist_key).await);
    assert_eq!(h.video(video.id).await.output_version, None, "nothing applied yet");

    // Attempt B publishes its own early rung: A's version is retired (after the grace).
    let b = h.transcode_job(&video, serde_json::Value::Null).await;
    assert!(h.run(&b).await.0.is_ok());
    let rows = h.renditions(video.id).await;
    let b_prefix = version_of(&rows[0]);
    assert_ne!(a_prefix, b_prefix);
    let retired = h.delete_jobs().await;
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0].payload, serde_json::json!({ "prefixes": [a_prefix] }));

    // B fails for good: the video is FAILED, its rung row goes, and its version is
    // removed at once (nothing of a failed first transcode plays).
    let failed_at = Utc::now();
    h.apply_failure(&b, "processing failed").await;
    assert_eq!(h.video(video.id).await.status, VideoStatus::Failed);
    assert!(h.renditions(video.id).await.is_empty());
    let retired = h.delete_jobs().await;
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert_eq!(retired[1].payload, serde_json::json!({ "prefixes": [b_prefix] }));
    assert!(retired[1].run_after <= failed_at + chrono::Duration::seconds(60), "due at once");
    assert!(matches!(h.run(&retired[1]).await.0, Ok(JobOutput::ObjectsDeleted { count }) if count > 0));
    assert!(matches!(h.run(&retired[0]).await.0, Ok(JobOutput::ObjectsDeleted { count }) if count > 0));
    assert_eq!(h.leftover_outputs(video.id).await, 0, "both attempts' objects are gone");
    assert!(h.exists(video.source_key.as_deref().unwrap()).await, "the source stays");
}

/// A first transcode makes its video playable while the ladder is still encoded:
/// PLAYABLE comes with the lowest rung's first segment, whose playlist (EVENT, cached
/// only briefly) grows, naming only stored segments that decode, until it is final
/// (VOD, RENDITION_READY); READY comes last.
#[actix_web::test]
async fn runner_makes_the_lowest_rung_playable_while_the_ladder_is_encoded() {
    let h = harness(|s| {
        // Slow enough that the ladder is seen encoding for several seconds.
        s.media.speed_preset = "slow".into();
        s.media.ladder = vec![
            LadderRung { lines: 360, video_bitrate_kbps: 800 },
            LadderRung { lines: 240, video_bitrate_kbps: 400 },
        ];
    })
    .await;
    let video = h.video_from(long_clip()).await;
    let job = h.transcode_job(&video, serde_json::json!({ "preset": "LOW", "formats": ["HLS"] })).await;
    let done = std::cell::Cell::new(false);
    let run = async {
        let result = h.run(&job).await;
        done.set(true);
        result
    };
    // Every growing playlist seen while the run went on, with its Cache-Control.
    let watch = async {
        let mut seen: Vec<(String, String)> = Vec::new();
        while !done.get() {
            if let Some(row) = h.renditions(video.id).await.into_iter().next() {
                let url = reelhouse::playback::rendition_url(&h.app.state, &h.video(video.id).await, &row);
                let res = h.app.client.get(&url).send().await.unwrap();
                assert_eq!(res.status(), 200, "{url}");
                let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
                let text = res.text().await.unwrap();
                if !text.contains("#EXT-X-ENDLIST") {
                    seen.push((text, cache));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        seen
    };
    let ((result, reporter), growing) = futures::join!(run, watch);
    let output = match result {
        Ok(output) => output,
        Err(err) => panic!("transcode failed: {err:?}; logs {:?}", reporter.logs.lock().unwrap()),
    };
    assert!(!growing.is_empty(), "the lowest rung was never seen growing before the run ended");
    let outputs = Outputs::new(h.owner, video.id, Some(&job_version(&output)));
    let mut counts = Vec::new();
    for (text, cache) in &growing {
        assert!(text.starts_with("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{text}");
        // A private video's playlist names its segments with the request's signature.
        assert_eq!(cache, "private, no-cache", "a growing playlist is never cached for good");
        let segments: Vec<&str> = media_lines(text).iter().map(|l| l.split('?').next().unwrap()).collect();
        assert!(!segments.is_empty(), "{text}");
        for segment in &segments {
            assert!(h.exists(&outputs.hls_segment("240p", segment)).await, "{segment} of {text} is stored");
        }
        counts.push(segments.len());
    }
    println!("segments listed by the growing playlists seen: {counts:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "the playlist only grows: {counts:?}");
    // The first segment announced decodes.
    let first = media_lines(&growing[0].0)[0].split('?').next().unwrap().to_string();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join(&first);
    std::fs::write(&path, h.object(&outputs.hls_segment("240p", &first)).await).unwrap();
    let info = reelhouse::media::probe(&path).unwrap();
    assert!(info.video_tracks == 1 && info.has_audio, "{info:?}");

    // Final: VOD, every segment, and the events in order.
    let final_text = String::from_utf8(h.object(&outputs.hls_playlist("240p")).await).unwrap();
    assert!(final_text.starts_with("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n"), "{final_text}");
    assert!(final_text.contains("#EXT-X-ENDLIST"), "{final_text}");
    let final_segments = media_lines(&final_text);
    for (text, _) in &growing {
        let named: Vec<&str> = media_lines(text).iter().map(|l| l.split('?').next().unwrap()).collect();
        assert!(final_segments.starts_with(&named), "{text} is how {final_text} began");
    }
    let events = h.apply_success(&job, &output).await;
    assert_eq!(events[0].kind, events::EventKind::Ready);
    let kinds = h.event_kinds(video.id).await;
    let at = |kind: &str| kinds.iter().position(|k| k == kind).unwrap_or_else(|| panic!("{kind}: {kinds:?}"));
    assert_eq!(kinds.iter().filter(|k| *k == "PLAYABLE").count(), 1, "{kinds:?}");
    assert!(at("PLAYABLE") < at("RENDITION_READY") && at("RENDITION_READY") < at("READY"), "{kinds:?}");
    let row = h.renditions(video.id).await.into_iter().next().unwrap();
    let url = reelhouse::playback::rendition_url(&h.app.state, &h.video(video.id).await, &row);
    let res = h.app.client.get(&url).send().await.unwrap();
    assert!(res.headers()["cache-control"].to_str().unwrap().ends_with("immutable"), "{:?}", res.headers());
}

/// The output version a run wrote under.
fn job_version(output: &JobOutput) -> String {
    let JobOutput::Transcoded(out) = output else { panic!("not a transcode output") };
    out.output_version.clone().unwrap()
}

#[actix_web::test]
async fn runner_portrait_source_gives_a_portrait_rung_and_webm_download() {
    let h = harness(|_| {}).await;
    let (video, out, _) =
        h.transcode_ok(&fixture("portrait_360x640.mp4"), serde_json::json!({ "format": "WEBM" })).await;
    assert_eq!(out.renditions.len(), 1);
    let rung = &out.renditions[0];
    assert!(rung.height > rung.width, "{rung:?}");
    assert_eq!((rung.width, rung.height), (360, 640));
    let download = out.download.clone().unwrap();
    assert_eq!(download.key, h.outputs(&video).download("video.webm"));
    assert_eq!(&h.object(&download.key).await[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
    assert!(download.height > download.width);

    // A later re-transcode that fails keeps the READY ladder and records FAILED.
    let retry = h.transcode_job(&video, serde_json::Value::Null).await;
    let events = h.apply_failure(&retry, "the file is not readable media").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, events::EventKind::Failed);
    let after = h.video(video.id).await;
    assert_eq!(after.status, VideoStatus::Ready);
    assert_eq!(after.error, None);
    assert_eq!(h.renditions(video.id).await.len(), 1);
    assert_eq!(h.event_kinds(video.id).await.last().map(String::as_str), Some("FAILED"));
}

#[actix_web::test]
async fn runner_hostile_sources_fail_permanently_with_readable_reasons() {
    let h = harness(|_| {}).await;
    for name in ["hostile_truncated.mp4", "hostile_random.mp4", "hostile_empty.mp4"] {
        let video = h.video_from(&fixture(name)).await;
        let job = h.transcode_job(&video, serde_json::Value::Null).await;
        let (result, _) = h.run(&job).await;
        let (code, reason) = match result {
            Err(JobError::Permanent { code, reason }) => (code, reason),
            other => panic!("{name}: {other:?}"),
        };
        assert!(code.as_str().starts_with("MEDIA_"), "{name}: {code}");
        assert!(!reason.trim().is_empty(), "{name}");
        let scratch = h.scratch.path().to_string_lossy().to_string();
        assert!(!reason.contains(&scratch) && !reason.contains("/tmp"), "{name}: {reason}");
        assert!(h.scratch_is_empty(), "{name}: scratch left behind");

        let events = h.apply_failure(&job, &reason).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, events::EventKind::Failed);
        assert_eq!(events[0].error.as_deref(), Some(reason.as_str()));
        let after = h.video(video.id).await;
        assert_eq!(after.status, VideoStatus::Failed, "{name}");
        assert_eq!(after.error.as_deref(), Some(reason.as_str()), "{name}");
        assert!(h.renditions(video.id).await.is_empty(), "{name}");
        assert_eq!(h.leftover_outputs(video.id).await, 0, "{name}");
        eprintln!("{name}: {code}: {reason}");
    }
    let video = h.video_with_source(Vec::new()).await;
    let job = h.transcode_job(&video, serde_json::json!({ "preset": "ULTRA" })).await;
    match h.run(&job).await.0 {
        Err(JobError::Permanent { code, .. }) => assert_eq!(code, FailureCode::InvalidPayload),
        other => panic!("{other:?}"),
    }
}

#[actix_web::test]
async fn runner_refuses_oversized_missing_and_deleted_sources() {
    let h = harness(|s| s.media.max_width = 320).await;
    let permanent = |result: Result<JobOutput, JobError>| match result {
        Err(JobError::Permanent { code, reason }) => (code, reason),
        other => panic!("{other:?}"),
    };

    // Over the configured limits: a readable reason naming the size.
    let video = h.video_from(&fixture("no_audio.mp4")).await;
    let job = h.transcode_job(&video, serde_json::Value::Null).await;
    let (code, reason) = permanent(h.run(&job).await.0);
    assert_eq!(code, FailureCode::MediaRejected);
    assert!(reason.contains("640x360"), "{reason}");
    assert!(h.scratch_is_empty());

    // The source object is gone from storage.
    let missing = h.video_with_source(b"x".to_vec()).await;
    h.ctx.store.delete(missing.source_key.as_deref().unwrap()).await.unwrap();
    let job = h.transcode_job(&missing, serde_json::Value::Null).await;
    assert_eq!(permanent(h.run(&job).await.0).0, FailureCode::SourceMissing);
    assert!(h.scratch_is_empty());

    // The stored bytes are not the ones checked at upload (written behind the
    // check, e.g. through a still-valid presigned URL): refused, not processed.
    let swapped = h.video_from(&fixture("no_audio.mp4")).await;
    let mut row: video::ActiveModel = swapped.clone().into();
    row.source_size_bytes = Set(Some(1000));
    let swapped = row.update(&h.app.state.db).await.unwrap();
    let job = h.transcode_job(&swapped, serde_json::Value::Null).await;
    assert_eq!(permanent(h.run(&job).await.0).0, FailureCode::SourceChanged);
    assert!(h.scratch_is_empty());

    // The video was deleted before the job ran, or while it ran: nothing is applied.
    let deleted = h.video_from(&fixture("no_audio.mp4")).await;
    let job = h.transcode_job(&deleted, serde_json::Value::Null).await;
    let mut row: video::ActiveModel = deleted.clone().into();
    row.deleted_at = Set(Some(Utc::now()));
    row.update(&h.app.state.db).await.unwrap();
    assert_eq!(permanent(h.run(&job).await.0).0, FailureCode::VideoGone);
    let o = Outputs::new(h.owner, deleted.id, Some("v0000000001"));
    let output = JobOutput::Transcoded(Box::new(TranscodeOutput {
        video_id: deleted.id,
        renditions: vec![runner::RenditionOutput {
            name: "360p".into(),
            width: 640,
            height: 360,
            bandwidth: 1,
            average_bandwidth: 1,
            codecs: "avc1.64001e".into(),
            playlist_key: o.hls_playlist("360p"),
            segments: 1,
        }],
        probe: runner::ProbeSummary {
            duration_ms: 2000,
            width: 640,
            height: 360,
            frame_rate: 25.0,
            rotation: 0,
            has_audio: false,
            container: None,
            video_codec: None,
            audio_codec: None,
            source_size_bytes: 1,
        },
        master_playlist_key: o.hls_master(),
        download: Some(runner::DownloadOutput {
            key: o.download("video.mp4"),
            format: "MP4".into(),
            preset: "MEDIUM".into(),
            width: 640,
            height: 360,
            bytes: 1,
        }),
        downloads: Vec::new(),
        poster_key: o.poster(),
        thumbnail_keys: Vec::new(),
        storyboard: runner::StoryboardOutput {
            image_key: o.storyboard_image(),
            vtt_key: o.storyboard_vtt(),
            tiles: 1,
            columns: 1,
            rows: 1,
            tile_width: 160,
            tile_height: 90,
        },
        output_bytes: 1,
        output_version: Some("v0000000001".into()),
    }));
    assert!(h.apply_success(&job, &output).await.is_empty());
    assert!(h.apply_failure(&job, "whatever").await.is_empty());
    let after = h.video(deleted.id).await;
    assert_eq!(after.status, VideoStatus::Processing);
    assert!(h.renditions(deleted.id).await.is_empty());
    assert!(h.event_kinds(deleted.id).await.is_empty());
}

#[actix_web::test]
async fn runner_cancel_mid_encode_stops_and_leaves_nothing() {
    let h = harness(|s| s.media.speed_preset = "medium".into()).await;
    let video = h.video_from(&fixture("clip_720p.mp4")).await;
    let job = h.transcode_job(&video, serde_json::Value::Null).await;
    let reporter = Arc::new(Collect::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    *reporter.on_encoding.lock().unwrap() = Some(tx);
    let cancel = cancel_flag();
    let trigger = cancel.clone();
    let canceller = tokio::spawn(async move {
        if rx.await.is_ok() {
            trigger.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    });
    let result = runner::run(&h.ctx, &job, cancel, reporter.clone()).await;
    assert!(matches!(result, Err(JobError::Cancelled)), "{result:?}");
    assert!(canceller.await.unwrap(), "cancelled after an encoding progress report");
    assert!(h.scratch_is_empty(), "scratch left behind after cancel");
    // Stopped mid-way: nothing was packaged or uploaded.
    let progress = reporter.progress.lock().unwrap().clone();
    assert!(progress.iter().all(|p| p.stage != "uploading"), "{progress:?}");
    assert_eq!(h.leftover_outputs(video.id).await, 0, "the cancelled run's version is removed");

    let txn = h.app.state.db.begin().await.unwrap();
    let events = runner::apply_cancelled(&txn, &job, &h.ctx.settings.jobs).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, events::EventKind::Cancelled);
    let after = h.video(video.id).await;
    assert_eq!(after.status, VideoStatus::Failed);
    assert_eq!(after.error.as_deref(), Some(runner::CANCELLED_REASON));
}

#[actix_web::test]
async fn runner_delete_objects_removes_exactly_the_prefix() {
    let h = harness(|_| {}).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let keys_a = [
        layout::source(h.owner, a),
        Outputs::new(h.owner, a, Some("v0123456789")).hls_playlist("360p"),
        Outputs::new(h.owner, a, None).poster(),
    ];
    let key_b = layout::source(h.owner, b);
    for key in keys_a.iter().chain([&key_b]) {
        h.ctx.store.put_bytes(key, bytes::Bytes::from_static(b"x"), None).await.unwrap();
    }
    let delete = |prefix: String| {
        enqueue(
            &h.app.state.db,
            NewJob {
                kind: JobKind::DeleteObjects,
                video_id: None,
                owner_id: Some(h.owner),
                priority: 0,
                payload: serde_json::json!({ "prefix": prefix }),
                max_attempts: 3,
            },
        )
    };
    let job = delete(layout::video_prefix(h.owner, a)).await.unwrap();
    let (result, _) = h.run(&job).await;
    match result {
        Ok(JobOutput::ObjectsDeleted { count }) => assert_eq!(count, 3),
        other => panic!("{other:?}"),
    }
    for key in &keys_a {
        assert!(!h.exists(key).await, "{key} survived");
    }
    assert!(h.exists(&key_b).await, "another video's object was deleted");
    let txn = h.app.state.db.begin().await.unwrap();
    let settings = &h.ctx.settings.jobs;
    assert!(runner::apply_success(&txn, &job, &JobOutput::ObjectsDeleted { count: 3 }, settings)
        .await
        .unwrap()
        .is_empty());
    txn.commit().await.unwrap();

    for bad in ["videos/x/".to_string(), format!("users/{}", h.owner), "users/".to_string()] {
        let job = delete(bad.clone()).await.unwrap();
        assert!(matches!(h.run(&job).await.0, Err(JobError::Permanent { .. })), "{bad}");
    }
    assert!(h.exists(&key_b).await);
}
