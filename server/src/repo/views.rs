//! Views and watch time: a view counts at most once per viewer per dedupe window,
//! a heartbeat adds only the watch time wall-clock time allows, and every count
//! lands in the video's row for the day.
//!
//! Concurrency: the unique key `(video_id, viewer_key, window_start)` decides which
//! of many racing calls counts the view (`INSERT … ON CONFLICT DO NOTHING`); daily
//! rows are bumped with `INSERT … ON CONFLICT DO UPDATE`; watch time is a
//! compare-and-set on the view row, so concurrent heartbeats never both add the
//! same elapsed time. Each step is one transaction that starts with its write,
//! which serializes writers on SQLite and row-locks on PostgreSQL.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use entities::{video, video_daily_stat, video_view};
use hmac::{Hmac, Mac};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::views::ViewSettings;
use crate::error::AppError;
use crate::identity::{ClientInfo, Principal};
use crate::repo::videos::now_micros;

/// Compare-and-set attempts for one heartbeat before it gives up (adding nothing).
const HEARTBEAT_ATTEMPTS: usize = 5;

/// Who is watching, as stored: `u:{user id}` for signed-in viewers, otherwise
/// `a:` and an HMAC of client address and User-Agent under the server's URL-signing
/// key, so the raw address is never stored and the key cannot be reversed by
/// hashing guessed addresses without the secret.
pub fn viewer_key(signing_key: &[u8], viewer: Option<&Principal>, client: &ClientInfo) -> Result<String, AppError> {
    if let Some(principal) = viewer {
        return Ok(format!("u:{}", principal.user_id));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key).map_err(AppError::internal)?;
    mac.update(b"reelhouse-viewer-v1|");
    mac.update(client.ip.as_deref().unwrap_or("unknown").as_bytes());
    mac.update(b"|");
    mac.update(client.user_agent.as_deref().unwrap_or("").as_bytes());
    Ok(format!("a:{}", hex::encode(mac.finalize().into_bytes())))
}

/// Start of the dedupe window holding `at`: windows are aligned to the Unix epoch.
pub fn window_start(at: DateTime<Utc>, window_secs: u64) -> Result<DateTime<Utc>, AppError> {
    let window = i64::try_from(window_secs.max(1)).unwrap_or(i64::MAX);
    let secs = at.timestamp();
    DateTime::<Utc>::from_timestamp(secs - secs.rem_euclid(window), 0)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("window start out of range")))
}

/// The clock a heartbeat is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatClock {
    /// Seconds since the viewer's previous accepted heartbeat in this window.
    pub since_last_secs: f64,
    /// Seconds since the view was counted (the window's first call).
    pub since_view_secs: f64,
    /// Seconds already accepted in this window.
    pub watched_secs: f64,
}

/// Most watch time one heartbeat may add: what the client reports, no more than
/// the time since its previous heartbeat plus slack, the window's total no more
/// than the time since the view began plus slack (so rapid calls cannot each
/// claim the slack), and never past the video's duration within one window.
pub fn allowed_watch_seconds(reported: f64, clock: HeartbeatClock, slack_secs: f64, duration_secs: Option<f64>) -> f64 {
    let already_in_window = clock.watched_secs;
    let mut allowed = reported
        .min(clock.since_last_secs.max(0.0) + slack_secs)
        .min(clock.since_view_secs.max(0.0) + slack_secs - already_in_window);
    if let Some(duration) = duration_secs {
        allowed = allowed.min(duration - already_in_window);
    }
    allowed.max(0.0)
}

/// What one `recordView` call did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordedView {
    /// This call counted a new view (the first of this viewer in this window).
    pub counted: bool,
    /// Seconds of watch time accepted from this call.
    pub watch_seconds_added: f64,
}

/// Count a view of `video` by `viewer_key` (once per window) and add up to
/// `watched_secs` of watch time. The caller has checked that the viewer may read it.
#[tracing::instrument(skip_all, fields(video_id = %video.id), err(Debug))]
pub async fn record_view(
    db: &DatabaseConnection,
    video: &video::Model,
    viewer_key: &str,
    watched_secs: f64,
    settings: &ViewSettings,
) -> Result<RecordedView, AppError> {
    let now = now_micros();
    let window = window_start(now, settings.dedupe_window_secs)?;
    let txn = crate::db::begin_write(db).await.map_err(AppError::internal)?;
    let inserted = video_view::Entity::insert(video_view::ActiveModel {
        id: Set(Uuid::now_v7()),
        video_id: Set(video.id),
        viewer_key: Set(viewer_key.to_string()),
        window_start: Set(window),
        watch_seconds: Set(0.0),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            video_view::Column::VideoId,
            video_view::Column::ViewerKey,
            video_view::Column::WindowStart,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(&txn)
    .await
    .map_err(AppError::internal)?;
    let counted = inserted == 1;
    if counted {
        add_to_day(&txn, video.id, now.date_naive(), 1, 0.0).await?;
    }
    txn.commit().await.map_err(AppError::internal)?;

    let watch_seconds_added = if watched_secs > 0.0 {
        add_watch_time(db, video, viewer_key, window, watched_secs, settings).await?
    } else {
        0.0
    };
    Ok(RecordedView { counted, watch_seconds_added })
}

/// The heartbeat: a compare-and-set on the view row (its `watch_seconds` and
/// `updated_at` as read), so of two racing heartbeats one re-reads and is clamped
/// against the other's. Returns the seconds added.
async fn add_watch_time(
    db: &DatabaseConnection,
    video: &video::Model,
    viewer_key: &str,
    window: DateTime<Utc>,
    watched_secs: f64,
    settings: &ViewSettings,
) -> Result<f64, AppError> {
    let duration = video.duration_ms.map(|ms| ms as f64 / 1000.0);
    for _ in 0..HEARTBEAT_ATTEMPTS {
        let row = video_view::Entity::find()
            .filter(video_view::Column::VideoId.eq(video.id))
            .filter(video_view::Column::ViewerKey.eq(viewer_key))
            .filter(video_view::Column::WindowStart.eq(window))
            .one(db)
            .await
            .map_err(AppError::internal)?
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("view row vanished")))?;
        let now = now_micros();
        let secs = |delta: chrono::TimeDelta| delta.num_milliseconds() as f64 / 1000.0;
        let clock = HeartbeatClock {
            since_last_secs: secs(now - row.updated_at),
            since_view_secs: secs(now - row.created_at),
            watched_secs: row.watch_seconds,
        };
        let allowed = allowed_watch_seconds(watched_secs, clock, settings.heartbeat_slack_secs as f64, duration);
        let txn = crate::db::begin_write(db).await.map_err(AppError::internal)?;
        let updated = video_view::Entity::update_many()
            .col_expr(video_view::Column::WatchSeconds, Expr::value(row.watch_seconds + allowed))
            .col_expr(video_view::Column::UpdatedAt, Expr::value(now))
            .filter(video_view::Column::Id.eq(row.id))
            .filter(video_view::Column::WatchSeconds.eq(row.watch_seconds))
            .filter(video_view::Column::UpdatedAt.eq(row.updated_at))
            .exec(&txn)
            .await
            .map_err(AppError::internal)?;
        if updated.rows_affected == 1 {
            if allowed > 0.0 {
                add_to_day(&txn, video.id, now.date_naive(), 0, allowed).await?;
            }
            txn.commit().await.map_err(AppError::internal)?;
            return Ok(allowed);
        }
        txn.rollback().await.map_err(AppError::internal)?;
    }
    // Lost every race: another heartbeat of the same viewer was accepted meanwhile,
    // and it already covered this stretch of wall-clock time.
    Ok(0.0)
}

/// Add to a video's row for `day`, creating it.
async fn add_to_day<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    day: NaiveDate,
    views: i64,
    watch_seconds: f64,
) -> Result<(), AppError> {
    use video_daily_stat::{Column, Entity};
    Entity::insert(video_daily_stat::ActiveModel {
        video_id: Set(video_id),
        day: Set(day),
        views: Set(views),
        watch_seconds: Set(watch_seconds),
    })
    .on_conflict(
        OnConflict::columns([Column::VideoId, Column::Day])
            .value(Column::Views, Expr::col((Entity, Column::Views)).add(views))
            .value(Column::WatchSeconds, Expr::col((Entity, Column::WatchSeconds)).add(watch_seconds))
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await
    .map_err(AppError::internal)?;
    Ok(())
}

/// Views and seconds watched over each video's life (videos without any are
/// absent from the map). One query for any number of videos.
// SUM(bigint) is numeric on PostgreSQL; the casts keep both backends at BIGINT/DOUBLE.
pub async fn totals_of<C: ConnectionTrait>(
    conn: &C,
    video_ids: &[Uuid],
) -> Result<HashMap<Uuid, (i64, f64)>, AppError> {
    let rows: Vec<(Uuid, i64, f64)> = video_daily_stat::Entity::find()
        .select_only()
        .column(video_daily_stat::Column::VideoId)
        .column_as(Expr::cust("CAST(COALESCE(SUM(views), 0) AS BIGINT)"), "views")
        .column_as(Expr::cust("CAST(COALESCE(SUM(watch_seconds), 0) AS DOUBLE PRECISION)"), "watch_seconds")
        .filter(video_daily_stat::Column::VideoId.is_in(video_ids.iter().copied()))
        .group_by(video_daily_stat::Column::VideoId)
        .into_tuple()
        .all(conn)
        .await
        .map_err(AppError::internal)?;
    Ok(rows.into_iter().map(|(id, views, seconds)| (id, (views, seconds))).collect())
}

/// A video's daily rows from `from` to `to` (inclusive), oldest first; days without
/// a row had no activity.
pub async fn daily<C: ConnectionTrait>(
    conn: &C,
    video_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<video_daily_stat::Model>, AppError> {
    video_daily_stat::Entity::find()
        .filter(video_daily_stat::Column::VideoId.eq(video_id))
        .filter(video_daily_stat::Column::Day.between(from, to))
        .order_by_asc(video_daily_stat::Column::Day)
        .all(conn)
        .await
        .map_err(AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let at = DateTime::<Utc>::from_timestamp(3_600 * 10 + 1_799, 5).unwrap();
        assert_eq!(window_start(at, 1_800).unwrap().timestamp(), 3_600 * 10);
        let next = DateTime::<Utc>::from_timestamp(3_600 * 10 + 1_800, 0).unwrap();
        assert_eq!(window_start(next, 1_800).unwrap().timestamp(), 3_600 * 10 + 1_800);
    }

    #[test]
    fn heartbeats_are_clamped_to_wall_clock_and_duration() {
        let clock = |since_last_secs, since_view_secs, watched_secs| HeartbeatClock {
            since_last_secs,
            since_view_secs,
            watched_secs,
        };
        assert_eq!(allowed_watch_seconds(10.0, clock(10.0, 100.0, 0.0), 5.0, None), 10.0);
        // More than has passed since the previous heartbeat.
        assert_eq!(allowed_watch_seconds(1_000.0, clock(10.0, 100.0, 0.0), 5.0, None), 15.0);
        // Rapid heartbeats share one slack: the window's total follows the clock.
        assert_eq!(allowed_watch_seconds(10.0, clock(0.5, 1.0, 5.0), 5.0, None), 1.0);
        // The duration caps a window.
        assert_eq!(allowed_watch_seconds(1_000.0, clock(100.0, 100.0, 20.0), 5.0, Some(30.0)), 10.0);
        assert_eq!(allowed_watch_seconds(5.0, clock(100.0, 100.0, 30.0), 5.0, Some(30.0)), 0.0);
        assert_eq!(allowed_watch_seconds(5.0, clock(-3.0, -3.0, 0.0), 0.0, None), 0.0);
    }

    #[test]
    fn anonymous_viewer_keys_hide_the_address_and_tell_agents_apart() {
        let client =
            |ua: &str| ClientInfo { ip: Some("203.0.113.9".into()), user_agent: Some(ua.into()), request_id: None };
        let a = viewer_key(b"secret", None, &client("Firefox")).unwrap();
        let b = viewer_key(b"secret", None, &client("Chrome")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, viewer_key(b"secret", None, &client("Firefox")).unwrap());
        assert!(!a.contains("203.0.113.9"));
        assert_ne!(a, viewer_key(b"other", None, &client("Firefox")).unwrap());
    }
}
