//! The tus 1.0 endpoint at `/uploads/`: core + creation, creation-with-upload,
//! creation-defer-length, termination, checksum, expiration and concatenation.
//! Works with stock tus-js-client (also `parallelUploads`,
//! `uploadDataDuringCreation`, `uploadLengthDeferred`, `overridePatchMethod`) and Uppy.
//!
//! - `OPTIONS /uploads/` describes the server.
//! - `POST /uploads/` creates a session (`Upload-Length`, or `Upload-Defer-Length: 1`;
//!   `Upload-Metadata` with base64 `videoId`, `filename`, `filetype`), with the same
//!   checks as `createUpload`; answers 201 + `Location`. A body
//!   (`Content-Type: application/offset+octet-stream`) is the first PATCH
//!   (creation-with-upload) and the answer carries its `Upload-Offset`.
//!   `Upload-Concat: partial` makes a partial upload, `Upload-Concat: final;<urls>`
//!   joins finished partial uploads into the video's source ([`uploads::concat`]).
//! - `HEAD /uploads/{id}` reports `Upload-Offset` / `Upload-Length` (or
//!   `Upload-Defer-Length: 1`), `Upload-Metadata` as created and `Upload-Concat`.
//! - `POST /uploads/{id}` with `X-HTTP-Method-Override: PATCH|DELETE|HEAD` is that
//!   method, for clients behind proxies that only pass GET and POST.
//! - `PATCH /uploads/{id}` appends at `Upload-Offset` (409 if it is not the stored
//!   offset or another PATCH for the upload is in flight; 413 past
//!   `Upload-Length`; 460 when `Upload-Checksum` does not match, offset unchanged).
//!   The last byte completes the upload as `completeUpload` does; a refused file
//!   answers that PATCH with 415/400 JSON. A deferred-length upload names its
//!   `Upload-Length` in a PATCH (until then its bytes are held to
//!   `uploads.max_size_bytes` and the user's quota); a final upload takes no PATCH (403).
//! - `DELETE /uploads/{id}` terminates (aborts) the session.
//!
//! Only the user who opened a session may use its URL; anyone else gets 404.
//! Bodies with an `Upload-Checksum`, or without a `Content-Length`, are stored whole
//! or not at all (at most `uploads.tus_max_chunk_bytes`): on local disk they are
//! written into the upload's staging file, checked, and cut off again if refused;
//! elsewhere they are spooled to a temp file and checked before a byte is stored.
//! Other bodies stream straight into the staging file (local disk) or storage parts.
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

use crate::auth::principal::{authenticate, Principal, RequestAuth};
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::state::AppState;
use crate::uploads::session::{self, FinishSession};
use crate::uploads::{self, tus_store, Concat, TusOptions, TusState, UploadRequest};

pub const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation";
/// Longest `Upload-Metadata` accepted (it is stored and returned by HEAD).
const MAX_METADATA_BYTES: usize = 4096;
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
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
            .route(web::post().to(overridden))
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

pub async fn create(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    if let Err(res) = check_version(&req) {
        return res;
    }
    let principal = match principal(&state, &req).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let headers = req.headers();
    let raw_metadata = header(headers, "upload-metadata").unwrap_or("");
    if raw_metadata.len() > MAX_METADATA_BYTES {
        return error(AppError::bad_input(format!("Upload-Metadata may have at most {MAX_METADATA_BYTES} bytes")));
    }
    let metadata = match parse_metadata(raw_metadata) {
        Ok(metadata) => metadata,
        Err(err) => return error(err),
    };
    let get = |name: &str| metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let stored_metadata = (!raw_metadata.is_empty()).then(|| raw_metadata.to_string());
    let video_id = match get("videoId").or_else(|| get("video_id")).map(|v| Uuid::parse_str(v.trim())) {
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return error(AppError::not_found("video")),
        None => None,
    };
    let filename = get("filename").or_else(|| get("name"));
    let filetype = get("filetype").or_else(|| get("type")).filter(|t| !t.trim().is_empty());
    let partial = match header(headers, "upload-concat") {
        None => false,
        Some(concat) if concat.eq_ignore_ascii_case("partial") => true,
        Some(concat) if concat.len() >= 6 && concat[..6].eq_ignore_ascii_case("final;") => {
            let request = uploads::concat::FinalRequest {
                video_id,
                metadata: stored_metadata,
                filename,
                content_type: filetype,
                checksum_sha256: get("checksumSha256"),
                parts: Vec::new(),
            };
            return create_final(&state, &principal, &req, &concat[6..], request).await;
        }
        Some(_) => return error(AppError::bad_input("Upload-Concat must be `partial` or `final;<upload URLs>`")),
    };
    let result = async {
        let deferred = match header(headers, "upload-defer-length") {
            None => false,
            Some("1") => true,
            Some(_) => return Err(AppError::bad_input("Upload-Defer-Length must be 1")),
        };
        let length = match header(headers, "upload-length") {
            Some(_) if deferred => {
                return Err(AppError::bad_input("send either Upload-Length or Upload-Defer-Length, not both"))
            }
            Some(raw) => {
                raw.parse::<u64>().map_err(|_| AppError::bad_input("Upload-Length must be a non-negative integer"))?
            }
            None if deferred => 0,
            None => return Err(AppError::bad_input("Upload-Length (or Upload-Defer-Length: 1) is required")),
        };
        if deferred && partial {
            return Err(AppError::bad_input("a partial upload needs its Upload-Length"));
        }
        let size = i64::try_from(length).unwrap_or(i64::MAX);
        let video_id =
            video_id.ok_or_else(|| AppError::bad_input("Upload-Metadata must name the video (`videoId`)"))?;
        let filename = filename.unwrap_or_default();
        let content_type = filetype
            .or_else(|| uploads::content_type_from_filename(&filename).map(str::to_string))
            .unwrap_or_else(|| if partial { String::new() } else { "application/octet-stream".into() });
        let request = UploadRequest { video_id, filename, content_type, size, checksum_sha256: get("checksumSha256") };
        let options = TusOptions { metadata: stored_metadata, deferred, partial };
        let (row, _) = uploads::open_session(&**state, &principal, request, Some(options)).await?;
        Ok(row)
    }
    .await;
    let row = match result {
        Ok(row) => row,
        Err(err) => return error(err),
    };
    let location = uploads::tus_url(&**state, row.id);
    let with_body = header(headers, CONTENT_TYPE.as_str()).is_some_and(|t| t.eq_ignore_ascii_case(OFFSET_OCTET_STREAM));
    let (row, offset, done) = if with_body {
        // creation-with-upload: the body is the first PATCH.
        let body = match BodyHeaders::parse(headers, Some(0)) {
            Ok(body) => body,
            Err(err) => return with_location(error(err), &location),
        };
        match write_body(&state, row, body, payload).await {
            Ok(written) => written,
            Err(res) => return with_location(res, &location),
        }
    } else {
        (row, 0, false)
    };
    let mut res = tus_builder(StatusCode::CREATED);
    res.insert_header((LOCATION, location)).insert_header(("Upload-Offset", offset.to_string()));
    if !done {
        res.insert_header(("Upload-Expires", http_date(row.expires_at)));
    }
    res.finish()
}

fn with_location(mut res: HttpResponse, location: &str) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(location) {
        res.headers_mut().insert(LOCATION, value);
    }
    res
}

/// `Upload-Concat: final;<url> <url>…`: join the caller's finished partial uploads.
async fn create_final(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    urls: &str,
    mut request: uploads::concat::FinalRequest,
) -> HttpResponse {
    if header(req.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) > 0 {
        return error(AppError::bad_input("a final upload (Upload-Concat: final) carries no body"));
    }
    for url in urls.split_whitespace().take(uploads::MAX_PARTIALS + 1) {
        // An absolute URL or a path; the id is what follows `/uploads/`.
        let tail = url.rsplit_once("/uploads/").map_or(url, |(_, tail)| tail);
        let id = tail.split(['?', '#']).next().unwrap_or("").trim_end_matches('/');
        match uploads::parse_id(id) {
            Ok(id) => request.parts.push(id),
            Err(err) => return error(err),
        }
    }
    match uploads::concat::concatenate(state, principal, request).await {
        Ok((row, completed)) => {
            let location = uploads::tus_url(state, row.id);
            match completed {
                Ok(_) => tus_builder(StatusCode::CREATED)
                    .insert_header((LOCATION, location))
                    .insert_header(("Upload-Offset", row.declared_size.to_string()))
                    .finish(),
                Err(err) => with_location(error(err), &location),
            }
        }
        Err(err) => error(err),
    }
}

/// `X-HTTP-Method-Override`: the method a client behind a GET/POST-only proxy means.
pub async fn overridden(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let method = header(req.headers(), "x-http-method-override").map(str::to_ascii_uppercase);
    match method.as_deref() {
        Some("PATCH") => patch(state, req, path, payload).await,
        Some("DELETE") => terminate(state, req, path).await,
        Some("HEAD") => head(state, req, path).await,
        _ => method_not_allowed().await,
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
    if row.status == UploadStatus::Open && row.offset_bytes == row.declared_size && uploads::completes_video(&row) {
        let (state, id) = (state.clone(), row.id);
        actix_rt::spawn(async move {
            if let Err(err) = uploads::completion::complete(&**state, id).await {
                tracing::info!(upload = %id, code = err.code().as_str(), "completing a full upload on HEAD failed");
            }
        });
    }
    let offset = if row.status == UploadStatus::Completed { row.declared_size } else { row.offset_bytes };
    let tus = TusState::from_row(&row).unwrap_or_default();
    let mut res = tus_builder(StatusCode::OK);
    res.insert_header(("Upload-Offset", offset.to_string())).insert_header((CACHE_CONTROL, "no-store"));
    if tus.deferred && row.status == UploadStatus::Open {
        res.insert_header(("Upload-Defer-Length", "1"));
    } else {
        res.insert_header(("Upload-Length", row.declared_size.to_string()));
    }
    if row.status == UploadStatus::Open {
        res.insert_header(("Upload-Expires", http_date(row.expires_at)));
    }
    let metadata = tus.metadata.clone().unwrap_or_else(|| row_metadata(&row));
    if let Ok(value) = HeaderValue::from_str(&metadata) {
        res.insert_header((HeaderName::from_static("upload-metadata"), value));
    }
    match &tus.concat {
        Some(Concat::Partial) => {
            res.insert_header(("Upload-Concat", "partial"));
        }
        Some(Concat::Final { parts }) => {
            let urls: Vec<String> = parts.iter().map(|id| uploads::tus_url(&**state, *id)).collect();
            res.insert_header(("Upload-Concat", format!("final;{}", urls.join(" "))));
        }
        None => {}
    }
    res.finish()
}

/// `Upload-Metadata` for a session that was not created with one (a
/// `createUpload` ticket): what the server knows, in tus's encoding.
fn row_metadata(row: &upload::Model) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "videoId {},filename {},filetype {}",
        b64(&row.video_id.to_string()),
        b64(&row.filename),
        b64(&row.content_type)
    )
}

pub async fn terminate(state: web::Data<AppState>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let row = match owned_upload(&state, &req, &path).await {
        Ok(row) => row,
        Err(res) => return res,
    };
    if let Some(res) = gone_or_missing(&row) {
        return res;
    }
    match uploads::abort::abort(&**state, row.id, Some("terminated by the client".into())).await {
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

/// What a body-carrying request (PATCH, or a creation with upload) says about its body.
struct BodyHeaders {
    claimed_offset: u64,
    checksum: Option<Checksum>,
    content_length: Option<u64>,
    /// `Upload-Length`, for a deferred-length upload.
    length: Option<u64>,
}

impl BodyHeaders {
    /// `offset`: the offset a creation implies (a PATCH sends `Upload-Offset`).
    fn parse(headers: &HeaderMap, offset: Option<u64>) -> Result<BodyHeaders, AppError> {
        let claimed_offset = match offset {
            Some(offset) => offset,
            None => header(headers, "upload-offset")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| AppError::bad_input("Upload-Offset must be a non-negative integer"))?,
        };
        let checksum = header(headers, "upload-checksum").map(parse_checksum).transpose()?;
        let content_length = header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
        let length = match (offset, header(headers, "upload-length")) {
            (None, Some(raw)) => Some(
                raw.parse::<u64>().map_err(|_| AppError::bad_input("Upload-Length must be a non-negative integer"))?,
            ),
            _ => None,
        };
        Ok(BodyHeaders { claimed_offset, checksum, content_length, length })
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
    if !content_type.eq_ignore_ascii_case(OFFSET_OCTET_STREAM) {
        return error(AppError::new(
            ErrorCode::UnsupportedMedia,
            "a PATCH body must have Content-Type: application/offset+octet-stream",
        ));
    }
    let body = match BodyHeaders::parse(req.headers(), None) {
        Ok(body) => body,
        Err(err) => return error(err),
    };
    if let Some(res) = gone_or_missing(&row) {
        return res;
    }
    match write_body(&state, row, body, payload).await {
        Ok((_, offset, true)) => {
            tus_builder(StatusCode::NO_CONTENT).insert_header(("Upload-Offset", offset.to_string())).finish()
        }
        Ok((row, offset, false)) => tus_builder(StatusCode::NO_CONTENT)
            .insert_header(("Upload-Offset", offset.to_string()))
            .insert_header(("Upload-Expires", http_date(row.expires_at)))
            .finish(),
        Err(res) => res,
    }
}

/// Write a body into the session under its lease. Returns the session as re-read
/// under the lease, the new offset and whether the session is done.
async fn write_body(
    state: &AppState,
    row: upload::Model,
    body: BodyHeaders,
    payload: web::Payload,
) -> Result<(upload::Model, u64, bool), HttpResponse> {
    let lease = match session::acquire(&state.hubs.upload_sessions.addr(), row.id).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return Err(error(AppError::new(
                ErrorCode::Conflict,
                "another request is writing to this upload right now",
            )))
        }
        Err(err) => return Err(error(AppError::internal(err))),
    };
    // Read the row again under the lease: the previous writer may just have moved it.
    let row = uploads::find_owned_by_id(state, row.id, row.user_id).await.map_err(error)?;
    let response = patch_locked(state, &row, body, payload).await;
    drop(lease);
    let (offset, done) = response?;
    if done {
        state.hubs.upload_sessions.addr().do_send(FinishSession(row.id));
    }
    Ok((row, offset, done))
}

/// The PATCH under the session lease. Returns the new offset and whether the
/// upload completed.
async fn patch_locked(
    state: &AppState,
    row: &upload::Model,
    body: BodyHeaders,
    payload: web::Payload,
) -> Result<(u64, bool), HttpResponse> {
    let BodyHeaders { claimed_offset, checksum, content_length, length } = body;
    let tus = TusState::from_row(row).unwrap_or_default();
    if tus.is_final() {
        return Err(error_with_status(
            StatusCode::FORBIDDEN,
            &AppError::forbidden(
                "a final upload (Upload-Concat: final) is made of its partial uploads and takes no PATCH",
            ),
        ));
    }
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
    // A deferred length arrives with a PATCH (before its bytes are stored); until
    // then the bytes are held to what the upload may hold (`declared_size`).
    let updated;
    let (row, declared, deferred) = match length {
        Some(length) if tus.deferred => {
            updated = uploads::tus_store::set_length(state, row, &tus, length).await.map_err(error)?;
            (&updated, length, false)
        }
        Some(length) if length != declared => {
            return Err(error(AppError::bad_input(format!(
                "Upload-Length {length} differs from the upload's length {declared}"
            ))))
        }
        _ => (row, declared, tus.deferred),
    };
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
    let whole = checksum.is_some() || content_length.is_none();
    let appended = if whole && tus_store::writes_whole_in_place(state, row) {
        // Local staging file: written once at the offset, verified, cut off if refused.
        let limit = remaining.min(state.settings.uploads.tus_max_chunk_bytes.max(1));
        let digest = checksum.map(|checksum| match checksum {
            Checksum::Sha1(digest) => tus_store::ExpectedDigest::Sha1(digest),
            Checksum::Sha256(digest) => tus_store::ExpectedDigest::Sha256(digest),
        });
        let whole = tus_store::WholeBody { limit, digest };
        match tus_store::append_whole(state, row, payload, whole).await.map_err(error)? {
            Ok(offset) => Ok(tus_store::Appended { offset, body_error: None }),
            Err(tus_store::Refused::TooLarge) if limit == remaining => return Err(too_large()),
            Err(tus_store::Refused::TooLarge) => return Err(chunk_too_large(limit)),
            Err(tus_store::Refused::Mismatch) => return Err(checksum_mismatch()),
            Err(tus_store::Refused::Body(err)) => return Err(error(err)),
        }
    } else if whole {
        let limit = remaining.min(state.settings.uploads.tus_max_chunk_bytes.max(1));
        let spooled = match spool(payload, limit).await {
            Ok(spooled) => spooled,
            Err(SpoolError::TooLarge) if limit == remaining => return Err(too_large()),
            Err(SpoolError::TooLarge) => return Err(chunk_too_large(limit)),
            Err(SpoolError::Body(err)) => return Err(error(err)),
        };
        if let Some(checksum) = &checksum {
            let ok = match checksum {
                Checksum::Sha1(expected) => spooled.sha1 == *expected,
                Checksum::Sha256(expected) => spooled.sha256 == *expected,
            };
            if !ok {
                return Err(checksum_mismatch());
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
    if appended.offset < declared || deferred {
        return Ok((appended.offset, false));
    }
    if tus.is_partial() {
        // Every byte of a partial upload is in: it waits for its final upload.
        return Ok((appended.offset, true));
    }
    match uploads::completion::complete(state, row.id).await {
        Ok(_) => Ok((appended.offset, true)),
        Err(err) => Err(error(err)),
    }
}

fn chunk_too_large(limit: u64) -> HttpResponse {
    error(AppError::new(
        ErrorCode::PayloadTooLarge,
        format!("a PATCH with a checksum or without Content-Length may carry at most {limit} bytes"),
    ))
}

fn checksum_mismatch() -> HttpResponse {
    let err = AppError::bad_input("the body does not match Upload-Checksum; nothing was stored");
    error_with_status(StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST), &err)
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
    let mut file = tempfile::tempfile().map_err(|e| SpoolError::Body(crate::error::local_write_failed(e)))?;
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
            .map_err(|e| SpoolError::Body(crate::error::local_write_failed(e)))?;
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
