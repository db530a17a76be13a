//! Remote workers: `reelhouse worker --server URL` with a worker token and nothing
//! else. The worker channel's messages are in [`protocol`], the worker's side in
//! [`client`], the server's transport (one `WorkerConnection` actor per socket) in
//! `http::worker_channel`. This module holds what the server does for a remote
//! worker with the queue, the database and storage, with the same lease rules as a
//! local worker (`jobs::queue`): leases are taken with the same SQL (fairness across
//! owners holds across both kinds), renewed by heartbeats, and every transition
//! presents the lease token, so a late result of a lease that was lost is refused.

pub mod client;
pub mod multipart;
pub mod protocol;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Message, Recipient};
use chrono::Utc;
use entities::job;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use self::protocol::{LeaseRef, OutputFile, PresignedUrl};
use crate::events::EventKind;
use crate::jobs::failure::FailureCode;
use crate::jobs::queue::{self, LeasedJob, QueueError};
use crate::jobs::runner::{JobError, JobOutput, MediaSpec, TranscodeOutput};
use crate::jobs::transcode::NewRendition;
use crate::repo::workers::NewWorker;

/// What the worker channel's server side uses of the process, provided by the
/// composition root (`state::AppState`).
pub trait RemoteDeps: Send + Sync {
    fn db(&self) -> &DatabaseConnection;
    fn settings(&self) -> &crate::config::Settings;
    fn store(&self) -> &Arc<dyn crate::storage::ObjectStore>;
    /// Publishes stored events after commit.
    fn publisher(&self) -> crate::events::Publisher;
    fn access_signals(&self) -> &crate::access::AccessSignals;
    fn remote_workers(&self) -> &RemoteWorkers;
    fn remote_multiparts(&self) -> &multipart::OpenMultiparts;
}

pub const KIND_LOCAL: &str = "LOCAL";
pub const KIND_REMOTE: &str = "REMOTE";

/// What the admin list shows of a worker.
pub fn worker_state(current_jobs: i32, draining: bool) -> &'static str {
    match (draining, current_jobs) {
        (true, _) => "DRAINING",
        (false, 0) => "IDLE",
        _ => "BUSY",
    }
}

/// Tell a connection its token was revoked: it gives its leases back, closes and
/// answers when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TokenRevoked;

/// A connection's token id and the address that tells it the token was revoked.
type Connection = (Uuid, Recipient<TokenRevoked>);

/// The remote workers connected to this process, by connection, with their token.
#[derive(Clone, Default)]
pub struct RemoteWorkers {
    inner: Arc<Mutex<HashMap<Uuid, Connection>>>,
}

impl RemoteWorkers {
    pub fn register(&self, connection: Uuid, token: Uuid, recipient: Recipient<TokenRevoked>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).insert(connection, (token, recipient));
    }

    pub fn unregister(&self, connection: Uuid) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(&connection);
    }

    /// Connections of this process now.
    pub fn count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Close every connection of `token`, waiting until each gave its leases back.
    pub async fn revoke_token(&self, token: Uuid) {
        let targets: Vec<Recipient<TokenRevoked>> = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(t, _)| *t == token)
            .map(|(_, r)| r.clone())
            .collect();
        for recipient in targets {
            let _ = recipient.send(TokenRevoked).await;
        }
    }
}

/// Close this process's connections of worker tokens revoked on other instances
/// (news from Redis, `access`) as they arrive.
pub async fn run_revocation_listener(state: impl RemoteDeps) {
    use tokio::sync::broadcast::error::RecvError;
    let mut revoked = state.access_signals().subscribe_worker_tokens();
    loop {
        match revoked.recv().await {
            Ok(token) => state.remote_workers().revoke_token(token).await,
            // Missed news: the heartbeats' token re-check is the backstop.
            Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "worker token revocations were missed"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Sweep expired leases every `jobs.sweep_interval_secs` (one step:
/// [`queue::sweep_expired`]), then abort the remote multipart uploads of leases no
/// longer live ([`multipart::reap`]).
pub async fn run_lease_sweeper(state: impl RemoteDeps) {
    let every = Duration::from_secs(state.settings().jobs.sweep_interval_secs.max(1));
    // The first sweep comes one period after start-up (leases a crash left
    // behind wait that long), so a sweep made by hand just after start is not raced.
    loop {
        actix_rt::time::sleep(every).await;
        match queue::sweep_expired(state.db(), &state.publisher(), &state.settings().jobs).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "expired leases returned to the queue"),
            Err(err) => tracing::warn!(error = %err, "sweeping expired leases failed"),
        }
        // Multipart uploads of leases no longer live are aborted.
        if state.remote_multiparts().open() > 0 {
            multipart::reap(&state).await;
        }
    }
}

/// The lease owner a remote connection leases under (the `workers` row id).
pub fn lease_owner(worker_id: Uuid) -> String {
    format!("remote:{worker_id}")
}

/// Announce a remote worker in the `workers` table.
pub async fn register_worker(
    db: &DatabaseConnection,
    worker_id: Uuid,
    token: &entities::worker_token::Model,
    capacity: i32,
    reelhouse_version: &str,
    gstreamer: Option<&str>,
) -> Result<(), sea_orm::DbErr> {
    let now = crate::db::now(db).await?;
    let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let row = NewWorker {
        id: worker_id,
        host: format!("remote:{}", clip(&token.name, 90)),
        pid: 0,
        capacity,
        current_jobs: 0,
        version: clip(reelhouse_version, 32),
        started_at: now,
        last_seen_at: now,
        kind: KIND_REMOTE.into(),
        name: Some(token.name.clone()),
        tags: token.tags.clone(),
        state: worker_state(0, false).into(),
        gstreamer_version: gstreamer.map(|g| clip(g, 64)),
        token_id: Some(token.id),
    };
    crate::repo::workers::insert(db, row).await.map(|_| ())
}

/// Refresh a remote worker's row; `false` when it has none (the sweeper removed it
/// after a long silence: it stays off the `workers` list until it reconnects).
pub async fn touch_worker(
    db: &DatabaseConnection,
    worker_id: Uuid,
    current_jobs: usize,
    draining: bool,
) -> Result<bool, sea_orm::DbErr> {
    let current = i32::try_from(current_jobs).unwrap_or(i32::MAX);
    let now = crate::db::now(db).await?;
    crate::repo::workers::touch(db, worker_id, now, current, worker_state(current, draining)).await
}

pub async fn deregister_worker(db: &DatabaseConnection, worker_id: Uuid) {
    if let Err(err) = crate::repo::workers::delete(db, worker_id).await {
        tracing::warn!(error = %err, worker = %worker_id, "could not remove a remote worker's row");
    }
}

/// How long presigned URLs of a lease live: until the lease expires (at least a
/// second). A heartbeat that renews the lease does not extend URLs already issued;
/// the worker asks for upload URLs when it uploads.
fn url_lifetime(job: &job::Model) -> Duration {
    let left = job.lease_expires_at.map(|at| (at - Utc::now()).num_milliseconds()).unwrap_or(0);
    Duration::from_millis(u64::try_from(left).unwrap_or(0).max(1000))
}

/// What an `assign` carries: the spec, a presigned GET of the source, and whether
/// the run publishes its lowest rung early (a first transcode).
pub type Assignment = (MediaSpec, PresignedUrl, bool);

/// An assignment for a job just leased: its spec and a presigned GET of the source.
/// A job that cannot be assigned (its video is gone) is failed for good, and `None`.
pub async fn prepare_assignment(state: &dyn RemoteDeps, leased: &LeasedJob) -> Result<Option<Assignment>, QueueError> {
    let job = &leased.job;
    let video = match job.video_id {
        Some(id) => crate::repo::videos::find(state.db(), id).await?,
        None => None,
    };
    let gone = |code: FailureCode, reason: &str| JobError::Permanent { code, reason: reason.into() };
    let failure = match &video {
        None => Some(gone(FailureCode::VideoGone, "the video was deleted")),
        Some(v) if v.deleted_at.is_some() => Some(gone(FailureCode::VideoGone, "the video was deleted")),
        Some(v) if v.source_key.is_none() => Some(gone(FailureCode::SourceMissing, "the video has no uploaded file")),
        _ => None,
    };
    if let Some(error) = failure {
        queue::fail(state.db(), &state.publisher(), &state.settings().jobs, job.id, leased.token, &error).await?;
        return Ok(None);
    }
    let Some(video) = video else { return Ok(None) };
    let Some(source_key) = video.source_key.clone() else { return Ok(None) };
    let spec = MediaSpec {
        job_id: job.id,
        video_id: video.id,
        owner_id: video.owner_id,
        source_size: video.source_size_bytes.and_then(|n| u64::try_from(n).ok()),
        payload: job.payload.clone(),
        version: crate::jobs::transcode::output_version(job),
    };
    let first = crate::jobs::transcode::first_transcode_of(state.db(), &video).await.unwrap_or(false);
    match state.store().presign_get(&source_key, url_lifetime(job)).await {
        Ok(url) => Ok(Some((spec, url.into(), first))),
        Err(err) => {
            tracing::warn!(error = ?err, job = %job.id, "presigning a source for a remote worker failed");
            let error = JobError::Retryable("storage is unavailable".into());
            queue::fail(state.db(), &state.publisher(), &state.settings().jobs, job.id, leased.token, &error).await?;
            Ok(None)
        }
    }
}

/// Why an upload URL or a result is refused (the code the worker sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The job of a live lease, and where its outputs go; `LEASE_LOST` otherwise.
async fn live_lease(state: &dyn RemoteDeps, lease: LeaseRef) -> Result<(job::Model, String), Refusal> {
    let internal = |err: sea_orm::DbErr| {
        tracing::warn!(error = %err, "checking a remote lease failed");
        Refusal::new("UNAVAILABLE", "the database is unavailable")
    };
    let job = crate::repo::jobs::find(state.db(), lease.job).await.map_err(internal)?;
    let now = crate::db::now(state.db()).await.map_err(internal)?;
    let Some(job) = job.filter(|j| {
        j.status == entities::JobStatus::Running
            && j.lease_token == Some(lease.lease)
            && j.lease_expires_at.is_some_and(|at| at > now)
    }) else {
        return Err(Refusal::new("LEASE_LOST", "the job's lease is no longer held by this worker"));
    };
    let video = match job.video_id {
        Some(id) => crate::repo::videos::find(state.db(), id).await.map_err(internal)?,
        None => None,
    };
    let Some(video) = video else {
        return Err(Refusal::new("VIDEO_GONE", "the video was deleted"));
    };
    let version = crate::jobs::transcode::output_version(&job);
    let prefix = crate::storage::layout::Outputs::new(video.owner_id, video.id, Some(&version)).prefix().to_string();
    Ok((job, prefix))
}

/// A key lies under `prefix` when it starts with it and names no parent directory.
fn key_under(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
        && key.len() > prefix.len()
        && !key.split('/').any(|part| part == ".." || part == "." || part.is_empty())
        && !key.contains('\\')
}

/// What every upload of an output asks first (one PUT or multipart): the lease is
/// live, the key lies under its run's prefix, the content type and SHA-256 are sane.
pub(crate) async fn check_output_request(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    key: &str,
    content_type: &str,
    sha256: &str,
) -> Result<job::Model, Refusal> {
    let (job, prefix) = live_lease(state, lease).await?;
    if !key_under(key, &prefix) {
        return Err(Refusal::new("FORBIDDEN_KEY", "the key is not under this job's output prefix"));
    }
    if content_type.len() > 100 || !content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Refusal::new("BAD_CONTENT_TYPE", "the content type is not acceptable"));
    }
    if !is_sha256_hex(sha256) {
        return Err(Refusal::new("BAD_CHECKSUM", "sha256 must be 64 hex digits"));
    }
    Ok(job)
}

/// A presigned PUT for one output of a live lease, expiring with the lease.
pub async fn presign_output(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    key: &str,
    content_type: &str,
    size: u64,
    sha256: &str,
) -> Result<PresignedUrl, Refusal> {
    let job = check_output_request(state, lease, key, content_type, sha256).await?;
    let lifetime = url_lifetime(&job);
    let signed = state.store().presign_checked_put(key, lifetime, Some(content_type), size, sha256).await;
    signed.map(Into::into).map_err(|err| {
        tracing::warn!(error = ?err, "presigning an output for a remote worker failed");
        Refusal::new("UNAVAILABLE", "storage is unavailable")
    })
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Outputs verified at once when a result arrives.
const VERIFY_CONCURRENCY: usize = 8;

/// One reported output is stored with the reported size and SHA-256: the store's
/// own digest when it keeps one (local disk, multipart outputs included: its
/// sidecar is computed from the assembled bytes; S3 objects uploaded through
/// [`presign_output`], which S3 checked on the way in), else the bytes read back
/// (an S3 multipart output: S3 keeps only a checksum of its part checksums).
async fn verify_output(state: &dyn RemoteDeps, file: &OutputFile) -> Result<(), Refusal> {
    let unavailable = |err: crate::storage::StoreError| {
        tracing::warn!(error = ?err, key = %file.key, "verifying a remote worker's output failed");
        Refusal::new("UNAVAILABLE", "storage is unavailable")
    };
    let mismatch = || Refusal::new("OUTPUT_MISMATCH", "a stored output differs from the reported size or SHA-256");
    let meta = match state.store().head(&file.key).await {
        Ok(meta) => meta,
        Err(crate::storage::StoreError::NotFound { .. }) => {
            return Err(Refusal::new("OUTPUT_MISSING", "an output the result names is not stored"))
        }
        Err(err) => return Err(unavailable(err)),
    };
    if meta.size != file.size || !is_sha256_hex(&file.sha256) {
        return Err(mismatch());
    }
    let stored = match state.store().stored_sha256(&file.key).await.map_err(unavailable)? {
        Some(digest) => digest,
        None => read_back_sha256(state, &file.key).await.map_err(unavailable)?,
    };
    if stored.eq_ignore_ascii_case(&file.sha256) {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// The SHA-256 of a stored object, read back (a store that keeps no digest).
async fn read_back_sha256(state: &dyn RemoteDeps, key: &str) -> Result<String, crate::storage::StoreError> {
    use futures::TryStreamExt;
    use sha2::{Digest, Sha256};
    let mut body = state.store().get(key, None).await?.body;
    let mut hasher = Sha256::new();
    while let Some(chunk) =
        body.try_next().await.map_err(|source| crate::storage::StoreError::Io { op: "read back an output", source })?
    {
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Every output of a result verified ([`verify_output`]); the first refusal.
async fn verify_outputs(state: &dyn RemoteDeps, files: &[OutputFile]) -> Result<(), Refusal> {
    use futures::StreamExt;
    let mut checks =
        futures::stream::iter(files.iter().map(|file| verify_output(state, file))).buffer_unordered(VERIFY_CONCURRENCY);
    while let Some(checked) = checks.next().await {
        checked?;
    }
    Ok(())
}

/// Every key the result names (they must all lie under the job's output prefix).
fn result_keys(output: &TranscodeOutput) -> Vec<&str> {
    let mut keys: Vec<&str> = vec![
        output.master_playlist_key.as_str(),
        output.poster_key.as_str(),
        output.storyboard.image_key.as_str(),
        output.storyboard.vtt_key.as_str(),
    ];
    keys.extend(output.renditions.iter().map(|r| r.playlist_key.as_str()));
    keys.extend(output.thumbnail_keys.iter().map(String::as_str));
    keys.extend(output.download.iter().chain(&output.downloads).map(|d| d.key.as_str()));
    keys
}

/// Finalise a remote success exactly as a local one (renditions, READY, events), if
/// the lease is still live and the result is plausible: every key under the job's
/// output prefix, the master playlist and the download stored with the sizes the
/// worker reported, the owner's quota respected.
pub async fn finish_result(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    output: TranscodeOutput,
    files: &[OutputFile],
) -> Result<(), Refusal> {
    // A multipart upload the run left open is not part of its result.
    multipart::abort_of_lease(state, lease).await;
    let (job, prefix) = live_lease(state, lease).await?;
    let bad = |message: &str| Refusal::new("BAD_RESULT", message);
    if job.video_id != Some(output.video_id) {
        return Err(bad("the result names another video"));
    }
    let expected_version = crate::jobs::transcode::output_version(&job);
    if output.output_version.as_deref() != Some(expected_version.as_str()) {
        return Err(bad("the result names another output version"));
    }
    if result_keys(&output).into_iter().chain(files.iter().map(|f| f.key.as_str())).any(|k| !key_under(k, &prefix)) {
        return Err(bad("the result names a key outside this job's output prefix"));
    }
    if result_keys(&output).into_iter().any(|key| !files.iter().any(|f| f.key == key)) {
        return Err(bad("the result names an output it does not report as uploaded"));
    }
    // Every output stored as reported, or the run is retried (its outputs removed).
    if let Err(refusal) = verify_outputs(state, files).await {
        if refusal.code == "UNAVAILABLE" {
            return Err(refusal);
        }
        tracing::warn!(job = %job.id, code = refusal.code, "a remote worker's outputs do not match its result");
        metrics::counter!("reelhouse_worker_channel_outputs_refused_total", "code" => refusal.code).increment(1);
        if !names_outputs_of(state, job.video_id, &prefix).await {
            let _ = state.store().delete_prefix(&prefix).await;
        }
        let error = JobError::Retryable(format!("{}: {}", refusal.code, refusal.message));
        return match queue::fail(state.db(), &state.publisher(), &state.settings().jobs, job.id, lease.lease, &error)
            .await
        {
            Ok(_) => Err(refusal),
            Err(QueueError::LeaseLost) => Err(Refusal::new("LEASE_LOST", "the job's lease was lost")),
            Err(_) => Err(Refusal::new("UNAVAILABLE", "the database is unavailable")),
        };
    }
    let reported_bytes: u64 = files.iter().map(|f| f.size).sum();
    let output = TranscodeOutput { output_bytes: output.output_bytes.max(reported_bytes), ..output };
    let publisher = state.publisher();
    let settings = state.settings();
    // The video's owner, from the lease's job (never from the message). A read that
    // fails is UNAVAILABLE (the worker retries the result), not a check against no
    // owner's quota; a video gone meanwhile is the completion's business.
    let owner = match crate::repo::videos::find(state.db(), output.video_id).await {
        Ok(video) => video.map(|v| v.owner_id).unwrap_or_default(),
        Err(err) => {
            tracing::warn!(error = %err, job = %job.id, "reading the video of a remote result failed");
            return Err(Refusal::new("UNAVAILABLE", "the database is unavailable"));
        }
    };
    if let Err(error) =
        crate::jobs::transcode::check_quota(state.db(), settings, owner, output.video_id, output.output_bytes).await
    {
        withdraw_early_rungs(state, output.video_id, &prefix).await;
        let _ = state.store().delete_prefix(&prefix).await;
        return match queue::fail(state.db(), &publisher, &settings.jobs, job.id, lease.lease, &error).await {
            Ok(_) => Err(Refusal::new("QUOTA_EXCEEDED", error.to_string())),
            Err(QueueError::LeaseLost) => Err(Refusal::new("LEASE_LOST", "the job's lease was lost")),
            Err(_) => Err(Refusal::new("UNAVAILABLE", "the database is unavailable")),
        };
    }
    let result = JobOutput::Transcoded(Box::new(output));
    match queue::complete(state.db(), &publisher, &settings.jobs, job.id, lease.lease, &result).await {
        Ok(_) => Ok(()),
        Err(QueueError::LeaseLost) => Err(Refusal::new("LEASE_LOST", "the job's lease was lost")),
        Err(err) => {
            tracing::warn!(error = %err, job = %job.id, "completing a remote job failed");
            Err(Refusal::new("UNAVAILABLE", "the database is unavailable"))
        }
    }
}

/// Publish a remote run's lowest rung early (`rung_ready`), as a local run does,
/// once its files are checked like a result's; only for a first transcode and
/// within the owner's quota (else it is simply not published early).
pub async fn record_rung(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    rendition: &NewRendition,
    files: &[OutputFile],
) -> Result<bool, Refusal> {
    let (job, prefix) = live_lease(state, lease).await?;
    let bad = |message: &str| Refusal::new("BAD_RESULT", message);
    if !key_under(&rendition.playlist_key, &prefix) || files.iter().any(|f| !key_under(&f.key, &prefix)) {
        return Err(bad("the rung names a key outside this job's output prefix"));
    }
    if !files.iter().any(|f| f.key == rendition.playlist_key) || rendition.name.len() > 32 {
        return Err(bad("the rung's playlist was not uploaded"));
    }
    verify_outputs(state, files).await?;
    let unavailable = |_| Refusal::new("UNAVAILABLE", "the database is unavailable");
    let video = match job.video_id {
        Some(id) => crate::repo::videos::find(state.db(), id).await.map_err(unavailable)?,
        None => None,
    };
    let Some(video) = video else { return Ok(false) };
    if !crate::jobs::transcode::first_transcode_of(state.db(), &video).await.unwrap_or(false) {
        return Ok(false);
    }
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    if let Err(err) =
        crate::jobs::transcode::check_quota(state.db(), state.settings(), video.owner_id, video.id, bytes).await
    {
        tracing::info!(job = %job.id, error = %err, "a remote run's early rung is not published");
        return Ok(false);
    }
    let publisher = state.publisher();
    crate::jobs::transcode::record_early_rendition(
        state.db(),
        &publisher,
        &state.settings().jobs,
        job.id,
        &video,
        rendition,
        &prefix,
        &[EventKind::Playable, EventKind::RenditionReady],
    )
    .await
    .map_err(|err| {
        tracing::warn!(error = %err, job = %job.id, "publishing a remote run's early rung failed");
        Refusal::new("UNAVAILABLE", "the database is unavailable")
    })
}

/// Whether a rendition of the video names an object under `prefix` (an early rung;
/// when the database cannot say, yes: nothing is removed).
async fn names_outputs_of(state: &dyn RemoteDeps, video_id: Option<Uuid>, prefix: &str) -> bool {
    let Some(video_id) = video_id else { return false };
    crate::repo::videos::count_renditions_under(state.db(), video_id, prefix).await.map(|n| n > 0).unwrap_or(true)
}

/// Take back the renditions a run published early under `prefix` (it failed its quota).
async fn withdraw_early_rungs(state: &dyn RemoteDeps, video_id: Uuid, prefix: &str) {
    if let Err(err) = crate::repo::videos::delete_renditions_under(state.db(), video_id, prefix).await {
        tracing::warn!(error = %err, "could not remove a refused run's early renditions");
    }
}

/// What a worker's `failure` code means for the queue.
pub fn failure_error(code: &str, message: &str) -> Option<JobError> {
    let message: String = message.chars().take(500).collect();
    match code {
        "RELEASED" => None,
        "CANCELLED" => Some(JobError::Cancelled),
        "RETRYABLE" => Some(JobError::Retryable(message)),
        // Verdicts about the upload (the worker's jailed pipeline decided).
        code => match FailureCode::reported_by_worker(code) {
            Some(code) => Some(JobError::Permanent { code, reason: message }),
            None => Some(JobError::Retryable(message)),
        },
    }
}

/// Apply a worker's `failure`: retry, fail or cancel the job (or give it back,
/// `RELEASED`, when the worker is draining), under the lease token. Its outputs go
/// unless it published a rung early.
pub async fn finish_failure(state: &dyn RemoteDeps, lease: LeaseRef, code: &str, message: &str) -> Result<(), Refusal> {
    multipart::abort_of_lease(state, lease).await;
    let (job, prefix) = live_lease(state, lease).await?;
    // A rung published early names this run's objects: they stay (as a local
    // run's do); otherwise nothing names them and they go.
    if !names_outputs_of(state, job.video_id, &prefix).await {
        if let Err(err) = state.store().delete_prefix(&prefix).await {
            tracing::warn!(error = ?err, prefix, "could not remove a failed remote run's outputs");
        }
    }
    let result = match failure_error(code, message) {
        None => queue::release(state.db(), &state.settings().jobs, job.id, lease.lease, "remote worker draining").await,
        Some(error) => {
            queue::fail(state.db(), &state.publisher(), &state.settings().jobs, job.id, lease.lease, &error).await
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(QueueError::LeaseLost) => Err(Refusal::new("LEASE_LOST", "the job's lease was lost")),
        Err(err) => {
            tracing::warn!(error = %err, job = %job.id, "failing a remote job failed");
            Err(Refusal::new("UNAVAILABLE", "the database is unavailable"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_lie_under_the_prefix() {
        let prefix = "users/u/videos/v/out/v123/";
        assert!(key_under("users/u/videos/v/out/v123/hls/360p/index.m3u8", prefix));
        assert!(!key_under("users/u/videos/v/out/v123/", prefix));
        assert!(!key_under("users/u/videos/v/out/v123/../../source", prefix));
        assert!(!key_under("users/u/videos/v/out/v124/hls/x.ts", prefix));
        assert!(!key_under("users/u/videos/v/out/v123//x", prefix));
        assert!(!key_under("users/u/videos/v/source", prefix));
    }

    #[test]
    fn failure_codes_map_to_queue_outcomes() {
        assert!(failure_error("RELEASED", "").is_none());
        assert!(matches!(failure_error("CANCELLED", ""), Some(JobError::Cancelled)));
        assert!(matches!(
            failure_error("MEDIA_UNREADABLE", "x"),
            Some(JobError::Permanent { code: crate::jobs::FailureCode::MediaUnreadable, .. })
        ));
        assert!(matches!(failure_error("anything else", "x"), Some(JobError::Retryable(_))));
    }
}
