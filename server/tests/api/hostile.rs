//! The hostile corpus (issue 17): every file of `scripts/make-hostile-corpus.py`
//! uploaded through the real API ends as `scripts/hostile-corpus.manifest` says —
//! refused at `createUpload`/`completeUpload` with a typed code, FAILED with a typed
//! job error, or READY — and the server is still there afterwards, with its peak RSS
//! grown by at most 64 MiB over the whole corpus. Also the probe alone on the bombs,
//! without a server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reelhouse::media::{probe_with_limits, probe_with_timeout, MediaError, MediaLimits};
use serde_json::{json, Value};

use crate::e2e::{create_video, gql};
use crate::helpers::{error_code, TestApp, TestUser};
use crate::uploads::{put_file, spawn_uploads_app};

const MANIFEST: &str = include_str!("../../../scripts/hostile-corpus.manifest");
const SCRIPT: &str = include_str!("../../../scripts/make-hostile-corpus.py");

/// How long one upload may take from `completeUpload` to READY or FAILED. Generous:
/// a guard against a hang, not a speed assertion.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The corpus, generated once per script/manifest version into the temp dir.
fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let hash = format!("{SCRIPT}{MANIFEST}")
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        let dir = std::env::temp_dir().join(format!("reelhouse-hostile-corpus-{hash:016x}"));
        let lock =
            std::fs::File::create(std::env::temp_dir().join(format!("reelhouse-hostile-corpus-{hash:016x}.lock")))
                .unwrap();
        lock.lock().unwrap();
        if !dir.join(".complete").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-hostile-corpus.py");
            let out = std::process::Command::new("python3").arg(&script).arg(&dir).output().unwrap();
            assert!(
                out.status.success(),
                "make-hostile-corpus.py failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(dir.join(".complete"), b"").unwrap();
        }
        lock.unlock().unwrap();
        dir
    })
}

/// One manifest line: `file  outcome  code  reason-contains  why` (tab-separated).
#[derive(Debug, Clone)]
struct Expectation {
    file: String,
    outcome: Outcome,
    /// The typed code (`UNSUPPORTED_MEDIA`, `MEDIA_TRUNCATED`, a `MEDIA_` prefix), or "-".
    code: String,
    /// A phrase the reason must contain, or "-".
    reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refused at createUpload or completeUpload.
    Refused,
    /// Accepted, then its job ends FAILED.
    Failed,
    Ready,
    /// Any of the three, typed (fuzzed copies: which one depends on where the bytes landed).
    Any,
}

fn manifest() -> Vec<Expectation> {
    MANIFEST
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(cols.len() >= 4, "bad manifest line {line:?}");
            let outcome = match cols[1] {
                "REFUSED" => Outcome::Refused,
                "FAILED" => Outcome::Failed,
                "READY" => Outcome::Ready,
                "ANY" => Outcome::Any,
                other => panic!("unknown outcome {other} in {line:?}"),
            };
            Expectation { file: cols[0].into(), outcome, code: cols[2].into(), reason: cols[3].into() }
        })
        .collect()
}

/// How an upload ended, as the API tells it.
#[derive(Debug, Clone)]
struct Ended {
    outcome: Outcome,
    /// The GraphQL error code, or the job's failure code from its log.
    code: String,
    reason: String,
}

impl Ended {
    fn matches(&self, want: &Expectation) -> Result<(), String> {
        let typed = |code: &str| {
            ["UNSUPPORTED_MEDIA", "BAD_USER_INPUT"].contains(&code) || (code.starts_with("MEDIA_") && code.len() > 6)
        };
        if !typed(&self.code) && self.outcome != Outcome::Ready {
            return Err(format!("untyped end {self:?}"));
        }
        if self.outcome != Outcome::Ready && self.reason.trim().is_empty() {
            return Err("no reason".into());
        }
        if self.reason.contains("/tmp") || self.reason.contains("file://") {
            return Err(format!("the reason names a local path: {}", self.reason));
        }
        if want.outcome == Outcome::Any {
            return Ok(());
        }
        if self.outcome != want.outcome {
            return Err(format!("expected {:?}, got {self:?}", want.outcome));
        }
        let code_ok = match want.code.as_str() {
            "-" => true,
            prefix if prefix.ends_with('*') => self.code.starts_with(prefix.trim_end_matches('*')),
            code => self.code == code,
        };
        if !code_ok {
            return Err(format!("expected code {}, got {self:?}", want.code));
        }
        if want.reason != "-" && !self.reason.contains(&want.reason) {
            return Err(format!("expected a reason containing {:?}, got {self:?}", want.reason));
        }
        Ok(())
    }
}

/// createVideo → createUpload → PUT → completeUpload → wait for READY or FAILED.
async fn upload(app: &TestApp, user: &TestUser, bytes: Vec<u8>) -> Ended {
    let video = create_video(app, user, "PRIVATE").await;
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            crate::uploads::CREATE,
            json!({ "input": { "videoId": video, "filename": "upload.mp4", "contentType": "video/mp4", "size": bytes.len() } }),
        )
        .await;
    if !body["errors"].is_null() {
        return refused(&body);
    }
    let ticket = body["data"]["createUpload"].clone();
    let res = put_file(app, &ticket, &bytes).await;
    assert!(res.status().is_success(), "PUT answered {}", res.status());
    let done =
        gql(app, user, "mutation($id: ID!) { completeUpload(id: $id) { id status } }", json!({ "id": ticket["id"] }))
            .await;
    if !done["errors"].is_null() {
        return refused(&done);
    }
    assert_eq!(done["data"]["completeUpload"]["status"], "PROCESSING", "{done}");
    settle(app, user, &video).await
}

fn refused(body: &Value) -> Ended {
    Ended {
        outcome: Outcome::Refused,
        code: error_code(body).unwrap_or_default(),
        reason: body["errors"][0]["message"].as_str().unwrap_or_default().to_string(),
    }
}

/// Poll the video until it is READY or FAILED; a FAILED one's code comes from its
/// job's last log line (`failed (CODE): reason`).
async fn settle(app: &TestApp, user: &TestUser, video: &str) -> Ended {
    let started = Instant::now();
    loop {
        let body = gql(
            app,
            user,
            "query($id: ID!) { video(id: $id) { status error } jobs(first: 100) { edges { node { videoId status error log { message } } } } }",
            json!({ "id": video }),
        )
        .await;
        let status = body["data"]["video"]["status"].as_str().unwrap_or_default().to_string();
        let job = body["data"]["jobs"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["node"])
            .find(|n| n["videoId"] == video)
            .cloned()
            .unwrap_or(Value::Null);
        match status.as_str() {
            "READY" => return Ended { outcome: Outcome::Ready, code: String::new(), reason: String::new() },
            "FAILED" if ["FAILED", "DEAD"].contains(&job["status"].as_str().unwrap_or_default()) => {
                let last = job["log"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["message"].as_str())
                    .rfind(|m| m.starts_with("failed (") || m.contains("no attempts left"))
                    .unwrap_or_default()
                    .to_string();
                let code = last
                    .strip_prefix("failed (")
                    .and_then(|rest| rest.split(')').next())
                    .unwrap_or(if job["status"] == "DEAD" { "DEAD" } else { "" })
                    .to_string();
                return Ended {
                    outcome: Outcome::Failed,
                    code,
                    reason: body["data"]["video"]["error"].as_str().unwrap_or_default().to_string(),
                };
            }
            _ => {}
        }
        assert!(started.elapsed() < SETTLE_TIMEOUT, "still {status} after {SETTLE_TIMEOUT:?}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Peak resident set size of this process (the test and the in-process server), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const MIB: u64 = 1024 * 1024;

#[actix_web::test]
async fn hostile_corpus_ends_typed_and_the_server_survives() {
    let dir = corpus();
    let expectations = manifest();
    assert!(expectations.len() >= 30, "the corpus has {} files", expectations.len());
    // On PostgreSQL the transcodes run in a separate `reelhouse worker` process (as in
    // a scaled-out deployment); on SQLite in the server's embedded workers.
    let separate_worker = crate::helpers::backend() == crate::helpers::Backend::Postgres;
    let app = spawn_uploads_app(|s| {
        s.workers.embedded = !separate_worker;
        s.media.speed_preset = "ultrafast".into();
        s.media.segment_seconds = 1;
        s.jobs.poll_interval_ms = 100;
        // A hostile file must fail permanently; one that failed "retryably" shows up
        // as DEAD (a mismatch) instead of waiting out the back-off.
        s.jobs.max_attempts = 1;
        s.workers.concurrency = Some(2);
        // One user sends the whole corpus at once: rate limits are another test's.
        for policy in [reelhouse::limits::Policy::Api, reelhouse::limits::Policy::Upload] {
            s.rate_limit
                .policies
                .insert(policy, reelhouse::config::rate_limit::PolicySettings::new(100_000, 60, 100_000, false));
        }
    })
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let mut worker = separate_worker.then(|| {
        crate::worker_process::worker_command(
            &app.state.settings,
            worker_dir.path(),
            &[
                ("REELHOUSE__WORKERS__CONCURRENCY", "2"),
                ("REELHOUSE__MEDIA__SPEED_PRESET", "ultrafast"),
                ("REELHOUSE__MEDIA__SEGMENT_SECONDS", "1"),
                ("REELHOUSE__MEDIA__MAX_DURATION_SECS", "3600"),
                ("REELHOUSE__JOBS__MAX_ATTEMPTS", "1"),
            ],
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap()
    });
    let user = app.register_user().await;

    // Warm up: the app is up and one valid clip went all the way.
    let valid = std::fs::read(dir.join("valid_h264_aac_faststart.mp4")).unwrap();
    let warm = upload(&app, &user, valid.clone()).await;
    assert_eq!(warm.outcome, Outcome::Ready, "{warm:?}");
    let rss_before = peak_rss();

    let started = Instant::now();
    let ended: Vec<(Expectation, Ended)> = futures::stream::iter(expectations.clone())
        .map(|want| {
            let (app, user) = (&app, &user);
            async move {
                let bytes = std::fs::read(dir.join(&want.file)).unwrap();
                let ended = upload(app, user, bytes).await;
                (want, ended)
            }
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let rss_after_corpus = peak_rss();

    let mut mismatches = BTreeMap::new();
    let mut sorted = ended.clone();
    sorted.sort_by(|a, b| a.0.file.cmp(&b.0.file));
    for (want, got) in &sorted {
        eprintln!("{:<45} {:<8?} {:<18} {}", want.file, got.outcome, got.code, got.reason);
        if let Err(why) = got.matches(want) {
            mismatches.insert(want.file.clone(), why);
        }
    }
    eprintln!(
        "corpus: {} files in {:.1} s; peak RSS {} MiB before, {} MiB after (+{} MiB)",
        sorted.len(),
        started.elapsed().as_secs_f64(),
        rss_before / MIB,
        rss_after_corpus / MIB,
        rss_after_corpus.saturating_sub(rss_before) / MIB
    );
    assert!(
        mismatches.is_empty(),
        "{} files ended otherwise than the manifest says: {mismatches:#?}",
        mismatches.len()
    );

    // Still serving, and still processing.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(health.status().is_success(), "/health answered {}", health.status());
    let again = upload(&app, &user, valid).await;
    assert_eq!(again.outcome, Outcome::Ready, "a valid upload after the corpus: {again:?}");

    // The probes run in media children of this process (the API's), the transcodes in
    // children of the worker: whatever a decoder wants, the API does not pay for it.
    let grown = peak_rss().saturating_sub(rss_before);
    assert!(grown <= 64 * MIB, "the server's peak RSS grew by {} MiB over the corpus (at most 64 MiB)", grown / MIB);

    // Every media child is gone (none left running, none a zombie), and the worker
    // process that ran them is alive.
    let parents: Vec<u32> = std::iter::once(std::process::id()).chain(worker.as_ref().and_then(|w| w.id())).collect();
    let leftover = crate::helpers::eventually(50, || {
        let parents = parents.clone();
        async move { parents.iter().all(|p| crate::jail::media_children_of(*p).is_empty()) }
    })
    .await;
    assert!(
        leftover,
        "media children left behind: {:?}",
        parents.iter().map(|p| crate::jail::media_children_of(*p)).collect::<Vec<_>>()
    );
    if let Some(worker) = worker.as_mut() {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker process died: {}",
            std::fs::read_to_string(worker_dir.path().join("worker.log")).unwrap_or_default()
        );
        crate::worker_process::sigterm(worker);
        let _ = worker.wait().await;
    }
}

/// The look refuses bombs from their headers: typed reasons, and no decoder ever
/// allocates their pictures (the process's peak RSS barely moves).
#[test]
fn hostile_corpus_probe_refuses_bombs_before_decoding() {
    let dir = corpus();
    let limits = MediaLimits::default();
    let timeout = Duration::from_secs(30);
    // Warm GStreamer up (plugin registry, first pipeline) before measuring.
    probe_with_limits(&dir.join("valid_h264_aac_faststart.mp4"), timeout, &limits).unwrap();
    let rss_before = peak_rss();
    let rejected = |name: &str, phrase: &str| match probe_with_limits(&dir.join(name), timeout, &limits) {
        Err(MediaError::Rejected { reason }) => {
            assert!(reason.contains(phrase), "{name}: {reason:?} does not mention {phrase:?}");
            eprintln!("{name}: {reason}");
        }
        other => panic!("{name}: expected Rejected, got {other:?}"),
    };
    rejected("dimension_bomb_mjpeg_16000x16000.mkv", "MJPEG");
    rejected("dimension_bomb_png_16000x16000.mov", "PNG");
    rejected("dimension_bomb_h264_sps_16000x16000.mp4", "16000x16000");
    rejected("dimension_bomb_h264_sps_16000x16000.ts", "16000x16000");
    rejected("frame_count_bomb_16x16_1000fps.mkv", "1000 frames per second");
    rejected("duration_lie_10h_header.mp4", "36000 s");
    rejected("duration_lie_10h_header.mkv", "36000 s");
    rejected("tracks_121_pcm.mkv", "tracks");
    rejected("unsupported_container_mpeg_ps.mp4", "container");
    rejected("unsupported_audio_mp2.ts", "audio codec");
    rejected("audio_only_opus.ogg", "no video");
    let grown = peak_rss().saturating_sub(rss_before);
    assert!(grown <= 32 * MIB, "peak RSS grew by {} MiB while refusing the bombs", grown / MIB);

    // Without limits the allow-list still holds before anything is decoded.
    match probe_with_timeout(&dir.join("dimension_bomb_mjpeg_16000x16000.mkv"), timeout) {
        Err(MediaError::Rejected { reason }) => assert!(reason.contains("MJPEG"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(matches!(
        probe_with_limits(&dir.join("empty_zero_bytes.mp4"), timeout, &limits),
        Err(MediaError::EmptyFile)
    ));
    for name in ["random_64k_bytes.mp4", "one_byte.mp4", "zip_renamed.mp4", "moov_at_end_size_too_big.mp4"] {
        match probe_with_limits(&dir.join(name), timeout, &limits) {
            Err(err @ (MediaError::Unreadable { .. } | MediaError::Rejected { .. })) => eprintln!("{name}: {err}"),
            other => panic!("{name}: expected Unreadable, got {other:?}"),
        }
    }
    let info = probe_with_limits(&dir.join("video_only_vp9.webm"), timeout, &limits).unwrap();
    assert_eq!((info.width, info.height, info.has_audio), (160, 90, false));
}
