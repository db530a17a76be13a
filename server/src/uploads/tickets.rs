//! `createUpload`: a session plus everything a client needs to send the bytes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entities::{upload, UploadMethod};

use super::{open_session, part_size_for, tus_url, UploadRequest};
use crate::auth::principal::Principal;
use crate::error::{AppError, AppResult};
use crate::storage::{UploadBinding, MAX_PRESIGN_EXPIRY, MIN_PRESIGN_EXPIRY};
use crate::uploads::UploadDeps;

/// One presigned part URL.
#[derive(Debug, Clone)]
pub struct PartUrl {
    pub number: i32,
    pub url: String,
}

/// What `createUpload` answers.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: uuid::Uuid,
    /// `PUT` (one request to `url`) or `MULTIPART` (one `PUT` per part URL).
    pub method: &'static str,
    pub url: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tus_url: String,
    /// When the presigned URLs stop working (the session itself, and its tus URL,
    /// may live longer: `uploads.session_ttl_secs`).
    pub expires_at: DateTime<Utc>,
    pub part_size: Option<u64>,
    pub parts: Vec<PartUrl>,
}

/// Open a session and presign its URLs.
pub async fn create_ticket(state: &dyn UploadDeps, principal: &Principal, request: UploadRequest) -> AppResult<Ticket> {
    let (row, _video) = open_session(state, principal, request, None).await?;
    match presign(state, &row).await {
        Ok(ticket) => Ok(ticket),
        Err(err) => {
            // The session is useless without URLs: release the video again.
            if let Err(abort_err) = super::abort::abort(state, row.id, Some("presigning failed".into())).await {
                abort_err.log();
            }
            Err(err)
        }
    }
}

/// Presigned URLs live `uploads.upload_url_ttl_secs`, and never longer than the
/// session (within the presigning limits).
fn presign_expiry(row: &upload::Model, ttl_secs: u64) -> Duration {
    let left = (row.expires_at - Utc::now()).to_std().unwrap_or(MIN_PRESIGN_EXPIRY);
    left.min(Duration::from_secs(ttl_secs)).clamp(MIN_PRESIGN_EXPIRY, MAX_PRESIGN_EXPIRY)
}

async fn presign(state: &dyn UploadDeps, row: &upload::Model) -> AppResult<Ticket> {
    let expires_in = presign_expiry(row, state.settings().uploads.upload_url_ttl_secs);
    let size = u64::try_from(row.declared_size).unwrap_or(0);
    let expires_at = Utc::now() + chrono::Duration::from_std(expires_in).map_err(AppError::internal)?;
    let mut ticket = Ticket {
        id: row.id,
        method: "PUT",
        url: None,
        headers: Vec::new(),
        tus_url: tus_url(state, row.id),
        expires_at: expires_at.min(row.expires_at),
        part_size: None,
        parts: Vec::new(),
    };
    match (row.method, row.s3_upload_id.as_deref()) {
        (UploadMethod::Multipart, Some(upload_id)) => {
            let part_size = part_size_for(&state.settings().uploads, size);
            let count = i32::try_from(size.div_ceil(part_size)).map_err(AppError::internal)?;
            let mut parts = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            for number in 1..=count {
                // Every part is `part_size` bytes but the last, which is the rest.
                let start = u64::try_from(number - 1).unwrap_or(0) * part_size;
                let binding = UploadBinding { session: row.id, length: part_size.min(size - start) };
                let presigned =
                    state.store().presign_bound_part(&row.object_key, upload_id, number, expires_in, binding).await?;
                parts.push(PartUrl { number, url: presigned.url });
            }
            ticket.method = "MULTIPART";
            ticket.part_size = Some(part_size);
            ticket.parts = parts;
        }
        _ => {
            let binding = UploadBinding { session: row.id, length: size };
            let presigned =
                state.store().presign_bound_put(&row.object_key, expires_in, Some(&row.content_type), binding).await?;
            ticket.url = Some(presigned.url);
            // Any HTTP client sends the Content-Length of a sized body itself (browsers
            // refuse to set it by hand); it is signed all the same.
            ticket.headers = presigned
                .headers
                .into_iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
                .collect();
        }
    }
    Ok(ticket)
}
