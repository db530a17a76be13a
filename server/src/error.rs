//! One error type for the whole server, with stable codes.
//!
//! Every subsystem has its own error enum (`StoreError`, `SettingsError`, ...) that
//! converts into [`AppError`] with a stable [`ErrorCode`]. The code decides the HTTP
//! status and the GraphQL `extensions.code` from one table ([`ErrorCode::http_status`]),
//! so clients see the same code whichever door they came through. Internal causes are
//! logged where the error is turned into a response, never sent.

use std::fmt;

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use async_graphql::ErrorExtensions as _;
use serde::Serialize;

/// Stable, client-visible error codes. Never rename one: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    RateLimited,
    Conflict,
    PayloadTooLarge,
    UnsupportedMedia,
    /// A resume cursor older than the events still kept (`events.retention_days`).
    CursorExpired,
    /// A write to an upload that no longer accepts bytes: completed, being
    /// completed, aborted, expired, or its video deleted. 410: the URL is dead for
    /// good; start a new upload.
    UploadClosed,
    /// A request body that sent nothing for `uploads.tus_body_idle_timeout_secs`.
    /// What arrived before the pause is kept (tus: resume at the new offset).
    BodyTimeout,
    Unavailable,
    Internal,
    /// The account's address is not verified and the action needs it (uploads,
    /// unless `auth.unverified_can_upload`).
    EmailNotVerified,
    /// The password was right and the account has two-factor sign-in on: send it
    /// again with a TOTP or recovery code (`totpCode`). No session was started.
    MfaRequired,
    /// Local storage ran out of space or quota (ENOSPC, EDQUOT, EFBIG). Nothing
    /// half-written was kept or published: retry after `Retry-After` (a tus upload
    /// resumes at its recorded offset).
    StorageFull,
    /// A subscriber that stopped reading: its queue stayed full for
    /// `graphql.ws_slow_consumer_ms`, so the subscription ended. Everything queued
    /// before was delivered first; `extensions.resumeAfter` is the cursor to resume
    /// from with `videoEvents(videoId, after:)` (null: subscribe again for a snapshot).
    SlowConsumer,
}

impl ErrorCode {
    /// The one table from code to HTTP status.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BadUserInput => StatusCode::BAD_REQUEST,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::CursorExpired => StatusCode::GONE,
            ErrorCode::UploadClosed => StatusCode::GONE,
            ErrorCode::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::EmailNotVerified => StatusCode::FORBIDDEN,
            ErrorCode::MfaRequired => StatusCode::UNAUTHORIZED,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::SlowConsumer => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMedia => "UNSUPPORTED_MEDIA",
            ErrorCode::CursorExpired => "CURSOR_EXPIRED",
            ErrorCode::UploadClosed => "UPLOAD_CLOSED",
            ErrorCode::BodyTimeout => "BODY_TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            ErrorCode::MfaRequired => "MFA_REQUIRED",
            ErrorCode::StorageFull => "STORAGE_FULL",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
        }
    }

    /// Client errors are the caller's to fix; the rest are ours and get logged loudly.
    pub fn is_client_error(self) -> bool {
        !matches!(self, ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::StorageFull)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The top-level error. `message` is safe to show to a client; `source` is not.
pub struct AppError {
    code: ErrorCode,
    message: String,
    source: Option<anyhow::Error>,
    /// For `RATE_LIMITED`: seconds until a retry can succeed.
    retry_after_secs: Option<u64>,
    /// For `SLOW_CONSUMER`: the cursor a resumed subscription starts after.
    resume_after: Option<i64>,
}

/// The JSON body of every HTTP error: `{ "code": "...", "message": "..." }`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), source: None, retry_after_secs: None, resume_after: None }
    }

    /// An internal failure: the client sees only a generic message, the cause is logged.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "internal error".into(),
            source: Some(source.into()),
            retry_after_secs: None,
            resume_after: None,
        }
    }

    /// A dependency (database, storage, Redis) did not answer.
    pub fn unavailable(what: &str, source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Unavailable,
            message: format!("{what} is unavailable, try again later"),
            source: Some(source.into()),
            // A 503 always says when to come back (the fault matrix found a tus PATCH
            // answering 503 without `Retry-After` during an S3 stall).
            retry_after_secs: Some(1),
            resume_after: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadUserInput, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// Local storage is full: 507 with `Retry-After` (space may come back any time;
    /// an operator frees it or the sweepers do).
    pub fn storage_full(source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::StorageFull,
            message: "storage is full, try again later".into(),
            source: Some(source.into()),
            retry_after_secs: Some(STORAGE_FULL_RETRY_AFTER_SECS),
            resume_after: None,
        }
    }

    /// Attach the underlying cause (logged, never sent) to a client-facing error.
    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Tell the client when to retry (`Retry-After`, `extensions.retryAfter`).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Tell a subscriber where to resume (`extensions.resumeAfter`, a cursor).
    pub fn with_resume_after(mut self, cursor: Option<i64>) -> Self {
        self.resume_after = cursor;
        self
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Log the error once, at the level its code deserves, with the full cause chain.
    pub fn log(&self) {
        match (&self.source, self.code.is_client_error()) {
            (Some(source), false) => {
                tracing::error!(code = %self.code, error = ?source, "{}", self.message)
            }
            (None, false) => tracing::error!(code = %self.code, "{}", self.message),
            (Some(source), true) => {
                tracing::debug!(code = %self.code, error = ?source, "{}", self.message)
            }
            (None, true) => tracing::debug!(code = %self.code, "{}", self.message),
        }
    }

    /// The HTTP JSON response for this error (also used by non-`ResponseError` paths).
    pub fn to_http_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.code.http_status());
        if let Some(secs) = self.retry_after_secs {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(ErrorBody { code: self.code.as_str(), message: &self.message })
    }

    /// The GraphQL error with `extensions.code`, from the same table as HTTP.
    pub fn to_graphql(&self) -> async_graphql::Error {
        self.log();
        let code = self.code.as_str();
        let retry_after = self.retry_after_secs;
        let resume_after = (self.code == ErrorCode::SlowConsumer).then_some(self.resume_after);
        async_graphql::Error::new(self.message.clone()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry_after {
                ext.set("retryAfter", secs);
            }
            if let Some(cursor) = resume_after {
                // Cursors are strings in the API; null: start again from a snapshot.
                ext.set("resumeAfter", cursor.map(|c| c.to_string()));
            }
        })
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(source) = &self.source {
            write!(f, "\nCaused by: {source:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.code.http_status()
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        self.to_http_response()
    }
}

/// Resolvers turn an `AppError` into a GraphQL error with `.extend()` (not `?`
/// alone: async-graphql's blanket `From<Display>` would drop the code).
impl async_graphql::ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        self.to_graphql()
    }
}

/// `result.gql()?` in a resolver: the error becomes an [`AppError`] (a `DbErr`, a
/// `StoreError`, … through their `From`) and then a GraphQL error that keeps its
/// stable code, in one call instead of `.gql()`.
pub trait GqlResultExt<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<AppError>> GqlResultExt<T> for Result<T, E> {
    fn gql(self) -> async_graphql::Result<T> {
        use async_graphql::ErrorExtensions;
        self.map_err(|e| e.into().extend())
    }
}

/// Seconds a client is told to wait when the database could not be reached.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

/// Seconds a client is told to wait when local storage is full.
pub const STORAGE_FULL_RETRY_AFTER_SECS: u64 = 30;

/// An I/O error that says the disk (or the quota, or the file size limit) is
/// exhausted: not a bug of ours and not the caller's, a capacity problem.
pub fn is_storage_full_io(err: &std::io::Error) -> bool {
    // ENOSPC 28, EDQUOT 122, EFBIG 27 on Linux; `StorageFull` / `FileTooLarge` kinds
    // where std already classifies them.
    matches!(err.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge)
        || matches!(err.raw_os_error(), Some(28 | 122 | 27))
}

/// A failed local write (a temp or spool file): `STORAGE_FULL` when the disk is,
/// `INTERNAL` otherwise.
pub fn local_write_failed(err: std::io::Error) -> AppError {
    if is_storage_full_io(&err) {
        AppError::storage_full(err)
    } else {
        AppError::internal(err)
    }
}

/// An unreachable database is `UNAVAILABLE` (503, `Retry-After`); any other
/// database error is ours (`INTERNAL`).
impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        // Counted against the `database` breaker of the request this happens in.
        crate::breaker::note_database_error(&err);
        if crate::breaker::is_database_unreachable(&err) {
            AppError::unavailable("the database", err).with_retry_after(DATABASE_RETRY_AFTER_SECS)
        } else {
            AppError::internal(err)
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// 416 for a Range no byte of the object satisfies, with `Content-Range: bytes */size`.
pub fn range_not_satisfiable(size: Option<u64>) -> HttpResponse {
    let mut response = AppError::new(ErrorCode::BadUserInput, "requested range not satisfiable").to_http_response();
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    if let Some(size) = size {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(actix_web::http::header::CONTENT_RANGE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_expose_their_cause() {
        let err = AppError::internal(anyhow::anyhow!("password=hunter2 at db.internal:5432"));
        assert_eq!(err.message(), "internal error");
        let gql = err.to_graphql();
        assert!(!gql.message.contains("hunter2"));
        let code = gql.extensions.as_ref().and_then(|e| e.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from("INTERNAL")));
    }

    #[test]
    fn a_full_disk_is_storage_full_with_retry_after() {
        for errno in [28, 122, 27] {
            assert!(is_storage_full_io(&std::io::Error::from_raw_os_error(errno)), "errno {errno}");
        }
        assert!(!is_storage_full_io(&std::io::Error::from_raw_os_error(13)));
        assert!(!is_storage_full_io(&std::io::ErrorKind::UnexpectedEof.into()));
        let err = AppError::storage_full(anyhow::anyhow!("/var/lib/reelhouse/tmp/abc.tmp: No space left on device"));
        assert_eq!(err.code().http_status().as_u16(), 507);
        assert_eq!(err.retry_after_secs(), Some(STORAGE_FULL_RETRY_AFTER_SECS));
        assert!(!err.message().contains("/var/lib"));
        let response = err.to_http_response();
        assert_eq!(response.status().as_u16(), 507);
        assert!(response.headers().contains_key("retry-after"));
    }

    #[test]
    fn an_unreachable_database_is_unavailable_not_internal() {
        use sea_orm::{sqlx, ConnAcquireErr, DbErr, RuntimeErr};
        let unreachable = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::Conn(RuntimeErr::Internal("refused".into())),
            DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()))),
            DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::PoolTimedOut)),
        ];
        for err in unreachable {
            let app = AppError::from(err);
            assert_eq!(app.code(), ErrorCode::Unavailable, "{app:?}");
            assert_eq!(app.retry_after_secs(), Some(DATABASE_RETRY_AFTER_SECS));
        }
        let ours = AppError::from(DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::RowNotFound)));
        assert_eq!(ours.code(), ErrorCode::Internal);
        assert_eq!(AppError::from(DbErr::RecordNotFound("x".into())).code(), ErrorCode::Internal);
    }

    #[test]
    fn every_code_maps_to_a_status_and_a_distinct_name() {
        let all = [
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::BadUserInput,
            ErrorCode::RateLimited,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMedia,
            ErrorCode::CursorExpired,
            ErrorCode::UploadClosed,
            ErrorCode::BodyTimeout,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::MfaRequired,
            ErrorCode::EmailNotVerified,
            ErrorCode::StorageFull,
            ErrorCode::SlowConsumer,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for code in all {
            assert_eq!(code.is_client_error(), code.http_status().is_client_error());
            // serde name and as_str agree, so JSON bodies and GraphQL extensions match.
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
        }
    }
}
