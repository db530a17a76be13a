//! Playback URLs the API hands out (`Video.playbackUrl` and friends): which videos
//! need a signature, the signature itself (HMAC-SHA256 over the video id and an
//! expiry, one for every file of the video), and the URL of a video's file or
//! rendition. `http::media` serves those URLs and checks the signatures.

use chrono::Utc;
use entities::{rendition, video, Visibility};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::storage::layout;

/// What signing a URL needs of the process (provided by `state::AppState`).
pub trait PlaybackDeps: Send + Sync {
    /// The server's base URL, without a trailing `/`.
    fn public_url(&self) -> &str;
    /// The key media URLs are signed with (derived from the master secret).
    fn url_signing_key(&self) -> &[u8];
    /// How long a signed URL stays valid (`media.signed_url_ttl_secs`).
    fn signed_url_ttl_secs(&self) -> u64;
}

/// Does this video need a signed URL?
pub fn needs_signature(video: &video::Model) -> bool {
    video.visibility == Visibility::Private || video.hidden_at.is_some()
}

pub fn signature(key: &[u8], video: Uuid, expires: i64) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("reelhouse-media-v1|{video}|{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The query string (`exp=…&sig=…`) that opens every file of `video` until `expires`.
pub fn signed_query(state: &dyn PlaybackDeps, video: Uuid, expires: i64) -> String {
    format!("exp={expires}&sig={}", signature(state.url_signing_key(), video, expires))
}

/// The URL of one of `video`'s current files (`path` relative to the outputs, e.g.
/// `hls/master.m3u8`; the current output version is put in front), signed when the
/// video needs it. Hand it only to callers who may read the video.
pub fn media_url(state: &dyn PlaybackDeps, video: &video::Model, path: &str) -> String {
    match &video.output_version {
        Some(version) => url_of(state, video, &format!("{version}/{path}")),
        None => url_of(state, video, path),
    }
}

/// The URL of a rendition's media playlist: the version its row names (an early
/// rung of a first transcode is ahead of the video's version), signed when needed.
pub fn rendition_url(state: &dyn PlaybackDeps, video: &video::Model, row: &rendition::Model) -> String {
    match layout::media_path(video.owner_id, video.id, &row.playlist_key) {
        Some(path) => url_of(state, video, &path),
        None => media_url(state, video, &format!("hls/{}/index.m3u8", row.name)),
    }
}

/// `path` relative to `/media/{video}/` (version included, if any).
fn url_of(state: &dyn PlaybackDeps, video: &video::Model, path: &str) -> String {
    let base = format!("{}/media/{}/{path}", state.public_url(), video.id);
    if needs_signature(video) {
        let ttl = i64::try_from(state.signed_url_ttl_secs()).unwrap_or(i64::MAX / 2);
        format!("{base}?{}", signed_query(state, video.id, Utc::now().timestamp().saturating_add(ttl)))
    } else {
        base
    }
}
