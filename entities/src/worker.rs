//! `workers`: transcode workers that have announced themselves; `last_seen_at` is
//! their heartbeat.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "workers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub host: String,
    pub pid: i32,
    /// How many jobs it runs at once.
    pub capacity: i32,
    pub current_jobs: i32,
    /// The reelhouse version it runs.
    pub version: String,
    pub started_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    /// LOCAL (database-attached `reelhouse worker` or embedded) or REMOTE (over
    /// the worker channel with a token).
    pub kind: String,
    /// A remote worker's token name.
    pub name: Option<String>,
    /// Comma-separated tags (routing: e.g. `gpu`).
    #[sea_orm(column_type = "Text")]
    pub tags: String,
    /// IDLE | BUSY | DRAINING
    pub state: String,
    pub gstreamer_version: Option<String>,
    /// The worker token a remote worker connected with.
    pub token_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
