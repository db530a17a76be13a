//! The one place that decides what an object key may look like.
//!
//! The local store maps keys straight onto paths under its root, so these rules
//! are what keeps it inside that root: no absolute keys, no `.`/`..`/empty segments,
//! no backslashes (a separator on Windows), no NUL or other control characters.
//! S3 applies the same rules so both backends accept exactly the same keys.

use super::StoreError;

/// S3's limit on key length, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Check an object key. See the module documentation for the rules.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::InvalidKey("key is longer than 1024 bytes"));
    }
    if key.starts_with('/') {
        return Err(StoreError::InvalidKey("key must not start with '/'"));
    }
    if key.contains('\\') {
        return Err(StoreError::InvalidKey("key must not contain '\\'"));
    }
    if key.chars().any(char::is_control) {
        return Err(StoreError::InvalidKey("key must not contain control characters"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(StoreError::InvalidKey("key must not contain empty segments")),
            "." | ".." => return Err(StoreError::InvalidKey("key must not contain '.' or '..' segments")),
            _ => {}
        }
    }
    Ok(())
}

/// Check a prefix for `delete_prefix`: a valid key, optionally ending in `/`.
/// The empty prefix (everything) is refused on purpose.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in ["a", "users/1/videos/2/source", "hls/720p/segment 001.ts", "ünïcode/+%?#", "a.b/.c/..d"] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn refuses_keys_that_could_escape_or_alias() {
        let too_long = "a".repeat(MAX_KEY_LEN + 1);
        for key in
            ["", "/abs", "../x", "a/../b", "a/./b", ".", "..", "a//b", "a/", "a\\b", "a\0b", "a\nb", too_long.as_str()]
        {
            assert!(matches!(validate_key(key), Err(StoreError::InvalidKey(_))), "{key:?}");
        }
        assert!(validate_key(&"a".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn prefixes_may_end_with_a_slash() {
        assert!(validate_prefix("users/1/").is_ok());
        assert!(validate_prefix("users/1/vid").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("/").is_err());
        assert!(validate_prefix("users//").is_err());
    }
}
