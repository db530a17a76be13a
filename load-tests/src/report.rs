//! The run report: a human summary and one line of JSON (the last line with `--json`).
//! Field names are a contract for scripts (`scripts/test-load.sh`, `scripts/bench-load.py`);
//! `tests/report_schema.rs` pins them.

use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, Stats};

/// Bumped when a field is renamed or removed (adding one is compatible).
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub scenario: String,
    pub target: String,
    pub users: usize,
    pub subscribers: usize,
    /// Wall time of the measured part of the run.
    pub duration_s: f64,
    /// API calls made (GraphQL over HTTP, upload PUT/PATCH).
    pub requests: u64,
    /// Failed calls: non-2xx status, a GraphQL `errors` array, a refused or broken
    /// WebSocket, a subscription error, a video that did not reach READY in time.
    pub errors: u64,
    /// The first few error messages, to explain `errors`.
    pub error_samples: Vec<String>,
    /// Refusals for a rate limit (HTTP 429, a WebSocket upgrade refused with 429, a
    /// socket closed with 4429, an operation refused with `RATE_LIMITED`). Each was
    /// waited for (`Retry-After`, else exponential backoff with jitter) and retried;
    /// they are not `errors` (a call still refused after its backoff budget is one error).
    #[serde(default)]
    pub rate_limited: u64,
    /// Time spent waiting on those refusals, summed over calls, seconds.
    #[serde(default)]
    pub rate_limit_wait_s: f64,
    /// The first few refusals, to explain `rate_limited`.
    #[serde(default)]
    pub rate_limit_samples: Vec<String>,
    /// Set when the target limits the harness (announced rate-limit policy, or any
    /// refusal): what was seen and how to turn the limits off on the server.
    #[serde(default)]
    pub rate_limit_note: Option<String>,
    pub rps: f64,
    /// Latency of API calls (GraphQL over HTTP), milliseconds.
    pub api_latency_ms: Percentiles,
    pub subscriptions: u64,
    /// Feeds resumed (`videoEvents(after:)`) after the server closed them for an
    /// expired access token; what they missed meanwhile counts in `lost_events`.
    pub reconnects: u64,
    /// Feeds the server ended with `SLOW_CONSUMER` and the harness resumed after the
    /// cursor it named; what they missed meanwhile counts in `lost_events`.
    pub slow_consumer_resumes: u64,
    pub events_received: u64,
    /// Stored (state) events a subscriber should have received and did not: gaps in a
    /// video's event sequence, and events after the last one it saw, up to the video's
    /// final sequence number read from a fresh snapshot at the end.
    pub lost_events: u64,
    /// Stored events received twice by one subscriber (same cursor), and extra READYs.
    pub duplicate_events: u64,
    /// Event delivery latency: the event's `at` (publish time, server clock) to receipt.
    pub event_delivery_ms: Percentiles,
    pub uploads: UploadSummary,
    /// From the end of an upload (completeUpload / last tus byte) to its READY event.
    pub time_to_ready_ms: Percentiles,
    pub videos_ready: u64,
    pub fanout: Option<FanoutSummary>,
    pub api_bench: Option<ApiBench>,
    pub rss: Option<RssSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadSummary {
    pub count: u64,
    pub bytes: u64,
    /// Bytes over time spent sending them, per upload, summed over uploads (MiB/s).
    pub throughput_mib_s: f64,
    /// Whole upload (ticket, bytes, completion), milliseconds.
    pub latency_ms: Percentiles,
}

/// One fan-out measurement: M subscribers on one video, several events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FanoutSide {
    pub subscribers: usize,
    /// Events published and fully delivered (every subscriber got it).
    pub events: u64,
    /// Per event: publish to the last subscriber's receipt, milliseconds.
    pub last_client_ms: Percentiles,
    /// Per delivery: publish to receipt, milliseconds.
    pub delivery_ms: Percentiles,
    pub lost_events: u64,
    pub connect_s: f64,
    /// Server RSS growth per connected idle subscriber (KiB), when the RSS was sampled.
    pub rss_per_subscriber_kib: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FanoutSummary {
    pub reelhouse: FanoutSide,
    /// Raw Redis subscriber + bare actix WebSocket broadcast of the same bytes, same run.
    pub baseline: Option<FanoutSide>,
    /// reelhouse / baseline, at p50 and p99 of publish→last client.
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    /// The peer stack (Node.js, graphql-ws, graphql-redis-subscriptions) serving the
    /// same subscription with the same selection, same run (`--peer`).
    #[serde(default)]
    pub peer: Option<FanoutSide>,
    /// reelhouse / peer, at p50 and p99 of publish→last client (below 1: reelhouse faster).
    #[serde(default)]
    pub peer_ratio_p50: Option<f64>,
    #[serde(default)]
    pub peer_ratio_p99: Option<f64>,
}

/// One closed- or open-loop measurement of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub latency_ms: Percentiles,
}

/// `video(id)` with a JWT vs a bare actix endpoint returning the same JSON bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiBench {
    pub concurrency: usize,
    pub response_bytes: usize,
    pub baseline_max: LoadPoint,
    pub reelhouse_max: LoadPoint,
    /// reelhouse max rps / baseline max rps.
    pub rps_ratio: f64,
    /// Open loop at half of reelhouse's max rps.
    pub half_load_rps: f64,
    pub baseline_half: LoadPoint,
    pub reelhouse_half: LoadPoint,
    /// The same half load while uploads are being encoded.
    pub reelhouse_half_encoding: Option<LoadPoint>,
    /// p99 while encoding / p99 idle.
    pub encoding_p99_ratio: Option<f64>,
    /// reelhouse closed loop with the document named by its hash (Apollo persisted
    /// query: no document sent, none parsed), same response bytes.
    #[serde(default)]
    pub reelhouse_max_persisted: Option<LoadPoint>,
    /// reelhouse persisted max rps / baseline max rps.
    #[serde(default)]
    pub rps_ratio_persisted: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RssSummary {
    /// Where the figure came from: `metrics` (GET /metrics) or `proc` (/proc/PID/status).
    pub source: String,
    pub samples: u64,
    pub first_kib: u64,
    pub last_kib: u64,
    pub peak_kib: u64,
    /// The highest sample of each whole or partial minute of the run, in order (a
    /// long run's trend: flat, or growing).
    #[serde(default)]
    pub per_minute_peak_kib: Vec<u64>,
}

/// What the refusals say about the target: limited (429s), or only busy (503s).
fn rate_limit_note(stats: &Stats) -> Option<String> {
    let refused = Stats::get(&stats.rate_limited);
    let busy = Stats::get(&stats.busy);
    if refused > busy {
        Some(format!(
            "the target refused {} calls for a rate limit ({busy} more as busy, 503 with Retry-After); {}",
            refused - busy,
            crate::backoff::HOW_TO_TURN_OFF
        ))
    } else if busy > 0 {
        Some(format!("the target answered {busy} calls busy (503 with Retry-After); they were waited for and retried"))
    } else {
        None
    }
}

impl Report {
    /// The counters and histograms of `stats`; scenario-specific parts are filled by the caller.
    pub fn from_stats(stats: &Stats, duration_s: f64) -> Self {
        let requests = Stats::get(&stats.requests);
        let upload_bytes = Stats::get(&stats.upload_bytes);
        let upload_secs = Stats::get(&stats.upload_micros) as f64 / 1e6;
        Self {
            version: REPORT_VERSION,
            duration_s,
            requests,
            errors: Stats::get(&stats.errors),
            error_samples: stats.error_samples(),
            rate_limited: Stats::get(&stats.rate_limited),
            rate_limit_wait_s: Stats::get(&stats.rate_limit_wait_micros) as f64 / 1e6,
            rate_limit_samples: stats.rate_limit_samples(),
            rate_limit_note: rate_limit_note(stats),
            rps: if duration_s > 0.0 { requests as f64 / duration_s } else { 0.0 },
            api_latency_ms: stats.api.summary(),
            subscriptions: Stats::get(&stats.subscriptions),
            reconnects: Stats::get(&stats.reconnects),
            slow_consumer_resumes: Stats::get(&stats.slow_consumer_resumes),
            events_received: Stats::get(&stats.events_received),
            lost_events: Stats::get(&stats.lost_events),
            duplicate_events: Stats::get(&stats.duplicate_events),
            event_delivery_ms: stats.delivery.summary(),
            uploads: UploadSummary {
                count: Stats::get(&stats.uploads),
                bytes: upload_bytes,
                throughput_mib_s: if upload_secs > 0.0 { upload_bytes as f64 / 1048576.0 / upload_secs } else { 0.0 },
                latency_ms: stats.upload.summary(),
            },
            time_to_ready_ms: stats.time_to_ready.summary(),
            videos_ready: Stats::get(&stats.videos_ready),
            ..Self::default()
        }
    }

    /// The human summary printed at the end of a run.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
                p.p50, p.p95, p.p99, p.max, p.count
            )
        };
        out.push_str(&format!(
            "reelhouse-load: scenario {} against {} — {} users, {} subscribers, {:.1} s\n",
            self.scenario, self.target, self.users, self.subscribers, self.duration_s
        ));
        out.push_str(&format!("  requests      {} ({:.1}/s), errors {}\n", self.requests, self.rps, self.errors));
        for sample in self.error_samples.iter().take(5) {
            out.push_str(&format!("    error: {sample}\n"));
        }
        if self.rate_limited > 0 || self.rate_limit_note.is_some() {
            out.push_str(&format!(
                "  rate-limited  {} refusals (not counted as errors), {:.1} s spent backing off\n",
                self.rate_limited, self.rate_limit_wait_s
            ));
            for sample in self.rate_limit_samples.iter().take(3) {
                out.push_str(&format!("    refused: {sample}\n"));
            }
            if let Some(note) = &self.rate_limit_note {
                out.push_str(&format!("    note: {note}\n"));
            }
        }
        out.push_str(&format!("  API latency   {}\n", p(&self.api_latency_ms)));
        out.push_str(&format!(
            "  events        {} received on {} subscriptions ({} resumed after token expiry, {} after SLOW_CONSUMER), {} lost, {} duplicate\n",
            self.events_received,
            self.subscriptions,
            self.reconnects,
            self.slow_consumer_resumes,
            self.lost_events,
            self.duplicate_events
        ));
        out.push_str(&format!("  delivery      {}\n", p(&self.event_delivery_ms)));
        if self.uploads.count > 0 {
            out.push_str(&format!(
                "  uploads       {} ({:.1} MiB, {:.1} MiB/s per upload), {}\n",
                self.uploads.count,
                self.uploads.bytes as f64 / 1048576.0,
                self.uploads.throughput_mib_s,
                p(&self.uploads.latency_ms)
            ));
        }
        if self.videos_ready > 0 || self.time_to_ready_ms.count > 0 {
            out.push_str(&format!("  to READY      {} videos, {}\n", self.videos_ready, p(&self.time_to_ready_ms)));
        }
        if let Some(f) = &self.fanout {
            out.push_str(&format!(
                "  fan-out       reelhouse: {} subscribers, {} events, last client {}\n",
                f.reelhouse.subscribers,
                f.reelhouse.events,
                p(&f.reelhouse.last_client_ms)
            ));
            if let Some(b) = &f.baseline {
                out.push_str(&format!(
                    "                baseline:  {} subscribers, {} events, last client {}\n",
                    b.subscribers,
                    b.events,
                    p(&b.last_client_ms)
                ));
            }
            if let (Some(r50), Some(r99)) = (f.ratio_p50, f.ratio_p99) {
                out.push_str(&format!("                ratio vs baseline: p50 {r50:.2}x, p99 {r99:.2}x\n"));
            }
            if let Some(peer) = &f.peer {
                out.push_str(&format!(
                    "                peer:      {} subscribers, {} events, last client {}, {} lost\n",
                    peer.subscribers,
                    peer.events,
                    p(&peer.last_client_ms),
                    peer.lost_events
                ));
            }
            if let (Some(r50), Some(r99)) = (f.peer_ratio_p50, f.peer_ratio_p99) {
                out.push_str(&format!("                ratio vs peer: p50 {r50:.2}x, p99 {r99:.2}x\n"));
            }
            if let Some(kib) = f.reelhouse.rss_per_subscriber_kib {
                out.push_str(&format!("                server RSS per idle subscriber: {kib:.1} KiB\n"));
            }
        }
        if let Some(a) = &self.api_bench {
            out.push_str(&format!(
                "  API bench     max rps: reelhouse {:.0} vs bare actix {:.0} = {:.2}x\n",
                a.reelhouse_max.rps, a.baseline_max.rps, a.rps_ratio
            ));
            if let (Some(pq), Some(r)) = (&a.reelhouse_max_persisted, a.rps_ratio_persisted) {
                out.push_str(&format!(
                    "                persisted query: reelhouse {:.0} = {r:.2}x bare actix\n",
                    pq.rps
                ));
            }
            out.push_str(&format!(
                "                at {:.0} rps: reelhouse {}\n                              bare actix {}\n",
                a.half_load_rps,
                p(&a.reelhouse_half.latency_ms),
                p(&a.baseline_half.latency_ms)
            ));
            if let (Some(e), Some(r)) = (&a.reelhouse_half_encoding, a.encoding_p99_ratio) {
                out.push_str(&format!("                while encoding: {} ({r:.2}x idle p99)\n", p(&e.latency_ms)));
            }
        }
        if let Some(r) = &self.rss {
            out.push_str(&format!(
                "  server RSS    {} samples via {}: first {} KiB, last {} KiB, peak {} KiB\n",
                r.samples, r.source, r.first_kib, r.last_kib, r.peak_kib
            ));
            if r.per_minute_peak_kib.len() > 1 {
                let mib: Vec<String> = r.per_minute_peak_kib.iter().map(|k| format!("{}", k / 1024)).collect();
                out.push_str(&format!("                peak MiB per minute: {}\n", mib.join(" ")));
            }
        }
        out
    }
}
