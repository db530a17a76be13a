//! What a user consumes: bytes stored (sources and every output) against the storage
//! quota, and seconds of media processing per UTC day against the processing budget.

use chrono::{NaiveDate, Utc};
use entities::{processing_usage, user};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};
use uuid::Uuid;

use crate::config::Settings;

/// The storage quota of `user`: the per-user override when set, else the setting;
/// `None` when there is no limit.
pub fn storage_quota(user: Option<&user::Model>, settings: &Settings) -> Option<i64> {
    let quota = user
        .and_then(|u| u.storage_quota_bytes)
        .or_else(|| i64::try_from(settings.uploads.quota_bytes_per_user).ok())
        .unwrap_or(i64::MAX);
    (quota > 0).then_some(quota)
}

/// The daily processing budget of `user` in seconds: the per-user override when
/// set, else `jobs.processing_budget_secs_per_day`; `None` when there is none (0).
/// The lease query (`repo::jobs::lease_next`) applies the same rule in SQL.
pub fn processing_budget(user: Option<&user::Model>, settings: &Settings) -> Option<i64> {
    let budget = user
        .and_then(|u| u.processing_budget_secs_per_day)
        .unwrap_or_else(|| i64::try_from(settings.jobs.processing_budget_secs_per_day).unwrap_or(i64::MAX));
    (budget > 0).then_some(budget)
}

/// [`processing_budget`] of the account `user_id`.
pub async fn processing_budget_of<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    settings: &Settings,
) -> Result<Option<i64>, DbErr> {
    let user = user::Entity::find_by_id(user_id).one(conn).await?;
    Ok(processing_budget(user.as_ref(), settings))
}

/// Today, as processing usage is bucketed (UTC).
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Add `seconds` of processing to `user_id`'s usage today.
pub async fn add_processing_seconds<C: ConnectionTrait>(conn: &C, user_id: Uuid, seconds: f64) -> Result<(), DbErr> {
    use processing_usage::{Column, Entity};
    if !seconds.is_finite() || seconds <= 0.0 {
        return Ok(());
    }
    Entity::insert(processing_usage::ActiveModel {
        user_id: Set(user_id),
        day: Set(today()),
        seconds: Set(seconds),
        updated_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([Column::UserId, Column::Day])
            .value(Column::Seconds, Expr::col((Entity, Column::Seconds)).add(seconds))
            .value(Column::UpdatedAt, Expr::value(Utc::now()))
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Seconds of processing `user_id` used today.
pub async fn processing_seconds_today<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<f64, DbErr> {
    Ok(processing_usage::Entity::find_by_id((user_id, today())).one(conn).await?.map(|row| row.seconds).unwrap_or(0.0))
}
