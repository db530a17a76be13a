//! `refresh_tokens`: one row per issued refresh token; only its hash is stored.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub family_id: Uuid,
    #[sea_orm(unique, column_type = "Text")]
    #[serde(skip_serializing)]
    pub token_hash: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Set when the token was exchanged for a new one; presenting it again is reuse.
    pub rotated_at: Option<DateTimeUtc>,
    /// The token issued in exchange for this one.
    pub replaced_by: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::refresh_token_family::Entity",
        from = "Column::FamilyId",
        to = "super::refresh_token_family::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    RefreshTokenFamily,
}

impl Related<super::refresh_token_family::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RefreshTokenFamily.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
