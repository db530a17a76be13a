//! Batched reads for fields that every video of a list asks for (`renditions`,
//! `progress`, `stats`): one query per field for the whole page instead of one
//! per video.
//!
//! The loader lives in the schema's data, shared by all requests, and keeps
//! nothing itself: a batch is the keys asked for while one request's (or several
//! concurrent requests') siblings resolve together. Renditions and progress of a
//! video held by the video-row cache (`access::videos`) are answered from it
//! (it forgets a video the moment the video changes); only the others are read.
//! Callers are authorized before they get a `Video` at all, so a batch mixing
//! videos of different callers reveals nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};
use entities::rendition;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::access::videos::{CachedVideo, VideoCache};
use crate::error::AppError;
use crate::events::ProgressInfo;
use crate::repo::{videos, views};

/// The READY renditions of a video.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RenditionsOf(pub Uuid);

/// The progress of a video's running job.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProgressOf(pub Uuid);

/// A video's lifetime views and seconds watched.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotalsOf(pub Uuid);

pub struct VideoLoader {
    db: DatabaseConnection,
    videos: Arc<VideoCache>,
}

pub type VideoDataLoader = DataLoader<VideoLoader>;

/// The loader for the schema's data. Keys are gathered for as long as it takes the
/// siblings of a list to ask (they are polled together), not for a fixed wait, so
/// a single `video(id)` is not slowed down.
pub fn video_loader(db: DatabaseConnection, videos: Arc<VideoCache>) -> VideoDataLoader {
    DataLoader::new(VideoLoader { db, videos }, tokio::spawn).delay(Duration::ZERO).max_batch_size(200)
}

fn ids<K: Copy>(keys: &[K], id: impl Fn(K) -> Uuid) -> Vec<Uuid> {
    keys.iter().copied().map(id).collect()
}

impl VideoLoader {
    /// The keys' videos split into those the cache holds and the ids to read.
    fn cached_and_missing<K: Copy>(&self, keys: &[K], id: impl Fn(K) -> Uuid) -> (Vec<Arc<CachedVideo>>, Vec<Uuid>) {
        let mut cached = Vec::new();
        let mut missing = Vec::new();
        for key in keys {
            let video_id = id(*key);
            match self.videos.cached(video_id) {
                Some(video) => cached.push(video),
                None => missing.push(video_id),
            }
        }
        (cached, missing)
    }
}

impl Loader<RenditionsOf> for VideoLoader {
    type Value = Vec<rendition::Model>;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[RenditionsOf]) -> Result<HashMap<RenditionsOf, Self::Value>, Self::Error> {
        let (cached, missing) = self.cached_and_missing(keys, |k| k.0);
        let mut found: HashMap<RenditionsOf, Self::Value> =
            cached.iter().map(|video| (RenditionsOf(video.row.id), video.renditions.clone())).collect();
        if !missing.is_empty() {
            let read = videos::ready_renditions_of(&self.db, &missing).await.map_err(Arc::new)?;
            found.extend(read.into_iter().map(|(id, rows)| (RenditionsOf(id), rows)));
        }
        Ok(found)
    }
}

impl Loader<ProgressOf> for VideoLoader {
    type Value = ProgressInfo;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[ProgressOf]) -> Result<HashMap<ProgressOf, Self::Value>, Self::Error> {
        // Not from the video cache: workers write progress to the job row between
        // their PROGRESS events, so the row is the only current answer.
        let found = videos::running_progress_of(&self.db, &ids(keys, |k| k.0)).await.map_err(Arc::new)?;
        Ok(found.into_iter().map(|(id, progress)| (ProgressOf(id), progress)).collect())
    }
}

impl Loader<TotalsOf> for VideoLoader {
    type Value = (i64, f64);
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[TotalsOf]) -> Result<HashMap<TotalsOf, Self::Value>, Self::Error> {
        let found = views::totals_of(&self.db, &ids(keys, |k| k.0)).await.map_err(Arc::new)?;
        Ok(found.into_iter().map(|(id, totals)| (TotalsOf(id), totals)).collect())
    }
}
