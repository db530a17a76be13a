//! The string-valued enums stored in the database.
//!
//! The stored values are the public GraphQL spellings (SCREAMING_SNAKE_CASE), and
//! serde uses the same spelling, so a value reads the same in the database, in JSON
//! payloads and on the wire. Adding a variant needs no migration: the columns are
//! plain strings sized to hold any of them.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// What a user (or an API key) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    #[sea_orm(string_value = "ADMIN")]
    Admin,
    #[sea_orm(string_value = "MODERATOR")]
    Moderator,
    #[sea_orm(string_value = "USER")]
    User,
    #[sea_orm(string_value = "VIEWER")]
    Viewer,
}

/// Who may see a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Visibility {
    #[sea_orm(string_value = "PUBLIC")]
    Public,
    #[sea_orm(string_value = "UNLISTED")]
    Unlisted,
    #[sea_orm(string_value = "PRIVATE")]
    Private,
}

/// Where a video is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VideoStatus {
    #[sea_orm(string_value = "DRAFT")]
    Draft,
    #[sea_orm(string_value = "UPLOADING")]
    Uploading,
    #[sea_orm(string_value = "PROCESSING")]
    Processing,
    #[sea_orm(string_value = "READY")]
    Ready,
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

/// How the bytes of an upload reach storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UploadMethod {
    /// One presigned PUT straight to storage.
    #[sea_orm(string_value = "PRESIGNED")]
    Presigned,
    /// S3 multipart with presigned part URLs.
    #[sea_orm(string_value = "MULTIPART")]
    Multipart,
    /// The server's own tus endpoint.
    #[sea_orm(string_value = "TUS")]
    Tus,
}

/// Where an upload session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UploadStatus {
    #[sea_orm(string_value = "OPEN")]
    Open,
    /// Bytes are in; verification and probing are running.
    #[sea_orm(string_value = "COMPLETING")]
    Completing,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "ABORTED")]
    Aborted,
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

/// Whether one rung of the HLS ladder has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RenditionStatus {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "READY")]
    Ready,
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

/// What a queued job does. The column holds up to 32 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobKind {
    /// Turn a source into the HLS ladder, MP4, thumbnails and storyboard.
    #[sea_orm(string_value = "TRANSCODE")]
    Transcode,
    /// Remove stored objects (a deleted video's source and outputs).
    #[sea_orm(string_value = "DELETE_OBJECTS")]
    DeleteObjects,
    /// Send one account mail (its own lane: never waits behind transcodes).
    #[sea_orm(string_value = "SEND_MAIL")]
    SendMail,
    /// Remove a deleted account: its videos (with DELETED events), its objects
    /// (`users/{id}/`), then the account row.
    #[sea_orm(string_value = "DELETE_USER")]
    DeleteUser,
}

/// Where a job is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    #[sea_orm(string_value = "RUNNING")]
    Running,
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    /// Failed for good without exhausting retries (e.g. unsupported media).
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    /// Exhausted its attempts; kept visible and retryable by an admin.
    #[sea_orm(string_value = "DEAD")]
    Dead,
}

/// Severity of a job log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogLevel {
    #[sea_orm(string_value = "TRACE")]
    Trace,
    #[sea_orm(string_value = "DEBUG")]
    Debug,
    #[sea_orm(string_value = "INFO")]
    Info,
    #[sea_orm(string_value = "WARN")]
    Warn,
    #[sea_orm(string_value = "ERROR")]
    Error,
}

/// What a moderator decided about a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModerationActionKind {
    /// The video stops playing for everyone but its owner and moderators.
    #[sea_orm(string_value = "HIDE")]
    Hide,
    #[sea_orm(string_value = "UNHIDE")]
    Unhide,
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WebhookDeliveryStatus {
    /// Waiting for its (next) attempt.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    /// Retries ran out (or the endpoint was disabled); the owner may redeliver.
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

/// What a one-use account token (a mail link) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountTokenPurpose {
    /// Prove the account's address.
    #[sea_orm(string_value = "VERIFY_EMAIL")]
    VerifyEmail,
    /// Set a new password without the old one.
    #[sea_orm(string_value = "RESET_PASSWORD")]
    ResetPassword,
    /// Prove a new address; the account moves to it when the token is used.
    #[sea_orm(string_value = "CHANGE_EMAIL")]
    ChangeEmail,
}
