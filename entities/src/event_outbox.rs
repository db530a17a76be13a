//! `events_outbox`: every domain event, written in the transaction that caused it.
//!
//! `id` is the global cursor subscribers resume from; `seq` increases per video.
//! There are deliberately no foreign keys: events (e.g. DELETED) outlive their video.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::enums::Visibility;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "events_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub video_id: Uuid,
    pub owner_id: Uuid,
    /// The event kind (UPLOADED, PROGRESS, READY, ...), owned by the events code.
    pub kind: String,
    pub seq: i64,
    /// The video's visibility when the event happened, for authorising replays.
    pub visibility: Visibility,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub created_at: DateTimeUtc,
    /// Set once the event has been handed to the bus.
    pub published_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
