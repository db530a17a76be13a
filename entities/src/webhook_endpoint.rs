//! `webhook_endpoints`: where a user (or, with no owner, an admin globally) wants
//! signed event deliveries.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `None`: a global endpoint that hears of every video.
    pub owner_id: Option<Uuid>,
    pub url: String,
    /// The HMAC key, stored as issued (the server must sign with it).
    pub secret: String,
    /// JSON array of event kinds (`["READY", "FAILED"]`).
    #[sea_orm(column_type = "JsonBinary")]
    pub event_kinds: Json,
    pub enabled: bool,
    /// Why the server disabled the endpoint, shown to its owner.
    pub disabled_reason: Option<String>,
    /// Deliveries that failed for good in a row; reset by a success.
    pub consecutive_failures: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
