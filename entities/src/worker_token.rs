//! `worker_tokens`: what a remote worker (`reelhouse worker --server URL`) presents
//! in its first message. Only a SHA-256 of the secret is stored; `prefix` is the
//! visible start so admins can tell tokens apart. `capacity` and `tags` (comma
//! separated) are what the token's workers may claim.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "worker_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    #[sea_orm(unique, column_type = "Text")]
    #[serde(skip_serializing)]
    pub secret_hash: String,
    pub capacity: i32,
    #[sea_orm(column_type = "Text")]
    pub tags: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
