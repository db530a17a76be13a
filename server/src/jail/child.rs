//! `reelhouse media`: the child side. Reads one request from stdin, confines itself,
//! runs the media work and reports on stdout. It holds no settings, no database and
//! no keys: everything it knows came in the request.

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use super::protocol::{
    DownloadFile, Message, Request, Step, Task, TranscodeFiles, TranscodeTask, WireError, MAX_WARNINGS,
    PROTOCOL_VERSION,
};
use super::sandbox;
use crate::media::ladder::{plan_ladder, transcode_hls, HlsOutput};
use crate::media::mp4::transcode_mp4;
use crate::media::thumbs::{poster_and_thumbnails, storyboard, StoryboardOptions, ThumbnailOptions};
use crate::media::{probe_with_limits, MediaError, MediaInfo};

/// Exit status when the parent went away (stdin closed) before the work ended.
const EXIT_PARENT_GONE: i32 = 70;

/// Writes messages to stdout, one JSON line each, from any thread.
struct Reporter {
    out: Mutex<std::io::Stdout>,
}

impl Reporter {
    fn send(&self, message: &Message) {
        let Ok(mut line) = serde_json::to_vec(message) else { return };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A parent that stopped reading is gone; the stdin watcher ends us.
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }

    fn fail(&self, err: &MediaError) {
        self.send(&Message::Failed { error: WireError::from(err) });
    }
}

/// The whole child: never returns to the caller's command dispatch with work pending.
pub fn main() -> ExitCode {
    let reporter = Reporter { out: Mutex::new(std::io::stdout()) };
    let request = match read_request() {
        Ok(request) => request,
        Err(reason) => {
            reporter.fail(&MediaError::Build(format!("bad request from the parent: {reason}")));
            return ExitCode::from(2);
        }
    };
    watch_parent();
    init_logging(&request.log_level);
    if request.version != PROTOCOL_VERSION {
        reporter.fail(&MediaError::Build(format!(
            "protocol version {} requested, this binary speaks {PROTOCOL_VERSION}",
            request.version
        )));
        return ExitCode::from(2);
    }
    // GStreamer reads (and may rebuild) its plugin registry here, before the sandbox
    // takes exec and most of the file system away.
    if let Err(err) = crate::media::init_gstreamer(&request.gstreamer_level) {
        reporter.fail(&MediaError::Init(format!("{err:#}")));
        return ExitCode::SUCCESS;
    }
    let status = sandbox::confine(&request);
    relay_warnings();
    reporter.send(&Message::Started { version: PROTOCOL_VERSION, landlock: status.landlock, seccomp: status.seccomp });
    match &request.task {
        Task::Probe { timeout, limits } => match probe_with_limits(&request.source, *timeout, limits) {
            Ok(info) => reporter.send(&Message::Probed { info, rungs: Vec::new() }),
            Err(err) => reporter.fail(&err),
        },
        Task::Transcode(task) => match transcode(&request, task, &reporter) {
            Ok(Outcome::Files(files)) => reporter.send(&Message::Transcoded { files }),
            Ok(Outcome::Ladder(hls)) => reporter.send(&Message::Laddered { hls }),
            Err(err) => reporter.fail(&err),
        },
    }
    ExitCode::SUCCESS
}

/// GStreamer warnings go to the parent as [`Message::Warning`], at most
/// [`MAX_WARNINGS`] of them; a line each, written whole under stdout's lock.
fn relay_warnings() {
    let sent = std::sync::atomic::AtomicU32::new(0);
    crate::media::forward_warnings(Box::new(move |element, message| {
        if sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_WARNINGS {
            return;
        }
        let warning = Message::Warning { element: element.to_string(), message: message.to_string() };
        let Ok(mut line) = serde_json::to_vec(&warning) else { return };
        line.push(b'\n');
        let _ = std::io::stdout().write_all(&line).and_then(|()| std::io::stdout().flush());
    }));
}

fn read_request() -> Result<Request, String> {
    let mut line = Vec::new();
    let stdin = std::io::stdin();
    let mut limited = stdin.lock().take(super::protocol::MAX_LINE_BYTES as u64);
    limited.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    serde_json::from_slice(&line).map_err(|e| e.to_string())
}

/// The parent keeps our stdin open for as long as it wants us; when it closes (the
/// parent exited, crashed or dropped us) we stop at once, whatever we were doing.
#[allow(unsafe_code)]
fn watch_parent() {
    let spawned = std::thread::Builder::new().name("parent-watch".into()).spawn(|| {
        let mut buf = [0u8; 256];
        let stdin = std::io::stdin();
        loop {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    // SAFETY: _exit ends the process without running destructors or
                    // touching state other threads may hold; that is the intent.
                    unsafe { libc::_exit(EXIT_PARENT_GONE) }
                }
                Ok(_) => {}
            }
        }
    });
    if spawned.is_err() {
        // Without a watcher the parent's kill on timeout still ends us.
        eprintln!("reelhouse media: could not start the parent watcher");
    }
}

fn init_logging(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}

enum Outcome {
    Files(Box<TranscodeFiles>),
    Ladder(HlsOutput),
}

fn transcode(request: &Request, task: &TranscodeTask, reporter: &Reporter) -> Result<Outcome, MediaError> {
    let never = AtomicBool::new(false);
    let source = &request.source;
    let root = request.work_dir.as_deref().ok_or_else(|| MediaError::Build("a transcode needs a work dir".into()))?;
    let info: MediaInfo = probe_with_limits(source, task.probe_timeout, &task.limits)?;
    let rungs = plan_ladder(&info, &task.ladder);
    reporter.send(&Message::Probed { info: info.clone(), rungs: rungs.clone() });

    // The one probe of the job: every pipeline below works from it.
    let hls = transcode_hls(
        source,
        &info,
        &root.join("hls"),
        &rungs,
        &task.hls,
        &mut |p| reporter.send(&Message::Progress { step: Step::Ladder, progress: Some(p.clone()) }),
        &mut |ready| reporter.send(&Message::RenditionReady { ready: ready.clone() }),
        &never,
    )?;
    reporter.send(&Message::StepDone { step: Step::Ladder });
    if task.ladder_only {
        return Ok(Outcome::Ladder(hls));
    }

    // Several downloads report as one step: each its share of 0-100 %.
    let count = task.downloads.len().max(1) as f64;
    let mut downloads = Vec::with_capacity(task.downloads.len());
    for (index, format) in task.downloads.iter().copied().enumerate() {
        let file = transcode_mp4(
            source,
            &info,
            &root.join("download").join(format!("video.{}", format.extension())),
            task.preset,
            format,
            &task.mp4,
            &mut |p| {
                let mut p = p.clone();
                p.percent = (index as f64 * 100.0 + p.percent) / count;
                reporter.send(&Message::Progress { step: Step::Download, progress: Some(p) })
            },
            &never,
        )?;
        downloads.push(DownloadFile { format, file });
    }
    reporter.send(&Message::StepDone { step: Step::Download });

    let thumbs_dir = root.join("thumbs");
    let (poster, thumbnails) = poster_and_thumbnails(source, &info, &thumbs_dir, &ThumbnailOptions::default(), &never)?;
    reporter.send(&Message::StepDone { step: Step::Thumbnails });
    let board = storyboard(source, &info, &thumbs_dir, &StoryboardOptions::default(), &never)?;
    reporter.send(&Message::StepDone { step: Step::Storyboard });
    Ok(Outcome::Files(Box::new(TranscodeFiles { hls, downloads, poster, thumbnails, storyboard: board })))
}
