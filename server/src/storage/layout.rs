//! Where a video's objects live: `users/{user}/videos/{video}/...`.

use uuid::Uuid;

/// Everything of one video, ending in `/` (for `delete_prefix`).
pub fn video_prefix(owner: Uuid, video: Uuid) -> String {
    format!("users/{owner}/videos/{video}/")
}

/// The uploaded original.
pub fn source(owner: Uuid, video: Uuid) -> String {
    format!("{}source", video_prefix(owner, video))
}

/// Where a presigned single `PUT` of upload `upload` lands. The upload's URL is
/// signed for this key only; completion moves the object to [`source`], so a URL
/// replayed after completion can never overwrite the accepted source.
pub fn staging(owner: Uuid, video: Uuid, upload: Uuid) -> String {
    format!("{}staging/{upload}", video_prefix(owner, video))
}

/// Where the bytes of a tus partial upload (concatenation) gather until a final
/// upload joins them into [`source`]. Named by the random tail of the upload's
/// id (62 random bits of a UUIDv7): short, because some S3-compatible servers
/// keep a multipart upload's metadata in a file named after the whole key.
pub fn partial(owner: Uuid, video: Uuid, upload: Uuid) -> String {
    let id = upload.simple().to_string();
    format!("{}p/{}", video_prefix(owner, video), &id[16..])
}

/// Directory of the HLS ladder (`master.m3u8`, `{rendition}/index.m3u8`, segments).
pub fn hls_prefix(owner: Uuid, video: Uuid) -> String {
    format!("{}hls/", video_prefix(owner, video))
}

pub fn hls_master(owner: Uuid, video: Uuid) -> String {
    format!("{}master.m3u8", hls_prefix(owner, video))
}

/// A rendition's media playlist.
pub fn hls_playlist(owner: Uuid, video: Uuid, rendition: &str) -> String {
    format!("{}{rendition}/index.m3u8", hls_prefix(owner, video))
}

/// A progressive download, e.g. `mp4/video.mp4` or `mp4/medium.webm`.
pub fn download(owner: Uuid, video: Uuid, file_name: &str) -> String {
    format!("{}mp4/{file_name}", video_prefix(owner, video))
}

/// Poster, thumbnails, storyboard sprite and its WebVTT index live here.
pub fn thumbs_prefix(owner: Uuid, video: Uuid) -> String {
    format!("{}thumbs/", video_prefix(owner, video))
}

pub fn poster(owner: Uuid, video: Uuid) -> String {
    format!("{}poster.jpg", thumbs_prefix(owner, video))
}

pub fn storyboard_image(owner: Uuid, video: Uuid) -> String {
    format!("{}storyboard.jpg", thumbs_prefix(owner, video))
}

pub fn storyboard_vtt(owner: Uuid, video: Uuid) -> String {
    format!("{}storyboard.vtt", thumbs_prefix(owner, video))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_nested() {
        let (u, v) = (Uuid::now_v7(), Uuid::now_v7());
        for key in [
            source(u, v),
            staging(u, v, Uuid::now_v7()),
            hls_master(u, v),
            hls_playlist(u, v, "720p"),
            download(u, v, "video.mp4"),
            poster(u, v),
        ] {
            crate::storage::validate_key(&key).expect("valid key");
            assert!(key.starts_with(&video_prefix(u, v)));
        }
    }
}
