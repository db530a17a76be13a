//! Ends sessions nobody finished: OPEN uploads past `expires_at` become EXPIRED,
//! their bytes are removed and the video goes back to DRAFT. Sessions stuck in
//! COMPLETING (the process died mid-completion) are reopened, so the client's next
//! `completeUpload` (or final tus PATCH) runs the completion again.

use std::time::Duration;

use chrono::Utc;
use entities::{upload, UploadStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::error::AppResult;
use crate::startup::AppState;

/// Sessions handled per sweep; the next sweep takes the rest.
const BATCH: u64 = 100;
/// A completion takes seconds (download + probe); one this old has died.
const STUCK_COMPLETING_AFTER: chrono::Duration = chrono::Duration::minutes(15);

/// Sweep forever every `uploads.sweep_interval_secs` (spawned by startup).
pub async fn run(state: AppState) {
    let every = Duration::from_secs(state.settings.uploads.sweep_interval_secs.max(1));
    loop {
        actix_rt::time::sleep(every).await;
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "expired upload sessions"),
            Err(err) => err.log(),
        }
    }
}

/// Expire what is due now; returns how many sessions were expired.
pub async fn sweep_once(state: &AppState) -> AppResult<u64> {
    let due = upload::Entity::find()
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::ExpiresAt.lt(Utc::now()))
        .order_by_asc(upload::Column::ExpiresAt)
        .limit(BATCH)
        .all(&state.db)
        .await?;
    let stuck = upload::Entity::update_many()
        .col_expr(upload::Column::Status, Expr::value(UploadStatus::Open))
        .col_expr(upload::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(upload::Column::Status.eq(UploadStatus::Completing))
        .filter(upload::Column::UpdatedAt.lt(Utc::now() - STUCK_COMPLETING_AFTER))
        .exec(&state.db)
        .await?;
    if stuck.rows_affected > 0 {
        tracing::warn!(count = stuck.rows_affected, "reopened upload sessions stuck in COMPLETING");
    }
    let mut count = 0;
    for row in due {
        // Every byte is in and only completion failed (e.g. storage was down):
        // complete it rather than throw a whole upload away.
        if row.method == entities::UploadMethod::Tus && row.offset_bytes == row.declared_size {
            if let Err(err) = super::completion::complete(state, row.id).await {
                tracing::info!(upload = %row.id, code = err.code().as_str(), "completing a full upload at expiry failed");
            }
            continue;
        }
        super::abort::end_session(state, row.id, UploadStatus::Expired, "the upload session expired").await?;
        count += 1;
    }
    // Full tus uploads whose completion failed are completed on the next sweep too.
    let full = upload::Entity::find()
        .filter(upload::Column::Status.eq(UploadStatus::Open))
        .filter(upload::Column::Method.eq(entities::UploadMethod::Tus))
        .filter(
            sea_orm::sea_query::Expr::col(upload::Column::OffsetBytes)
                .eq(sea_orm::sea_query::Expr::col(upload::Column::DeclaredSize)),
        )
        .filter(upload::Column::UpdatedAt.lt(Utc::now() - chrono::TimeDelta::seconds(30)))
        .limit(BATCH)
        .all(&state.db)
        .await?;
    for row in full {
        if let Err(err) = super::completion::complete(state, row.id).await {
            tracing::info!(upload = %row.id, code = err.code().as_str(), "completing a full upload failed again");
        }
    }
    Ok(count)
}
