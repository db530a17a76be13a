//! Views and stats in GraphQL: `recordView` (the player's beacon and heartbeat),
//! `Video.stats`, and the owner's per-day `videoStats`.

use async_graphql::{
    Context, ErrorExtensions, InputValueError, InputValueResult, Object, Scalar, ScalarType, SimpleObject, Value, ID,
};
use chrono::{NaiveDate, TimeDelta, Utc};
use entities::VideoStatus;

use crate::auth::principal::ClientInfo;
use crate::auth::roles::{require_principal, AuthenticatedGuard};
use crate::error::AppError;
use crate::error::GqlResultExt;
use crate::graphql::videos::{parse_video_id, viewer};
use crate::repo::videos::{find_readable, is_owner_or_moderator};
use crate::repo::views as repo;
use crate::state::AppState;

/// Longest range `videoStats` answers, in days.
const MAX_STATS_DAYS: i64 = 366;
/// Range of `videoStats` when `from` is left out: this many days ending at `to`.
const DEFAULT_STATS_DAYS: i64 = 30;

/// A calendar day (UTC), `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom("expected a date like 2026-11-22")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// Views counted and seconds watched.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct VideoStats {
    pub views: i64,
    pub watch_seconds: f64,
}

/// One day of a video's stats.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct DailyStats {
    pub day: Date,
    pub views: i64,
    pub watch_seconds: f64,
}

/// What one `recordView` call did.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct ViewRecorded {
    /// This call counted a view: the viewer's first in this dedupe window.
    pub counted: bool,
    /// Seconds of watch time accepted from this call (after clamping).
    pub watch_seconds_added: f64,
}

/// Every day from `from` to `to`, zeros where nothing happened.
fn dense_days(from: NaiveDate, to: NaiveDate, rows: Vec<entities::video_daily_stat::Model>) -> Vec<DailyStats> {
    let mut rows = rows.into_iter().peekable();
    from.iter_days()
        .take_while(|day| *day <= to)
        .map(|day| match rows.next_if(|row| row.day == day) {
            Some(row) => DailyStats { day: Date(day), views: row.views, watch_seconds: row.watch_seconds },
            None => DailyStats { day: Date(day), views: 0, watch_seconds: 0.0 },
        })
        .collect()
}

#[derive(Default)]
pub struct ViewsQuery;

#[Object]
impl ViewsQuery {
    /// A video's stats per UTC day, oldest first, one entry per day of the range
    /// (`to` defaults to today, `from` to 29 days before `to`; at most 366 days).
    /// Only its owner, moderators and admins: FORBIDDEN for others who may read
    /// the video, NOT_FOUND for those who may not.
    #[graphql(guard = "AuthenticatedGuard")]
    async fn video_stats(
        &self,
        ctx: &Context<'_>,
        video_id: ID,
        from: Option<Date>,
        to: Option<Date>,
    ) -> async_graphql::Result<Vec<DailyStats>> {
        let state = ctx.data::<AppState>()?;
        let principal = require_principal(ctx).gql()?;
        let id = parse_video_id(&video_id).gql()?;
        let to = to.map_or_else(|| Utc::now().date_naive(), |d| d.0);
        let from = from.map_or_else(|| to - TimeDelta::days(DEFAULT_STATS_DAYS - 1), |d| d.0);
        if from > to {
            return Err(AppError::bad_input("`from` must not be after `to`").extend());
        }
        if (to - from).num_days() >= MAX_STATS_DAYS {
            return Err(AppError::bad_input(format!("at most {MAX_STATS_DAYS} days at once")).extend());
        }
        let video = find_readable(&state.db, Some(principal), id).await.gql()?;
        if !is_owner_or_moderator(Some(principal), &video) {
            return Err(AppError::forbidden("only the owner and moderators see a video's stats").extend());
        }
        let rows = repo::daily(&state.db, id, from, to).await.gql()?;
        Ok(dense_days(from, to, rows))
    }
}

#[derive(Default)]
pub struct ViewsMutation;

#[Object]
impl ViewsMutation {
    /// A player's beacon: call it when playback starts and then as a heartbeat
    /// with the seconds watched since the previous call. A view counts at most once
    /// per viewer (the signed-in user, else address + User-Agent) per
    /// `views.dedupe_window_secs`; watch time is clamped to the wall-clock time since
    /// the viewer's previous call (plus slack) and to the video's duration per
    /// window. Anonymous callers may record views of videos they may read;
    /// NOT_FOUND for the others.
    async fn record_view(
        &self,
        ctx: &Context<'_>,
        video_id: ID,
        #[graphql(desc = "Seconds watched since this viewer's previous call; 0 when omitted.")] watched_seconds: Option<
            f64,
        >,
    ) -> async_graphql::Result<ViewRecorded> {
        let state = ctx.data::<AppState>()?;
        let viewer = viewer(ctx);
        let watched = watched_seconds.unwrap_or(0.0);
        if !watched.is_finite() || watched < 0.0 {
            return Err(AppError::bad_input("watchedSeconds must be a non-negative number").extend());
        }
        let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
        let subject = match viewer {
            Some(principal) => format!("user:{}", principal.user_id),
            None => crate::limits::ip_subject(client.ip.as_deref().unwrap_or("unknown")),
        };
        state.limiter.enforce(crate::limits::Policy::Views, subject, 1).await.gql()?;
        let id = parse_video_id(&video_id).gql()?;
        let video = find_readable(&state.db, viewer, id).await.gql()?;
        if video.status != VideoStatus::Ready {
            return Err(AppError::bad_input("only READY videos can be watched").extend());
        }
        let key = repo::viewer_key(&state.keys.url_signing, viewer, &client).gql()?;
        let recorded = repo::record_view(&state.db, &video, &key, watched, &state.settings.views).await.gql()?;
        if recorded.counted {
            metrics::counter!("reelhouse_views_total").increment(1);
        }
        Ok(ViewRecorded { counted: recorded.counted, watch_seconds_added: recorded.watch_seconds_added })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_without_rows_are_zero() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let row = entities::video_daily_stat::Model {
            video_id: uuid::Uuid::nil(),
            day: day(21),
            views: 3,
            watch_seconds: 12.5,
        };
        let days = dense_days(day(20), day(22), vec![row]);
        let views: Vec<i64> = days.iter().map(|d| d.views).collect();
        assert_eq!(views, [0, 3, 0]);
        assert_eq!(days[1].day, Date(day(21)));
    }
}
