//! TOTP two-factor sign-in in the database: the account's TOTP columns (sealed
//! secret, when it was switched on, the last step accepted) and its recovery codes
//! (the `totp_recovery_codes` table, stored as hashes). Every change of the columns
//! is conditional on the state it expects, so concurrent requests (on any replica)
//! settle on the row.

use chrono::{DateTime, Utc};
use entities::{totp_recovery_code, user};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

/// Store `sealed` as the account's pending secret (and forget the last step), only
/// while TOTP is off; `false` when it is on (nothing changed).
pub async fn set_pending_secret<C: ConnectionTrait>(conn: &C, user_id: Uuid, sealed: String) -> Result<bool, DbErr> {
    let updated = user::Entity::update_many()
        .col_expr(user::Column::TotpSecret, Expr::value(sealed))
        .col_expr(user::Column::TotpLastStep, Expr::value(Option::<i64>::None))
        .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::TotpEnabledAt.is_null())
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Switch TOTP on at `now` with `step` as the last step accepted, only if it is off
/// and the pending secret is still `pending`; `false` otherwise (nothing changed).
pub async fn switch_on<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    pending: &str,
    step: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let updated = user::Entity::update_many()
        .col_expr(user::Column::TotpEnabledAt, Expr::value(now))
        .col_expr(user::Column::TotpLastStep, Expr::value(step))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::TotpEnabledAt.is_null())
        .filter(user::Column::TotpSecret.eq(pending))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Move the last step accepted to `step`, only if TOTP is on and the last step is
/// earlier (or none). `reseal`: `(stored, resealed)` also replaces the secret, only
/// if it is still `stored`. `true` when this call took the step.
pub async fn advance_step<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    step: i64,
    reseal: Option<(&str, String)>,
) -> Result<bool, DbErr> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::TotpLastStep, Expr::value(step))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::TotpEnabledAt.is_not_null())
        .filter(Condition::any().add(user::Column::TotpLastStep.is_null()).add(user::Column::TotpLastStep.lt(step)));
    if let Some((stored, resealed)) = reseal {
        update = update
            .col_expr(user::Column::TotpSecret, Expr::value(resealed))
            .filter(user::Column::TotpSecret.eq(stored));
    }
    Ok(update.exec(conn).await?.rows_affected == 1)
}

/// Switch TOTP off: the secret, when it was switched on and the last step go, and
/// every recovery code.
pub async fn clear<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(user::Column::TotpSecret, Expr::value(Option::<String>::None))
        .col_expr(user::Column::TotpEnabledAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(user::Column::TotpLastStep, Expr::value(Option::<i64>::None))
        .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    delete_recovery_codes(conn, user_id).await
}

/// Delete every recovery code of the account.
async fn delete_recovery_codes<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<(), DbErr> {
    totp_recovery_code::Entity::delete_many().filter(totp_recovery_code::Column::UserId.eq(user_id)).exec(conn).await?;
    Ok(())
}

/// Replace the account's recovery codes with unused ones stored as `code_hashes`.
pub async fn replace_recovery_codes<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    code_hashes: Vec<String>,
) -> Result<(), DbErr> {
    delete_recovery_codes(conn, user_id).await?;
    let now = Utc::now();
    for code_hash in code_hashes {
        totp_recovery_code::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            code_hash: Set(code_hash),
            used_at: Set(None),
            created_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

/// Spend the account's unused recovery code stored as `code_hash`; `true` when this
/// call spent it.
pub async fn spend_recovery_code<C: ConnectionTrait>(conn: &C, user_id: Uuid, code_hash: &str) -> Result<bool, DbErr> {
    let spent = totp_recovery_code::Entity::update_many()
        .col_expr(totp_recovery_code::Column::UsedAt, Expr::value(Utc::now()))
        .filter(totp_recovery_code::Column::UserId.eq(user_id))
        .filter(totp_recovery_code::Column::CodeHash.eq(code_hash))
        .filter(totp_recovery_code::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(spent.rows_affected == 1)
}
