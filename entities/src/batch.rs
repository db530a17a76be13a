//! `batches`: one `transcodeBatch` request. Its jobs are listed in `batch_jobs`;
//! its progress is counted from their status, never stored twice.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Who asked (an owner for their own videos, or an admin).
    pub created_by: Uuid,
    /// LOW | MEDIUM | HIGH
    pub preset: String,
    /// The formats asked for, e.g. `["HLS","MP4"]`.
    #[sea_orm(column_type = "JsonBinary")]
    pub formats: Json,
    /// Jobs enqueued.
    pub total: i32,
    pub created_at: DateTimeUtc,
    pub cancelled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
