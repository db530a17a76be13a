//! The media jail: every probe and transcode of uploaded bytes runs in a child
//! process (`reelhouse media`), never in the API or worker process.
//!
//! The child gets a clean environment (no database URL, no keys), its own process
//! group, `RLIMIT_AS`/`RLIMIT_CPU`/`RLIMIT_FSIZE`, no core dumps, the encoder nice
//! value, every inherited descriptor closed, and (applied by itself) Landlock and a
//! seccomp filter where the kernel has them. It is killed, with its whole group, on
//! cancel, on its wall-clock deadline and when the [`MediaChild`] handle is dropped;
//! it also exits by itself when its parent goes away (stdin closes).

pub mod child;
pub mod protocol;
mod sandbox;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::media::{CancelFlag, MediaError, MediaInfo, MediaLimits};
use protocol::{Message, Request, SandboxRequest, Task, TranscodeTask, MAX_LINE_BYTES, PROTOCOL_VERSION};
pub use sandbox::ChildLimits;

/// Environment variables a child may inherit: none of them carries a secret.
const ENV_ALLOWED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "XDG_CACHE_HOME"];
/// And every `GST_*` variable (plugin paths, registry, debug), except these.
const GST_PREFIX: &str = "GST_";

/// Extra wall-clock time a child gets beyond its own internal timeouts, for process
/// start, GStreamer init and writing its answer.
const START_GRACE: Duration = Duration::from_secs(5);

/// How often a waiting parent looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Lines of a child's stderr kept for the log when it dies.
const STDERR_TAIL_LINES: usize = 20;

/// Spawns media children with the limits from settings.
#[derive(Debug, Clone)]
pub struct MediaJail {
    binary: PathBuf,
    settings: crate::config::jail::JailSettings,
    nice: i32,
    log_level: String,
    gstreamer_level: String,
}

impl MediaJail {
    pub fn from_settings(settings: &Settings) -> Self {
        let binary = settings
            .jail
            .binary
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("reelhouse"));
        Self {
            binary,
            settings: settings.jail.clone(),
            nice: settings.media.encoder_nice,
            log_level: "warn".to_string(),
            gstreamer_level: settings.telemetry.gstreamer_level.clone(),
        }
    }

    /// Probe `source` in a child and check it against `limits`.
    pub async fn probe(&self, source: &Path, timeout: Duration, limits: MediaLimits) -> Result<MediaInfo, MediaError> {
        let limits_for_child = ChildLimits {
            address_space_bytes: self.settings.probe_memory_bytes(),
            cpu_secs: self.settings.probe_cpu_secs,
            file_size_bytes: 1024 * 1024,
            nice: self.nice,
        };
        let task = Task::Probe { timeout, limits };
        // Strangers decide how many completions arrive at once; each probe child may
        // take `probe_memory_mb`, so only so many run at a time and the rest wait
        // (bounded by the probe timeout: past it the completion is refused in time).
        let _slot =
            match tokio::time::timeout(timeout, probe_slots(self.settings.max_concurrent_probes).acquire()).await {
                Ok(Ok(slot)) => slot,
                _ => {
                    metrics::counter!("reelhouse_media_probes_queued_out_total").increment(1);
                    return Err(MediaError::Timeout(timeout));
                }
            };
        let mut child = self.spawn(source, None, task, limits_for_child, timeout + START_GRACE).await?;
        let never = crate::media::cancel_flag();
        loop {
            match child.next(&never).await? {
                Message::Probed { info, .. } => {
                    child.finish().await;
                    return Ok(info);
                }
                Message::Failed { error } => {
                    child.finish().await;
                    return Err(error.into());
                }
                _ => {}
            }
        }
    }

    /// Start a transcode child writing into `work_dir`; read its messages with
    /// [`MediaChild::next`]. `deadline` bounds the whole run.
    pub async fn transcode(
        &self,
        source: &Path,
        work_dir: &Path,
        task: TranscodeTask,
        deadline: Duration,
    ) -> Result<MediaChild, MediaError> {
        let limits = ChildLimits {
            address_space_bytes: self.settings.transcode_memory_bytes(),
            cpu_secs: self.settings.transcode_cpu_secs,
            file_size_bytes: self.settings.max_file_bytes(),
            nice: self.nice,
        };
        self.spawn(source, Some(work_dir), Task::Transcode(Box::new(task)), limits, deadline + START_GRACE).await
    }

    async fn spawn(
        &self,
        source: &Path,
        work_dir: Option<&Path>,
        task: Task,
        limits: ChildLimits,
        wall: Duration,
    ) -> Result<MediaChild, MediaError> {
        let source = std::path::absolute(source).map_err(|e| MediaError::io("resolving the source path", e))?;
        let work_dir = work_dir
            .map(std::path::absolute)
            .transpose()
            .map_err(|e| MediaError::io("resolving the work directory", e))?;
        let (read_dirs, write_dirs) = gstreamer_dirs();
        let request = Request {
            version: PROTOCOL_VERSION,
            source,
            work_dir: work_dir.clone(),
            log_level: self.log_level.clone(),
            gstreamer_level: self.gstreamer_level.clone(),
            sandbox: SandboxRequest {
                landlock: self.settings.landlock,
                seccomp: self.settings.seccomp,
                read_dirs,
                write_dirs,
            },
            task,
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| MediaError::Build(format!("encoding: {e}")))?;
        line.push(b'\n');

        let mut command = Command::new(&self.binary);
        command
            .arg("media")
            .env_clear()
            .envs(
                std::env::vars_os().filter(|(key, _)| {
                    key.to_str().is_some_and(|k| ENV_ALLOWED.contains(&k) || k.starts_with(GST_PREFIX))
                }),
            )
            .current_dir(work_dir.as_deref().unwrap_or(Path::new("/")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure only makes async-signal-safe system calls (see
        // `apply_in_forked_child`) with values captured before the fork.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || sandbox::apply_in_forked_child(limits));
        }
        let mut child = command.spawn().map_err(|e| {
            tracing::error!(error = %e, binary = %self.binary.display(), "cannot start a media child");
            MediaError::Init(format!("cannot start the media process ({})", e.kind()))
        })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let mut stdin = child.stdin.take().ok_or_else(|| MediaError::Init("media child has no stdin".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| MediaError::Init("media child has no stdout".into()))?;
        let stderr = child.stderr.take().ok_or_else(|| MediaError::Init("media child has no stderr".into()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(forward_stderr(stderr, pid, tail.clone()));
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(read_messages(stdout, tx));
        let mut handle = MediaChild {
            child,
            pid,
            stdin: None,
            messages: rx,
            deadline: Instant::now() + wall,
            wall,
            tail,
            ended: false,
        };
        if let Err(err) = stdin.write_all(&line).await {
            handle.kill().await;
            tracing::warn!(error = %err, "a media child did not take its request");
            return Err(MediaError::Init("the media process did not start".into()));
        }
        handle.stdin = Some(stdin);
        // The first message says how it is confined.
        match handle.next(&crate::media::cancel_flag()).await? {
            Message::Started { landlock, seccomp, .. } => {
                tracing::debug!(pid, %landlock, seccomp, "media child started");
                metrics::counter!(
                    "reelhouse_media_children_started_total",
                    "landlock" => landlock,
                    "seccomp" => if seccomp { "on" } else { "off" }
                )
                .increment(1);
                Ok(handle)
            }
            Message::Failed { error } => {
                handle.finish().await;
                Err(error.into())
            }
            other => {
                handle.kill().await;
                tracing::warn!(?other, "a media child skipped its greeting");
                Err(MediaError::Crashed { reason: "the media process broke its protocol".into() })
            }
        }
    }
}

/// The process-wide slots for probe children (sized once, at first use).
fn probe_slots(configured: Option<usize>) -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(probe_slot_count(configured)))
}

/// `jail.max_concurrent_probes`, or twice the CPU cores when unset.
fn probe_slot_count(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(1, usize::from)).max(1)
}

/// GStreamer's own directories: plugin paths to read, and the registry cache, which
/// the child may rewrite.
fn gstreamer_dirs() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut read = Vec::new();
    for var in ["GST_PLUGIN_PATH", "GST_PLUGIN_PATH_1_0", "GST_PLUGIN_SYSTEM_PATH", "GST_PLUGIN_SYSTEM_PATH_1_0"] {
        if let Some(value) = std::env::var_os(var) {
            read.extend(std::env::split_paths(&value));
        }
    }
    let registry_dir = match std::env::var_os("GST_REGISTRY") {
        Some(file) => PathBuf::from(file).parent().map(Path::to_path_buf),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|cache| cache.join("gstreamer-1.0")),
    };
    let mut write = Vec::new();
    if let Some(dir) = registry_dir {
        // The child may not create it once confined.
        let _ = std::fs::create_dir_all(&dir);
        write.push(dir);
    }
    (read, write)
}

/// A running media child. Dropping it kills the child's whole process group.
pub struct MediaChild {
    child: Child,
    pid: i32,
    /// Held open: the child exits when it closes.
    stdin: Option<ChildStdin>,
    messages: mpsc::Receiver<Result<Message, String>>,
    deadline: Instant,
    wall: Duration,
    tail: Arc<Mutex<VecDeque<String>>>,
    ended: bool,
}

impl MediaChild {
    /// The next message. Kills the child and returns `Cancelled` when `cancel` is
    /// set, `Timeout` past its deadline, and a typed error when it dies without a
    /// final message.
    pub async fn next(&mut self, cancel: &CancelFlag) -> Result<Message, MediaError> {
        loop {
            if cancel.load(Ordering::Relaxed) {
                self.kill().await;
                return Err(MediaError::Cancelled);
            }
            if Instant::now() >= self.deadline {
                self.kill().await;
                metrics::counter!("reelhouse_media_children_timed_out_total").increment(1);
                return Err(MediaError::Timeout(self.wall));
            }
            let wait = CANCEL_POLL.min(self.deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, self.messages.recv()).await {
                Err(_) => continue,
                Ok(Some(Ok(message))) => return Ok(message),
                Ok(Some(Err(bad))) => {
                    self.kill().await;
                    tracing::warn!(pid = self.pid, reason = %bad, "a media child broke its protocol");
                    return Err(MediaError::Crashed { reason: "the media process broke its protocol".into() });
                }
                Ok(None) => return Err(self.died().await),
            }
        }
    }

    /// The child ended its output without a final message: say why.
    async fn died(&mut self) -> MediaError {
        let status = match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                self.kill().await;
                None
            }
        };
        self.ended = true;
        let tail: Vec<String> = self.tail.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let error = classify_death(status, &tail);
        metrics::counter!("reelhouse_media_children_died_total", "code" => error.code()).increment(1);
        tracing::warn!(pid = self.pid, ?status, stderr = ?tail, code = error.code(), "a media child died");
        error
    }

    /// Wait for a child that sent its final message to exit (killing it if it lingers).
    pub async fn finish(mut self) {
        self.stdin.take();
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await.is_err() {
            self.kill().await;
        }
        self.ended = true;
    }

    async fn kill(&mut self) {
        kill_group(self.pid);
        let _ = self.child.kill().await;
        self.ended = true;
    }
}

impl Drop for MediaChild {
    fn drop(&mut self) {
        if !self.ended {
            kill_group(self.pid);
        }
    }
}

#[allow(unsafe_code)]
fn kill_group(pid: i32) {
    if pid > 0 {
        // SAFETY: signals our own child's process group (pgid == its pid).
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

/// Why a child died without answering, from its exit status and last stderr lines.
fn classify_death(status: Option<std::process::ExitStatus>, stderr_tail: &[String]) -> MediaError {
    use std::os::unix::process::ExitStatusExt;
    let out_of_memory = stderr_tail.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("failed to allocate") || l.contains("memory allocation of") || l.contains("out of memory")
    });
    let Some(status) = status else {
        return MediaError::Crashed { reason: "the media process stopped answering".into() };
    };
    match status.signal() {
        Some(libc::SIGXCPU) => {
            MediaError::ResourceLimit { reason: "processing it used more CPU time than allowed".into() }
        }
        Some(libc::SIGKILL) => MediaError::Killed,
        _ if out_of_memory => {
            MediaError::ResourceLimit { reason: "processing it needed more memory than allowed".into() }
        }
        Some(_) => MediaError::Crashed { reason: "a decoder crashed on it".into() },
        None => MediaError::Crashed { reason: "the media process stopped unexpectedly".into() },
    }
}

/// Parses the child's stdout into messages; a line that is too long or not a
/// message ends the stream with an error.
async fn read_messages(stdout: impl AsyncRead + Unpin, tx: mpsc::Sender<Result<Message, String>>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line).await;
        let message = match read {
            Ok(0) => return,
            Err(e) => Err(format!("reading: {e}")),
            Ok(_) if line.len() > MAX_LINE_BYTES => Err("a line too long".to_string()),
            Ok(_) => serde_json::from_slice::<Message>(&line).map_err(|e| format!("not a message: {e}")),
        };
        let stop = message.is_err() || message.as_ref().is_ok_and(Message::is_final);
        if tx.send(message).await.is_err() || stop {
            return;
        }
    }
}

/// The child's log lines, into our log at debug (bounded), the last few kept.
async fn forward_stderr(stderr: impl AsyncRead + Unpin, pid: i32, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr.take(16 * 1024 * 1024)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = line.chars().take(512).collect();
        tracing::debug!(pid, "media child: {line}");
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// `path` is a regular file inside `root` (after resolving links), with no other
/// names: what a child wrote, safe to read or upload. A child that was taken over
/// could otherwise point the parent at any file the parent can read.
pub fn confined_file(root: &Path, path: &Path) -> Result<PathBuf, MediaError> {
    use std::os::unix::fs::MetadataExt;
    let outside = || MediaError::Crashed { reason: "the media process named a file outside its work".into() };
    let root = root.canonicalize().map_err(|e| MediaError::io("resolving the work directory", e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|_| outside())?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(outside());
    }
    let real = path.canonicalize().map_err(|_| outside())?;
    if !real.starts_with(&root) {
        return Err(outside());
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn probe_slots_default_to_twice_the_cores_and_never_zero() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(probe_slot_count(None), 2 * cores);
        assert_eq!(probe_slot_count(Some(3)), 3);
        assert_eq!(probe_slot_count(Some(0)), 1);
    }

    #[test]
    fn deaths_are_classified() {
        let signal = |s: i32| Some(std::process::ExitStatus::from_raw(s));
        assert!(matches!(classify_death(signal(libc::SIGXCPU), &[]), MediaError::ResourceLimit { .. }));
        assert!(matches!(classify_death(signal(libc::SIGKILL), &[]), MediaError::Killed));
        assert!(matches!(classify_death(signal(libc::SIGSEGV), &[]), MediaError::Crashed { .. }));
        let oom = vec!["GLib-ERROR **: failed to allocate 1024000000 bytes".to_string()];
        assert!(matches!(classify_death(signal(libc::SIGABRT), &oom), MediaError::ResourceLimit { .. }));
        assert!(matches!(classify_death(Some(std::process::ExitStatus::from_raw(0)), &[]), MediaError::Crashed { .. }));
        assert!(!MediaError::Killed.is_client_error());
        assert!(MediaError::Crashed { reason: String::new() }.is_client_error());
    }

    #[test]
    fn only_plain_files_inside_the_work_dir_are_confined() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let inside = root.path().join("seg.ts");
        std::fs::write(&inside, b"x").unwrap();
        assert!(confined_file(root.path(), &inside).is_ok());
        let link = root.path().join("link.ts");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        assert!(confined_file(root.path(), &link).is_err(), "a symlink out");
        let hard = root.path().join("hard.ts");
        std::fs::hard_link(&inside, &hard).unwrap();
        assert!(confined_file(root.path(), &hard).is_err(), "a second name");
        assert!(confined_file(root.path(), outside.path()).is_err(), "outside");
        assert!(confined_file(root.path(), &root.path().join("../x")).is_err());
    }
}
