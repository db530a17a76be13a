//! Storage errors and their stable codes.
//!
//! `Display` is safe to show a client: it never includes credentials, endpoints or
//! paths on disk. The backend's own error (which may name the endpoint) is kept as
//! the `source` and only ever logged.

use crate::error::{AppError, ErrorCode};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid object key: {0}")]
    InvalidKey(&'static str),

    #[error("object not found")]
    NotFound { key: String },

    #[error("multipart upload not found")]
    UploadNotFound,

    /// The HTTP layer answers this one with 416 and `Content-Range: bytes */{size}`.
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable {
        /// The object's size, when the backend told us.
        size: Option<u64>,
    },

    /// A malformed request from our caller: bad part number, parts too small or out
    /// of order, an ETag that does not match, an expiry out of bounds.
    #[error("{0}")]
    InvalidRequest(String),

    #[error("object is larger than {limit} bytes")]
    TooLarge { limit: u64 },

    /// Local disk only: `a/b` cannot be stored while `a` is an object (or the reverse).
    #[error("object key conflicts with an existing object")]
    KeyConflict,

    /// Local disk only: another writer (maybe another process) holds the staging
    /// file of this upload (see `ObjectStore::open_staged`).
    #[error("another request is writing to this upload right now")]
    Busy,

    #[error("invalid signature")]
    InvalidSignature,

    #[error("signature expired")]
    SignatureExpired,

    /// A signed upload URL whose upload no longer accepts bytes (see
    /// [`super::UploadGate`]).
    #[error("this upload no longer accepts bytes; start a new upload")]
    UploadClosed,

    /// The body stream handed to `put` failed (the uploader went away, a read failed).
    #[error("upload body could not be read")]
    Body(#[source] std::io::Error),

    /// The backend could not be reached in time (connection, timeout, 5xx, throttling).
    #[error("object storage is unavailable during {op}")]
    Unavailable {
        op: &'static str,
        #[source]
        source: BoxError,
    },

    /// The `storage` circuit breaker is open: not even tried (see `storage::guarded`).
    #[error("object storage is unavailable")]
    CircuitOpen { retry_after_secs: u64 },

    /// The backend answered with something we did not expect (credentials refused,
    /// bucket missing, a protocol error).
    #[error("object storage failed during {op}")]
    Backend {
        op: &'static str,
        #[source]
        source: BoxError,
    },

    #[error("local storage I/O failed during {op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
        move |source| StoreError::Io { op, source }
    }

    pub(crate) fn not_found(key: &str) -> StoreError {
        StoreError::NotFound { key: key.to_owned() }
    }

    /// Local disk only: the write ran out of space, quota or file size (ENOSPC,
    /// EDQUOT, EFBIG). Whatever was half-written is removed or never published.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if crate::error::is_storage_full_io(source))
    }

    /// The stable client-facing code.
    pub fn code(&self) -> ErrorCode {
        if self.is_storage_full() {
            return ErrorCode::StorageFull;
        }
        match self {
            StoreError::InvalidKey(_)
            | StoreError::InvalidRequest(_)
            | StoreError::RangeNotSatisfiable { .. }
            | StoreError::Body(_) => ErrorCode::BadUserInput,
            StoreError::NotFound { .. } | StoreError::UploadNotFound => ErrorCode::NotFound,
            StoreError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            StoreError::KeyConflict | StoreError::Busy => ErrorCode::Conflict,
            StoreError::InvalidSignature | StoreError::SignatureExpired => ErrorCode::Forbidden,
            StoreError::UploadClosed => ErrorCode::UploadClosed,
            StoreError::Unavailable { .. } | StoreError::CircuitOpen { .. } => ErrorCode::Unavailable,
            StoreError::Backend { .. } | StoreError::Io { .. } | StoreError::Config(_) => ErrorCode::Internal,
        }
    }

    pub fn is_client_error(&self) -> bool {
        self.code().is_client_error()
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        if let StoreError::CircuitOpen { retry_after_secs } = err {
            return AppError::unavailable("object storage", err).with_retry_after(retry_after_secs);
        }
        match err.code() {
            ErrorCode::Unavailable => AppError::unavailable("object storage", err),
            ErrorCode::StorageFull => AppError::storage_full(err),
            ErrorCode::Internal => AppError::internal(err),
            ErrorCode::NotFound => {
                let what = if matches!(err, StoreError::UploadNotFound) { "multipart upload" } else { "object" };
                AppError::not_found(what).with_source(err)
            }
            code => AppError::new(code, err.to_string()).with_source(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_hide_their_cause() {
        let err = StoreError::Backend {
            op: "put",
            source: "SignatureDoesNotMatch for AKIASECRET at http://minio.internal:9000".into(),
        };
        assert!(!err.is_client_error());
        let app: AppError = err.into();
        assert_eq!(app.code(), ErrorCode::Internal);
        assert!(!app.message().contains("AKIA"));
        assert!(!app.message().contains("minio"));

        let app: AppError =
            StoreError::Unavailable { op: "get", source: "connect to 10.0.0.1:9000 refused".into() }.into();
        assert_eq!(app.code(), ErrorCode::Unavailable);
        assert!(!app.message().contains("10.0.0.1"));
    }

    #[test]
    fn a_full_disk_is_storage_full_not_internal() {
        for (op, errno) in [("write staging file", 28), ("write object", 122), ("sync object", 27)] {
            let err = StoreError::io(op)(std::io::Error::from_raw_os_error(errno));
            assert!(err.is_storage_full());
            let app: AppError = err.into();
            assert_eq!(app.code(), ErrorCode::StorageFull, "{op}");
            assert_eq!(app.code().http_status().as_u16(), 507);
            assert!(app.retry_after_secs().is_some());
        }
        let other = StoreError::io("write object")(std::io::Error::from_raw_os_error(5));
        assert!(!other.is_storage_full());
        assert_eq!(AppError::from(other).code(), ErrorCode::Internal);
    }

    #[test]
    fn client_errors_map_to_stable_codes() {
        let cases = [
            (StoreError::not_found("a"), ErrorCode::NotFound),
            (StoreError::InvalidKey("empty"), ErrorCode::BadUserInput),
            (StoreError::InvalidSignature, ErrorCode::Forbidden),
            (StoreError::SignatureExpired, ErrorCode::Forbidden),
            (StoreError::RangeNotSatisfiable { size: Some(3) }, ErrorCode::BadUserInput),
        ];
        for (err, code) in cases {
            assert!(err.is_client_error());
            assert_eq!(AppError::from(err).code(), code);
        }
    }
}
