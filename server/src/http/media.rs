//! `/media/{video}/{path}`: playback of a video's outputs (HLS playlists and
//! segments, the download, poster, thumbnails, storyboard) from either backend.
//!
//! Access: PUBLIC and UNLISTED videos (not hidden by a moderator) are open to anyone
//! with the URL (an unlisted video's id is unguessable). PRIVATE or hidden videos need
//! a signed URL — `?exp=<unix>&sig=<hex HMAC-SHA256>` over the video id and expiry —
//! which the API hands out only to callers allowed to read the video
//! (`Video.playbackUrl` and friends). One signature covers every file of the video,
//! and playlists are rewritten so each segment URL carries it too. Missing, tampered
//! or expired signatures get 403 with a JSON reason.
//!
//! Delivery: `Range` (single range; 206 with `Content-Range`, 416 when unsatisfiable;
//! a multi-range request is answered with the whole object, as RFC 9110 allows),
//! `ETag`/`If-None-Match` (304), `Last-Modified`, immutable caching for segments
//! (named afresh by every transcode run), an hour for other files (rewritten in
//! place by a re-transcode), short caching for playlists. Bytes are streamed from storage. With S3 and
//! `media.redirect_to_storage`, files (not playlists) answer 302 to a presigned URL,
//! or, with `media.cdn_base_url`, files of videos that need no signature to the CDN.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::Utc;
use entities::{video, Visibility};
use hmac::{Hmac, Mac};
use sea_orm::EntityTrait;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::AppError;
use crate::startup::AppState;
use crate::storage::{layout, validate_key, ByteRange, StoreError};

/// Largest playlist read into memory for rewriting.
pub const MAX_PLAYLIST_BYTES: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/media/{video}/{path:.*}").route(web::get().to(serve)).route(web::head().to(serve)));
}

/// Does this video need a signed URL?
pub fn needs_signature(video: &video::Model) -> bool {
    video.visibility == Visibility::Private || video.hidden_at.is_some()
}

fn signature(key: &[u8], video: Uuid, expires: i64) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("reelhouse-media-v1|{video}|{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The query string (`exp=…&sig=…`) that opens every file of `video` until `expires`.
pub fn signed_query(state: &AppState, video: Uuid, expires: i64) -> String {
    format!("exp={expires}&sig={}", signature(&state.keys.url_signing, video, expires))
}

/// The URL of one of `video`'s files (`path` relative to the video, e.g.
/// `hls/master.m3u8`), signed when the video needs it. Hand it only to callers who
/// may read the video.
pub fn media_url(state: &AppState, video: &video::Model, path: &str) -> String {
    let base = format!("{}/media/{}/{path}", state.public_url, video.id);
    if needs_signature(video) {
        let ttl = i64::try_from(state.settings.media.signed_url_ttl_secs).unwrap_or(i64::MAX / 2);
        format!("{base}?{}", signed_query(state, video.id, Utc::now().timestamp().saturating_add(ttl)))
    } else {
        base
    }
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
    if !allowed_path(path) {
        return Err(not_found());
    }
    let video = video::Entity::find_by_id(video_id).one(&state.db).await.map_err(AppError::internal)?;
    let video = video.filter(|v| v.deleted_at.is_none()).ok_or_else(not_found)?;
    let key = format!("{}{path}", layout::video_prefix(video.owner_id, video.id));
    validate_key(&key).map_err(|_| not_found())?;

    let signed = parse_signed(req.query_string())?;
    if let Some(signed) = &signed {
        verify(state, video.id, signed)?;
    } else if needs_signature(&video) {
        return Err(AppError::forbidden("this video needs a signed URL"));
    }
    let private = needs_signature(&video);
    metrics::counter!("reelhouse_media_requests_total", "kind" => if is_playlist(path) { "playlist" } else { "file" })
        .increment(1);

    if is_playlist(path) {
        return playlist(req, state, &video, &key, path, signed.as_ref()).await;
    }
    if state.settings.media.redirect_to_storage && state.store.backend() == "s3" {
        if let (Some(cdn), false) = (&state.settings.media.cdn_base_url, private) {
            let location = format!("{}/{}{key}", cdn.trim_end_matches('/'), state.settings.storage.s3.key_prefix);
            return Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
                .finish());
        }
        let ttl = Duration::from_secs(state.settings.media.signed_url_ttl_secs.clamp(60, 7 * 24 * 3600));
        let presigned = state.store.presign_get(&key, ttl).await.map_err(store_error)?;
        return Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, presigned.url))
            .insert_header((header::CACHE_CONTROL, "private, no-store"))
            .finish());
    }
    file(req, state, &key, path, private).await
}

fn store_error(err: StoreError) -> AppError {
    match err {
        StoreError::NotFound { .. } => AppError::not_found("media"),
        other => other.into(),
    }
}

/// What a `/media` path names, for caching.
#[derive(Clone, Copy)]
enum Kind {
    /// Names change with every rendition run, so the bytes behind one never do.
    Segment,
    /// Rewritten by a re-transcode under the same name (MP4, poster, storyboard).
    File,
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

fn cache_control(private: bool, kind: Kind) -> &'static str {
    match (private, kind) {
        (false, Kind::Segment) => "public, max-age=31536000, immutable",
        // Revalidated (ETag) after an hour, so a re-transcode shows within one.
        (false, Kind::File) => "public, max-age=3600",
        (true, Kind::Segment | Kind::File) => "private, max-age=3600",
        (false, Kind::Playlist) => "public, max-age=2",
        (true, Kind::Playlist) => "private, no-cache",
    }
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// Does `If-None-Match` match this entity tag (weak comparison, `*` included)?
fn not_modified(req: &HttpRequest, etag: Option<&str>) -> bool {
    let (Some(header), Some(etag)) = (req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()), etag)
    else {
        return false;
    };
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.trim_start_matches("W/").trim_matches('"') == etag.trim_matches('"')
    })
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

async fn file(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
    path: &str,
    private: bool,
) -> Result<HttpResponse, AppError> {
    let cache = cache_control(private, kind_of(path));
    if req.headers().contains_key(header::IF_NONE_MATCH) || req.method() == Method::HEAD {
        let meta = state.store.head(key).await.map_err(store_error)?;
        if not_modified(req, meta.etag.as_deref()) {
            let mut response = base_response(StatusCode::NOT_MODIFIED, &content_type_for(path, None), cache);
            if let Some(etag) = &meta.etag {
                response.insert_header((header::ETAG, quoted(etag)));
            }
            return Ok(response.finish());
        }
        if req.method() == Method::HEAD {
            let mut response =
                base_response(StatusCode::OK, &content_type_for(path, meta.content_type.as_deref()), cache);
            response.insert_header((header::ACCEPT_RANGES, "bytes"));
            if let Some(etag) = &meta.etag {
                response.insert_header((header::ETAG, quoted(etag)));
            }
            return Ok(
                response.body(SizedStream::new(meta.size, futures::stream::empty::<Result<Bytes, std::io::Error>>()))
            );
        }
    }
    let range_header = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    // One range only; several are answered with the whole object.
    let range = range_header.filter(|h| !h.contains(',')).map(|h| ByteRange::parse_header(h).ok_or(()));
    let range = match range {
        Some(Ok(range)) => Some(range),
        // A malformed Range header is ignored (RFC 9110), not an error.
        Some(Err(())) | None => None,
    };
    match state.store.get(key, range).await {
        Ok(result) => {
            let len = result.body_len();
            let status = if result.range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
            let mut response =
                base_response(status, &content_type_for(path, result.meta.content_type.as_deref()), cache);
            response.insert_header((header::ACCEPT_RANGES, "bytes"));
            if let Some((first, last)) = result.range {
                response.insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{}", result.meta.size)));
            }
            if let Some(etag) = &result.meta.etag {
                response.insert_header((header::ETAG, quoted(etag)));
            }
            if let Some(modified) = result.meta.last_modified {
                response
                    .insert_header((header::LAST_MODIFIED, modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()));
            }
            Ok(response.body(SizedStream::new(len, result.body)))
        }
        Err(StoreError::RangeNotSatisfiable { size }) => Ok(crate::error::range_not_satisfiable(size)),
        Err(err) => Err(store_error(err)),
    }
}

/// Serve a playlist, with every URI carrying the request's signature when it has one.
async fn playlist(
    req: &HttpRequest,
    state: &AppState,
    video: &video::Model,
    key: &str,
    path: &str,
    signed: Option<&Signed>,
) -> Result<HttpResponse, AppError> {
    let result = state.store.get(key, None).await.map_err(store_error)?;
    let body = result
        .collect_bytes(MAX_PLAYLIST_BYTES)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("reading playlist {path}: {e}")))?;
    let text = String::from_utf8(body).map_err(AppError::internal)?;
    let text = match signed {
        Some(signed) => sign_playlist(&text, &format!("exp={}&sig={}", signed.expires, signed.sig)),
        None => text,
    };
    let etag = format!("{:x}", {
        use sha2::Digest;
        Sha256::digest(text.as_bytes())
    });
    let cache = cache_control(needs_signature(video), Kind::Playlist);
    if not_modified(req, Some(&etag)) {
        return Ok(base_response(StatusCode::NOT_MODIFIED, "application/vnd.apple.mpegurl", cache)
            .insert_header((header::ETAG, quoted(&etag)))
            .finish());
    }
    let mut response = base_response(StatusCode::OK, "application/vnd.apple.mpegurl", cache);
    response.insert_header((header::ETAG, quoted(&etag)));
    if req.method() == Method::HEAD {
        return Ok(response
            .body(SizedStream::new(text.len() as u64, futures::stream::empty::<Result<Bytes, std::io::Error>>())));
    }
    Ok(response.body(text))
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
        assert!(not_modified(&req, Some("abc")));
        assert!(not_modified(&req, Some("def")));
        assert!(!not_modified(&req, Some("xyz")));
    }
}
