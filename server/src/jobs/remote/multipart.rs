//! Multipart uploads of a remote worker's large outputs (the flow is described in
//! [`super::protocol`]): opened on `upload_url` with `parts`, completed on
//! `complete_upload`, aborted on a refusal, on `abort_upload`, when the run ends
//! with the upload still open, and when the lease is lost ([`reap`], run by the
//! lease sweeper).
//!
//! The open uploads live in this process ([`OpenMultiparts`], in `RemoteDeps`): a
//! worker that reconnects to another instance and completes there is refused
//! `UPLOAD_UNKNOWN` (its job fails and is retried), and the instance that opened the
//! upload aborts it once the lease is no longer live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::protocol::{LeaseRef, PartEtag, PartSpec, PresignedUrl};
use super::{is_sha256_hex, live_lease, url_lifetime, Refusal};
use crate::jobs::remote::RemoteDeps;
use crate::storage::{CompletedPart, StoreError, MAX_PART_NUMBER};

/// Multipart uploads one lease may have open at once.
const MAX_OPEN_PER_LEASE: usize = 16;

/// One multipart upload a remote worker opened.
#[derive(Debug, Clone)]
struct OpenMultipart {
    lease: LeaseRef,
    key: String,
    parts: Vec<PartSpec>,
}

/// The multipart uploads remote workers opened on this process, by upload id.
#[derive(Clone, Default)]
pub struct OpenMultiparts {
    inner: Arc<Mutex<HashMap<String, OpenMultipart>>>,
    completed: Arc<AtomicU64>,
}

impl OpenMultiparts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenMultipart>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Uploads open now.
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Uploads completed by this process since it started.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Uploads open now for `lease`.
    fn open_of_lease(&self, lease: LeaseRef) -> usize {
        self.lock().values().filter(|u| u.lease == lease).count()
    }

    fn take_of_lease(&self, lease: LeaseRef) -> Vec<(String, OpenMultipart)> {
        let mut open = self.lock();
        let ids: Vec<String> = open.iter().filter(|(_, u)| u.lease == lease).map(|(id, _)| id.clone()).collect();
        ids.into_iter().filter_map(|id| open.remove(&id).map(|u| (id, u))).collect()
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("reelhouse_worker_multipart_uploads_total", "outcome" => outcome).increment(1);
}

/// The announced parts add up: every part `part_bytes` long but the last (1 to
/// `part_bytes`), at most [`MAX_PART_NUMBER`], `size` in all, each with a SHA-256.
fn check_parts(parts: &[PartSpec], size: u64, part_bytes: u64) -> Result<(), Refusal> {
    let bad = |message: String| Err(Refusal::new("BAD_PARTS", message));
    if parts.is_empty() || parts.len() > MAX_PART_NUMBER as usize {
        return bad(format!("a multipart upload has 1 to {MAX_PART_NUMBER} parts"));
    }
    let last = parts.len() - 1;
    for (index, part) in parts.iter().enumerate() {
        let fits = if index == last { (1..=part_bytes).contains(&part.size) } else { part.size == part_bytes };
        if !fits {
            return bad(format!("part {} is {} bytes; every part but the last is {part_bytes}", index + 1, part.size));
        }
        if !is_sha256_hex(&part.sha256) {
            return bad(format!("part {}: sha256 must be 64 hex digits", index + 1));
        }
    }
    let total: u64 = parts.iter().map(|p| p.size).sum();
    if total != size {
        return bad(format!("the parts add up to {total} bytes, not {size}"));
    }
    Ok(())
}

/// Open a multipart upload of one output of a live lease and presign every part.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    key: &str,
    content_type: &str,
    size: u64,
    sha256: &str,
    parts: Vec<PartSpec>,
) -> Result<(String, Vec<PresignedUrl>), Refusal> {
    let job = super::check_output_request(state, lease, key, content_type, sha256).await?;
    check_parts(&parts, size, state.settings().workers.remote_part_bytes)?;
    // A run has a handful of outputs; a worker opening upload after upload (each a
    // multipart upload in the store and an entry here) is refused.
    if state.remote_multiparts().open_of_lease(lease) >= MAX_OPEN_PER_LEASE {
        return Err(Refusal::new("TOO_MANY_UPLOADS", "too many multipart uploads open for this job"));
    }
    let unavailable = |err: StoreError| {
        tracing::warn!(error = ?err, key, "opening a remote worker's multipart upload failed");
        Refusal::new("UNAVAILABLE", "storage is unavailable")
    };
    let store = state.store();
    let upload_id = store.create_checked_multipart(key, Some(content_type)).await.map_err(unavailable)?;
    let lifetime = url_lifetime(&job);
    let mut urls = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        match store.presign_checked_part(key, &upload_id, number, lifetime, part.size, &part.sha256).await {
            Ok(url) => urls.push(url.into()),
            Err(err) => {
                let _ = store.abort_multipart(key, &upload_id).await;
                return Err(unavailable(err));
            }
        }
    }
    state.remote_multiparts().lock().insert(upload_id.clone(), OpenMultipart { lease, key: key.to_string(), parts });
    count("opened");
    tracing::info!(job = %lease.job, key, parts = urls.len(), size, "a remote worker opened a multipart upload");
    Ok((upload_id, urls))
}

/// Abort an upload (best effort: a failure is logged; the store's own expiry of
/// incomplete uploads is the backstop).
async fn abort_upload(state: &dyn RemoteDeps, upload_id: &str, key: &str, outcome: &'static str) {
    count(outcome);
    match state.store().abort_multipart(key, upload_id).await {
        Ok(()) | Err(StoreError::UploadNotFound) => {}
        Err(err) => tracing::warn!(error = ?err, key, "aborting a remote worker's multipart upload failed"),
    }
}

/// Complete an upload the worker says is fully PUT. Any refusal aborts it.
pub async fn complete(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    key: &str,
    upload_id: &str,
    etags: Vec<PartEtag>,
) -> Result<u64, Refusal> {
    let open = state.remote_multiparts().lock().remove(upload_id);
    let Some(open) = open.filter(|u| u.lease == lease && u.key == key) else {
        return Err(Refusal::new("UPLOAD_UNKNOWN", "no multipart upload of this lease and key is open here"));
    };
    match finish(state, lease, upload_id, &open, etags).await {
        Ok(size) => {
            count("completed");
            state.remote_multiparts().completed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job = %lease.job, key, size, parts = open.parts.len(), "a remote worker's multipart upload completed");
            Ok(size)
        }
        Err(refusal) => {
            tracing::warn!(job = %lease.job, key, code = refusal.code, "a remote worker's multipart upload was refused");
            abort_upload(state, upload_id, key, "refused").await;
            Err(refusal)
        }
    }
}

async fn finish(
    state: &dyn RemoteDeps,
    lease: LeaseRef,
    upload_id: &str,
    open: &OpenMultipart,
    etags: Vec<PartEtag>,
) -> Result<u64, Refusal> {
    live_lease(state, lease).await?;
    let key = open.key.as_str();
    let numbered = etags.iter().enumerate().all(|(i, p)| usize::try_from(p.number).is_ok_and(|n| n == i + 1));
    if etags.len() != open.parts.len() || !numbered {
        return Err(Refusal::new("BAD_PARTS", "name every announced part once, in order"));
    }
    let unavailable = |err: StoreError| {
        tracing::warn!(error = ?err, key, "completing a remote worker's multipart upload failed");
        Refusal::new("UNAVAILABLE", "storage is unavailable")
    };
    let mismatch = |message: String| Refusal::new("OUTPUT_MISMATCH", message);
    // Every part stored, with its announced length (S3 signed it; the local store
    // did not).
    let stored = state.store().list_parts(key, upload_id).await.map_err(unavailable)?;
    for (index, part) in open.parts.iter().enumerate() {
        let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        match stored.iter().find(|p| p.number == number) {
            None => return Err(mismatch(format!("part {number} was not uploaded"))),
            Some(p) if p.size != part.size => {
                return Err(mismatch(format!("part {number} is {} bytes, not the announced {}", p.size, part.size)))
            }
            Some(_) => {}
        }
    }
    let parts: Vec<CompletedPart> =
        etags.into_iter().map(|p| CompletedPart { number: p.number, etag: p.etag }).collect();
    let digests: Vec<String> = open.parts.iter().map(|p| p.sha256.clone()).collect();
    match state.store().complete_checked_multipart(key, upload_id, parts, &digests).await {
        Ok(meta) => Ok(meta.size),
        Err(StoreError::InvalidRequest(message)) => Err(mismatch(message)),
        Err(StoreError::UploadNotFound) => Err(Refusal::new("UPLOAD_UNKNOWN", "the multipart upload is gone")),
        Err(err) => Err(unavailable(err)),
    }
}

/// The worker gave an upload up.
pub async fn abandon(state: &dyn RemoteDeps, lease: LeaseRef, key: &str, upload_id: &str) {
    let open = {
        let mut uploads = state.remote_multiparts().lock();
        match uploads.get(upload_id) {
            Some(u) if u.lease == lease && u.key == key => uploads.remove(upload_id),
            _ => None,
        }
    };
    if let Some(open) = open {
        abort_upload(state, upload_id, &open.key, "abandoned").await;
    }
}

/// A run of `lease` ended (result or failure): uploads it left open are aborted.
pub async fn abort_of_lease(state: &dyn RemoteDeps, lease: LeaseRef) {
    for (upload_id, open) in state.remote_multiparts().take_of_lease(lease) {
        abort_upload(state, &upload_id, &open.key, "abandoned").await;
    }
}

/// Abort every open upload whose lease is no longer live (lost, swept, finished
/// elsewhere). Run by the lease sweeper after each pass.
pub async fn reap(state: &dyn RemoteDeps) {
    let leases: Vec<LeaseRef> = {
        let mut leases: Vec<LeaseRef> = state.remote_multiparts().lock().values().map(|u| u.lease).collect();
        leases.sort_by_key(|l| (l.job, l.lease));
        leases.dedup();
        leases
    };
    for lease in leases {
        match live_lease(state, lease).await {
            Ok(_) => {}
            Err(refusal) if refusal.code == "UNAVAILABLE" => return,
            Err(_) => {
                for (upload_id, open) in state.remote_multiparts().take_of_lease(lease) {
                    tracing::info!(job = %lease.job, key = %open.key, "aborting a multipart upload of a lost lease");
                    abort_upload(state, &upload_id, &open.key, "lease_lost").await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64) -> PartSpec {
        PartSpec { size, sha256: "a".repeat(64) }
    }

    #[test]
    fn parts_must_add_up() {
        assert!(check_parts(&[part(5), part(5), part(2)], 12, 5).is_ok());
        assert!(check_parts(&[part(3)], 3, 5).is_ok());
        let code = |r: Result<(), Refusal>| r.unwrap_err().code;
        assert_eq!(code(check_parts(&[], 0, 5)), "BAD_PARTS");
        assert_eq!(code(check_parts(&[part(5), part(5)], 12, 5)), "BAD_PARTS", "the sum differs");
        assert_eq!(code(check_parts(&[part(4), part(5), part(3)], 12, 5)), "BAD_PARTS", "a short middle part");
        assert_eq!(code(check_parts(&[part(5), part(6)], 11, 5)), "BAD_PARTS", "a long last part");
        assert_eq!(code(check_parts(&[part(5), part(0)], 5, 5)), "BAD_PARTS", "an empty last part");
        let bad_digest = PartSpec { size: 3, sha256: "xyz".into() };
        assert_eq!(code(check_parts(&[bad_digest], 3, 5)), "BAD_PARTS");
        let many = vec![part(1); MAX_PART_NUMBER as usize + 1];
        assert_eq!(code(check_parts(&many, MAX_PART_NUMBER as u64 + 1, 1)), "BAD_PARTS");
    }
}
