//! `videos`: the catalogue. Media facts (duration, size, codecs) are filled in by
//! the probe; `deleted_at` marks a soft delete whose objects are still being removed.

use sea_orm::entity::prelude::*;
use sea_orm::FromJsonQueryResult;
use serde::{Deserialize, Serialize};

pub use crate::enums::{VideoStatus, Visibility};

/// A video's tags, stored as a JSON array of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct Tags(pub Vec<String>);

impl From<Vec<String>> for Tags {
    fn from(tags: Vec<String>) -> Self {
        Self(tags)
    }
}

impl From<Tags> for Vec<String> {
    fn from(tags: Tags) -> Self {
        tags.0
    }
}

/// One single-file download of a video's current outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Download {
    /// `MP4` | `WEBM`
    pub format: String,
    /// Storage key, under the current output version.
    pub key: String,
    pub width: i32,
    pub height: i32,
    pub bytes: i64,
}

/// The downloads of a video's current outputs, stored as a JSON array.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct Downloads(pub Vec<Download>);

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "videos")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Tags,
    pub visibility: Visibility,
    pub status: VideoStatus,
    /// Readable reason when `status` is FAILED.
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub frame_rate: Option<f64>,
    /// Display rotation in degrees (0, 90, 180, 270) from the source's metadata.
    pub rotation: Option<i32>,
    pub has_audio: Option<bool>,
    pub container: Option<String>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// Storage key of the uploaded source, once it exists.
    pub source_key: Option<String>,
    pub source_size_bytes: Option<i64>,
    /// Set by a moderator to hide the video from everyone but its owner and staff.
    pub hidden_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub hidden_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
    /// The last per-video event sequence number written (see `events::record`).
    pub event_seq: i64,
    /// Bytes of the current transcode's outputs in storage (renditions, download,
    /// poster, thumbnails, storyboard); counted against the owner's quota.
    pub output_bytes: i64,
    /// The transcode run whose outputs are current: they live under
    /// `users/{owner}/videos/{id}/out/{output_version}/` and playback URLs name it.
    /// `None`: outputs (if any) in the unversioned layout of earlier releases.
    pub output_version: Option<String>,
    /// The current outputs' MP4/WebM downloads (`None`: transcoded by an earlier
    /// release, which always made one MP4).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub downloads: Option<Downloads>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::OwnerId",
        to = "super::user::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    Owner,
    #[sea_orm(has_many = "super::upload::Entity")]
    Upload,
    #[sea_orm(has_many = "super::rendition::Entity")]
    Rendition,
    #[sea_orm(has_many = "super::job::Entity")]
    Job,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Owner.def()
    }
}

impl Related<super::upload::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Upload.def()
    }
}

impl Related<super::rendition::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Rendition.def()
    }
}

impl Related<super::job::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Job.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
