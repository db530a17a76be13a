//! Uploads in GraphQL: `createUpload`, `completeUpload`, `abortUpload`.

use async_graphql::{Context, ErrorExtensions, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::auth::roles::require_principal;
use crate::error::AppError;
use crate::error::GqlResultExt;
use crate::graphql::videos::Video;
use crate::state::AppState;
use crate::uploads::session::FinishSession;
use crate::uploads::{self, tickets, UploadRequest};

#[derive(InputObject)]
pub struct CreateUploadInput {
    pub video_id: ID,
    pub filename: String,
    /// The file's media type, e.g. `video/mp4`.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// Lowercase hex SHA-256 of the whole file; checked at completion when given.
    pub checksum_sha256: Option<String>,
}

/// A header the client must send with the upload request.
#[derive(SimpleObject)]
pub struct UploadHeader {
    pub name: String,
    pub value: String,
}

/// One presigned part URL of a MULTIPART upload.
#[derive(SimpleObject)]
pub struct UploadPartUrl {
    pub number: i32,
    pub url: String,
}

/// How to send the bytes. `method` is `PUT` (one `PUT` of the whole file to `url`
/// with `headers`) or `MULTIPART` (one `PUT` of each `partSize` slice to its part
/// URL, in any order). Or use `tusUrl` with any tus client instead. Then call
/// `completeUpload(id)` (tus completes by itself on its last byte).
#[derive(SimpleObject)]
pub struct UploadTicket {
    pub id: ID,
    pub method: String,
    pub url: Option<String>,
    pub headers: Vec<UploadHeader>,
    pub tus_url: String,
    pub expires_at: DateTime<Utc>,
    pub part_size: Option<i64>,
    pub parts: Vec<UploadPartUrl>,
}

impl From<tickets::Ticket> for UploadTicket {
    fn from(t: tickets::Ticket) -> Self {
        Self {
            id: ID(t.id.to_string()),
            method: t.method.to_string(),
            url: t.url,
            headers: t.headers.into_iter().map(|(name, value)| UploadHeader { name, value }).collect(),
            tus_url: t.tus_url,
            expires_at: t.expires_at,
            part_size: t.part_size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            parts: t.parts.into_iter().map(|p| UploadPartUrl { number: p.number, url: p.url }).collect(),
        }
    }
}

#[derive(Default)]
pub struct UploadsMutation;

#[Object]
impl UploadsMutation {
    /// Start uploading the source of a DRAFT or FAILED video you may change.
    async fn create_upload(&self, ctx: &Context<'_>, input: CreateUploadInput) -> async_graphql::Result<UploadTicket> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let video_id =
            uuid::Uuid::parse_str(input.video_id.trim()).map_err(|_| AppError::not_found("video").extend())?;
        let request = UploadRequest {
            video_id,
            filename: input.filename,
            content_type: input.content_type,
            size: input.size,
            checksum_sha256: input.checksum_sha256,
        };
        let ticket = tickets::create_ticket(state, principal, request).await.gql()?;
        Ok(ticket.into())
    }

    /// Verify, probe and enqueue the transcode of an uploaded file. Idempotent:
    /// calling it again returns the same video (and there is still one job).
    async fn complete_upload(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Video> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = uploads::parse_id(&id).gql()?;
        let row = uploads::find_for(state, principal, id).await.gql()?;
        let video = uploads::completion::complete(state, row.id).await.gql()?;
        state.hubs.upload_sessions.addr().do_send(FinishSession(row.id));
        Ok(Video(video))
    }

    /// Give up an open upload: its bytes are deleted and the video is DRAFT again.
    async fn abort_upload(&self, ctx: &Context<'_>, id: ID, reason: Option<String>) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = uploads::parse_id(&id).gql()?;
        let row = uploads::find_for(state, principal, id).await.gql()?;
        uploads::abort::abort(state, row.id, reason).await.gql()?;
        state.hubs.upload_sessions.addr().do_send(FinishSession(row.id));
        Ok(true)
    }
}
