//! A TRANSCODE job from source object to uploaded outputs: download, probe, ladder
//! (publishing the lowest rung while it is encoded: PLAYABLE at its first segment, a
//! growing EVENT playlist, RENDITION_READY when final), MP4/WebM download, poster,
//! thumbnails, storyboard, upload. The database is only touched for the early
//! rendition; the final state is applied by [`super::runner::apply_success`].
//!
//! Progress over the whole job: probing 0–2 %, encoding 2–80 %, packaging 80–95 %,
//! uploading 95–100 %; never decreasing.
//!
//! Every run (every lease) writes under its own output version,
//! `users/{user}/videos/{video}/out/{version}/` ([`layout::Outputs`]), and never
//! touches another run's objects: the video switches to the new version when
//! `apply_success` commits, and the replaced version is removed by a DELETE_OBJECTS
//! job after `jobs.retired_outputs_grace_secs`. A run that fails removes its own
//! version (unless it published its lowest rung early and whole: then the rendition
//! row still names it, and whoever replaces or drops that row retires it; a rung that
//! was still growing is withdrawn with the version).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use entities::{job, video, LogLevel};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::failure::FailureCode;
use super::runner::{JobContext, JobError, JobReporter};
use super::runner_storage::{content_type_for, download_to_file, upload_all, upload_text, Upload};
use crate::events::{EventDetail, EventKind, ProgressInfo, RenditionProgressInfo};
use crate::jail::protocol::{Message, Step, TranscodeFiles, TranscodeTask};
use crate::jail::{confined_file, MediaChild, MediaJail};
use crate::media::ladder::{RenditionReady, Rung};
use crate::media::mp4::{normalize_formats, Format, Mp4Options, OutputFormat, Preset};
use crate::media::thumbs::{StoryboardOptions, ThumbnailOptions};
use crate::media::{CancelFlag, MediaError, MediaInfo, Progress};
use crate::storage::layout;

const PROBE_END: f64 = 2.0;
const ENCODE_END: f64 = 80.0;
const MP4_END: f64 = 92.0;
const PACKAGE_END: f64 = 95.0;

/// What a transcode produced; stored on the job by the scheduler and applied by
/// `apply_success`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscodeOutput {
    pub video_id: Uuid,
    /// Highest rung first.
    pub renditions: Vec<RenditionOutput>,
    pub probe: ProbeSummary,
    pub master_playlist_key: String,
    /// The first of `downloads` (what results of earlier releases carried alone).
    #[serde(default)]
    pub download: Option<DownloadOutput>,
    /// Every single-file download made (MP4 and/or WebM; none when only HLS was asked).
    #[serde(default)]
    pub downloads: Vec<DownloadOutput>,
    pub poster_key: String,
    pub thumbnail_keys: Vec<String>,
    pub storyboard: StoryboardOutput,
    /// Bytes of every output stored (counted against the owner's quota).
    #[serde(default)]
    pub output_bytes: u64,
    /// The output version every key above lives under (`None`: the unversioned
    /// layout, from a worker of an earlier release).
    #[serde(default)]
    pub output_version: Option<String>,
}

impl TranscodeOutput {
    /// Every download of the result: `downloads`, or the lone `download` of a result
    /// from an earlier release.
    pub fn all_downloads(&self) -> Vec<&DownloadOutput> {
        if self.downloads.is_empty() {
            self.download.iter().collect()
        } else {
            self.downloads.iter().collect()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionOutput {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second (the master playlist's BANDWIDTH).
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub playlist_key: String,
    pub segments: usize,
}

/// The probed facts stored on the video. `width`/`height` are the stream's coded
/// size; `rotation` says how it is displayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub duration_ms: i64,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub rotation: u32,
    pub has_audio: bool,
    pub container: Option<String>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub source_size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadOutput {
    /// `.../mp4/video.mp4` or `.../mp4/video.webm`.
    pub key: String,
    /// MP4 | WEBM
    pub format: String,
    /// LOW | MEDIUM | HIGH
    pub preset: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryboardOutput {
    pub image_key: String,
    pub vtt_key: String,
    pub tiles: u32,
    pub columns: u32,
    pub rows: u32,
    pub tile_width: u32,
    pub tile_height: u32,
}

/// `{"preset": "LOW"|"MEDIUM"|"HIGH", "formats": ["HLS", "MP4", "WEBM"]}`, both
/// optional; `"format": "MP4"|"WEBM"` (one download beside HLS) is the shape of
/// earlier releases. Neither: HLS and MP4.
#[derive(Debug, Default, Deserialize)]
struct TranscodePayload {
    preset: Option<String>,
    format: Option<String>,
    formats: Option<Vec<String>>,
}

/// The payload of a TRANSCODE job asking for `preset` and `formats`.
pub fn transcode_payload(preset: &str, formats: &[OutputFormat]) -> serde_json::Value {
    let mut formats = formats.to_vec();
    formats.sort();
    formats.dedup();
    serde_json::json!({ "preset": preset, "formats": formats })
}

/// The downloads a payload asks for, in the order they are made (MP4 before WebM).
fn parse_payload(payload: &serde_json::Value) -> Result<(Preset, Vec<Format>), JobError> {
    let invalid = |reason: String| JobError::Permanent { code: crate::jobs::FailureCode::InvalidPayload, reason };
    let parsed: TranscodePayload = if payload.is_null() {
        TranscodePayload::default()
    } else {
        serde_json::from_value(payload.clone())
            .map_err(|e| invalid(format!("the transcode request is malformed: {e}")))?
    };
    let preset = match parsed.preset.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("MEDIUM") => Preset::Medium,
        Some("LOW") => Preset::Low,
        Some("HIGH") => Preset::High,
        Some(other) => return Err(invalid(format!("unknown preset {other:?} (expected LOW, MEDIUM or HIGH)"))),
    };
    let downloads = match (parsed.formats, parsed.format) {
        (Some(names), _) => {
            let mut formats = Vec::with_capacity(names.len());
            for name in &names {
                formats.push(
                    OutputFormat::parse(name)
                        .ok_or_else(|| invalid(format!("unknown format {name:?} (expected HLS, MP4 or WEBM)")))?,
                );
            }
            normalize_formats(&formats).map_err(invalid)?.into_iter().filter_map(OutputFormat::download).collect()
        }
        (None, format) => match format.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("MP4") => vec![Format::Mp4],
            Some("WEBM") => vec![Format::WebM],
            Some(other) => return Err(invalid(format!("unknown format {other:?} (expected MP4 or WEBM)"))),
        },
    };
    Ok((preset, downloads))
}

fn preset_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Low => "LOW",
        Preset::Medium => "MEDIUM",
        Preset::High => "HIGH",
    }
}

/// Reports through the scheduler's reporter with a percent that never goes back and
/// an ETA over the whole job that never goes up.
struct StageReporter {
    inner: Arc<dyn JobReporter>,
    last: Mutex<f64>,
    /// When the run started, for the whole job's rate.
    started: std::time::Instant,
    /// The last ETA reported (seconds).
    eta: Mutex<Option<f64>>,
    /// The span of the stage under way, ended when the next begins (or the run ends).
    span: Mutex<Option<tracing::Span>>,
    /// The run's span, parent of every stage's.
    parent: tracing::Span,
}

impl StageReporter {
    fn report(&self, stage: &str, percent: f64, media: Option<&Progress>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let percent = percent.clamp(0.0, 100.0).max(*last);
        *last = percent;
        let eta_seconds = self.whole_job_eta(percent);
        self.inner.progress(ProgressInfo {
            percent,
            stage: stage.to_string(),
            fps: media.map(|p| p.fps).filter(|f| f.is_finite() && *f > 0.0),
            eta_seconds,
            renditions: media
                .map(|p| {
                    p.rungs
                        .iter()
                        .map(|r| RenditionProgressInfo { name: r.name.clone(), percent: r.percent, fps: None })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }

    /// Seconds left of the whole job at its rate so far (`elapsed × left / done`),
    /// never more than the last estimate: a slower stretch holds the estimate
    /// until progress catches up, so a client's countdown never jumps back. None
    /// until encoding has begun (the download and probe say little of the rate);
    /// 0 at 100 %.
    fn whole_job_eta(&self, percent: f64) -> Option<f64> {
        eta_step(&mut self.eta.lock().unwrap_or_else(|p| p.into_inner()), percent, self.started.elapsed().as_secs_f64())
    }

    fn stage(&self, stage: &str, message: String) {
        let span = tracing::info_span!(
            parent: &self.parent,
            "transcode stage",
            otel.name = %format!("transcode {stage}"),
            stage,
            detail = %message,
        );
        // Replacing the previous stage's span closes it.
        *self.span.lock().unwrap_or_else(|p| p.into_inner()) = Some(span);
        let percent = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.log(LogLevel::Info, format!("{stage}: {message}"));
        self.report(stage, percent, None);
    }

    fn log(&self, level: LogLevel, message: String) {
        self.inner.log(level, message);
    }
}

/// The next whole-job ETA after `last`, at `percent` done after `elapsed` seconds
/// (see [`StageReporter::whole_job_eta`]).
fn eta_step(last: &mut Option<f64>, percent: f64, elapsed: f64) -> Option<f64> {
    let estimate = if percent >= 100.0 {
        Some(0.0)
    } else if percent > PROBE_END {
        Some(elapsed * (100.0 - percent) / percent)
    } else {
        None
    };
    let eta = match (estimate, *last) {
        (Some(new), Some(old)) => Some(new.min(old)),
        (new, old) => new.or(old),
    };
    *last = eta;
    eta
}

/// Map a media failure: the upload's fault is permanent (with a readable reason that
/// names no local path), a cancel is a cancel, anything else may pass on retry.
fn media_error(err: MediaError, scratch: &Path) -> JobError {
    if matches!(err, MediaError::Cancelled) {
        return JobError::Cancelled;
    }
    let Some(code) = FailureCode::of_media(&err) else {
        tracing::warn!(error = ?err, "media processing failed on the worker");
        return JobError::Retryable(format!("media processing failed on the worker ({})", err.code()));
    };
    // GStreamer messages may quote the local file; the user knows it as "the upload".
    let mut reason = err.to_string();
    let dir = scratch.to_string_lossy().to_string();
    for (form, with) in [
        (format!("file://{dir}/source"), "the upload"),
        (format!("{dir}/source"), "the upload"),
        (format!("file://{dir}"), ""),
        (dir.clone(), ""),
    ] {
        reason = reason.replace(&form, with);
    }
    JobError::Permanent { code, reason }
}

/// Which encoders this run uses, for the job's log.
fn encoder_choice(ladder_speed: &str, preset: Preset, formats: &[Format], has_audio: bool) -> String {
    let download = preset.settings();
    let mut text = format!("encoders: HLS ladder x264enc (software, speed preset {ladder_speed})");
    if formats.is_empty() {
        text.push_str("; no download asked for");
    }
    for format in formats {
        let (video, audio) = match format {
            Format::Mp4 => (format!("x264enc (software, speed preset {})", download.x264_speed_preset), "avenc_aac"),
            Format::WebM => (format!("vp8enc (software, cpu-used {})", download.vpx_cpu_used), "opusenc"),
        };
        let audio =
            if has_audio { format!(", audio {audio} {} kb/s", download.audio_bitrate_kbps) } else { String::new() };
        text.push_str(&format!(
            "; {} download {video} {} kb/s{audio}",
            format.extension(),
            download.video_bitrate_kbps
        ));
    }
    text
}

/// A GStreamer warning from the media child, for the job's log: its text is the
/// child's (untrusted, bounded when stored) and names no local path.
fn media_warning(element: &str, message: &str, scratch: &Path) -> String {
    let dir = scratch.to_string_lossy().to_string();
    let element: String = element.chars().take(64).collect();
    let message = message.replace(&format!("{dir}/source"), "the upload").replace(&dir, "");
    format!("GStreamer warning from {element}: {message}")
}

fn db_error(err: sea_orm::DbErr) -> JobError {
    tracing::warn!(error = %err, "database error in a transcode job");
    JobError::Retryable("the database is unavailable".into())
}

fn check_cancel(cancel: &CancelFlag) -> Result<(), JobError> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        Err(JobError::Cancelled)
    } else {
        Ok(())
    }
}

/// A file the media child says it wrote, checked to be a plain file inside its
/// work directory before this process reads or uploads it.
fn confine(root: &Path, path: &Path) -> Result<PathBuf, JobError> {
    confined_file(root, path).map_err(|e| media_error(e, root))
}

#[tracing::instrument(skip_all, fields(job_id = %job.id, video_id = ?job.video_id), err(Display))]
pub(crate) async fn run_transcode(
    ctx: &JobContext,
    job: &job::Model,
    cancel: CancelFlag,
    reporter: Arc<dyn JobReporter>,
) -> Result<TranscodeOutput, JobError> {
    let video_id = job.video_id.ok_or_else(|| JobError::Permanent {
        code: crate::jobs::FailureCode::VideoGone,
        reason: "the job names no video".into(),
    })?;
    let video = crate::repo::videos::find(&ctx.db, video_id).await.map_err(db_error)?;
    let video = match video {
        Some(v) if v.deleted_at.is_none() => v,
        _ => {
            return Err(JobError::Permanent {
                code: crate::jobs::FailureCode::VideoGone,
                reason: "the video was deleted".into(),
            })
        }
    };
    let source_key = video.source_key.clone().ok_or_else(|| JobError::Permanent {
        code: crate::jobs::FailureCode::SourceMissing,
        reason: "the video has no uploaded file".into(),
    })?;
    let spec = MediaSpec {
        job_id: job.id,
        video_id: video.id,
        owner_id: video.owner_id,
        source_size: video.source_size_bytes.and_then(|n| u64::try_from(n).ok()),
        payload: job.payload.clone(),
        version: output_version(job),
    };
    let host = LocalHost { ctx, job, video: &video, source_key: &source_key };
    run_media(&ctx.settings, &ctx.scratch_dir, &spec, &host, cancel, reporter).await
}

/// What the media side of a transcode needs to know of its job: no database row, so
/// a remote worker gets it in its assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaSpec {
    pub job_id: Uuid,
    pub video_id: Uuid,
    pub owner_id: Uuid,
    /// The source's size as checked at upload (a different size is refused).
    pub source_size: Option<u64>,
    /// `{"preset": .., "formats": [..]}` (see [`transcode_payload`]).
    pub payload: serde_json::Value,
    /// The output version this run writes under ([`output_version`]).
    pub version: String,
}

impl MediaSpec {
    /// Where this run's outputs go.
    pub fn outputs(&self) -> layout::Outputs {
        layout::Outputs::new(self.owner_id, self.video_id, Some(&self.version))
    }
}

/// Where the media side of a transcode gets its bytes and puts its outputs, and what
/// the database side does while it runs. A local worker ([`LocalHost`]) uses the
/// store and the database directly; a remote worker uses presigned URLs, never
/// publishes a rung early and leaves the quota check to the server, which makes it
/// when the result arrives.
#[async_trait::async_trait(?Send)]
pub(crate) trait TranscodeHost {
    /// Stream the source into `dest`; its size.
    async fn fetch_source(&self, dest: &Path, cancel: &CancelFlag, expected: Option<u64>) -> Result<u64, JobError>;
    /// Upload `files`, calling `on_done` after each; the bytes sent.
    async fn upload_files(
        &self,
        files: &[Upload],
        cancel: &CancelFlag,
        on_done: &mut (dyn FnMut() + Send),
    ) -> Result<u64, JobError>;
    async fn upload_text(&self, key: &str, text: String, content_type: &str) -> Result<(), JobError>;
    /// Whether the lowest rung is published while it is encoded.
    async fn publishes_early(&self) -> Result<bool, JobError>;
    /// Refuse outputs of `new_bytes` over the owner's storage quota.
    async fn check_quota(&self, new_bytes: u64) -> Result<(), JobError>;
    /// Publish the lowest rung early, as it grows or once final (`ready.complete`);
    /// `early` is what this run published of it so far. `Ok(false)`: not published
    /// (the video went away meanwhile, or the host publishes only final rungs).
    async fn publish_early(
        &self,
        info: &MediaInfo,
        root: &Path,
        ready: &RenditionReady,
        outputs: &layout::Outputs,
        cancel: &CancelFlag,
        early: &mut EarlyPublished,
    ) -> Result<bool, JobError>;
    /// Take back an early rung (the whole run failed its quota).
    async fn unpublish_early(&self, name: &str);
    /// Remove a failed run's outputs (best effort).
    async fn remove_outputs(&self, prefix: &str);
}

/// A database-attached worker's [`TranscodeHost`].
struct LocalHost<'a> {
    ctx: &'a JobContext,
    job: &'a job::Model,
    video: &'a video::Model,
    source_key: &'a str,
}

#[async_trait::async_trait(?Send)]
impl TranscodeHost for LocalHost<'_> {
    async fn fetch_source(&self, dest: &Path, cancel: &CancelFlag, expected: Option<u64>) -> Result<u64, JobError> {
        download_to_file(&self.ctx.store, self.source_key, dest, cancel, expected).await
    }

    async fn upload_files(
        &self,
        files: &[Upload],
        cancel: &CancelFlag,
        on_done: &mut (dyn FnMut() + Send),
    ) -> Result<u64, JobError> {
        upload_all(&self.ctx.store, files, cancel, on_done).await
    }

    async fn upload_text(&self, key: &str, text: String, content_type: &str) -> Result<(), JobError> {
        upload_text(&self.ctx.store, key, text, content_type).await
    }

    async fn publishes_early(&self) -> Result<bool, JobError> {
        is_first_transcode(self.ctx, self.video).await
    }

    async fn check_quota(&self, new_bytes: u64) -> Result<(), JobError> {
        check_quota(&self.ctx.db, &self.ctx.settings, self.video.owner_id, self.video.id, new_bytes).await
    }

    async fn publish_early(
        &self,
        info: &MediaInfo,
        root: &Path,
        ready: &RenditionReady,
        outputs: &layout::Outputs,
        cancel: &CancelFlag,
        early: &mut EarlyPublished,
    ) -> Result<bool, JobError> {
        let Some(rung) = early_rung(&self.ctx.settings, info, root, ready, outputs)? else { return Ok(false) };
        let new_files: Vec<Upload> = rung.uploads.into_iter().filter(|u| !early.stored.contains(&u.key)).collect();
        upload_all(&self.ctx.store, &new_files, cancel, &mut || {}).await?;
        early.stored.extend(new_files.into_iter().map(|u| u.key));
        upload_text(&self.ctx.store, &rung.rendition.playlist_key, rung.playlist_text, HLS_PLAYLIST).await?;
        let kinds: &[EventKind] = match (early.announced, ready.complete) {
            (true, false) => return Ok(true),
            (false, false) => &[EventKind::Playable],
            (false, true) => &[EventKind::Playable, EventKind::RenditionReady],
            (true, true) => &[EventKind::RenditionReady],
        };
        let ctx = self.ctx;
        let recorded = record_early_rendition(
            &ctx.db,
            &ctx.publisher,
            &ctx.settings.jobs,
            self.job.id,
            self.video,
            &rung.rendition,
            outputs.prefix(),
            kinds,
        )
        .await?;
        early.announced |= recorded;
        Ok(recorded)
    }

    async fn unpublish_early(&self, name: &str) {
        unpublish_early_rendition(self.ctx, self.video, name).await
    }

    async fn remove_outputs(&self, prefix: &str) {
        if let Err(err) = self.ctx.store.delete_prefix(prefix).await {
            tracing::warn!(error = ?err, prefix, "could not remove a failed run's outputs");
        }
    }
}

/// The media side of a transcode, shared by local and remote workers: download,
/// jailed encode, upload; the result describes what was stored. On failure the
/// run's outputs are removed unless a whole rung was published early (a rung still
/// growing is withdrawn first: its playlist would never end).
pub(crate) async fn run_media(
    settings: &crate::config::Settings,
    scratch_dir: &Path,
    spec: &MediaSpec,
    host: &dyn TranscodeHost,
    cancel: CancelFlag,
    reporter: Arc<dyn JobReporter>,
) -> Result<TranscodeOutput, JobError> {
    let reporter = Arc::new(StageReporter {
        inner: reporter,
        last: Mutex::new(0.0),
        started: std::time::Instant::now(),
        eta: Mutex::new(None),
        span: Mutex::new(None),
        parent: tracing::Span::current(),
    });
    let (preset, downloads) = parse_payload(&spec.payload)?;
    let outputs = spec.outputs();
    let mut early = EarlyPublished::default();
    let result = transcode_into(
        settings,
        scratch_dir,
        spec,
        host,
        Request { preset, downloads, version: &spec.version, outputs: &outputs },
        cancel,
        reporter.clone(),
        &mut early,
    )
    .await;
    if result.is_err() && !early.keeps_outputs() {
        if let Some(name) = early.name.as_deref().filter(|_| early.announced) {
            host.unpublish_early(name).await;
        }
        // Nothing names this run's objects: they go now (best effort; a failure
        // leaves them behind in storage, never in a playlist).
        host.remove_outputs(outputs.prefix()).await;
    }
    result
}

/// What a run published early of its lowest rung.
#[derive(Debug, Default)]
pub(crate) struct EarlyPublished {
    /// The rung's name, once any of it was stored.
    pub name: Option<String>,
    /// Keys of its segments already stored.
    pub stored: HashSet<String>,
    /// Its rendition row is written and PLAYABLE published.
    pub announced: bool,
    /// Its final playlist is stored and RENDITION_READY published.
    pub complete: bool,
}

impl EarlyPublished {
    /// A whole rung is published: its row names this run's objects, which stay
    /// whatever becomes of the run.
    fn keeps_outputs(&self) -> bool {
        self.announced && self.complete
    }
}

/// What to make, and where.
struct Request<'a> {
    preset: Preset,
    downloads: Vec<Format>,
    version: &'a str,
    outputs: &'a layout::Outputs,
}

/// One run of the media side: where it works and what it reports to. Each stage
/// below takes it.
struct Run<'a> {
    settings: &'a crate::config::Settings,
    host: &'a dyn TranscodeHost,
    outputs: &'a layout::Outputs,
    cancel: &'a CancelFlag,
    reporter: &'a Arc<StageReporter>,
    /// The run's scratch directory (the source and everything the child writes).
    root: &'a Path,
}

/// The stages of a run: fetch the source, probe it and plan the ladder (in the
/// jail), encode (publishing the lowest rung early), check what was made, upload,
/// describe the result.
#[allow(clippy::too_many_arguments)]
async fn transcode_into(
    settings: &crate::config::Settings,
    scratch_dir: &Path,
    spec: &MediaSpec,
    host: &dyn TranscodeHost,
    request: Request<'_>,
    cancel: CancelFlag,
    reporter: Arc<StageReporter>,
    early: &mut EarlyPublished,
) -> Result<TranscodeOutput, JobError> {
    let Request { preset, downloads, version, outputs } = request;
    // The scratch directory is shared with the media threads: it goes away when the
    // last of them lets go, whichever way this job ends.
    let scratch = job_directory(scratch_dir)?;
    let run = Run { settings, host, outputs, cancel: &cancel, reporter: &reporter, root: scratch.path() };

    reporter.stage("probing", "downloading the source".into());
    reporter.report("probing", 0.0, None);
    let source = run.root.join("source");
    let source_size = host.fetch_source(&source, &cancel, spec.source_size).await?;
    check_cancel(&cancel)?;
    let (mut child, info, rungs) = probe_and_plan(&run, &source, preset, &downloads).await?;

    // The lowest rung is published early (making the video playable while it is
    // encoded) only by a first transcode: a video with outputs keeps playing them,
    // whole, until this run's replace them at once.
    let first_transcode = host.publishes_early().await?;
    reporter.stage("encoding", format!("{} rung(s)", rungs.len()));
    reporter.log(
        LogLevel::Info,
        encoder_choice(&settings.media.hls_options().speed_preset, preset, &downloads, info.has_audio),
    );
    let encoded = encode(&run, &mut child, &info, preset, &downloads, first_transcode, early).await;
    child.finish().await;
    let files = encoded?;
    let output_bytes = check_made(&run, &files, &downloads, source_size, early).await?;

    let whole = early.name.as_deref().filter(|_| early.keeps_outputs());
    let plan = plan_uploads(&run, &files, whole, preset)?;
    let master_key = upload(&run, plan.files, plan.playlists, &files.hls.master_playlist).await?;
    let download_bytes: u64 = plan.downloads.iter().map(|d| d.bytes).sum();
    reporter.log(
        LogLevel::Info,
        format!(
            "done: {} rendition(s), {} download(s) of {download_bytes} bytes",
            plan.renditions.len(),
            plan.downloads.len()
        ),
    );
    drop(scratch);
    Ok(TranscodeOutput {
        video_id: spec.video_id,
        renditions: plan.renditions,
        probe: ProbeSummary::of(&info, source_size),
        master_playlist_key: master_key,
        download: plan.downloads.first().cloned(),
        downloads: plan.downloads,
        poster_key: outputs.poster(),
        thumbnail_keys: plan.thumbnail_keys,
        output_bytes,
        output_version: Some(version.to_string()),
        storyboard: StoryboardOutput::of(outputs, &files.storyboard),
    })
}

/// A fresh directory for this job under the worker's scratch directory.
fn job_directory(scratch_dir: &Path) -> Result<Arc<tempfile::TempDir>, JobError> {
    let unusable = |e: std::io::Error, what: &str| {
        tracing::warn!(error = %e, dir = %scratch_dir.display(), "cannot create the {what}");
        JobError::Retryable("the worker has no usable scratch directory".into())
    };
    std::fs::create_dir_all(scratch_dir).map_err(|e| unusable(e, "scratch directory"))?;
    let dir =
        tempfile::Builder::new().prefix("job-").tempdir_in(scratch_dir).map_err(|e| unusable(e, "job directory"))?;
    Ok(Arc::new(dir))
}

/// Start the jailed child on the source and wait for its probe and the rungs it
/// planned. Everything that decodes the upload runs in the child; this process only
/// relays its progress, publishes the early rendition and uploads its files.
async fn probe_and_plan(
    run: &Run<'_>,
    source: &Path,
    preset: Preset,
    downloads: &[Format],
) -> Result<(MediaChild, MediaInfo, Vec<Rung>), JobError> {
    let media = &run.settings.media;
    let thumbs_timeout = ThumbnailOptions::default().timeout + StoryboardOptions::default().timeout;
    let task = TranscodeTask {
        probe_timeout: media.probe_timeout(),
        limits: media.limits(),
        ladder: media.ladder(),
        hls: media.hls_options(),
        preset,
        downloads: downloads.to_vec(),
        mp4: Mp4Options {
            timeout: std::time::Duration::from_secs(media.pipeline_timeout_secs),
            ..Mp4Options::default()
        },
        ladder_only: false,
    };
    let deadline = task.probe_timeout + task.hls.timeout + task.mp4.timeout + thumbs_timeout;
    let jail = MediaJail::from_settings(run.settings);
    let mut child = jail.transcode(source, run.root, task, deadline).await.map_err(|e| media_error(e, run.root))?;
    let (info, rungs) = loop {
        match child.next(run.cancel).await.map_err(|e| media_error(e, run.root))? {
            Message::Probed { info, rungs } => break (info, rungs),
            Message::Failed { error } => return Err(media_error(error.into(), run.root)),
            Message::Warning { element, message } => {
                run.reporter.log(LogLevel::Warn, media_warning(&element, &message, run.root))
            }
            _ => {}
        }
    };
    run.reporter.report("probing", PROBE_END, None);
    let rung_list = rungs.iter().map(|r| format!("{} {}x{}", r.name, r.width, r.height)).collect::<Vec<_>>();
    run.reporter.log(
        LogLevel::Info,
        format!(
            "probed: {}x{} (rotation {}), {:.2} s, {:.2} fps, {}; rungs: {}",
            info.width,
            info.height,
            info.rotation,
            info.duration.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            info.frame_rate,
            if info.has_audio { "with audio" } else { "no audio" },
            rung_list.join(", ")
        ),
    );
    check_cancel(run.cancel)?;
    Ok((child, info, rungs))
}

/// Relay the child's encoding until it has made everything: the ladder (on a first
/// transcode, the lowest rung published as it grows and once final), then the
/// downloads, poster, thumbnails and storyboard. Returns the files.
async fn encode(
    run: &Run<'_>,
    child: &mut MediaChild,
    info: &MediaInfo,
    preset: Preset,
    downloads: &[Format],
    first_transcode: bool,
    early: &mut EarlyPublished,
) -> Result<TranscodeFiles, JobError> {
    let reporter = run.reporter;
    // Publishing stops at the first failure: the final upload covers the rung.
    let mut publishing = first_transcode;
    loop {
        match child.next(run.cancel).await.map_err(|e| media_error(e, run.root))? {
            Message::Progress { step: Step::Ladder, progress: Some(p) } => {
                reporter.report("encoding", PROBE_END + p.percent / 100.0 * (ENCODE_END - PROBE_END), Some(&p));
            }
            Message::StepDone { step: Step::Ladder } => {
                reporter.report("encoding", ENCODE_END, None);
                let names: Vec<&str> = downloads.iter().map(|f| f.extension()).collect();
                let what = if names.is_empty() { "no download".to_string() } else { names.join(" + ") };
                reporter.stage("packaging", format!("{what} ({}), thumbnails", preset_name(preset)));
            }
            Message::Progress { step: Step::Download, progress: Some(p) } => {
                reporter.report("packaging", ENCODE_END + p.percent / 100.0 * (MP4_END - ENCODE_END), None);
            }
            Message::StepDone { step: Step::Download } => reporter.report("packaging", MP4_END, None),
            Message::StepDone { step: Step::Thumbnails } => {
                reporter.report("packaging", MP4_END + (PACKAGE_END - MP4_END) / 2.0, None);
            }
            Message::StepDone { step: Step::Storyboard } => reporter.report("packaging", PACKAGE_END, None),
            Message::RenditionReady { ready } if publishing => {
                publishing = publish_early(run, info, &ready, early).await;
            }
            Message::Transcoded { files } => return Ok(*files),
            Message::Failed { error } => return Err(media_error(error.into(), run.root)),
            Message::Warning { element, message } => {
                reporter.log(LogLevel::Warn, media_warning(&element, &message, run.root))
            }
            _ => {}
        }
    }
}

/// Publish the lowest rung as the child reports it (growing, then final), within
/// the quota. A failure is only a warning: the final upload covers the rung (a
/// growing rung already announced is then not whole, and a failed run withdraws
/// it). Returns whether to go on publishing.
async fn publish_early(run: &Run<'_>, info: &MediaInfo, ready: &RenditionReady, early: &mut EarlyPublished) -> bool {
    let name = ready.rung.name.clone();
    let rung_bytes = ready.playlist.parent().map(tree_bytes).unwrap_or(0);
    if let Err(err) = run.host.check_quota(rung_bytes).await {
        run.reporter.log(LogLevel::Warn, format!("rendition {name} is not published early: {err}"));
        return false;
    }
    early.name = Some(name.clone());
    let was_announced = early.announced;
    match run.host.publish_early(info, run.root, ready, run.outputs, run.cancel, early).await {
        Ok(published) => {
            if published && ready.complete {
                early.complete = true;
                run.reporter.log(LogLevel::Info, format!("rendition {name} is ready"));
            } else if published && !was_announced {
                run.reporter.log(LogLevel::Info, format!("rendition {name} is playable while it is encoded"));
            }
            true
        }
        Err(err) => {
            run.reporter.log(LogLevel::Warn, format!("rendition {name} could not be published early: {err}"));
            false
        }
    }
}

/// Check what the child made: exactly the downloads asked for, each once (the child
/// is not trusted to obey), and within the owner's quota, which counts everything
/// the child wrote beside the source. Over the quota, the early rung is withdrawn.
/// Returns the bytes to store.
async fn check_made(
    run: &Run<'_>,
    files: &TranscodeFiles,
    downloads: &[Format],
    source_size: u64,
    early: &mut EarlyPublished,
) -> Result<u64, JobError> {
    let made = &files.downloads;
    if made.len() != downloads.len() || made.iter().zip(downloads).any(|(m, f)| m.format != *f) {
        return Err(JobError::Retryable("the media child made other downloads than asked for".into()));
    }
    check_cancel(run.cancel)?;
    let output_bytes = tree_bytes(run.root).saturating_sub(source_size);
    if let Err(err) = run.host.check_quota(output_bytes).await {
        if let Some(name) = early.name.as_deref().filter(|_| early.announced) {
            run.host.unpublish_early(name).await;
            run.reporter.log(LogLevel::Warn, format!("rendition {name} was withdrawn: the storage quota is exceeded"));
        }
        // Withdrawn: nothing names this run's objects any more.
        early.announced = false;
        return Err(err);
    }
    Ok(output_bytes)
}

/// What to upload and what the result will say about it.
struct UploadPlan {
    /// Segments, downloads, poster, thumbnails and storyboard, confined to the run's
    /// directory.
    files: Vec<Upload>,
    /// Rung playlists (key, text), uploaded after the files they name.
    playlists: Vec<(String, String)>,
    renditions: Vec<RenditionOutput>,
    downloads: Vec<DownloadOutput>,
    thumbnail_keys: Vec<String>,
}

/// Map the child's files to their keys under this run's outputs. The rung published
/// early is described but not uploaded again.
fn plan_uploads(
    run: &Run<'_>,
    made: &TranscodeFiles,
    early: Option<&str>,
    preset: Preset,
) -> Result<UploadPlan, JobError> {
    let outputs = run.outputs;
    let mut plan = UploadPlan {
        files: Vec::new(),
        playlists: Vec::new(),
        renditions: Vec::with_capacity(made.hls.rungs.len()),
        downloads: Vec::with_capacity(made.downloads.len()),
        thumbnail_keys: Vec::with_capacity(made.thumbnails.len()),
    };
    for rung in &made.hls.rungs {
        let playlist_key = outputs.hls_playlist(&rung.rung.name);
        plan.renditions.push(RenditionOutput {
            name: rung.rung.name.clone(),
            width: rung.rung.width,
            height: rung.rung.height,
            bandwidth: rung.bandwidth,
            average_bandwidth: rung.average_bandwidth,
            codecs: rung.codecs.clone(),
            playlist_key: playlist_key.clone(),
            segments: rung.segments.len(),
        });
        if early == Some(rung.rung.name.as_str()) {
            continue;
        }
        let (text, segments) = read_playlist(run.root, &rung.playlist)?;
        for segment in segments {
            let key = outputs.hls_segment(&rung.rung.name, &segment.stored_name);
            plan.files.push(Upload { content_type: content_type_for(&segment.path), path: segment.path, key });
        }
        // Final: typed VOD, as the early rung's is (players keep every segment).
        plan.playlists.push((playlist_key, typed_playlist(&text, "VOD")));
    }
    for download in &made.downloads {
        let key = outputs.download(&format!("video.{}", download.format.extension()));
        let path = download.file.path.clone();
        plan.files.push(Upload { key: key.clone(), content_type: content_type_for(&path), path });
        plan.downloads.push(DownloadOutput {
            key,
            format: download.format.api_name().into(),
            preset: preset_name(preset).into(),
            width: download.file.width,
            height: download.file.height,
            bytes: download.file.bytes,
        });
    }
    plan.files.push(Upload { key: outputs.poster(), content_type: "image/jpeg", path: made.poster.path.clone() });
    for thumb in &made.thumbnails {
        let name = thumb.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let key = format!("{}{name}", outputs.thumbs_prefix());
        plan.thumbnail_keys.push(key.clone());
        plan.files.push(Upload { key, content_type: "image/jpeg", path: thumb.clone() });
    }
    let board = &made.storyboard;
    plan.files.push(Upload { key: outputs.storyboard_image(), content_type: "image/jpeg", path: board.sprite.clone() });
    plan.files.push(Upload { key: outputs.storyboard_vtt(), content_type: "text/vtt", path: board.vtt.clone() });
    for file in &mut plan.files {
        file.path = confine(run.root, &file.path)?;
    }
    Ok(plan)
}

/// Upload segments and files first, then rung playlists, then the master, so no
/// uploaded playlist ever names a missing object. Returns the master's key.
async fn upload(
    run: &Run<'_>,
    files: Vec<Upload>,
    playlists: Vec<(String, String)>,
    master: &Path,
) -> Result<String, JobError> {
    run.reporter.stage("uploading", "outputs to storage".into());
    let total = (files.len() + playlists.len() + 1) as f64;
    let mut done = 0usize;
    let reporter = run.reporter.clone();
    let mut step = move || {
        done += 1;
        reporter.report("uploading", PACKAGE_END + (100.0 - PACKAGE_END) * done as f64 / total, None);
    };
    run.host.upload_files(&files, run.cancel, &mut step).await?;
    for (key, text) in playlists {
        check_cancel(run.cancel)?;
        run.host.upload_text(&key, text, HLS_PLAYLIST).await?;
        step();
    }
    let master_key = run.outputs.hls_master();
    let master = std::fs::read_to_string(confine(run.root, master)?).map_err(|e| {
        tracing::warn!(error = %e, "the master playlist is missing");
        JobError::Retryable("an output file went missing before upload".into())
    })?;
    run.host.upload_text(&master_key, master, HLS_PLAYLIST).await?;
    step();
    Ok(master_key)
}

impl ProbeSummary {
    fn of(info: &MediaInfo, source_size: u64) -> Self {
        Self {
            duration_ms: info.duration.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0),
            width: info.width,
            height: info.height,
            frame_rate: info.frame_rate,
            rotation: info.rotation,
            has_audio: info.has_audio,
            container: info.container.clone(),
            video_codec: info.video_codec.clone(),
            audio_codec: info.audio_codec.clone(),
            source_size_bytes: source_size,
        }
    }
}

impl StoryboardOutput {
    fn of(outputs: &layout::Outputs, board: &crate::media::thumbs::Storyboard) -> Self {
        Self {
            image_key: outputs.storyboard_image(),
            vtt_key: outputs.storyboard_vtt(),
            tiles: board.tiles,
            columns: board.columns,
            rows: board.rows,
            tile_width: board.tile_width,
            tile_height: board.tile_height,
        }
    }
}

/// This run's output version: `/media` serves everything under a version as
/// immutable (cached for a year), so a run must never write where an earlier run
/// wrote. Every lease gets a fresh random token (attempt numbers repeat after
/// `retryJob`), so its tail names the run.
pub(crate) fn output_version(job: &job::Model) -> String {
    let token = job.lease_token.unwrap_or(job.id).simple().to_string();
    format!("v{}", &token[token.len() - 10..])
}

/// Nothing of this video has been published yet but (possibly) an earlier attempt of
/// this same first transcode's early rung: no current output version, and no
/// rendition in the unversioned layout of earlier releases.
async fn is_first_transcode(ctx: &JobContext, video: &video::Model) -> Result<bool, JobError> {
    first_transcode_of(&ctx.db, video).await
}

/// A first transcode (the video has no outputs yet, only early rungs of runs):
/// it publishes its lowest rung early.
pub(crate) async fn first_transcode_of(
    db: &sea_orm::DatabaseConnection,
    video: &video::Model,
) -> Result<bool, JobError> {
    if video.output_version.is_some() {
        return Ok(false);
    }
    let rows = crate::repo::videos::renditions_of(db, video.id).await.map_err(db_error)?;
    Ok(rows.iter().all(|row| layout::version_prefix(video.owner_id, video.id, &row.playlist_key).is_some()))
}

/// A segment as it sits in scratch and the name it is stored under.
struct Segment {
    path: PathBuf,
    stored_name: String,
}

/// A media playlist rewritten to name its segments relatively (as they sit next to
/// it in storage), and the segment files it names.
fn read_playlist(root: &Path, path: &Path) -> Result<(String, Vec<Segment>), JobError> {
    let (path, text) = read_playlist_text(root, path)?;
    parse_playlist(root, &path, &text)
}

/// A rung's playlist file, confined to the job directory, as it is now.
fn read_playlist_text(root: &Path, path: &Path) -> Result<(PathBuf, String), JobError> {
    let path = confine(root, path)?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        tracing::warn!(error = %e, path = %path.display(), "a playlist is missing");
        JobError::Retryable("an output file went missing before upload".into())
    })?;
    Ok((path, text))
}

/// The playlist's text with bare segment names, and its segment files (confined).
fn parse_playlist(root: &Path, path: &Path, text: &str) -> Result<(String, Vec<Segment>), JobError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = String::with_capacity(text.len());
    let mut segments = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let name = Path::new(trimmed).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            out.push_str(&name);
            segments.push(Segment { path: confine(root, &dir.join(&name))?, stored_name: name });
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok((out, segments))
}

/// Peak bits per second over a rung's segments (from `#EXTINF` and file sizes).
fn measured_peak(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let dir = path.parent()?;
    let (mut peak, mut pending) = (0.0f64, None::<f64>);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            pending = rest.split(',').next().and_then(|d| d.trim().parse().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            let bytes = std::fs::metadata(dir.join(Path::new(line).file_name()?)).ok()?.len() as f64;
            if let Some(seconds) = pending.take().filter(|s| *s > 0.0) {
                peak = peak.max(bytes * 8.0 / seconds);
            }
        }
    }
    (peak > 0.0).then_some(peak.ceil() as u64)
}

/// What an early rung is: its files to upload, its playlist and its rendition row.
pub(crate) struct EarlyRung {
    pub uploads: Vec<Upload>,
    pub playlist_text: String,
    pub rendition: NewRendition,
}

/// Prepare the lowest rung for early publishing (local and remote workers alike);
/// `None` while its playlist lists no segment.
pub(crate) fn early_rung(
    settings: &crate::config::Settings,
    info: &MediaInfo,
    root: &Path,
    ready: &RenditionReady,
    outputs: &layout::Outputs,
) -> Result<Option<EarlyRung>, JobError> {
    let Rung { name, width, height, video_bitrate_kbps } = &ready.rung;
    let (path, raw) = read_playlist_text(root, &ready.playlist)?;
    let (playlist_text, segments) = if ready.complete {
        let (text, segments) = parse_playlist(root, &path, &raw)?;
        (typed_playlist(&text, "VOD"), segments)
    } else {
        // Read while it grows: only the segments listed on whole lines so far.
        let (text, segments) = parse_playlist(root, &path, through_last_segment(&raw))?;
        (typed_playlist(&text, "EVENT"), segments)
    };
    if segments.is_empty() {
        return Ok(None);
    }
    let uploads: Vec<Upload> = segments
        .into_iter()
        .map(|segment| Upload {
            key: outputs.hls_segment(name, &segment.stored_name),
            content_type: content_type_for(&segment.path),
            path: segment.path,
        })
        .collect();
    let audio_kbps = if info.has_audio { settings.media.hls_options().audio_bitrate_kbps } else { 0 };
    let bandwidth = measured_peak(&ready.playlist).unwrap_or(u64::from(video_bitrate_kbps + audio_kbps) * 1000);
    // The exact avc1 profile/level is known only when the ladder ends; apply_success
    // replaces this provisional string with the encoder's.
    let codecs = if info.has_audio { "avc1.640028,mp4a.40.2" } else { "avc1.640028" };
    let rendition = NewRendition {
        name: name.clone(),
        width: *width,
        height: *height,
        bitrate: bandwidth,
        codecs: codecs.into(),
        playlist_key: outputs.hls_playlist(name),
    };
    Ok(Some(EarlyRung { uploads, playlist_text, rendition }))
}

const HLS_PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// A media playlist with `#EXT-X-PLAYLIST-TYPE:{kind}` after its header: EVENT while
/// it grows (players keep every segment and reload it), VOD once final (RFC 8216
/// allows exactly that change).
fn typed_playlist(text: &str, kind: &str) -> String {
    let body = text.strip_prefix("#EXTM3U").unwrap_or(text).trim_start_matches(['\r', '\n']);
    let body: String =
        body.lines().filter(|l| !l.starts_with("#EXT-X-PLAYLIST-TYPE:")).flat_map(|l| [l, "\n"]).collect();
    format!("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:{kind}\n{body}")
}

/// A playlist read while it is being rewritten, cut after the last segment URI on a
/// whole line (a torn read never names half a file).
fn through_last_segment(text: &str) -> &str {
    let mut end = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        let trimmed = line.trim();
        if line.ends_with('\n') && !trimmed.is_empty() && !trimmed.starts_with('#') {
            end = at;
        }
    }
    &text[..end]
}

/// Write an early rung's rendition row (its files are stored under `prefix`) and
/// record `kinds` (PLAYABLE while it grows, RENDITION_READY once final, both when
/// it is announced final at once). `Ok(false)`: the video went away meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_early_rendition(
    db: &sea_orm::DatabaseConnection,
    publisher: &crate::events::Publisher,
    jobs: &crate::config::jobs::JobSettings,
    job_id: Uuid,
    video: &video::Model,
    rendition: &NewRendition,
    prefix: &str,
    kinds: &[EventKind],
) -> Result<bool, JobError> {
    let name = &rendition.name;
    let txn = crate::db::begin_write(db).await.map_err(db_error)?;
    let Some(current) = crate::repo::videos::lock(&txn, video.id).await.map_err(db_error)? else {
        return Ok(false);
    };
    if current.deleted_at.is_some() {
        return Ok(false);
    }
    // An earlier attempt's early rung, replaced by this one: nothing names it now.
    let replaced = crate::repo::videos::rendition_named(&txn, video.id, name)
        .await
        .map_err(db_error)?
        .and_then(|row| layout::version_prefix(video.owner_id, video.id, &row.playlist_key))
        .filter(|old| old != prefix);
    if let Some(old) = replaced {
        retire_outputs(&txn, &current, vec![old], jobs, false).await.map_err(db_error)?;
    }
    crate::repo::videos::upsert_rendition(&txn, video.id, rendition.as_row()).await.map_err(db_error)?;
    let mut events = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let detail = EventDetail { rendition: Some(name.clone()), job_id: Some(job_id), ..Default::default() };
        events.push(crate::repo::outbox::record(&txn, &current, *kind, detail).await.map_err(db_error)?);
    }
    txn.commit().await.map_err(db_error)?;
    for event in events {
        publisher.publish(event);
    }
    Ok(true)
}

/// Bytes of the regular files under `dir` (links are not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Refuse (`QUOTA_EXCEEDED`, final) outputs of `new_bytes` that would take the
/// owner over their storage quota; this video's current outputs are being replaced.
pub(crate) async fn check_quota(
    db: &sea_orm::DatabaseConnection,
    settings: &crate::config::Settings,
    owner_id: Uuid,
    video_id: Uuid,
    new_bytes: u64,
) -> Result<(), JobError> {
    let owner = crate::repo::users::find_any(db, owner_id).await.map_err(db_error)?;
    let Some(quota) = crate::repo::usage::storage_quota(owner.as_ref(), settings) else {
        return Ok(());
    };
    let used = crate::repo::videos::storage_used_bytes(db, owner_id).await.map_err(|e| {
        tracing::warn!(error = ?e, "reading storage use failed");
        JobError::Retryable("the database is unavailable".into())
    })?;
    let current = crate::repo::videos::find(db, video_id).await.map_err(db_error)?;
    let replaced = current.map(|v| v.output_bytes).unwrap_or(0);
    let new = i64::try_from(new_bytes).unwrap_or(i64::MAX);
    let after = used.saturating_sub(replaced).saturating_add(new);
    if after > quota {
        return Err(JobError::Permanent {
            code: crate::jobs::FailureCode::QuotaExceeded,
            reason: format!(
                "the encoded files ({new} bytes) would exceed the storage quota: {} of {quota} bytes are in use",
                used.saturating_sub(replaced)
            ),
        });
    }
    Ok(())
}

/// Take back a rendition published early by a (first) transcode that then failed
/// its quota: its row goes, and the run's objects with the run's other outputs.
async fn unpublish_early_rendition(ctx: &JobContext, video: &video::Model, name: &str) {
    if let Err(err) = crate::repo::videos::delete_rendition(&ctx.db, video.id, name).await {
        tracing::warn!(error = %err, "could not remove an early rendition's row");
    }
}

/// A rendition row to write (a remote worker sends it for an early rung).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate: u64,
    pub codecs: String,
    pub playlist_key: String,
}

impl NewRendition {
    /// The row it is written as (`repo::videos::upsert_rendition`).
    pub(crate) fn as_row(&self) -> crate::repo::videos::ReadyRendition<'_> {
        crate::repo::videos::ReadyRendition {
            name: &self.name,
            width: i32::try_from(self.width).unwrap_or(i32::MAX),
            height: i32::try_from(self.height).unwrap_or(i32::MAX),
            bitrate: i64::try_from(self.bitrate).unwrap_or(i64::MAX),
            codecs: &self.codecs,
            playlist_key: &self.playlist_key,
        }
    }
}

/// Schedule the removal of output `prefixes` nothing names any more: a DELETE_OBJECTS
/// job, run after `jobs.retired_outputs_grace_secs` (so players that loaded the old
/// playlists can finish) unless `now`. Enqueued in the caller's transaction, with no
/// video (it must not count as the video's running job).
pub(crate) async fn retire_outputs<C: sea_orm::ConnectionTrait>(
    conn: &C,
    video: &video::Model,
    prefixes: Vec<String>,
    settings: &crate::config::jobs::JobSettings,
    now: bool,
) -> Result<(), sea_orm::DbErr> {
    if prefixes.is_empty() {
        return Ok(());
    }
    let grace = if now { 0 } else { settings.retired_outputs_grace_secs };
    let run_after = Utc::now() + chrono::Duration::seconds(i64::try_from(grace).unwrap_or(i64::MAX / 4_000));
    tracing::info!(video_id = %video.id, ?prefixes, %run_after, "retiring replaced outputs");
    super::enqueue_at(
        conn,
        super::NewJob {
            kind: entities::JobKind::DeleteObjects,
            video_id: None,
            owner_id: Some(video.owner_id),
            priority: super::DEFAULT_PRIORITY,
            payload: serde_json::json!({ "prefixes": prefixes }),
            max_attempts: settings.max_attempts,
        },
        run_after,
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_playlist_is_typed_event_while_it_grows_and_vod_when_final() {
        let growing = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:4\n\n#EXTINF:4,\nsegment00000.ts\n";
        let event = typed_playlist(growing, "EVENT");
        assert!(event.starts_with("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-VERSION:3\n"), "{event}");
        assert!(event.ends_with("#EXTINF:4,\nsegment00000.ts\n"), "{event}");
        let final_text = format!("{growing}#EXTINF:2,\nsegment00001.ts\n#EXT-X-ENDLIST\n");
        let vod = typed_playlist(&typed_playlist(&final_text, "EVENT"), "VOD");
        assert_eq!(vod.matches("#EXT-X-PLAYLIST-TYPE:").count(), 1, "{vod}");
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    }

    #[test]
    fn a_torn_playlist_read_is_cut_after_its_last_whole_segment() {
        let whole = "#EXTM3U\n#EXTINF:4,\nsegment00000.ts\n";
        assert_eq!(through_last_segment(&format!("{whole}#EXTINF:4,\nsegm")), whole);
        assert_eq!(through_last_segment(&format!("{whole}#EXTINF:4,\n")), whole);
        assert_eq!(through_last_segment(&format!("{whole}#EXTINF:4,\nsegment00001.ts")), whole);
        assert_eq!(through_last_segment("#EXTM3U\n#EXT-X-TARGETDURATION:4\n"), "");
    }

    #[test]
    fn payload_defaults_to_medium_mp4_and_refuses_unknown_values() {
        assert_eq!(parse_payload(&serde_json::Value::Null).unwrap(), (Preset::Medium, vec![Format::Mp4]));
        assert_eq!(parse_payload(&serde_json::json!({})).unwrap(), (Preset::Medium, vec![Format::Mp4]));
        assert_eq!(
            parse_payload(&serde_json::json!({ "preset": "HIGH", "format": "WEBM" })).unwrap(),
            (Preset::High, vec![Format::WebM])
        );
        assert_eq!(parse_payload(&serde_json::json!({ "preset": "low" })).unwrap(), (Preset::Low, vec![Format::Mp4]));
        assert_eq!(
            parse_payload(&transcode_payload("LOW", &[OutputFormat::Hls])).unwrap(),
            (Preset::Low, vec![]),
            "HLS alone: no download"
        );
        assert_eq!(
            parse_payload(&transcode_payload("MEDIUM", &[OutputFormat::Webm, OutputFormat::Hls, OutputFormat::Mp4]))
                .unwrap(),
            (Preset::Medium, vec![Format::Mp4, Format::WebM]),
            "made in a fixed order"
        );
        for bad in [
            serde_json::json!({ "preset": "ULTRA" }),
            serde_json::json!({ "format": "AVI" }),
            serde_json::json!([1]),
            serde_json::json!({ "formats": ["MP4"] }),
            serde_json::json!({ "formats": [] }),
            serde_json::json!({ "formats": ["HLS", "AVI"] }),
        ] {
            assert!(
                matches!(
                    parse_payload(&bad),
                    Err(JobError::Permanent { code: crate::jobs::FailureCode::InvalidPayload, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn whole_job_eta_never_goes_up_and_ends_at_zero() {
        let mut last = None;
        assert_eq!(eta_step(&mut last, 1.0, 3.0), None, "nothing while probing");
        assert_eq!(eta_step(&mut last, 10.0, 1.0), Some(9.0));
        assert_eq!(eta_step(&mut last, 20.0, 4.0), Some(9.0), "a slow stretch holds the estimate (16 s > 9 s)");
        assert_eq!(eta_step(&mut last, 50.0, 5.0), Some(5.0));
        assert_eq!(eta_step(&mut last, 100.0, 9.0), Some(0.0));
        assert_eq!(eta_step(&mut last, 100.0, 10.0), Some(0.0));
    }

    #[test]
    fn media_errors_map_to_job_errors_without_local_paths() {
        let scratch = Path::new("/tmp/scratch/job-abc");
        let unreadable = MediaError::Unreadable { reason: "/tmp/scratch/job-abc/source is not a regular file".into() };
        match media_error(unreadable, scratch) {
            JobError::Permanent { code, reason } => {
                assert_eq!(code, FailureCode::MediaUnreadable);
                assert_eq!(reason, "the file is not readable media: the upload is not a regular file");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(media_error(MediaError::Cancelled, scratch), JobError::Cancelled));
        let timeout = media_error(MediaError::Timeout(std::time::Duration::from_secs(1)), scratch);
        assert!(matches!(timeout, JobError::Retryable(_)), "{timeout:?}");
        assert!(matches!(media_error(MediaError::Build("x".into()), scratch), JobError::Retryable(_)));
    }

    #[test]
    fn playlists_are_rewritten_to_relative_segment_names() {
        let dir = tempfile::tempdir().unwrap();
        let playlist = dir.path().join("index.m3u8");
        let absolute = dir.path().join("segment00000.ts");
        std::fs::write(&absolute, vec![0u8; 1000]).unwrap();
        std::fs::write(
            &playlist,
            format!("#EXTM3U\n#EXTINF:1.000,\n{}\n#EXTINF:0.5,\nsegment00001.ts\n#EXT-X-ENDLIST\n", absolute.display()),
        )
        .unwrap();
        assert!(read_playlist(dir.path(), &playlist).is_err(), "a segment is missing");
        std::fs::write(dir.path().join("segment00001.ts"), vec![0u8; 1000]).unwrap();
        let (text, segments) = read_playlist(dir.path(), &playlist).unwrap();
        let paths: Vec<PathBuf> = segments.iter().map(|s| s.path.clone()).collect();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(paths, vec![real.join("segment00000.ts"), real.join("segment00001.ts")]);
        assert_eq!(segments[1].stored_name, "segment00001.ts");
        assert!(text.contains("\nsegment00000.ts\n") && !text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(measured_peak(&playlist), Some(16_000));
        std::fs::remove_file(dir.path().join("segment00001.ts")).unwrap();
        assert_eq!(measured_peak(&playlist), None, "a missing segment gives no measurement");
        assert_eq!(content_type_for(&absolute), "video/mp2t");
        assert_eq!(content_type_for(Path::new("a/index.m3u8")), "application/vnd.apple.mpegurl");
        assert_eq!(content_type_for(Path::new("x.m4s")), "video/iso.segment");
    }
}
