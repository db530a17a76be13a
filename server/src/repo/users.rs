//! Accounts: creating one, changing its password hash or address, and as
//! administrators see them: listing with filters, enabling and disabling, per-user
//! quotas, deletion (the account is retired at once; a DELETE_USER job removes what
//! it owned). Its sign-in sessions are `repo::sessions`'.

use chrono::{DateTime, Utc};
use entities::{api_key, job, processing_usage, refresh_token_family, user, video, JobKind, JobStatus, Role};
use sea_orm::sea_query::{Expr, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, Set,
};
use uuid::Uuid;

use super::jobs::{self, NewJob};
use super::sessions::revoke_all_sessions;
use crate::error::{AppError, AppResult, ErrorCode};

/// Attempts of a DELETE_USER job: it is retried (with the queue's backoff) until
/// done; what it does is idempotent.
pub const DELETE_USER_MAX_ATTEMPTS: i32 = 100;

/// Filters of the `users` listing.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Case-insensitive substring of the email or the display name.
    pub search: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// The accounts matching `filter` (deleted ones never), for paging by id.
pub fn listing(filter: &UserFilter) -> Select<user::Entity> {
    let mut condition = Condition::all().add(user::Column::DeletedAt.is_null());
    if let Some(search) = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let pattern = format!("%{}%", super::videos::escape_like(&search.to_lowercase()));
        let lower_like = |column: user::Column| {
            Expr::expr(Func::lower(Expr::col((user::Entity, column)))).like(LikeExpr::new(pattern.clone()).escape('!'))
        };
        condition = condition
            .add(Condition::any().add(lower_like(user::Column::Email)).add(lower_like(user::Column::DisplayName)));
    }
    if let Some(role) = filter.role {
        condition = condition.add(user::Column::Role.eq(role));
    }
    if let Some(disabled) = filter.disabled {
        condition = condition.add(user::Column::Disabled.eq(disabled));
    }
    user::Entity::find().filter(condition)
}

/// An account that exists and is not deleted; `NOT_FOUND` otherwise.
pub async fn find_live<C: ConnectionTrait>(conn: &C, id: Uuid) -> AppResult<user::Model> {
    user::Entity::find_by_id(id)
        .filter(user::Column::DeletedAt.is_null())
        .one(conn)
        .await?
        .ok_or_else(|| AppError::not_found("user"))
}

/// Disable or enable an account. Disabling is refused (`CONFLICT`) for the last
/// enabled admin, and revokes every session (API keys stop working while the
/// account is disabled: authentication checks the owner).
/// Returns the account and how many sessions were revoked.
pub async fn set_disabled(txn: &DatabaseTransaction, id: Uuid, disabled: bool) -> AppResult<(user::Model, u64)> {
    let found = find_live(txn, id).await?;
    if disabled {
        keep_an_admin(txn, &found, "disabled").await?;
    }
    let mut active: user::ActiveModel = found.into();
    active.disabled = Set(disabled);
    active.updated_at = Set(Utc::now());
    let updated = active.update(txn).await?;
    let revoked = if disabled { revoke_all_sessions(txn, id, "account disabled").await? } else { 0 };
    Ok((updated, revoked))
}

/// Give account `id` another role; demoting the last enabled admin is refused
/// (`CONFLICT`). Returns the role it had and the account after.
pub async fn set_role(txn: &DatabaseTransaction, id: Uuid, role: Role) -> AppResult<(Role, user::Model)> {
    let found = find_live(txn, id).await?;
    if role != Role::Admin {
        keep_an_admin(txn, &found, "demoted").await?;
    }
    let from = found.role;
    let mut active: user::ActiveModel = found.into();
    active.role = Set(role);
    active.updated_at = Set(Utc::now());
    Ok((from, active.update(txn).await?))
}

/// A per-user override: leave it, or set it (`None`: back to the server default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    Keep,
    Set(Option<i64>),
}

impl Override {
    fn apply(self, current: Option<i64>) -> Option<i64> {
        match self {
            Override::Keep => current,
            Override::Set(value) => value,
        }
    }
}

/// Set an account's storage quota and daily processing budget overrides; negative
/// values are `BAD_USER_INPUT` (0 means no limit, as for the server settings).
/// Returns the account before and after.
pub async fn set_quota(
    txn: &DatabaseTransaction,
    id: Uuid,
    storage_quota_bytes: Override,
    processing_budget_secs_per_day: Override,
) -> AppResult<(user::Model, user::Model)> {
    for (name, value) in
        [("storageQuotaBytes", storage_quota_bytes), ("processingBudgetSecondsPerDay", processing_budget_secs_per_day)]
    {
        if matches!(value, Override::Set(Some(v)) if v < 0) {
            return Err(AppError::bad_input(format!("{name} must not be negative (0 means no limit)")));
        }
    }
    let before = find_live(txn, id).await?;
    let mut active: user::ActiveModel = before.clone().into();
    active.storage_quota_bytes = Set(storage_quota_bytes.apply(before.storage_quota_bytes));
    active.processing_budget_secs_per_day =
        Set(processing_budget_secs_per_day.apply(before.processing_budget_secs_per_day));
    active.updated_at = Set(Utc::now());
    let after = active.update(txn).await?;
    Ok((before, after))
}

/// What deleting an account did at once.
#[derive(Debug)]
pub struct Retired {
    pub user: user::Model,
    pub sessions_revoked: u64,
    pub api_keys_revoked: u64,
    /// The DELETE_USER job that removes the account's videos and objects.
    pub job: job::Model,
}

/// Retire account `id` for `actor` inside `txn`: refused (`CONFLICT`) for the
/// actor's own account and for the last enabled admin. At once: the account is
/// disabled and marked deleted, its email freed (the address can sign up again;
/// sign-in with it finds nothing), its password unusable, every session and API
/// key revoked; then a DELETE_USER job is enqueued (no owner, so no processing
/// budget holds it back).
pub async fn retire(txn: &DatabaseTransaction, actor: Uuid, id: Uuid) -> AppResult<Retired> {
    if actor == id {
        return Err(AppError::new(ErrorCode::Conflict, "you cannot delete your own account"));
    }
    let target = find_live(txn, id).await?;
    keep_an_admin(txn, &target, "deleted").await?;
    let now = Utc::now();
    let mut active: user::ActiveModel = target.into();
    active.email = Set(format!("deleted-{}@deleted.invalid", id.simple()));
    active.display_name = Set("Deleted user".into());
    // Not a hash: no password verifies against it.
    active.password_hash = Set(String::new());
    active.disabled = Set(true);
    active.deleted_at = Set(Some(now));
    active.updated_at = Set(now);
    let user = active.update(txn).await?;
    let sessions_revoked = revoke_all_sessions(txn, id, "account deleted").await?;
    let api_keys_revoked = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::UserId.eq(id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(txn)
        .await?
        .rows_affected;
    let job = jobs::enqueue(
        txn,
        NewJob {
            kind: JobKind::DeleteUser,
            video_id: None,
            owner_id: None,
            priority: jobs::DEFAULT_PRIORITY,
            payload: serde_json::json!({ "userId": id }),
            max_attempts: DELETE_USER_MAX_ATTEMPTS,
        },
    )
    .await?;
    Ok(Retired { user, sessions_revoked, api_keys_revoked, job })
}

/// Enabled, undeleted admins other than `except`. On PostgreSQL their rows are
/// locked, so two admins deleting each other at once cannot both succeed (SQLite
/// has one writer already).
/// Refuses (`CONFLICT`) a change that would leave no enabled admin: demoting,
/// disabling or deleting the last one. `what` completes "the last admin cannot be …".
/// On PostgreSQL the other admins' rows stay locked until `txn` ends, so two admins
/// acting on each other at once cannot both pass.
pub async fn keep_an_admin(txn: &DatabaseTransaction, target: &user::Model, what: &str) -> AppResult<()> {
    if target.role == Role::Admin && !target.disabled && other_enabled_admins(txn, target.id).await? == 0 {
        return Err(AppError::new(ErrorCode::Conflict, format!("the last admin cannot be {what}")));
    }
    Ok(())
}

async fn other_enabled_admins(txn: &DatabaseTransaction, except: Uuid) -> Result<u64, DbErr> {
    let mut query = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::Role.eq(Role::Admin))
        .filter(user::Column::Disabled.eq(false))
        .filter(user::Column::DeletedAt.is_null())
        .filter(user::Column::Id.ne(except));
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    Ok(query.into_tuple::<Uuid>().all(txn).await?.len() as u64)
}

/// The account row, locked until the transaction ends (PostgreSQL; SQLite has one
/// writer already): serialises what must not interleave for one owner, such as two
/// uploads fitting into the same remaining quota.
pub async fn lock<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<user::Model>, DbErr> {
    let query = user::Entity::find_by_id(id);
    if conn.get_database_backend() == DbBackend::Postgres {
        query.lock_exclusive().one(conn).await
    } else {
        query.one(conn).await
    }
}

/// The account row by id, a deleted account's tombstone included (as the
/// DELETE_USER job and a signed-in caller see it): `None` once it is gone entirely.
pub async fn find_any<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id).one(conn).await
}

/// The account with this email address, if any.
pub async fn find_by_email<C: ConnectionTrait>(conn: &C, email: &str) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find().filter(user::Column::Email.eq(email)).one(conn).await
}

/// Up to `limit` of the account's videos not yet marked deleted.
pub async fn live_videos_of<C: ConnectionTrait>(conn: &C, owner: Uuid, limit: u64) -> Result<Vec<video::Model>, DbErr> {
    video::Entity::find()
        .filter(video::Column::OwnerId.eq(owner))
        .filter(video::Column::DeletedAt.is_null())
        .order_by_asc(video::Column::Id)
        .limit(limit)
        .all(conn)
        .await
}

/// Transcodes of the account still running (asked to stop when their video was
/// deleted): their outputs must not land after the account's objects are removed.
pub async fn running_transcodes_of<C: ConnectionTrait>(conn: &C, owner: Uuid) -> Result<u64, DbErr> {
    job::Entity::find()
        .filter(job::Column::OwnerId.eq(owner))
        .filter(job::Column::Kind.eq(JobKind::Transcode))
        .filter(job::Column::Status.eq(JobStatus::Running))
        .count(conn)
        .await
}

/// The last step of a DELETE_USER job, once the objects are gone: the account's
/// video rows (their renditions, uploads, views follow by cascade), sessions, API
/// keys and usage rows. The account row stays as a tombstone (id, role, dates):
/// audit records and moderation actions keep pointing at something.
pub async fn purge_rows(txn: &DatabaseTransaction, id: Uuid) -> Result<u64, DbErr> {
    let videos = video::Entity::delete_many()
        .filter(video::Column::OwnerId.eq(id))
        .filter(video::Column::DeletedAt.is_not_null())
        .exec(txn)
        .await?
        .rows_affected;
    refresh_token_family::Entity::delete_many().filter(refresh_token_family::Column::UserId.eq(id)).exec(txn).await?;
    api_key::Entity::delete_many().filter(api_key::Column::UserId.eq(id)).exec(txn).await?;
    processing_usage::Entity::delete_many().filter(processing_usage::Column::UserId.eq(id)).exec(txn).await?;
    Ok(videos)
}

/// An account about to be created: its address normalised and its password hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    /// Whether the address counts as verified from the start.
    pub verified: bool,
}

/// Insert a new account (enabled, no overrides, no two-factor sign-in). A taken
/// address fails on the unique index (`SqlErr::UniqueConstraintViolation`).
pub async fn insert<C: ConnectionTrait>(conn: &C, account: NewUser) -> Result<user::Model, DbErr> {
    let now = Utc::now();
    user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(account.email),
        display_name: Set(account.display_name),
        password_hash: Set(account.password_hash),
        role: Set(account.role),
        disabled: Set(false),
        storage_quota_bytes: Set(None),
        email_verified_at: Set(account.verified.then_some(now)),
        processing_budget_secs_per_day: Set(None),
        deleted_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await
}

/// Replace the account's password hash; returns the account after.
pub async fn set_password_hash<C: ConnectionTrait>(
    conn: &C,
    user: user::Model,
    password_hash: String,
) -> Result<user::Model, DbErr> {
    let mut active = user.into_active_model();
    active.password_hash = Set(password_hash);
    active.updated_at = Set(Utc::now());
    active.update(conn).await
}

/// Move the account to `email`, verified at `now`; returns the account after. An
/// address another account took fails on the unique index
/// (`SqlErr::UniqueConstraintViolation`).
pub async fn set_verified_email<C: ConnectionTrait>(
    conn: &C,
    user: user::Model,
    email: String,
    now: DateTime<Utc>,
) -> Result<user::Model, DbErr> {
    let mut active = user.into_active_model();
    active.email = Set(email);
    active.email_verified_at = Set(Some(now));
    active.updated_at = Set(now);
    active.update(conn).await
}

/// Mark the account's current address verified at `now`; returns the account after.
pub async fn mark_email_verified<C: ConnectionTrait>(
    conn: &C,
    user: user::Model,
    now: DateTime<Utc>,
) -> Result<user::Model, DbErr> {
    let mut active = user.into_active_model();
    active.email_verified_at = Set(Some(now));
    active.updated_at = Set(now);
    active.update(conn).await
}
