//! The one GraphQL shape of a running job's progress (`Video.progress`,
//! `Job.progress`, `VideoEvent.progress`).

use async_graphql::SimpleObject;

use crate::events::ProgressInfo;

/// Where a running job stands.
#[derive(SimpleObject, Debug, Clone)]
pub struct Progress {
    /// 0..=100 over the whole job.
    pub percent: f64,
    /// probing | encoding | packaging | uploading
    pub stage: String,
    /// Source frames per second while encoding.
    pub fps: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// Per rendition while the ladder encodes.
    pub renditions: Vec<RenditionProgress>,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct RenditionProgress {
    pub name: String,
    pub percent: f64,
}

impl From<ProgressInfo> for Progress {
    fn from(p: ProgressInfo) -> Self {
        Self {
            percent: p.percent,
            stage: p.stage,
            fps: p.fps,
            eta_seconds: p.eta_seconds,
            renditions: p
                .renditions
                .into_iter()
                .map(|r| RenditionProgress { name: r.name, percent: r.percent })
                .collect(),
        }
    }
}
