//! `[jobs]`: the durable queue's leases, retries and sweeps.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// Seconds a lease lasts without a heartbeat before the sweeper re-queues the job.
    pub lease_secs: u64,
    /// Seconds between lease renewals by a running worker (well under `lease_secs`).
    pub heartbeat_secs: u64,
    /// Attempts before a job is DEAD.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max_secs`.
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
    /// Seconds between sweeps for expired leases.
    pub sweep_interval_secs: u64,
    /// Milliseconds an idle scheduler waits before looking for work again.
    pub poll_interval_ms: u64,
    /// Lines kept in one job's log (the newest; readers are told how many went).
    pub log_max_lines: u64,
    /// Characters kept of one log line; the rest is cut with a marker saying how many.
    pub log_max_line_chars: u64,
    /// Lines a running job's pipeline may log per second (sustained)...
    pub log_lines_per_sec: u64,
    /// ...and at once; past both, lines are counted, not stored, and one line says
    /// how many were suppressed.
    pub log_burst: u64,
    /// Milliseconds between a `jobLog` subscription's own looks at the log (the
    /// notices of new lines are hints; this is the backstop when one is lost).
    pub log_poll_ms: u64,
    /// Seconds of media processing one user may use per UTC day; their further jobs
    /// wait (QUEUED, `Job.waitingFor: PROCESSING_BUDGET`) until the next day. 0: no budget.
    pub processing_budget_secs_per_day: u64,
    /// Seconds a transcode's outputs stay in storage after a newer transcode of the
    /// same video replaced them (players that loaded the old playlists can finish);
    /// then a DELETE_OBJECTS job removes them. 0: at once.
    pub retired_outputs_grace_secs: u64,
    /// When set (e.g. `gpu`), HIGH-preset transcodes are leased only by remote
    /// workers whose token carries this tag; other workers pass them over.
    pub high_preset_tag: Option<String>,
    /// Most videos one `transcodeBatch` may match; more is refused (BAD_USER_INPUT).
    pub max_batch_videos: u32,
    /// Priority of the jobs a batch enqueues: below uploads' (0), so a single upload
    /// or `transcode` never waits behind a batch. -1000..=1000.
    pub batch_priority: i32,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            heartbeat_secs: 5,
            max_attempts: 5,
            backoff_base_secs: 5,
            backoff_max_secs: 600,
            sweep_interval_secs: 5,
            poll_interval_ms: 500,
            log_max_lines: 200,
            log_max_line_chars: 2000,
            log_lines_per_sec: 20,
            log_burst: 50,
            log_poll_ms: 1000,
            processing_budget_secs_per_day: 0,
            retired_outputs_grace_secs: 6 * 3600,
            high_preset_tag: None,
            max_batch_videos: 100,
            batch_priority: -10,
        }
    }
}
