//! The remote worker: `reelhouse worker --server URL` with `REELHOUSE_WORKER_TOKEN`
//! (or `REELHOUSE_WORKER_TOKEN_FILE` / `--token-file`) and no database or storage
//! settings. It connects to `/workers/ws`, says `hello` with its token, runs the
//! jobs it is assigned through the same jailed media pipeline as a local worker
//! (`jobs::transcode::run_media`), fetching the source and storing outputs through
//! presigned URLs, and reports progress, log lines and the result over the socket.
//!
//! A lost connection is retried with backoff (1 s doubling to 30 s, with jitter);
//! running jobs keep running meanwhile, and the next `hello` names their leases so
//! the server resumes them if they are still this worker's. Messages that could not
//! be sent wait for the next connection. A closed door (unknown or revoked token,
//! unsupported protocol version) ends the process with an error. SIGTERM drains:
//! no new jobs, running ones finish (within `server.shutdown_timeout_secs`, then
//! they are given back to the queue), then the process exits.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entities::LogLevel;
use futures::{SinkExt, StreamExt, TryStreamExt};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::protocol::{
    LeaseRef, MultipartPolicy, OutputFile, PartEtag, PartSpec, PresignedUrl, ServerMessage, WorkerMessage,
    CLOSE_REVOKED, CLOSE_TAGS_NOT_ALLOWED, CLOSE_UNAUTHENTICATED, CLOSE_UNSUPPORTED_VERSION, KNOWN_ENCODERS,
    PROTOCOL_VERSION, SUBPROTOCOL,
};
use crate::config::Settings;
use crate::events::ProgressInfo;
use crate::jobs::reporter::Throttle;
use crate::jobs::runner::{JobError, JobReporter, MediaSpec};
use crate::jobs::runner_storage::{file_stream, Upload};
use crate::jobs::transcode::{early_rung, run_media, EarlyPublished, TranscodeHost};
use crate::media::ladder::RenditionReady;
use crate::media::{CancelFlag, MediaInfo};
use crate::storage::layout;

const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const PUT_TIMEOUT: Duration = Duration::from_secs(1800);
const URL_TIMEOUT: Duration = Duration::from_secs(60);
/// The server completes a multipart upload (the store assembles the parts).
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const UPLOAD_CONCURRENCY: usize = 4;
/// Parts of one multipart output PUT at once.
const PART_CONCURRENCY: usize = 3;

/// The channel's URL for a server's base URL: `http://h:p` → `ws://h:p/workers/ws`.
pub fn channel_url(server: &str) -> anyhow::Result<url::Url> {
    let mut url = url::Url::parse(server.trim()).map_err(|e| anyhow::anyhow!("--server {server:?}: {e}"))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => anyhow::bail!("--server must be an http:// or https:// URL, not {other}://"),
    };
    url.set_scheme(scheme).map_err(|_| anyhow::anyhow!("--server {server:?}: cannot use as a WebSocket URL"))?;
    url.set_path("/workers/ws");
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// TLS for an `https://` server (the channel and presigned URLs): the web PKI
/// roots, plus every certificate of the PEM file `ca_file` (`--ca-file` /
/// `REELHOUSE_WORKER_CA_FILE`: a private CA or a self-signed server). The ring
/// provider is named (two providers are linked, so there is no process default).
pub fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("reading the CA file {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            anyhow::bail!("the CA file {} holds no PEM certificate", path.display());
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The typed refusal of a server certificate this worker does not trust.
pub const TLS_UNTRUSTED: &str = "TLS_UNTRUSTED";

/// The certificate error in an error's chain, if the TLS handshake failed on it.
fn certificate_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(reason)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("{reason:?}"));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(rustls::Error::InvalidCertificate(reason)) =
                io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(format!("{reason:?}"));
            }
        }
        next = err.source();
    }
    None
}

fn untrusted(reason: &str) -> String {
    format!(
        "{TLS_UNTRUSTED}: the server's TLS certificate is not trusted ({reason}); \
         give its CA in REELHOUSE_WORKER_CA_FILE (--ca-file) if it is a private one"
    )
}

/// The worker token: `REELHOUSE_WORKER_TOKEN`, or the first line of the file at
/// `token_file` (`--token-file` / `REELHOUSE_WORKER_TOKEN_FILE`). Never from argv.
pub fn read_token(env: Option<String>, token_file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the worker token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            anyhow::bail!("the worker token file {} is empty", path.display());
        }
        return Ok(token);
    }
    match env.map(|t| t.trim().to_string()) {
        Some(token) if !token.is_empty() => Ok(token),
        _ => anyhow::bail!(
            "a remote worker needs its token in REELHOUSE_WORKER_TOKEN or a file named by REELHOUSE_WORKER_TOKEN_FILE"
        ),
    }
}

/// A job this worker runs.
struct RunningJob {
    lease: LeaseRef,
    cancel: CancelFlag,
}

/// What the connection loop and the job tasks share.
struct Shared {
    settings: Arc<Settings>,
    scratch_dir: PathBuf,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    /// Announced in hello: the tags to be routed by, the encoders it has.
    tags: Vec<String>,
    encoders: Vec<String>,
    out: mpsc::UnboundedSender<WorkerMessage>,
    jobs: Mutex<HashMap<Uuid, RunningJob>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Reply, String>>>>,
    /// What the server's last `welcome` said about multipart uploads (none: an
    /// older server, every output is one PUT).
    multipart: Mutex<Option<MultipartPolicy>>,
    next_request: AtomicU64,
    /// Draining ran out of time: cancelled jobs are given back, not failed.
    releasing: AtomicBool,
}

impl Shared {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, RunningJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leases(&self) -> Vec<LeaseRef> {
        self.jobs().values().map(|j| j.lease).collect()
    }

    fn answer(&self, request: u64, reply: Result<Reply, String>) {
        if let Some(tx) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&request) {
            let _ = tx.send(reply);
        }
    }

    fn multipart(&self) -> Option<MultipartPolicy> {
        *self.multipart.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancel(&self, job: Uuid) {
        if let Some(running) = self.jobs().get(&job) {
            running.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// The server's answer to a request (`upload_url`, `complete_upload`).
enum Reply {
    Url(PresignedUrl),
    Multipart { upload_id: String, parts: Vec<PresignedUrl> },
    Done,
}

/// How a connection ended.
enum SessionEnd {
    /// Try again after a pause.
    Lost(String),
    /// The server refused this worker for good.
    Refused(String),
    /// Drained: every job ended and the server knows.
    Drained,
}

/// Run until `stop` resolves and the jobs drained, or until the server refuses the
/// worker (unknown or revoked token, unsupported protocol): an error then.
pub async fn run(
    settings: Settings,
    server: &str,
    token: String,
    ca_file: Option<&Path>,
    tags: Vec<String>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let url = channel_url(server)?;
    let tls = tls_config(ca_file)?;
    let encoders = available_encoders();
    let capacity = settings.worker_concurrency();
    let scratch_dir = settings.scratch_dir();
    std::fs::create_dir_all(&scratch_dir)
        .map_err(|e| anyhow::anyhow!("creating the scratch directory {}: {e}", scratch_dir.display()))?;
    let (out, mut outbox) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        settings: Arc::new(settings),
        scratch_dir,
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .use_preconfigured_tls(tls.clone())
            .build()?,
        tls: Arc::new(tls),
        tags,
        encoders,
        out,
        jobs: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        multipart: Mutex::new(None),
        next_request: AtomicU64::new(1),
        releasing: AtomicBool::new(false),
    });
    tracing::info!(server = %url, capacity, "remote worker starting");
    let mut backlog: VecDeque<WorkerMessage> = VecDeque::new();
    let mut draining: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    tokio::pin!(stop);
    loop {
        let end = match connect(&url, &shared.tls).await {
            Ok(socket) => {
                backoff = Duration::from_secs(1);
                session(socket, &shared, &token, capacity, &mut outbox, &mut backlog, &mut stop, &mut draining).await
            }
            // A certificate this worker does not trust is no passing fault.
            Err(err) => match certificate_error(err.as_ref()) {
                Some(reason) => SessionEnd::Refused(untrusted(&reason)),
                None => SessionEnd::Lost(format!("{err}")),
            },
        };
        match end {
            SessionEnd::Drained => return Ok(()),
            SessionEnd::Refused(reason) => {
                for running in shared.jobs().values() {
                    running.cancel.store(true, Ordering::SeqCst);
                }
                anyhow::bail!("the server refused this worker: {reason}");
            }
            SessionEnd::Lost(reason) => {
                if draining.is_some() && shared.jobs().is_empty() && backlog.is_empty() && outbox.is_empty() {
                    return Ok(());
                }
                let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                let pause = backoff / 2 + Duration::from_millis(jitter);
                tracing::warn!(reason, retry_in_ms = pause.as_millis() as u64, "worker channel lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut stop, if draining.is_none() => {
                        draining = Some(Instant::now());
                        if shared.jobs().is_empty() {
                            return Ok(());
                        }
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &url::Url, tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<Socket> {
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse()?);
    let connector = tokio_tungstenite::Connector::Rustls(tls.clone());
    let connecting = tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
    let (socket, response) = tokio::time::timeout(Duration::from_secs(15), connecting).await??;
    let agreed = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
    if agreed != Some(SUBPROTOCOL) {
        anyhow::bail!("the server did not agree to {SUBPROTOCOL}");
    }
    Ok(socket)
}

fn encode(message: &WorkerMessage) -> Message {
    Message::Text(serde_json::to_string(message).unwrap_or_default().into())
}

#[allow(clippy::too_many_arguments)]
async fn session(
    mut socket: Socket,
    shared: &Arc<Shared>,
    token: &str,
    capacity: usize,
    outbox: &mut mpsc::UnboundedReceiver<WorkerMessage>,
    backlog: &mut VecDeque<WorkerMessage>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    draining: &mut Option<Instant>,
) -> SessionEnd {
    let hello = WorkerMessage::Hello {
        version: PROTOCOL_VERSION,
        token: token.to_string(),
        capacity: u32::try_from(capacity).unwrap_or(1),
        tags: shared.tags.clone(),
        reelhouse: env!("CARGO_PKG_VERSION").to_string(),
        gstreamer: gstreamer_version(),
        encoders: shared.encoders.clone(),
        leases: shared.leases(),
    };
    if let Err(err) = socket.send(encode(&hello)).await {
        return SessionEnd::Lost(format!("sending hello: {err}"));
    }
    // The first answer: welcome, or a close that says why not.
    let heartbeat_secs = loop {
        let next = match tokio::time::timeout(WELCOME_TIMEOUT, socket.next()).await {
            Err(_) => return SessionEnd::Lost("no welcome in time".into()),
            Ok(next) => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Welcome { worker_id, heartbeat_secs, resumed, multipart, .. }) => {
                    tracing::info!(worker = %worker_id, resumed = resumed.len(), ?multipart, "connected to the server");
                    *shared.multipart.lock().unwrap_or_else(|p| p.into_inner()) = multipart;
                    // Leases the server no longer gives this worker: their jobs stop.
                    let resumed: Vec<Uuid> = resumed.iter().map(|l| l.job).collect();
                    let lost: Vec<Uuid> = shared.jobs().keys().filter(|job| !resumed.contains(job)).copied().collect();
                    for job in lost {
                        tracing::warn!(job = %job, "lease lost while disconnected; stopping the job");
                        shared.cancel(job);
                        shared.jobs().remove(&job);
                    }
                    break heartbeat_secs.max(1);
                }
                _ => return SessionEnd::Lost("unexpected first message".into()),
            },
            Some(Ok(Message::Close(frame))) => return closed(frame),
            Some(Ok(_)) => {}
            Some(Err(err)) => return SessionEnd::Lost(format!("{err}")),
            None => return SessionEnd::Lost("closed before welcome".into()),
        }
    };
    if draining.is_some() {
        backlog.push_back(WorkerMessage::Drain);
    }
    // Whatever could not be sent on the last connection goes first.
    while let Some(message) = backlog.pop_front() {
        if let Err(err) = socket.send(encode(&message)).await {
            backlog.push_front(message);
            return SessionEnd::Lost(format!("{err}"));
        }
    }
    let mut heartbeat = tokio::time::interval(Duration::from_secs(heartbeat_secs));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drain_for = Duration::from_secs(shared.settings.server.shutdown_timeout_secs.max(1));
    let mut drain_check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(message) => on_server_message(message, shared, capacity, draining.is_some()),
                    Err(err) => tracing::warn!(error = %err, "an unreadable message from the server"),
                },
                Some(Ok(Message::Close(frame))) => return closed(frame),
                Some(Ok(_)) => {}
                Some(Err(err)) => return SessionEnd::Lost(format!("{err}")),
                None => return SessionEnd::Lost("the server closed the connection".into()),
            },
            Some(message) = outbox.recv() => {
                if let Err(err) = socket.send(encode(&message)).await {
                    backlog.push_back(message);
                    return SessionEnd::Lost(format!("{err}"));
                }
            }
            _ = heartbeat.tick() => {
                let leases = shared.leases();
                if let Err(err) = socket.send(encode(&WorkerMessage::Heartbeat { leases })).await {
                    return SessionEnd::Lost(format!("{err}"));
                }
            }
            _ = stop.as_mut(), if draining.is_none() => {
                tracing::info!("draining: no new jobs; running ones finish");
                *draining = Some(Instant::now());
                if let Err(err) = socket.send(encode(&WorkerMessage::Drain)).await {
                    return SessionEnd::Lost(format!("{err}"));
                }
            }
            _ = drain_check.tick(), if draining.is_some() => {
                if shared.jobs().is_empty() && outbox.is_empty() {
                    let _ = socket.close(None).await;
                    return SessionEnd::Drained;
                }
                if draining.is_some_and(|at| at.elapsed() > drain_for) && !shared.releasing.swap(true, Ordering::SeqCst) {
                    tracing::warn!("jobs still running after the drain timeout; giving them back");
                    for running in shared.jobs().values() {
                        running.cancel.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

fn closed(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> SessionEnd {
    let Some(frame) = frame else { return SessionEnd::Lost("closed".into()) };
    let code = u16::from(frame.code);
    let reason = format!("{code} {}", frame.reason);
    match code {
        CLOSE_UNAUTHENTICATED | CLOSE_REVOKED | CLOSE_UNSUPPORTED_VERSION | CLOSE_TAGS_NOT_ALLOWED => {
            SessionEnd::Refused(reason)
        }
        _ => SessionEnd::Lost(reason),
    }
}

fn on_server_message(message: ServerMessage, shared: &Arc<Shared>, capacity: usize, draining: bool) {
    match message {
        ServerMessage::Assign { lease, spec, source, publish_early } => {
            let full = shared.jobs().len() >= capacity;
            if draining || full {
                let reason = if draining { "draining" } else { "no free capacity" };
                let _ = shared.out.send(WorkerMessage::Reject { lease, reason: reason.into() });
                return;
            }
            let cancel: CancelFlag = Arc::new(AtomicBool::new(false));
            shared.jobs().insert(lease.job, RunningJob { lease, cancel: cancel.clone() });
            let _ = shared.out.send(WorkerMessage::Accept { lease });
            tracing::info!(job = %lease.job, "job assigned");
            let shared = shared.clone();
            actix_rt::spawn(async move { run_job(shared, lease, *spec, source, publish_early, cancel).await });
        }
        ServerMessage::Lease { lease, owned, cancel } => {
            if !owned {
                tracing::warn!(job = %lease.job, "the lease was lost; stopping the job");
                shared.cancel(lease.job);
                shared.jobs().remove(&lease.job);
            } else if cancel {
                shared.cancel(lease.job);
            }
        }
        ServerMessage::Cancel { job } => {
            shared.cancel(job);
            let _ = shared.out.send(WorkerMessage::CancelAck { job });
        }
        ServerMessage::UploadUrl { request, url } => shared.answer(request, Ok(Reply::Url(url))),
        ServerMessage::MultipartUrls { request, upload_id, parts } => {
            shared.answer(request, Ok(Reply::Multipart { upload_id, parts }))
        }
        ServerMessage::UploadDone { request, .. } => shared.answer(request, Ok(Reply::Done)),
        ServerMessage::Refused { request, code, message } => shared.answer(request, Err(format!("{code}: {message}"))),
        ServerMessage::Finished { lease, accepted, code } => {
            let mut jobs = shared.jobs();
            if jobs.get(&lease.job).is_some_and(|j| j.lease == lease) {
                jobs.remove(&lease.job);
            }
            if accepted {
                tracing::info!(job = %lease.job, "the server accepted the outcome");
            } else {
                tracing::warn!(job = %lease.job, code = ?code, "the server refused the outcome");
            }
        }
        ServerMessage::Welcome { .. } => {}
    }
}

async fn run_job(
    shared: Arc<Shared>,
    lease: LeaseRef,
    spec: MediaSpec,
    source: PresignedUrl,
    publish_early: bool,
    cancel: CancelFlag,
) {
    let host = RemoteHost { shared: shared.clone(), lease, source, publish_early, files: Mutex::new(Vec::new()) };
    let reporter: Arc<dyn JobReporter> =
        Arc::new(RemoteReporter { out: shared.out.clone(), lease, throttle: Mutex::new(Throttle::default()) });
    let result = run_media(&shared.settings, &shared.scratch_dir, &spec, &host, cancel, reporter.clone()).await;
    let message = match result {
        Ok(output) => {
            let files = host.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
            WorkerMessage::Result { lease, output: Box::new(output), files }
        }
        Err(JobError::Cancelled) if shared.releasing.load(Ordering::SeqCst) => {
            WorkerMessage::Failure { lease, code: "RELEASED".into(), message: "the worker is stopping".into() }
        }
        Err(JobError::Cancelled) => {
            WorkerMessage::Failure { lease, code: "CANCELLED".into(), message: "cancelled".into() }
        }
        Err(JobError::Permanent { code, reason }) => {
            WorkerMessage::Failure { lease, code: code.as_str().into(), message: reason }
        }
        Err(JobError::Retryable(message)) => WorkerMessage::Failure { lease, code: "RETRYABLE".into(), message },
    };
    tracing::info!(job = %lease.job, outcome = ?std::mem::discriminant(&message), "job ended");
    let _ = shared.out.send(message);
}

/// Reports over the channel, at most ~4 progress messages a second.
struct RemoteReporter {
    out: mpsc::UnboundedSender<WorkerMessage>,
    lease: LeaseRef,
    throttle: Mutex<Throttle>,
}

impl JobReporter for RemoteReporter {
    fn progress(&self, progress: ProgressInfo) {
        let admitted = self.throttle.lock().unwrap_or_else(|p| p.into_inner()).admit(&progress, Instant::now());
        if admitted {
            let _ = self.out.send(WorkerMessage::Progress { lease: self.lease, progress });
        }
    }

    fn log(&self, level: LogLevel, message: String) {
        let _ = self.out.send(WorkerMessage::Log { lease: self.lease, level, message });
    }
}

/// A remote worker's [`TranscodeHost`]: bytes through presigned URLs; the early
/// rung is uploaded here and published by the server (`rung_ready`); the quota is
/// checked by the server (on the rung and on the result).
struct RemoteHost {
    shared: Arc<Shared>,
    lease: LeaseRef,
    source: PresignedUrl,
    /// The server asked for the lowest rung early (a first transcode).
    publish_early: bool,
    files: Mutex<Vec<OutputFile>>,
}

fn check_cancel(cancel: &CancelFlag) -> Result<(), JobError> {
    if cancel.load(Ordering::Relaxed) {
        Err(JobError::Cancelled)
    } else {
        Ok(())
    }
}

fn transfer_error(what: &str, err: impl std::fmt::Display) -> JobError {
    tracing::warn!(error = %err, "{what}");
    JobError::Retryable(format!("{what}: the server or storage is unreachable"))
}

/// A failed request: a certificate this worker does not trust says so (typed).
fn request_error(what: &str, err: reqwest::Error) -> JobError {
    match certificate_error(&err) {
        Some(reason) => {
            tracing::warn!(error = %err, "{what}");
            JobError::Retryable(format!("{what}: {}", untrusted(&reason)))
        }
        None => transfer_error(what, err),
    }
}

impl RemoteHost {
    /// Ask the server (a request it answers by number); `what` names it in errors.
    async fn ask(
        &self,
        what: &str,
        wait: Duration,
        build: impl FnOnce(u64) -> WorkerMessage,
    ) -> Result<Reply, JobError> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(request, tx);
        let _ = self.shared.out.send(build(request));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(refusal))) => Err(JobError::Retryable(format!("the server refused {what}: {refusal}"))),
            _ => {
                self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&request);
                Err(JobError::Retryable(format!("no answer from the server to {what} in time")))
            }
        }
    }

    /// A presigned PUT for `key`, asked of the server (it checks the key and lease).
    async fn upload_url(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        sha256: &str,
    ) -> Result<PresignedUrl, JobError> {
        let reply = self
            .ask("an upload", URL_TIMEOUT, |request| WorkerMessage::UploadUrl {
                request,
                lease: self.lease,
                key: key.to_string(),
                content_type: content_type.to_string(),
                size,
                sha256: sha256.to_string(),
                parts: Vec::new(),
            })
            .await?;
        match reply {
            Reply::Url(url) => Ok(url),
            _ => Err(JobError::Retryable("the server answered an upload with something else".into())),
        }
    }

    async fn put(&self, url: &PresignedUrl, body: reqwest::Body, length: u64) -> Result<(), JobError> {
        self.put_for_etag(url, body, length).await.map(|_| ())
    }

    /// PUT a body to a presigned URL; the `ETag` the store answered (if any).
    async fn put_for_etag(
        &self,
        url: &PresignedUrl,
        body: reqwest::Body,
        length: u64,
    ) -> Result<Option<String>, JobError> {
        let mut request = self.shared.http.put(&url.url).header(reqwest::header::CONTENT_LENGTH, length).body(body);
        for (name, value) in &url.headers {
            if !name.eq_ignore_ascii_case("content-length") {
                request = request.header(name, value);
            }
        }
        match tokio::time::timeout(PUT_TIMEOUT, request.send()).await {
            Err(_) => Err(JobError::Retryable("uploading the outputs timed out".into())),
            Ok(Err(err)) => Err(request_error("uploading the outputs failed", err)),
            Ok(Ok(res)) if !res.status().is_success() => {
                Err(transfer_error("uploading the outputs failed", format!("status {}", res.status())))
            }
            Ok(Ok(res)) => {
                Ok(res.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string))
            }
        }
    }

    fn record(&self, key: &str, size: u64, sha256: String) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).push(OutputFile { key: key.into(), size, sha256 });
    }

    async fn upload_one(&self, upload: &Upload, cancel: &CancelFlag) -> Result<u64, JobError> {
        check_cancel(cancel)?;
        let missing = |err: std::io::Error| {
            tracing::warn!(error = %err, path = %upload.path.display(), "an output file is missing");
            JobError::Retryable("an output file went missing before upload".into())
        };
        let length = tokio::fs::metadata(&upload.path).await.map_err(missing)?.len();
        if let Some(sizes) = self.shared.multipart().and_then(|policy| policy.part_sizes(length)) {
            return self.upload_multipart(upload, length, &sizes, cancel).await;
        }
        let sha256 = file_sha256(&upload.path).await.map_err(missing)?;
        let file = tokio::fs::File::open(&upload.path).await.map_err(missing)?;
        let length = file.metadata().await.map_err(missing)?.len();
        let url = self.upload_url(&upload.key, upload.content_type, length, &sha256).await?;
        self.put(&url, reqwest::Body::wrap_stream(file_stream(file)), length).await?;
        self.record(&upload.key, length, sha256);
        Ok(length)
    }
}

impl RemoteHost {
    /// Upload one output by multipart: each part's SHA-256 (and the whole file's)
    /// in one read, the parts announced, PUT from file ranges a few at once, then
    /// completed by the server. A failure aborts the upload (the server also aborts
    /// what a run leaves open).
    async fn upload_multipart(
        &self,
        upload: &Upload,
        length: u64,
        sizes: &[u64],
        cancel: &CancelFlag,
    ) -> Result<u64, JobError> {
        let missing = |err: std::io::Error| {
            tracing::warn!(error = %err, path = %upload.path.display(), "an output file is missing");
            JobError::Retryable("an output file went missing before upload".into())
        };
        let (sha256, part_digests) = file_part_sha256s(&upload.path, sizes).await.map_err(missing)?;
        let parts: Vec<PartSpec> =
            sizes.iter().zip(part_digests).map(|(size, sha256)| PartSpec { size: *size, sha256 }).collect();
        let reply = self
            .ask("a multipart upload", URL_TIMEOUT, |request| WorkerMessage::UploadUrl {
                request,
                lease: self.lease,
                key: upload.key.clone(),
                content_type: upload.content_type.to_string(),
                size: length,
                sha256: sha256.clone(),
                parts: parts.clone(),
            })
            .await?;
        let Reply::Multipart { upload_id, parts: urls } = reply else {
            return Err(JobError::Retryable("the server answered a multipart upload with something else".into()));
        };
        if urls.len() != parts.len() {
            self.abandon(&upload.key, &upload_id);
            return Err(JobError::Retryable("the server presigned another number of parts".into()));
        }
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut offset = 0u64;
        for size in sizes {
            offsets.push(offset);
            offset += size;
        }
        let puts = urls.iter().zip(sizes).zip(offsets).enumerate().map(|(index, ((url, size), offset))| async move {
            check_cancel(cancel)?;
            let body = file_range_stream(&upload.path, offset, *size).await.map_err(missing)?;
            let etag = self.put_for_etag(url, reqwest::Body::wrap_stream(body), *size).await?;
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let etag = etag.ok_or_else(|| JobError::Retryable("a part's PUT answered no ETag".into()))?;
            Ok::<_, JobError>(PartEtag { number, etag })
        });
        let mut results = futures::stream::iter(puts).buffer_unordered(PART_CONCURRENCY);
        let mut etags = Vec::with_capacity(parts.len());
        while let Some(result) = results.next().await {
            match result {
                Ok(part) => etags.push(part),
                Err(err) => {
                    drop(results);
                    self.abandon(&upload.key, &upload_id);
                    return Err(err);
                }
            }
        }
        etags.sort_by_key(|p| p.number);
        let done = self
            .ask("completing a multipart upload", COMPLETE_TIMEOUT, |request| WorkerMessage::CompleteUpload {
                request,
                lease: self.lease,
                key: upload.key.clone(),
                upload_id: upload_id.clone(),
                parts: etags,
            })
            .await?;
        if !matches!(done, Reply::Done) {
            return Err(JobError::Retryable("the server answered a completion with something else".into()));
        }
        tracing::debug!(key = %upload.key, parts = parts.len(), length, "uploaded by multipart");
        self.record(&upload.key, length, sha256);
        Ok(length)
    }

    fn abandon(&self, key: &str, upload_id: &str) {
        let _ = self.shared.out.send(WorkerMessage::AbortUpload {
            lease: self.lease,
            key: key.into(),
            upload_id: upload_id.into(),
        });
    }
}

/// The whole file's hex SHA-256 and each part's (`sizes` in order), in one read.
async fn file_part_sha256s(path: &Path, sizes: &[u64]) -> std::io::Result<(String, Vec<String>)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut whole = Sha256::new();
    let mut parts = Vec::with_capacity(sizes.len());
    let mut buf = vec![0u8; 256 * 1024];
    for size in sizes {
        let mut part = Sha256::new();
        let mut left = *size;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank"));
            }
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            left -= n as u64;
        }
        parts.push(hex::encode(part.finalize()));
    }
    Ok((hex::encode(whole.finalize()), parts))
}

/// `len` bytes of the file from `offset`, streamed.
async fn file_range_stream(
    path: &Path,
    offset: u64,
    len: u64,
) -> std::io::Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>>> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let range = file.take(len);
    Ok(futures::stream::try_unfold(range, |mut range| async move {
        let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
        let n = range.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some((buf.freeze(), range)))
    }))
}

async fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[async_trait::async_trait(?Send)]
impl TranscodeHost for RemoteHost {
    async fn fetch_source(&self, dest: &Path, cancel: &CancelFlag, expected: Option<u64>) -> Result<u64, JobError> {
        let mut request = self.shared.http.get(&self.source.url);
        for (name, value) in &self.source.headers {
            request = request.header(name, value);
        }
        let response = match tokio::time::timeout(IDLE_TIMEOUT, request.send()).await {
            Err(_) => return Err(JobError::Retryable("downloading the source timed out".into())),
            Ok(Err(err)) => return Err(request_error("downloading the source failed", err)),
            Ok(Ok(res)) => res,
        };
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(JobError::Permanent {
                code: crate::jobs::FailureCode::SourceMissing,
                reason: "the uploaded file is missing from storage".into(),
            });
        }
        if !response.status().is_success() {
            return Err(transfer_error("downloading the source failed", format!("status {}", response.status())));
        }
        let changed = || JobError::Permanent {
            code: crate::jobs::FailureCode::SourceChanged,
            reason: "the stored file changed after its upload was checked; upload it again".into(),
        };
        if let (Some(size), Some(length)) = (expected, response.content_length()) {
            if size != length {
                return Err(changed());
            }
        }
        let local_error = |err: std::io::Error| {
            tracing::warn!(error = %err, path = %dest.display(), "writing the source to scratch failed");
            JobError::Retryable("the worker could not store the source locally".into())
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(local_error)?;
        let mut body = response.bytes_stream();
        let mut written = 0u64;
        loop {
            check_cancel(cancel)?;
            let next = tokio::time::timeout(IDLE_TIMEOUT, body.try_next())
                .await
                .map_err(|_| JobError::Retryable("downloading the source stalled".into()))?
                .map_err(|err| transfer_error("downloading the source failed", err))?;
            let Some(chunk) = next else { break };
            written += chunk.len() as u64;
            if expected.is_some_and(|size| written > size) {
                return Err(changed());
            }
            file.write_all(&chunk).await.map_err(local_error)?;
        }
        file.flush().await.map_err(local_error)?;
        if expected.is_some_and(|size| written != size) {
            return Err(changed());
        }
        Ok(written)
    }

    async fn upload_files(
        &self,
        files: &[Upload],
        cancel: &CancelFlag,
        on_done: &mut (dyn FnMut() + Send),
    ) -> Result<u64, JobError> {
        let mut results = futures::stream::iter(files.iter().map(|u| self.upload_one(u, cancel)))
            .buffer_unordered(UPLOAD_CONCURRENCY);
        let mut bytes = 0;
        while let Some(size) = results.next().await {
            bytes += size?;
            on_done();
        }
        Ok(bytes)
    }

    async fn upload_text(&self, key: &str, text: String, content_type: &str) -> Result<(), JobError> {
        let bytes = text.into_bytes();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let length = bytes.len() as u64;
        let url = self.upload_url(key, content_type, length, &sha256).await?;
        self.put(&url, reqwest::Body::from(bytes), length).await?;
        self.record(key, length, sha256);
        Ok(())
    }

    async fn publishes_early(&self) -> Result<bool, JobError> {
        Ok(self.publish_early)
    }

    async fn check_quota(&self, _new_bytes: u64) -> Result<(), JobError> {
        Ok(())
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
        // The worker channel publishes whole rungs only (`rung_ready`): a remote run's
        // video is playable once its lowest rung is final.
        if !ready.complete {
            return Ok(false);
        }
        let Some(rung) = early_rung(&self.shared.settings, info, root, ready, outputs)? else { return Ok(false) };
        let before = self.files.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.upload_files(&rung.uploads, cancel, &mut || {}).await?;
        let playlist = "application/vnd.apple.mpegurl";
        self.upload_text(&rung.rendition.playlist_key, rung.playlist_text, playlist).await?;
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).get(before..).unwrap_or_default().to_vec();
        // The server checks the files and publishes (or, over the quota, does not).
        let _ = self.shared.out.send(WorkerMessage::RungReady { lease: self.lease, rendition: rung.rendition, files });
        early.announced = true;
        Ok(true)
    }

    /// The server withdraws an early rung itself when the result fails the quota.
    async fn unpublish_early(&self, _name: &str) {}

    /// The server removes a failed remote run's outputs when the failure arrives.
    async fn remove_outputs(&self, _prefix: &str) {}
}

/// The encoders of [`KNOWN_ENCODERS`] this machine's GStreamer has (the media
/// children link the same library and plugins).
fn available_encoders() -> Vec<String> {
    if let Err(err) = gstreamer::init() {
        tracing::warn!(error = %err, "GStreamer does not initialise; announcing no encoders");
        return Vec::new();
    }
    let found: Vec<String> = KNOWN_ENCODERS
        .iter()
        .filter(|name| gstreamer::ElementFactory::find(name).is_some())
        .map(|name| name.to_string())
        .collect();
    tracing::info!(encoders = ?found, "encoders available");
    found
}

/// Tags from `--tags` / `REELHOUSE_WORKER_TAGS`: comma-separated, trimmed,
/// lower-cased, no empties.
pub fn parse_tags(text: Option<&str>) -> Vec<String> {
    let mut tags: Vec<String> =
        text.unwrap_or_default().split(',').map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty()).collect();
    tags.sort();
    tags.dedup();
    tags
}

/// The GStreamer version this worker's media children run (they link the same
/// library), for the admin list.
fn gstreamer_version() -> Option<String> {
    Some(gstreamer::version_string().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn part_digests_and_ranges_cover_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let sizes = [400, 400, 200];
        let (whole, parts) = file_part_sha256s(&path, &sizes).await.unwrap();
        assert_eq!(whole, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(parts[1], hex::encode(Sha256::digest(&bytes[400..800])));
        assert_eq!(parts[2], hex::encode(Sha256::digest(&bytes[800..])));
        let range: Vec<bytes::Bytes> = file_range_stream(&path, 400, 400).await.unwrap().try_collect().await.unwrap();
        assert_eq!(range.concat(), bytes[400..800].to_vec());
        assert!(file_part_sha256s(&path, &[600, 600]).await.is_err(), "a file shorter than its parts");
    }

    #[test]
    fn the_channel_url_follows_the_server_url() {
        assert_eq!(channel_url("http://h:8080").unwrap().as_str(), "ws://h:8080/workers/ws");
        assert_eq!(channel_url("http://h:8080/base?x=1").unwrap().as_str(), "ws://h:8080/workers/ws");
        assert_eq!(channel_url("https://h").unwrap().as_str(), "wss://h/workers/ws");
        assert!(channel_url("ftp://h").is_err());
        assert!(channel_url("not a url").is_err());
    }

    #[test]
    fn tags_are_trimmed_lower_cased_and_deduplicated() {
        assert_eq!(parse_tags(Some(" GPU, cpu,,gpu ")), vec!["cpu".to_string(), "gpu".to_string()]);
        assert!(parse_tags(None).is_empty());
    }

    #[test]
    fn the_token_comes_from_the_environment_or_a_file_never_empty() {
        assert_eq!(read_token(Some(" rhw_x ".into()), None).unwrap(), "rhw_x");
        assert!(read_token(None, None).is_err());
        assert!(read_token(Some(String::new()), None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "rhw_file\n").unwrap();
        assert_eq!(read_token(Some("rhw_env".into()), Some(&path)).unwrap(), "rhw_file");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(None, Some(&path)).is_err());
    }
}
