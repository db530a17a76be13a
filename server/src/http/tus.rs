//! The tus 1.0 endpoint at `/uploads/`: core + creation, termination, checksum and
//! expiration. Works with stock tus-js-client and Uppy.
//!
//! - `OPTIONS /uploads/` describes the server.
//! - `POST /uploads/` creates a session (`Upload-Length`, `Upload-Metadata` with
//!   base64 `videoId`, `filename`, `filetype`), with the same checks as
//!   `createUpload`; answers 201 + `Location`.
//! - `HEAD /uploads/{id}` reports `Upload-Offset` / `Upload-Length`.
//! - `PATCH /uploads/{id}` appends at `Upload-Offset` (409 if it is not the stored
//!   offset or another PATCH for the upload is in flight; 413 past
//!   `Upload-Length`; 460 when `Upload-Checksum` does not match, offset unchanged).
//!   The last byte completes the upload as `completeUpload` does; a refused file
//!   answers that PATCH with 415/400 JSON.
//! - `DELETE /uploads/{id}` terminates (aborts) the session.
//!
//! Only the user who opened a session may use its URL; anyone else gets 404.
//! Bodies with an `Upload-Checksum`, or without a `Content-Length`, are spooled to
//! a temp file (at most `uploads.tus_max_chunk_bytes`) and checked before a byte
//! is stored; other bodies stream straight into storage parts.
//!
//! Slow bodies cannot pin memory: part buffers are reserved from the process-wide
//! budget as bytes arrive, one user holds at most `uploads.tus_buffer_per_user_bytes`
//! of it, and a body that sends nothing for `uploads.tus_body_idle_timeout_secs` is
//! ended with 408 `BODY_TIMEOUT`. In each case the bytes that arrived before are
//! kept (streamed bodies; a spooled body is all or nothing) and the response
//! carries the new `Upload-Offset`.

// Handlers answer early with a ready response; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::io::{Read as _, Write as _};

use actix_web::http::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use entities::{upload, UploadStatus};
use futures::{Stream, StreamExt};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::actors::upload_session::{self, FinishSession, SessionFacts};
use crate::auth::principal::{authenticate, Principal, RequestAuth};
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::startup::AppState;
use crate::uploads::{self, tus_store, UploadRequest};

pub const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,termination,checksum,expiration";
const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// tus's status for a checksum mismatch.
const CHECKSUM_MISMATCH: u16 = 460;
const SPOOL_CHUNK: usize = 256 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/uploads", "/uploads/"])
            .route(web::method(actix_web::http::Method::OPTIONS).to(options))
            .route(web::post().to(create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/uploads/{id}")
            .route(web::method(actix_web::http::Method::OPTIONS).to(options))
            .route(web::head().to(head))
            .route(web::patch().to(patch))
            .route(web::delete().to(terminate))
            .default_service(web::to(method_not_allowed)),
    );
}

fn tus_builder(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder.insert_header(("Tus-Resumable", TUS_VERSION));
    builder
}

/// An error as JSON `{code, message}` with the tus header (and any status).
fn error_with_status(status: StatusCode, err: &AppError) -> HttpResponse {
    err.log();
    let mut builder = tus_builder(status);
    if let Some(secs) = err.retry_after_secs() {
        builder.insert_header(("Retry-After", secs.to_string()));
    }
    builder.json(ErrorBody { code: err.code().as_str(), message: err.message() })
}

fn error(err: AppError) -> HttpResponse {
    error_with_status(err.code().http_status(), &err)
}

async fn method_not_allowed() -> HttpResponse {
    error_with_status(StatusCode::METHOD_NOT_ALLOWED, &AppError::bad_input("this method is not allowed here"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Requests other than OPTIONS must speak tus 1.0.0.
fn check_version(req: &HttpRequest) -> Result<(), HttpResponse> {
    match header(req.headers(), "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => {
            let err = AppError::bad_input("this server speaks tus 1.0.0 (send `Tus-Resumable: 1.0.0`)");
            let mut res = error_with_status(StatusCode::PRECONDITION_FAILED, &err);
            res.headers_mut().insert(HeaderName::from_static("tus-version"), HeaderValue::from_static(TUS_VERSION));
            Err(res)
        }
    }
}

async fn principal(state: &AppState, req: &HttpRequest) -> Result<Principal, HttpResponse> {
    match authenticate(state, req.headers()).await {
        RequestAuth::Authenticated(principal) => Ok(principal),
        RequestAuth::Invalid(reason) => Err(error(AppError::unauthenticated(reason))),
        RequestAuth::Unavailable => Err(error(crate::auth::principal::auth_unavailable())),
        RequestAuth::Anonymous => Err(error(AppError::unauthenticated("authentication required"))),
    }
}

fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    tus_builder(StatusCode::NO_CONTENT)
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", TUS_EXTENSIONS))
        .insert_header(("Tus-Max-Size", state.settings.uploads.max_size_bytes.to_string()))
        .insert_header(("Tus-Checksum-Algorithm", CHECKSUM_ALGORITHMS))
        .finish()
}

/// `Upload-Metadata: key base64,key2 base64` (values optional).
fn parse_metadata(raw: &str) -> Result<Vec<(String, String)>, AppError> {
    let mut pairs = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut it = item.splitn(2, ' ');
        let key = it.next().unwrap_or("").trim().to_string();
        let value = match it.next().map(str::trim) {
            None | Some("") => String::new(),
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| AppError::bad_input(format!("Upload-Metadata `{key}` is not valid base64")))?;
                String::from_utf8(bytes)
                    .map_err(|_| AppError::bad_input(format!("Upload-Metadata `{key}` is not UTF-8")))?
            }
        };
        pairs.push((key, value));
    }
    Ok(pairs)
}

pub async fn create(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Err(res) = check_version(&req) {
        return res;
    }
    let principal = match principal(&state, &req).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let result = async {
        if header(req.headers(), "upload-defer-length").is_some() {
            return Err(AppError::bad_input("Upload-Defer-Length is not supported: send Upload-Length"));
        }
        let length = header(req.headers(), "upload-length")
            .ok_or_else(|| AppError::bad_input("Upload-Length is required"))?
            .parse::<u64>()
            .map_err(|_| AppError::bad_input("Upload-Length must be a non-negative integer"))?;
        let size = i64::try_from(length).unwrap_or(i64::MAX);
        let metadata = parse_metadata(header(req.headers(), "upload-metadata").unwrap_or(""))?;
        let get = |name: &str| metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let video_id = get("videoId")
            .or_else(|| get("video_id"))
            .ok_or_else(|| AppError::bad_input("Upload-Metadata must name the video (`videoId`)"))?;
        let video_id = Uuid::parse_str(video_id.trim()).map_err(|_| AppError::not_found("video"))?;
        let filename = get("filename").or_else(|| get("name")).unwrap_or_default();
        let content_type = get("filetype")
            .or_else(|| get("type"))
            .filter(|t| !t.trim().is_empty())
            .or_else(|| uploads::content_type_from_filename(&filename).map(str::to_string))
            .unwrap_or_else(|| "application/octet-stream".into());
        let request = UploadRequest { video_id, filename, content_type, size, checksum_sha256: get("checksumSha256") };
        let (row, _) = uploads::open_session(&state, &principal, request, true).await?;
        Ok(row)
    }
    .await;
    match result {
        Ok(row) => tus_builder(StatusCode::CREATED)
            .insert_header((LOCATION, uploads::tus_url(&state, row.id)))
            .insert_header(("Upload-Offset", "0"))
            .insert_header(("Upload-Expires", http_date(row.expires_at)))
            .finish(),
        Err(err) => error(err),
    }
}

/// The session for this request's caller, or the response to send instead.
async fn owned_upload(state: &AppState, req: &HttpRequest, id: &str) -> Result<upload::Model, HttpResponse> {
    check_version(req)?;
    let principal = principal(state, req).await?;
    let id = uploads::parse_id(id).map_err(error)?;
    uploads::find_owned(state, &principal, id).await.map_err(error)
}

/// Ended sessions (and open ones past their expiry, before the sweeper has run)
/// answer 404, so a tus client starts a new upload.
fn gone_or_missing(row: &upload::Model) -> Option<HttpResponse> {
    match row.status {
        UploadStatus::Open if row.expires_at <= Utc::now() => Some(error(AppError::not_found("upload"))),
        UploadStatus::Open | UploadStatus::Completing | UploadStatus::Completed => None,
        _ => Some(error(AppError::not_found("upload"))),
    }
}

pub async fn head(state: web::Data<AppState>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let row = match owned_upload(&state, &req, &path).await {
        Ok(row) => row,
        Err(res) => return res,
    };
    if let Some(res) = gone_or_missing(&row) {
        return res;
    }
    // Every byte is in but completion failed (e.g. storage was down for a moment):
    // a tus client that sees the full offset will not PATCH again, so complete it
    // now, in the background (the sweeper retries it too).
    if row.status == UploadStatus::Open && row.offset_bytes == row.declared_size {
        let (state, id) = (state.clone(), row.id);
        actix_rt::spawn(async move {
            if let Err(err) = uploads::completion::complete(&state, id).await {
                tracing::info!(upload = %id, code = err.code().as_str(), "completing a full upload on HEAD failed");
            }
        });
    }
    let offset = if row.status == UploadStatus::Completed { row.declared_size } else { row.offset_bytes };
    let mut res = tus_builder(StatusCode::OK);
    res.insert_header(("Upload-Offset", offset.to_string()))
        .insert_header(("Upload-Length", row.declared_size.to_string()))
        .insert_header((CACHE_CONTROL, "no-store"));
    if row.status == UploadStatus::Open {
        res.insert_header(("Upload-Expires", http_date(row.expires_at)));
    }
    res.finish()
}

pub async fn terminate(state: web::Data<AppState>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let row = match owned_upload(&state, &req, &path).await {
        Ok(row) => row,
        Err(res) => return res,
    };
    if let Some(res) = gone_or_missing(&row) {
        return res;
    }
    match uploads::abort::abort(&state, row.id, Some("terminated by the client".into())).await {
        Ok(()) => {
            state.hubs.upload_sessions.addr().do_send(FinishSession(row.id));
            tus_builder(StatusCode::NO_CONTENT).finish()
        }
        Err(err) => error(err),
    }
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

fn parse_checksum(raw: &str) -> Result<Checksum, AppError> {
    let (algorithm, digest) =
        raw.split_once(' ').ok_or_else(|| AppError::bad_input("Upload-Checksum must be `<algorithm> <base64>`"))?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| AppError::bad_input("the Upload-Checksum digest is not valid base64"))?;
    match algorithm.trim().to_ascii_lowercase().as_str() {
        "sha1" => Ok(Checksum::Sha1(digest)),
        "sha256" => Ok(Checksum::Sha256(digest)),
        other => Err(AppError::bad_input(format!(
            "checksum algorithm `{}` is not supported (use sha1 or sha256)",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let row = match owned_upload(&state, &req, &path).await {
        Ok(row) => row,
        Err(res) => return res,
    };
    let content_type = header(req.headers(), CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type.eq_ignore_ascii_case("application/offset+octet-stream") {
        return error(AppError::new(
            ErrorCode::UnsupportedMedia,
            "a PATCH body must have Content-Type: application/offset+octet-stream",
        ));
    }
    let Some(claimed_offset) = header(req.headers(), "upload-offset").and_then(|v| v.parse::<u64>().ok()) else {
        return error(AppError::bad_input("Upload-Offset must be a non-negative integer"));
    };
    let checksum = match header(req.headers(), "upload-checksum").map(parse_checksum).transpose() {
        Ok(checksum) => checksum,
        Err(err) => return error(err),
    };
    let content_length = header(req.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if let Some(res) = gone_or_missing(&row) {
        return res;
    }
    let facts = SessionFacts {
        offset: u64::try_from(row.offset_bytes).unwrap_or(0),
        size: u64::try_from(row.declared_size).unwrap_or(0),
        expires_at: row.expires_at,
    };
    let lease = match upload_session::acquire(&state.hubs.upload_sessions.addr(), row.id, facts).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return error(AppError::new(ErrorCode::Conflict, "another request is writing to this upload right now"))
        }
        Err(err) => return error(AppError::internal(err)),
    };
    // Read the row again under the lease: the previous writer may just have moved it.
    let row = match uploads::find_owned_by_id(&state, row.id, row.user_id).await {
        Ok(row) => row,
        Err(err) => return error(err),
    };
    let mut lease = lease;
    let response = patch_locked(&state, &row, claimed_offset, content_length, checksum, payload).await;
    if let Ok((offset, _)) = &response {
        lease.set_offset(*offset);
    }
    drop(lease);
    match response {
        Ok((offset, true)) => {
            state.hubs.upload_sessions.addr().do_send(FinishSession(row.id));
            tus_builder(StatusCode::NO_CONTENT).insert_header(("Upload-Offset", offset.to_string())).finish()
        }
        Ok((offset, false)) => tus_builder(StatusCode::NO_CONTENT)
            .insert_header(("Upload-Offset", offset.to_string()))
            .insert_header(("Upload-Expires", http_date(row.expires_at)))
            .finish(),
        Err(res) => res,
    }
}

/// The PATCH under the session lease. Returns the new offset and whether the
/// upload completed.
async fn patch_locked(
    state: &AppState,
    row: &upload::Model,
    claimed_offset: u64,
    content_length: Option<u64>,
    checksum: Option<Checksum>,
    payload: web::Payload,
) -> Result<(u64, bool), HttpResponse> {
    let declared = u64::try_from(row.declared_size).unwrap_or(0);
    let offset = u64::try_from(row.offset_bytes).unwrap_or(0);
    match row.status {
        UploadStatus::Open => {}
        UploadStatus::Completed if claimed_offset == declared && content_length.unwrap_or(0) == 0 => {
            return Ok((declared, true));
        }
        UploadStatus::Completing | UploadStatus::Completed => {
            return Err(error(AppError::new(ErrorCode::Conflict, "the upload is already complete")));
        }
        _ => return Err(error(AppError::not_found("upload"))),
    }
    if row.expires_at <= Utc::now() {
        return Err(error(AppError::not_found("upload")));
    }
    if claimed_offset != offset {
        return Err(error(AppError::new(
            ErrorCode::Conflict,
            format!("Upload-Offset is {claimed_offset} but the upload is at {offset}"),
        )));
    }
    let remaining = declared - offset;
    let too_large = || {
        error(AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is longer than the {remaining} bytes left of Upload-Length"),
        ))
    };
    if content_length.is_some_and(|len| len > remaining) {
        return Err(too_large());
    }

    let idle = std::time::Duration::from_secs(state.settings.uploads.tus_body_idle_timeout_secs.max(1));
    let payload = with_idle_timeout(payload, idle);
    let appended = if checksum.is_some() || content_length.is_none() {
        let limit = remaining.min(state.settings.uploads.tus_max_chunk_bytes.max(1));
        let spooled = match spool(payload, limit).await {
            Ok(spooled) => spooled,
            Err(SpoolError::TooLarge) if limit == remaining => return Err(too_large()),
            Err(SpoolError::TooLarge) => {
                return Err(error(AppError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("a PATCH with a checksum or without Content-Length may carry at most {limit} bytes"),
                )))
            }
            Err(SpoolError::Body(err)) => return Err(error(err)),
        };
        if let Some(checksum) = &checksum {
            let ok = match checksum {
                Checksum::Sha1(expected) => spooled.sha1 == *expected,
                Checksum::Sha256(expected) => spooled.sha256 == *expected,
            };
            if !ok {
                let err = AppError::bad_input("the body does not match Upload-Checksum; nothing was stored");
                return Err(error_with_status(
                    StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
                    &err,
                ));
            }
        }
        tus_store::append(state, row, file_stream(spooled.file)).await
    } else {
        tus_store::append(state, row, payload).await
    };
    let appended = appended.map_err(error)?;
    if let Some(err) = appended.body_error {
        let mut res = error(err);
        if let Ok(value) = HeaderValue::from_str(&appended.offset.to_string()) {
            res.headers_mut().insert(HeaderName::from_static("upload-offset"), value);
        }
        return Err(res);
    }
    if appended.offset < declared {
        return Ok((appended.offset, false));
    }
    match uploads::completion::complete(state, row.id).await {
        Ok(_) => Ok((appended.offset, true)),
        Err(err) => Err(error(err)),
    }
}

struct Spooled {
    file: std::fs::File,
    sha1: Vec<u8>,
    sha256: Vec<u8>,
}

enum SpoolError {
    TooLarge,
    Body(AppError),
}

/// The request body, ended with `BODY_TIMEOUT` when it sends nothing for `idle`
/// (only time spent waiting for the client counts, not time spent storing).
fn with_idle_timeout(
    payload: web::Payload,
    idle: std::time::Duration,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, AppError>>>> {
    Box::pin(futures::stream::unfold(Some(payload), move |payload| async move {
        let mut payload = payload?;
        match tokio::time::timeout(idle, payload.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(payload))),
            Ok(Some(Err(err))) => {
                Some((Err(AppError::bad_input("the request body could not be read").with_source(err)), None))
            }
            Ok(None) => None,
            Err(_) => {
                metrics::counter!("reelhouse_tus_body_timeouts_total").increment(1);
                let err = AppError::new(
                    ErrorCode::BodyTimeout,
                    format!(
                        "the request body sent nothing for {} s; what arrived before is kept, resume at the Upload-Offset",
                        idle.as_secs()
                    ),
                );
                Some((Err(err), None))
            }
        }
    }))
}

/// Copy the body to an unnamed temp file (gone when dropped), hashing it.
async fn spool<S>(mut payload: S, limit: u64) -> Result<Spooled, SpoolError>
where
    S: Stream<Item = Result<Bytes, AppError>> + Unpin,
{
    let mut file = tempfile::tempfile().map_err(|e| SpoolError::Body(AppError::internal(e)))?;
    let mut sha1 = Sha1::new();
    let mut sha256 = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(SpoolError::Body)?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(SpoolError::TooLarge);
        }
        sha1.update(&chunk);
        sha256.update(&chunk);
        file = tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| file))
            .await
            .map_err(|e| SpoolError::Body(AppError::internal(e)))?
            .map_err(|e| SpoolError::Body(AppError::internal(e)))?;
    }
    use std::io::Seek as _;
    file.seek(std::io::SeekFrom::Start(0)).map_err(|e| SpoolError::Body(AppError::internal(e)))?;
    Ok(Spooled { file, sha1: sha1.finalize().to_vec(), sha256: sha256.finalize().to_vec() })
}

/// Read a spooled file back in bounded chunks.
fn file_stream(file: std::fs::File) -> impl Stream<Item = Result<Bytes, AppError>> + Unpin {
    Box::pin(futures::stream::try_unfold(Some(file), |file| async move {
        let Some(mut file) = file else { return Ok(None) };
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; SPOOL_CHUNK];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((file, buf))
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
        if chunk.is_empty() {
            Ok(None)
        } else {
            Ok(Some((Bytes::from(chunk), Some(file))))
        }
    }))
}
