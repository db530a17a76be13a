//! `audit_events`: the security audit log. Rows are appended and read, never
//! changed; only retention pruning deletes them (see `server/src/repo/audit.rs`).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// UUIDv7: time-ordered, so the id alone is a stable keyset.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub at: DateTimeUtc,
    /// A stable SCREAMING_SNAKE name such as `LOGIN_FAILED`.
    pub action: String,
    /// Who acted; none for a failed sign-in of an unknown account or the system.
    pub actor_id: Option<Uuid>,
    /// What was acted on (a user, session, key, endpoint, video or job id).
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `SUCCESS`, `FAILURE` or `DENIED`.
    pub outcome: String,
    pub request_id: Option<String>,
    /// Non-secret context (a new role, a reason); never a password, token or key.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub detail: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
