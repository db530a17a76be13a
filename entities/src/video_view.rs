//! `video_views`: one row per viewer per dedupe window of a video; its existence is
//! the view, `watch_seconds` the watch time reported in that window. `viewer_key` is
//! `u:{user id}` or, for anonymous viewers, `a:{keyed hash}` (never a raw address).
//! `updated_at` is the last accepted heartbeat.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "video_views")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub video_id: Uuid,
    pub viewer_key: String,
    pub window_start: DateTimeUtc,
    pub watch_seconds: f64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
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
}

impl Related<super::video::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Video.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
