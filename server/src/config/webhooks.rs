//! `[webhooks]`: outbound event deliveries (targets, timeouts, retries, auto-disable).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow targets that resolve to loopback, private, link-local or otherwise
    /// internal addresses. Off by default: a webhook must not reach inside the network.
    pub allow_private_targets: bool,
    /// Run the delivery loop in `serve` processes.
    pub deliver: bool,
    /// Milliseconds an idle delivery loop waits before looking for due deliveries.
    pub poll_interval_ms: u64,
    /// Deliveries sent concurrently by one process.
    pub concurrency: usize,
    pub connect_timeout_ms: u64,
    /// Whole request, connect to the last byte read.
    pub timeout_ms: u64,
    /// Bytes of a response body read (for the error shown on a failure); the rest is ignored.
    pub max_response_bytes: usize,
    /// Seconds after the event (or a redelivery) during which failed attempts are retried.
    pub retry_for_secs: u64,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Deliveries that fail for good in a row before the endpoint is disabled.
    pub disable_after_failures: i32,
    /// Endpoints one user may register (global ones do not count); 0 means no cap.
    pub max_endpoints_per_user: u64,
    /// Also send the previous release's `Reelhouse-Webhook-{Id,Timestamp,Signature}`
    /// headers beside the Standard Webhooks ones. On in this release so receivers can
    /// move over; the headers and this setting go away in the next release.
    pub legacy_headers: bool,
    /// Most events one `replayWebhooks` call re-enqueues (also capped by the
    /// `webhook_replay` rate-limit policy's burst); the answer says where to go on.
    pub replay_max_events: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            deliver: true,
            poll_interval_ms: 1000,
            concurrency: 8,
            connect_timeout_ms: 5_000,
            timeout_ms: 15_000,
            max_response_bytes: 1024,
            retry_for_secs: 24 * 3600,
            backoff_base_ms: 10_000,
            backoff_max_ms: 3_600_000,
            disable_after_failures: 20,
            max_endpoints_per_user: 20,
            legacy_headers: true,
            replay_max_events: 200,
        }
    }
}
