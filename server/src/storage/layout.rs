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

/// Where every transcode run's outputs live: `.../out/{version}/`.
pub fn outputs_root(owner: Uuid, video: Uuid) -> String {
    format!("{}out/", video_prefix(owner, video))
}

/// Is `version` a well-formed output version (`v` and 1 to 31 lowercase letters or
/// digits)? Such a name never collides with the unversioned layout's `hls`, `mp4`,
/// `thumbs`.
pub fn is_output_version(version: &str) -> bool {
    version.len() >= 2
        && version.len() <= 32
        && version.starts_with('v')
        && version.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The outputs of one transcode run of one video.
///
/// Versioned (`Some(version)`): `users/{user}/videos/{video}/out/{version}/...`, written
/// once by that run and never changed, so everything under it may be cached for good.
/// Unversioned (`None`): the layout of earlier releases, `.../{hls,mp4,thumbs}/...`
/// straight under the video, rewritten in place by each run; still read for videos
/// transcoded before output versions existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    prefix: String,
    versioned: bool,
}

impl Outputs {
    pub fn new(owner: Uuid, video: Uuid, version: Option<&str>) -> Self {
        match version {
            Some(version) => Self { prefix: format!("{}{version}/", outputs_root(owner, video)), versioned: true },
            None => Self { prefix: video_prefix(owner, video), versioned: false },
        }
    }

    /// Everything of this run ends up under this prefix (ends in `/`). For the
    /// unversioned layout this is the whole video: delete only [`Self::prefixes`].
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefixes holding this run's objects (for `delete_prefix`).
    pub fn prefixes(&self) -> Vec<String> {
        if self.versioned {
            vec![self.prefix.clone()]
        } else {
            vec![self.hls_prefix(), format!("{}mp4/", self.prefix), self.thumbs_prefix()]
        }
    }

    /// The object behind `path` (relative to the run, e.g. `hls/master.m3u8`).
    pub fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Directory of the HLS ladder (`master.m3u8`, `{rendition}/index.m3u8`, segments).
    pub fn hls_prefix(&self) -> String {
        self.key("hls/")
    }

    pub fn hls_master(&self) -> String {
        self.key("hls/master.m3u8")
    }

    /// A rendition's media playlist.
    pub fn hls_playlist(&self, rendition: &str) -> String {
        self.key(&format!("hls/{rendition}/index.m3u8"))
    }

    /// A rendition's segment (or init section), named as in its playlist.
    pub fn hls_segment(&self, rendition: &str, name: &str) -> String {
        self.key(&format!("hls/{rendition}/{name}"))
    }

    /// A progressive download, e.g. `mp4/video.mp4` or `mp4/video.webm`.
    pub fn download(&self, file_name: &str) -> String {
        self.key(&format!("mp4/{file_name}"))
    }

    /// Poster, thumbnails, storyboard sprite and its WebVTT index live here.
    pub fn thumbs_prefix(&self) -> String {
        self.key("thumbs/")
    }

    pub fn poster(&self) -> String {
        self.key("thumbs/poster.jpg")
    }

    pub fn storyboard_image(&self) -> String {
        self.key("thumbs/storyboard.jpg")
    }

    pub fn storyboard_vtt(&self) -> String {
        self.key("thumbs/storyboard.vtt")
    }
}

/// The prefix of the output version `key` lives under (`.../out/{version}/`), or
/// `None` for a key in the unversioned layout (or not an output of this video).
pub fn version_prefix(owner: Uuid, video: Uuid, key: &str) -> Option<String> {
    let root = outputs_root(owner, video);
    let (version, _) = key.strip_prefix(&root)?.split_once('/')?;
    is_output_version(version).then(|| format!("{root}{version}/"))
}

/// The path of `key` relative to `video`'s media URL root (`/media/{video}/`): the
/// version first when the key is versioned (`v…/hls/360p/index.m3u8`), the path
/// alone in the unversioned layout (`hls/360p/index.m3u8`). `None` for keys that are
/// not outputs of this video.
pub fn media_path(owner: Uuid, video: Uuid, key: &str) -> Option<String> {
    let relative = key.strip_prefix(&video_prefix(owner, video))?;
    match relative.strip_prefix("out/") {
        Some(versioned) => {
            let (version, _) = versioned.split_once('/')?;
            is_output_version(version).then(|| versioned.to_string())
        }
        None => Some(relative.to_string()),
    }
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
            Outputs::new(u, v, None).hls_master(),
            Outputs::new(u, v, Some("v0123abcdef")).hls_playlist("720p"),
            Outputs::new(u, v, Some("v0123abcdef")).download("video.mp4"),
            Outputs::new(u, v, None).poster(),
        ] {
            crate::storage::validate_key(&key).expect("valid key");
            assert!(key.starts_with(&video_prefix(u, v)));
        }
    }

    #[test]
    fn versioned_outputs_sit_apart_and_map_to_media_paths() {
        let (u, v) = (Uuid::now_v7(), Uuid::now_v7());
        let versioned = Outputs::new(u, v, Some("v0123abcdef"));
        assert_eq!(versioned.hls_master(), format!("users/{u}/videos/{v}/out/v0123abcdef/hls/master.m3u8"));
        assert_eq!(versioned.prefixes(), vec![format!("users/{u}/videos/{v}/out/v0123abcdef/")]);
        let legacy = Outputs::new(u, v, None);
        assert_eq!(legacy.hls_master(), format!("users/{u}/videos/{v}/hls/master.m3u8"));
        assert_eq!(legacy.prefixes().len(), 3, "never the whole video (its source)");
        assert!(legacy.prefixes().iter().all(|p| p != &video_prefix(u, v)));
        assert_eq!(
            media_path(u, v, &versioned.hls_playlist("360p")).as_deref(),
            Some("v0123abcdef/hls/360p/index.m3u8")
        );
        assert_eq!(media_path(u, v, &legacy.hls_playlist("360p")).as_deref(), Some("hls/360p/index.m3u8"));
        assert_eq!(media_path(u, v, &format!("users/{u}/videos/{v}/out/hls/x")), None);
        assert_eq!(version_prefix(u, v, &versioned.poster()).as_deref(), Some(versioned.prefix()));
        assert_eq!(version_prefix(u, v, &legacy.poster()), None);
        assert_eq!(media_path(Uuid::now_v7(), v, &legacy.poster()), None);
        for good in ["v1", "v0123abcdef", "vabc"] {
            assert!(is_output_version(good), "{good}");
        }
        for bad in ["", "v", "hls", "mp4", "thumbs", "V1", "v-1", "v/1", &"v".repeat(33)] {
            assert!(!is_output_version(bad), "{bad}");
        }
    }
}
