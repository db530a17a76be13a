//! `users`: accounts. `email` is stored normalised (trimmed, lowercase) and unique.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::enums::Role;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    #[serde(skip_serializing)]
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    /// `None` means the configured default quota applies.
    pub storage_quota_bytes: Option<i64>,
    /// When the owner proved the address (followed a verification link); `None`: not yet.
    pub email_verified_at: Option<DateTimeUtc>,
    /// `None` means `jobs.processing_budget_secs_per_day` applies; 0: no budget.
    pub processing_budget_secs_per_day: Option<i64>,
    /// Set when an admin deleted the account; a DELETE_USER job then removes it.
    pub deleted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::refresh_token_family::Entity")]
    RefreshTokenFamily,
    #[sea_orm(has_many = "super::api_key::Entity")]
    ApiKey,
    #[sea_orm(has_many = "super::video::Entity")]
    Video,
    #[sea_orm(has_many = "super::upload::Entity")]
    Upload,
    #[sea_orm(has_many = "super::job::Entity")]
    Job,
}

impl Related<super::refresh_token_family::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RefreshTokenFamily.def()
    }
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKey.def()
    }
}

impl Related<super::video::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Video.def()
    }
}

impl Related<super::upload::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Upload.def()
    }
}

impl Related<super::job::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Job.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
