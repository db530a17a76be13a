//! Moderation in GraphQL: `hideVideo`/`unhideVideo` for moderators and admins, and
//! the `Video.moderationLog` entries they read.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::{moderation_action, ModerationActionKind};

use crate::auth::principal::ClientInfo;
use crate::auth::roles::{require_principal, Permission, PermissionGuard};
use crate::error::GqlResultExt;
use crate::graphql::videos::{parse_video_id, Video};
use crate::repo::moderation as repo;
use crate::state::AppState;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::ModerationActionKind")]
pub enum ModerationAction {
    Hide,
    Unhide,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct Moderator {
    pub id: ID,
}

/// One moderation decision on a video.
#[derive(SimpleObject, Debug, Clone)]
pub struct ModerationEntry {
    pub action: ModerationAction,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    pub moderator: Moderator,
}

impl From<moderation_action::Model> for ModerationEntry {
    fn from(model: moderation_action::Model) -> Self {
        Self {
            action: model.action.into(),
            reason: model.reason,
            at: model.created_at,
            moderator: Moderator { id: ID(model.moderator_id.to_string()) },
        }
    }
}

#[derive(Default)]
pub struct ModerationMutation;

#[Object]
impl ModerationMutation {
    /// Hide a video: it stops playing and disappears for everyone but its owner and
    /// moderators. Hiding a hidden video replaces the reason. Moderators and admins.
    #[graphql(guard = "PermissionGuard(Permission::ModerateVideos)")]
    async fn hide_video(&self, ctx: &Context<'_>, id: ID, reason: String) -> async_graphql::Result<Video> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_video_id(&id).gql()?;
        let reason = repo::normalize_reason(&reason).gql()?;
        let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
        let video =
            repo::moderate(&state.db, principal, id, ModerationActionKind::Hide, reason, &client).await.gql()?;
        state.access_signals.video_changed(id).await;
        Ok(video.into())
    }

    /// Make a hidden video play again (CONFLICT when it is not hidden). Moderators
    /// and admins.
    #[graphql(guard = "PermissionGuard(Permission::ModerateVideos)")]
    async fn unhide_video(&self, ctx: &Context<'_>, id: ID, reason: Option<String>) -> async_graphql::Result<Video> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_video_id(&id).gql()?;
        let reason = reason.as_deref().map(repo::normalize_reason).transpose().gql()?.flatten();
        let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
        let video =
            repo::moderate(&state.db, principal, id, ModerationActionKind::Unhide, reason, &client).await.gql()?;
        state.access_signals.video_changed(id).await;
        Ok(video.into())
    }
}
