//! The catalogue in GraphQL: the `Video` type and its queries and mutations.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use entities::video;

use crate::auth::principal::{Principal, RequestAuth};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::Visibility")]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entities::VideoStatus")]
pub enum VideoStatus {
    Draft,
    Uploading,
    Processing,
    Ready,
    Failed,
}

/// The authenticated caller, if any (anonymous callers may read public videos).
pub fn viewer<'a>(ctx: &'a Context<'_>) -> Option<&'a Principal> {
    match ctx.data_opt::<RequestAuth>() {
        Some(RequestAuth::Authenticated(principal)) => Some(principal),
        _ => None,
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct VideoOwner {
    pub id: ID,
}

/// A video. Built from a row the caller has already been allowed to read.
#[derive(Debug, Clone)]
pub struct Video(pub video::Model);

impl From<video::Model> for Video {
    fn from(model: video::Model) -> Self {
        Self(model)
    }
}

#[Object]
impl Video {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    async fn tags(&self) -> &[String] {
        &self.0.tags.0
    }

    async fn visibility(&self) -> Visibility {
        self.0.visibility.into()
    }

    async fn status(&self) -> VideoStatus {
        self.0.status.into()
    }

    async fn owner(&self) -> VideoOwner {
        VideoOwner { id: ID(self.0.owner_id.to_string()) }
    }

    /// Seconds, once probed.
    async fn duration(&self) -> Option<f64> {
        self.0.duration_ms.map(|ms| ms as f64 / 1000.0)
    }

    async fn width(&self) -> Option<i32> {
        self.0.width
    }

    async fn height(&self) -> Option<i32> {
        self.0.height
    }

    /// Why processing failed, in words a person understands.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}
