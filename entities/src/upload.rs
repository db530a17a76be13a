//! `uploads`: one upload session per attempt to send a video's source bytes.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::enums::{UploadMethod, UploadStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub video_id: Uuid,
    pub user_id: Uuid,
    pub method: UploadMethod,
    pub status: UploadStatus,
    pub filename: String,
    pub content_type: String,
    pub declared_size: i64,
    /// Lowercase hex SHA-256 the client promised, if any.
    pub checksum_sha256: Option<String>,
    /// Bytes durably received (the tus `Upload-Offset`).
    pub offset_bytes: i64,
    pub object_key: String,
    /// The S3 multipart upload id, for MULTIPART.
    pub s3_upload_id: Option<String>,
    /// Completed multipart parts (numbers and ETags), as the upload code writes them.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub parts: Option<Json>,
    pub expires_at: DateTimeUtc,
    #[sea_orm(column_type = "Text", nullable)]
    pub failure_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
    /// When the sweeper removed what the ended upload may have left in storage
    /// (staging object, multipart upload, tus tail) after its URLs had expired.
    pub staging_swept_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::video::Entity",
        from = "Column::VideoId",
        to = "super::video::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    Video,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::video::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Video.def()
    }
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
