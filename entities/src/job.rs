//! `jobs`: the durable queue. A lease is (owner, token, expiry); a completion that
//! does not present the current `lease_token` is refused.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::enums::{JobKind, JobStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Kept after the video row is gone (set to NULL), so cleanup jobs survive it.
    pub video_id: Option<Uuid>,
    /// Whose work this is, for fair scheduling between users.
    pub owner_id: Option<Uuid>,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: i32,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub attempts: i32,
    pub max_attempts: i32,
    /// Not leased before this instant (retry back-off).
    pub run_after: DateTimeUtc,
    pub lease_owner: Option<String>,
    pub lease_token: Option<Uuid>,
    pub lease_expires_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// The latest progress report, so a late reader sees where the job stands.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub progress: Option<Json>,
    pub cancel_requested: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// W3C `traceparent` of the span that enqueued the job (NULL: not traced).
    pub trace_parent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::video::Entity",
        from = "Column::VideoId",
        to = "super::video::Column::Id",
        on_update = "NoAction",
        on_delete = "SetNull"
    )]
    Video,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::OwnerId",
        to = "super::user::Column::Id",
        on_update = "NoAction",
        on_delete = "SetNull"
    )]
    Owner,
    #[sea_orm(has_many = "super::job_log::Entity")]
    JobLog,
}

impl Related<super::video::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Video.def()
    }
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Owner.def()
    }
}

impl Related<super::job_log::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::JobLog.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
