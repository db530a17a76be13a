//! `/media/{video}/{path}`: playback of a video's outputs (HLS playlists and
//! segments, the download, poster, thumbnails, storyboard) from either backend.
//!
//! Access: PUBLIC and UNLISTED videos (not hidden by a moderator) are open to anyone
//! with the URL (an unlisted video's id is unguessable). PRIVATE or hidden videos need
//! a signed URL — `?exp=<unix>&sig=<hex HMAC-SHA256>` over the video id and expiry —
//! which the API hands out only to callers allowed to read the video
//! (`Video.playbackUrl` and friends). One signature covers every file of the video,
//! and playlists and the storyboard index (WebVTT) are rewritten so each segment and
//! sprite URL carries it too (both are always served by reelhouse, never redirected
//! to storage, so their relative URLs resolve under `/media`). Missing, tampered or
//! expired signatures get 403 with a JSON reason.
//!
//! Versions: every transcode run writes its outputs under its own version
//! (`/media/{video}/{version}/hls/master.m3u8` → `.../out/{version}/hls/master.m3u8`,
//! see [`layout::Outputs`]), and the API hands out URLs of the current version, so a
//! player never mixes two runs' playlists and segments and everything under a
//! version is immutable. Unversioned paths (`/media/{video}/hls/master.m3u8`) of a
//! video with a version answer 302 to the current version; of a video transcoded
//! before versions existed, they serve its unversioned objects as before.
//!
//! Delivery (RFC 9110): `Range` with one `bytes` range (unit case-insensitive) → 206
//! with `Content-Range`, or 416 with `Content-Range: bytes */{size}` when it cannot be
//! satisfied; several ranges, other units and malformed headers are ignored and the
//! whole object is sent (200), as §14.2 allows. `If-Range` (an entity tag, compared
//! strongly, or a date equal to `Last-Modified`) keeps the range only while the
//! object is unchanged, else 200 with the whole object. `If-None-Match` (weak
//! comparison, `*`) and, when it is absent, `If-Modified-Since` answer 304; a
//! failing `If-Match` (strong) or, without it, `If-Unmodified-Since` 412 — evaluated
//! in §13.2.2's order, before the range. Files carry `ETag` and `Last-Modified`;
//! playlists (rewritten per request) an `ETag`.
//!
//! Caching by who may see the video ([`cache_control`]): PUBLIC videos are `public`
//! (a year and `immutable` under a version, with `s-maxage` of a minute so shared
//! caches revalidate — and get 403 — soon after the video stops being public);
//! UNLISTED ones are `private` (no shared cache keeps them); PRIVATE or hidden ones
//! are `private` with a `max-age` never past the signature's expiry.
//!
//! Bytes are streamed from storage. With S3 and `media.redirect_to_storage`, files
//! (not playlists) answer 302 to a presigned URL, or, with `media.cdn_base_url`,
//! files of videos that need no signature to the CDN.

use std::time::Duration;

use std::str::FromStr;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use entities::Visibility;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::AppError;
use crate::playback::{needs_signature, signature};
use crate::state::AppState;
use crate::storage::{layout, validate_key, ByteRange, ObjectMeta, StoreError};

/// Largest playlist read into memory for rewriting.
pub const MAX_PLAYLIST_BYTES: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/media/{video}/{path:.*}").route(web::get().to(serve)).route(web::head().to(serve)));
}

/// The signature parameters of a request, if it carries any.
struct Signed {
    expires: i64,
    sig: String,
}

fn parse_signed(query: &str) -> Result<Option<Signed>, AppError> {
    let (mut exp, mut sig) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "exp" => &mut exp,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(AppError::forbidden("invalid signature"));
        }
    }
    match (exp, sig) {
        (None, None) => Ok(None),
        (Some(exp), Some(sig)) => {
            let expires = exp.parse::<i64>().map_err(|_| AppError::forbidden("invalid signature"))?;
            Ok(Some(Signed { expires, sig }))
        }
        _ => Err(AppError::forbidden("invalid signature")),
    }
}

fn verify(state: &AppState, video: Uuid, signed: &Signed) -> Result<(), AppError> {
    let expected = signature(&state.keys.url_signing, video, signed.expires);
    let matches = !expected.is_empty()
        && expected.len() == signed.sig.len()
        && subtle_eq(expected.as_bytes(), signed.sig.to_ascii_lowercase().as_bytes());
    if !matches {
        return Err(AppError::forbidden("invalid signature"));
    }
    if signed.expires < Utc::now().timestamp() {
        return Err(AppError::forbidden("the signed URL has expired"));
    }
    Ok(())
}

/// Constant-time comparison of equal-length byte strings.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which files of a video may be served (never the uploaded source).
fn allowed_path(path: &str) -> bool {
    ["hls/", "mp4/", "thumbs/"].iter().any(|prefix| path.starts_with(prefix) && path.len() > prefix.len())
}

fn is_playlist(path: &str) -> bool {
    path.ends_with(".m3u8")
}

/// The storyboard's WebVTT index, whose cues point into the sprite next to it.
fn is_storyboard_index(path: &str) -> bool {
    path.ends_with(".vtt")
}

fn content_type_for(path: &str, stored: Option<&str>) -> String {
    let by_extension = match path.rsplit('.').next() {
        Some("m3u8") => Some("application/vnd.apple.mpegurl"),
        Some("ts") => Some("video/mp2t"),
        Some("m4s") => Some("video/iso.segment"),
        Some("mp4") => Some("video/mp4"),
        Some("webm") => Some("video/webm"),
        Some("jpg") | Some("jpeg") => Some("image/jpeg"),
        Some("vtt") => Some("text/vtt"),
        _ => None,
    };
    by_extension.or(stored).unwrap_or("application/octet-stream").to_string()
}

async fn serve(req: HttpRequest, params: web::Path<(String, String)>, state: web::Data<AppState>) -> HttpResponse {
    let (video, path) = params.into_inner();
    match serve_inner(&req, &video, &path, &state).await {
        Ok(response) => response,
        Err(err) => {
            err.log();
            err.to_http_response()
        }
    }
}

async fn serve_inner(
    req: &HttpRequest,
    video_id: &str,
    path: &str,
    state: &AppState,
) -> Result<HttpResponse, AppError> {
    let not_found = || AppError::not_found("media");
    let video_id = Uuid::parse_str(video_id).map_err(|_| not_found())?;
    let (version, path) = split_version(path);
    if !allowed_path(path) {
        return Err(not_found());
    }
    let video = crate::repo::videos::find(&state.db, video_id).await?;
    let video = video.filter(|v| v.deleted_at.is_none()).ok_or_else(not_found)?;

    let signed = parse_signed(req.query_string())?;
    if let Some(signed) = &signed {
        verify(state, video.id, signed)?;
    } else if needs_signature(&video) {
        return Err(AppError::forbidden("this video needs a signed URL"));
    }
    let audience = match (&signed, needs_signature(&video), video.visibility) {
        (Some(signed), true, _) => Audience::Signed { expires: signed.expires },
        (_, _, Visibility::Public) => Audience::Public,
        _ => Audience::Unlisted,
    };
    let kind = match version {
        Some(_) => Kind::Versioned,
        None => kind_of(path),
    };
    let outputs = match (version, &video.output_version) {
        (Some(version), _) => layout::Outputs::new(video.owner_id, video.id, Some(version)),
        // An unversioned URL (handed out before this video's current run, or made by
        // hand) of a video with versions: on to the current one, so whatever the
        // player fetches next resolves inside that version.
        (None, Some(current)) => {
            // Only a path that could name a file is redirected, and it goes out
            // percent-encoded: a decoded NUL or CR/LF in a `Location` made an invalid
            // header, answered 500 (found by the fuzzer).
            validate_key(&layout::Outputs::new(video.owner_id, video.id, Some(current)).key(path))
                .map_err(|_| not_found())?;
            let location = redirect_location(&state.public_url, video.id, current, path, req.query_string())
                .ok_or_else(not_found)?;
            return Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .insert_header((header::CACHE_CONTROL, audience.cache_scope().to_string() + ", no-cache"))
                .finish());
        }
        (None, None) => layout::Outputs::new(video.owner_id, video.id, None),
    };
    let key = outputs.key(path);
    validate_key(&key).map_err(|_| not_found())?;
    metrics::counter!("reelhouse_media_requests_total", "kind" => if is_playlist(path) { "playlist" } else { "file" })
        .increment(1);

    if is_playlist(path) {
        return playlist(req, state, &key, path, signed.as_ref(), audience, kind).await;
    }
    if is_storyboard_index(path) {
        // Served (never redirected) and rewritten like a playlist: its cues name the
        // sprite relative to it, and a relative URL loses the query, so each cue
        // carries the signature itself — and with storage redirects the sprite must
        // resolve against `/media`, not against a presigned storage URL.
        let cache = cache_control(audience, kind, Utc::now());
        return storyboard_index(req, state, &key, signed.as_ref(), cache).await;
    }
    let private = needs_signature(&video);
    if state.settings.media.redirect_to_storage && state.store.backend() == "s3" {
        if let (Some(cdn), false) = (&state.settings.media.cdn_base_url, private) {
            let location = format!("{}/{}{key}", cdn.trim_end_matches('/'), state.settings.storage.s3.key_prefix);
            // Shared caches keep the redirect no longer than a public file (see
            // `SHARED_MAX_AGE`); the CDN's own copy of the object is the CDN's business.
            let cache = match audience {
                Audience::Public => format!("public, max-age=300, s-maxage={SHARED_MAX_AGE}"),
                _ => "private, max-age=300".to_string(),
            };
            return Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .insert_header((header::CACHE_CONTROL, cache))
                .finish());
        }
        let ttl = Duration::from_secs(state.settings.media.signed_url_ttl_secs.clamp(60, 7 * 24 * 3600));
        let presigned = state.store.presign_get(&key, ttl).await.map_err(store_error)?;
        return Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, presigned.url))
            .insert_header((header::CACHE_CONTROL, "private, no-store"))
            .finish());
    }
    Ok(file(req, state, &key, path, cache_control(audience, kind, Utc::now())).await)
}

/// `v…/hls/master.m3u8` → (`Some("v…")`, `hls/master.m3u8`); unversioned paths as is.
/// `{public_url}/media/{video}/{version}/{path}?{query}` with every path segment
/// percent-encoded; `None` if that is not a URL.
fn redirect_location(public_url: &str, video: Uuid, version: &str, path: &str, query: &str) -> Option<String> {
    let mut url = url::Url::parse(public_url).ok()?;
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .push("media")
        .push(&video.to_string())
        .push(version)
        .extend(path.split('/'));
    if !query.is_empty() {
        // The raw query of the request line: visible ASCII already, kept as sent.
        url.set_query(Some(query));
    }
    Some(url.to_string())
}

fn split_version(path: &str) -> (Option<&str>, &str) {
    match path.split_once('/') {
        Some((first, rest)) if layout::is_output_version(first) => (Some(first), rest),
        _ => (None, path),
    }
}

fn store_error(err: StoreError) -> AppError {
    match err {
        StoreError::NotFound { .. } => AppError::not_found("media"),
        other => other.into(),
    }
}

/// What a `/media` path names, for caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Anything under an output version: written once, never changed.
    Versioned,
    /// An unversioned segment: named afresh by every run of earlier releases, so the
    /// bytes behind one name never change either.
    Segment,
    /// Unversioned and rewritten in place by a re-transcode (MP4, poster, storyboard).
    File,
    /// An unversioned playlist, or a media playlist still growing.
    Playlist,
}

fn kind_of(path: &str) -> Kind {
    if is_playlist(path) {
        Kind::Playlist
    } else if path.starts_with("hls/") {
        Kind::Segment
    } else {
        Kind::File
    }
}

/// Who may fetch a video's media, which decides who may cache it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audience {
    /// PUBLIC and not hidden: anyone, so shared caches may keep it (briefly: see
    /// [`SHARED_MAX_AGE`]).
    Public,
    /// UNLISTED: anyone with the URL, but never a shared cache, so the day the video
    /// turns private no cache in between keeps serving it.
    Unlisted,
    /// PRIVATE or hidden: whoever holds a signature valid until `expires` (unix).
    Signed { expires: i64 },
}

impl Audience {
    fn cache_scope(self) -> &'static str {
        match self {
            Audience::Public => "public",
            Audience::Unlisted | Audience::Signed { .. } => "private",
        }
    }
}

/// Seconds a shared cache (CDN, proxy) may serve a public video's file before asking
/// again: a video made private or unlisted stops being served by shared caches
/// within this, since the revalidation gets 403 (browsers keep their copy).
pub const SHARED_MAX_AGE: u64 = 60;
const YEAR: u64 = 365 * 24 * 3600;
/// Unversioned files are rewritten in place by a re-transcode: revalidated (ETag)
/// after an hour, so a new run shows within one.
const FILE_MAX_AGE: u64 = 3600;
const PLAYLIST_MAX_AGE: u64 = 2;

/// `Cache-Control` for `kind` as seen by `audience` at `now`.
fn cache_control(audience: Audience, kind: Kind, now: DateTime<Utc>) -> String {
    let (lifetime, immutable) = match kind {
        Kind::Versioned | Kind::Segment => (YEAR, ", immutable"),
        Kind::File => (FILE_MAX_AGE, ""),
        Kind::Playlist => (PLAYLIST_MAX_AGE, ""),
    };
    match audience {
        Audience::Public if lifetime > SHARED_MAX_AGE => {
            format!("public, max-age={lifetime}, s-maxage={SHARED_MAX_AGE}{immutable}")
        }
        Audience::Public => format!("public, max-age={lifetime}"),
        Audience::Unlisted => format!("private, max-age={lifetime}{immutable}"),
        // An unversioned playlist of a private video names its segments with this
        // request's signature: asked again each time.
        Audience::Signed { .. } if kind == Kind::Playlist => "private, no-cache".to_string(),
        Audience::Signed { expires } => {
            let left = u64::try_from(expires.saturating_sub(now.timestamp())).unwrap_or(0).min(lifetime);
            if left == 0 {
                "private, no-store".to_string()
            } else {
                format!("private, max-age={left}{immutable}")
            }
        }
    }
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// Does `If-None-Match` match this entity tag (weak comparison, `*` included)?
fn none_match_hits(req: &HttpRequest, etag: Option<&str>) -> bool {
    let (Some(header), Some(etag)) = (req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()), etag)
    else {
        return false;
    };
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.trim_start_matches("W/").trim_matches('"') == etag.trim_matches('"')
    })
}

/// An HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms).
fn http_date(value: &str) -> Option<DateTime<Utc>> {
    let date = header::HttpDate::from_str(value.trim()).ok()?;
    Some(DateTime::<Utc>::from(std::time::SystemTime::from(date)))
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// RFC 9110 §13.2.2 steps 1 and 2: does `If-Match` (strong comparison, `*`) or,
/// when it is absent, `If-Unmodified-Since` fail? Then the answer is 412.
fn precondition_fails(req: &HttpRequest, meta: &ObjectMeta) -> bool {
    if let Some(header) = header_str(req, header::IF_MATCH) {
        let etag = meta.etag.as_deref().map(|e| e.trim_matches('"'));
        return !header.split(',').map(str::trim).any(|candidate| {
            candidate == "*"
                || (etag.is_some() && candidate.strip_prefix('"').and_then(|c| c.strip_suffix('"')) == etag)
        });
    }
    match (header_str(req, header::IF_UNMODIFIED_SINCE).and_then(http_date), meta.last_modified) {
        (Some(since), Some(modified)) => modified.timestamp() > since.timestamp(),
        _ => false,
    }
}

/// RFC 9110 §13.2.2 steps 3 and 4 for GET and HEAD: `If-None-Match` when present,
/// else `If-Modified-Since` (the object is unchanged when it was last modified no
/// later than the given date, to the second; an invalid date is ignored).
fn not_modified(req: &HttpRequest, meta: &ObjectMeta) -> bool {
    if req.headers().contains_key(header::IF_NONE_MATCH) {
        return none_match_hits(req, meta.etag.as_deref());
    }
    match (header_str(req, header::IF_MODIFIED_SINCE).and_then(http_date), meta.last_modified) {
        (Some(since), Some(modified)) => modified.timestamp() <= since.timestamp(),
        _ => false,
    }
}

/// RFC 9110 §13.1.5: may the `Range` be honoured? Without `If-Range`, yes. With an
/// entity tag, only if it matches the object's strongly (weak tags never do); with a
/// date, only if it is exactly the object's `Last-Modified`. Else the whole object.
fn if_range_holds(req: &HttpRequest, meta: &ObjectMeta) -> bool {
    let Some(value) = header_str(req, header::IF_RANGE).map(str::trim) else {
        return req.headers().get(header::IF_RANGE).is_none();
    };
    if value.starts_with('"') || value.starts_with("W/") {
        return match (&meta.etag, value.strip_prefix('"').and_then(|v| v.strip_suffix('"'))) {
            (Some(etag), Some(tag)) => tag == etag.trim_matches('"'),
            _ => false,
        };
    }
    match (http_date(value), meta.last_modified) {
        (Some(date), Some(modified)) => date.timestamp() == modified.timestamp(),
        _ => false,
    }
}

/// The single byte range asked for, if any and if it may be honoured. Several ranges,
/// other units and malformed headers are ignored (RFC 9110 §14.2: a server may ignore
/// `Range`), and so the whole object is sent.
fn requested_range(req: &HttpRequest, meta: Option<&ObjectMeta>) -> Option<ByteRange> {
    let range = ByteRange::parse_header(header_str(req, header::RANGE)?)?;
    match meta {
        Some(meta) if !if_range_holds(req, meta) => None,
        _ => Some(range),
    }
}

fn last_modified_value(modified: DateTime<Utc>) -> String {
    modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn base_response(status: StatusCode, content_type: &str, cache: &str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CONTENT_TYPE, content_type.to_string()))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, "Content-Length, Content-Range, ETag"));
    response
}

async fn file(req: &HttpRequest, state: &AppState, key: &str, path: &str, cache: String) -> HttpResponse {
    match file_inner(req, state, key, path, &cache).await {
        Ok(response) => response,
        Err(StoreError::RangeNotSatisfiable { size }) => crate::error::range_not_satisfiable(size),
        Err(err) => {
            let err = store_error(err);
            err.log();
            err.to_http_response()
        }
    }
}

/// Headers every answer about the object carries: validators and `Accept-Ranges`.
fn validators(response: &mut actix_web::HttpResponseBuilder, meta: &ObjectMeta) {
    response.insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(etag) = &meta.etag {
        response.insert_header((header::ETAG, quoted(etag)));
    }
    if let Some(modified) = meta.last_modified {
        response.insert_header((header::LAST_MODIFIED, last_modified_value(modified)));
    }
}

async fn file_inner(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
    path: &str,
    cache: &str,
) -> Result<HttpResponse, StoreError> {
    let conditional = [
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| req.headers().contains_key(name));
    // The conditions are decided on the object's metadata before any byte is read.
    let meta = if conditional || req.method() == Method::HEAD { Some(state.store.head(key).await?) } else { None };
    if let Some(meta) = &meta {
        if precondition_fails(req, meta) {
            // Not the file's caching: a shared cache that forwards a stranger's
            // `If-Match` must not keep this answer and serve it to everyone.
            let mut response =
                base_response(StatusCode::PRECONDITION_FAILED, &content_type_for(path, None), "no-store");
            validators(&mut response, meta);
            return Ok(response.finish());
        }
        if not_modified(req, meta) {
            let mut response = base_response(StatusCode::NOT_MODIFIED, &content_type_for(path, None), cache);
            validators(&mut response, meta);
            return Ok(response.finish());
        }
        if req.method() == Method::HEAD {
            let mut response =
                base_response(StatusCode::OK, &content_type_for(path, meta.content_type.as_deref()), cache);
            validators(&mut response, meta);
            return Ok(
                response.body(SizedStream::new(meta.size, futures::stream::empty::<Result<Bytes, std::io::Error>>()))
            );
        }
    }
    let range = requested_range(req, meta.as_ref());
    let result = state.store.get(key, range).await?;
    let len = result.body_len();
    let status = if result.range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let mut response = base_response(status, &content_type_for(path, result.meta.content_type.as_deref()), cache);
    validators(&mut response, &result.meta);
    if let Some((first, last)) = result.range {
        response.insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{}", result.meta.size)));
    }
    Ok(response.body(SizedStream::new(len, result.body)))
}

/// Serve a playlist, with every URI carrying the request's signature when it has one.
async fn playlist(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
    path: &str,
    signed: Option<&Signed>,
    audience: Audience,
    kind: Kind,
) -> Result<HttpResponse, AppError> {
    let text = read_text(state, key, path).await?;
    // A growing playlist (the lowest rung while the ladder is encoded) changes under
    // its version: cached like an unversioned playlist, briefly.
    let kind = if is_growing(&text) { Kind::Playlist } else { kind };
    let cache = cache_control(audience, kind, Utc::now());
    let text = match signed {
        Some(signed) => sign_playlist(&text, &signed_query_of(signed)),
        None => text,
    };
    rewritten_response(req, text, "application/vnd.apple.mpegurl", &cache)
}

/// A media playlist that is not final yet: segments and no `#EXT-X-ENDLIST`.
fn is_growing(text: &str) -> bool {
    text.contains("#EXTINF") && !text.contains("#EXT-X-ENDLIST")
}

/// Serve the storyboard index, with every cue's sprite URI carrying the request's
/// signature when it has one.
async fn storyboard_index(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
    signed: Option<&Signed>,
    cache: String,
) -> Result<HttpResponse, AppError> {
    let text = read_text(state, key, "storyboard index").await?;
    let text = match signed {
        Some(signed) => sign_storyboard(&text, &signed_query_of(signed)),
        None => text,
    };
    rewritten_response(req, text, "text/vtt; charset=utf-8", &cache)
}

fn signed_query_of(signed: &Signed) -> String {
    format!("exp={}&sig={}", signed.expires, signed.sig)
}

/// A small text object (a playlist or a storyboard index), read whole.
async fn read_text(state: &AppState, key: &str, what: &str) -> Result<String, AppError> {
    let result = state.store.get(key, None).await.map_err(store_error)?;
    let body = result
        .collect_bytes(MAX_PLAYLIST_BYTES)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("reading {what}: {e}")))?;
    String::from_utf8(body).map_err(AppError::internal)
}

/// The answer for a text rewritten per request: its own ETag (of the rewritten
/// bytes), `If-None-Match`, HEAD.
fn rewritten_response(
    req: &HttpRequest,
    text: String,
    content_type: &str,
    cache: &str,
) -> Result<HttpResponse, AppError> {
    let etag = format!("{:x}", {
        use sha2::Digest;
        Sha256::digest(text.as_bytes())
    });
    if none_match_hits(req, Some(&etag)) {
        return Ok(base_response(StatusCode::NOT_MODIFIED, content_type, cache)
            .insert_header((header::ETAG, quoted(&etag)))
            .finish());
    }
    let mut response = base_response(StatusCode::OK, content_type, cache);
    response.insert_header((header::ETAG, quoted(&etag)));
    if req.method() == Method::HEAD {
        return Ok(response
            .body(SizedStream::new(text.len() as u64, futures::stream::empty::<Result<Bytes, std::io::Error>>())));
    }
    Ok(response.body(text))
}

/// Put `query` on the sprite URI of every cue of a storyboard index (the line after a
/// cue's timing line: `storyboard.jpg#xywh=…` → `storyboard.jpg?{query}#xywh=…`).
/// Only relative references are signed: a signature never goes to another host.
pub fn sign_storyboard(text: &str, query: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut after_timing = false;
    for line in text.lines() {
        let trimmed = line.trim();
        let is_timing = trimmed.contains("-->");
        if after_timing && !trimmed.is_empty() && !is_timing && is_relative_reference(trimmed) {
            let (uri, fragment) = match trimmed.split_once('#') {
                Some((uri, fragment)) => (uri, Some(fragment)),
                None => (trimmed, None),
            };
            out.push_str(uri);
            out.push(if uri.contains('?') { '&' } else { '?' });
            out.push_str(query);
            if let Some(fragment) = fragment {
                out.push('#');
                out.push_str(fragment);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
        after_timing = is_timing;
    }
    out
}

/// A reference without a scheme or an authority (`sprite.jpg`, `../thumbs/a.jpg`).
fn is_relative_reference(uri: &str) -> bool {
    !uri.starts_with("//") && !uri.starts_with('/') && url::Url::parse(uri).is_err()
}

/// Append `query` to every URI of an HLS playlist: URI lines and `URI="…"` attributes.
pub fn sign_playlist(text: &str, query: &str) -> String {
    let append = |uri: &str| {
        if uri.contains('?') {
            format!("{uri}&{query}")
        } else {
            format!("{uri}?{query}")
        }
    };
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if !trimmed.starts_with('#') {
            out.push_str(&append(trimmed));
        } else if let Some(start) = line.find("URI=\"") {
            let value_start = start + 5;
            match line[value_start..].find('"') {
                Some(len) => {
                    out.push_str(&line[..value_start]);
                    out.push_str(&append(&line[value_start..value_start + len]));
                    out.push_str(&line[value_start + len..]);
                }
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_are_signed_on_every_uri() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360\n360p/index.m3u8\n";
        let signed = sign_playlist(master, "exp=1&sig=ab");
        assert!(signed.contains("\n360p/index.m3u8?exp=1&sig=ab\n"), "{signed}");
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nsegment00000.ts\n#EXT-X-ENDLIST\n";
        let signed = sign_playlist(media, "exp=1&sig=ab");
        assert!(signed.contains("URI=\"init.mp4?exp=1&sig=ab\""), "{signed}");
        assert!(signed.contains("\nsegment00000.ts?exp=1&sig=ab\n"), "{signed}");
        assert!(signed.contains("#EXT-X-ENDLIST"));
    }

    #[test]
    fn storyboard_cues_are_signed_and_keep_their_fragment() {
        let vtt = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90\n\n\
                   00:00:02.000 --> 00:00:04.000\nhttps://elsewhere.example/a.jpg#xywh=160,0,160,90\n\n\
                   00:00:04.000 --> 00:00:05.000\n/media/x/thumbs/storyboard.jpg#xywh=0,90,160,90\n";
        let signed = sign_storyboard(vtt, "exp=1&sig=ab");
        assert!(signed.starts_with("WEBVTT\n"), "{signed}");
        assert!(signed.contains("\nstoryboard.jpg?exp=1&sig=ab#xywh=0,0,160,90\n"), "{signed}");
        assert!(signed.contains("\n00:00:00.000 --> 00:00:02.000\n"), "timings unchanged: {signed}");
        assert!(signed.contains("\nhttps://elsewhere.example/a.jpg#xywh=160,0,160,90\n"), "{signed}");
        assert!(signed.contains("\n/media/x/thumbs/storyboard.jpg#xywh=0,90,160,90\n"), "{signed}");
    }

    #[test]
    fn only_outputs_are_served() {
        assert!(allowed_path("hls/master.m3u8"));
        assert!(allowed_path("thumbs/poster.jpg"));
        assert!(!allowed_path("source"));
        assert!(!allowed_path("hls/"));
        assert!(!allowed_path("../source"));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, "W/\"abc\", \"def\""))
            .to_http_request();
        assert!(none_match_hits(&req, Some("abc")));
        assert!(none_match_hits(&req, Some("def")));
        assert!(!none_match_hits(&req, Some("xyz")));
    }

    fn meta(etag: &str, modified: &str) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size: 10,
            content_type: None,
            etag: Some(etag.into()),
            last_modified: Some(DateTime::parse_from_rfc3339(modified).unwrap().with_timezone(&Utc)),
        }
    }

    fn request(headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = actix_web::test::TestRequest::default();
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        req.to_http_request()
    }

    #[test]
    fn if_modified_since_applies_only_without_if_none_match() {
        let m = meta("abc", "2026-12-06T10:00:00.700Z");
        assert!(not_modified(&request(&[("If-Modified-Since", "Sun, 06 Dec 2026 10:00:00 GMT")]), &m));
        assert!(not_modified(&request(&[("If-Modified-Since", "Sunday, 06-Dec-26 11:00:00 GMT")]), &m));
        assert!(!not_modified(&request(&[("If-Modified-Since", "Sun, 06 Dec 2026 09:59:59 GMT")]), &m));
        assert!(!not_modified(&request(&[("If-Modified-Since", "yesterday")]), &m), "invalid dates are ignored");
        let both = [("If-None-Match", "\"other\""), ("If-Modified-Since", "Sun, 06 Dec 2026 10:00:00 GMT")];
        assert!(!not_modified(&request(&both), &m), "If-None-Match wins");
    }

    #[test]
    fn if_match_and_if_unmodified_since_guard_the_request() {
        let m = meta("abc", "2026-12-06T10:00:00.300Z");
        assert!(!precondition_fails(&request(&[]), &m));
        assert!(!precondition_fails(&request(&[("If-Match", "\"x\", \"abc\"")]), &m));
        assert!(!precondition_fails(&request(&[("If-Match", "*")]), &m));
        assert!(precondition_fails(&request(&[("If-Match", "W/\"abc\"")]), &m), "strong comparison");
        assert!(precondition_fails(&request(&[("If-Match", "\"x\"")]), &m));
        assert!(!precondition_fails(&request(&[("If-Unmodified-Since", "Sun, 06 Dec 2026 10:00:00 GMT")]), &m));
        assert!(precondition_fails(&request(&[("If-Unmodified-Since", "Sun, 06 Dec 2026 09:59:59 GMT")]), &m));
        let both = [("If-Match", "\"abc\""), ("If-Unmodified-Since", "Sun, 06 Dec 2026 09:00:00 GMT")];
        assert!(!precondition_fails(&request(&both), &m), "If-Match wins");
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let m = meta("abc", "2026-12-06T10:00:00Z");
        assert!(if_range_holds(&request(&[]), &m));
        assert!(if_range_holds(&request(&[("If-Range", "\"abc\"")]), &m));
        assert!(!if_range_holds(&request(&[("If-Range", "W/\"abc\"")]), &m), "weak tags never match");
        assert!(!if_range_holds(&request(&[("If-Range", "\"abd\"")]), &m));
        assert!(if_range_holds(&request(&[("If-Range", "Sun, 06 Dec 2026 10:00:00 GMT")]), &m));
        assert!(!if_range_holds(&request(&[("If-Range", "Sun, 06 Dec 2026 10:00:01 GMT")]), &m));
        assert!(!if_range_holds(&request(&[("If-Range", "garbage")]), &m));
    }

    #[test]
    fn cache_control_follows_the_audience() {
        let now = Utc::now();
        let public = cache_control(Audience::Public, Kind::Versioned, now);
        assert_eq!(public, "public, max-age=31536000, s-maxage=60, immutable");
        assert_eq!(cache_control(Audience::Public, Kind::Playlist, now), "public, max-age=2");
        assert_eq!(cache_control(Audience::Unlisted, Kind::Versioned, now), "private, max-age=31536000, immutable");
        assert_eq!(cache_control(Audience::Unlisted, Kind::File, now), "private, max-age=3600");
        let signed = Audience::Signed { expires: now.timestamp() + 600 };
        assert_eq!(cache_control(signed, Kind::Versioned, now), "private, max-age=600, immutable");
        assert_eq!(cache_control(signed, Kind::Playlist, now), "private, no-cache");
        let expired = Audience::Signed { expires: now.timestamp() - 1 };
        assert_eq!(cache_control(expired, Kind::File, now), "private, no-store");
    }

    #[test]
    fn versions_lead_the_path() {
        assert_eq!(split_version("v0123456789/hls/master.m3u8"), (Some("v0123456789"), "hls/master.m3u8"));
        assert_eq!(split_version("hls/master.m3u8"), (None, "hls/master.m3u8"));
    }

    #[test]
    fn only_a_media_playlist_without_its_end_is_growing() {
        let growing = "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nsegment00000.ts\n";
        assert!(is_growing(growing));
        assert!(!is_growing(&format!("{growing}#EXT-X-ENDLIST\n")));
        assert!(!is_growing("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360\n360p/index.m3u8\n"));
        assert_eq!(split_version("V1/hls/x.ts"), (None, "V1/hls/x.ts"));
    }
}
