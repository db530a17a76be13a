//! Logs and metrics. Each is installed once per process (GStreamer's log bridge is
//! `media::log_bridge`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// Keeps the file-log writer and the trace exporter alive; drop it last so buffered
/// lines are flushed and the last spans are exported.
pub struct TelemetryGuard {
    _file: Option<WorkerGuard>,
    traces: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("reelhouse: exporting the last traces failed: {err}");
            }
        }
    }
}

/// Install the global tracing subscriber: pretty or JSON on stderr, plus optional
/// daily-rotated files keeping `log_retention_days` files. `RUST_LOG` overrides the
/// configured level when set. With `traces` (the process's role, `api` or `worker`)
/// spans are also exported over OTLP when the standard OpenTelemetry variables ask
/// for it (see [`traces::from_env`]). Returns an error if a subscriber is already
/// installed or the trace settings are wrong.
pub fn init_tracing(settings: &TelemetrySettings, traces: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    let filter = || {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|value| EnvFilter::try_new(value).ok())
            .unwrap_or_else(|| EnvFilter::new(&settings.level))
    };
    let stderr = match settings.format {
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).with_target(true).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter());

    let (file_layer, guard) = match &settings.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("reelhouse")
                .filename_suffix("log")
                .max_log_files(settings.log_retention_days.max(1))
                .build(dir)?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer().json().flatten_event(true).with_writer(writer).with_filter(filter());
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };

    // The W3C trace-context format for `traceparent` (read from requests, written to
    // jobs, deliveries and webhook requests). Span contexts exist only where spans
    // are exported: a process without export neither continues nor hands on a trace.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match traces {
        Some(role) => traces::from_env(role)?,
        None => None,
    };
    let otel_layer = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("reelhouse");
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(traces::filter())
    });
    tracing_subscriber::registry().with(stderr).with(file_layer).with(otel_layer).try_init()?;
    if let Some(role) = traces.filter(|_| provider.is_some()) {
        TRACES_EXPORTED.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(role, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { _file: guard, traces: provider })
}

static TRACES_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans (so per-resolver GraphQL spans are worth making).
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// OpenTelemetry trace export and W3C trace-context propagation.
///
/// Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
/// set (and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`). Spans go
/// over OTLP/HTTP with protobuf bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, the
/// only protocol built in: port 4318 of a collector), batched on a background thread.
/// `OTEL_SERVICE_NAME` (default `reelhouse`), `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` and the exporter's headers and
/// timeout variables are read by the OpenTelemetry SDK as the specification says.
pub mod traces {
    use std::collections::HashMap;

    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::EnvFilter;

    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// Whether the environment asks for trace export.
    pub fn enabled() -> bool {
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter_off = env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
        endpoint.is_some() && !disabled && !exporter_off
    }

    /// The tracer provider the environment asks for, or `None` when export is off.
    pub fn from_env(role: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
        if !enabled() {
            return Ok(None);
        }
        let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
            anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: reelhouse exports traces over \
                 http/protobuf (a collector's port 4318)"
            );
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| anyhow::anyhow!("configuring the OTLP trace exporter: {e}"))?;
        let mut resource =
            Resource::builder().with_attribute(opentelemetry::KeyValue::new("reelhouse.role", role.to_string()));
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("reelhouse");
        }
        Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build()))
    }

    /// Which spans are exported: `OTEL_LOG_LEVEL`-independent, `info` and above of
    /// reelhouse and the HTTP layer (never GStreamer's log, which is not spans).
    pub fn filter() -> EnvFilter {
        EnvFilter::new("info,gstreamer=off,h2=off,hyper=off,reqwest=off,sqlx=off")
    }

    struct Carrier<'a>(&'a mut HashMap<String, String>);

    impl Injector for Carrier<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }

    struct Reader<'a>(&'a str);

    impl Extractor for Reader<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }

    /// The W3C `traceparent` of the current span, when it belongs to a trace (a
    /// process that exports spans, or a request that came with a `traceparent`).
    pub fn current_traceparent() -> Option<String> {
        let context = tracing::Span::current().context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut Carrier(&mut fields));
        fields.remove("traceparent")
    }

    /// The trace id of `span` in hex, when it belongs to a trace.
    pub fn trace_id(span: &tracing::Span) -> Option<String> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| span_context.trace_id().to_string())
    }

    /// Link `span` (which starts a trace of its own) to the span `traceparent`
    /// names, without continuing its trace or taking its sampling decision: how a
    /// request from an untrusted caller keeps the caller's context (W3C Trace
    /// Context, "restarting" the trace). No-op for a malformed value.
    pub fn add_link(span: &tracing::Span, traceparent: &str) {
        let context = TraceContextPropagator::new().extract(&Reader(traceparent));
        let span_context = context.span().span_context().clone();
        if span_context.is_valid() {
            span.add_link_with_attributes(
                span_context,
                vec![opentelemetry::KeyValue::new("reelhouse.link", "untrusted traceparent")],
            );
        }
    }

    /// Make `span` a child of the span `traceparent` names (no-op for `None` or a
    /// malformed value: the span starts a trace of its own).
    pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
        let Some(traceparent) = traceparent else { return };
        let context = TraceContextPropagator::new().extract(&Reader(traceparent));
        if context.span().span_context().is_valid() {
            let _ = span.set_parent(context);
        }
    }
}

/// Background loops restarted after a panic (`actors::supervise`), by loop.
pub const LOOP_RESTARTS_METRIC: &str = "reelhouse_loop_restarts_total";

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use), with every
/// metric of [`METRICS`] and the standard `process_*` metrics described. Metric
/// names are prefixed `reelhouse_` (the `process_*` ones keep their standard names).
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(ENCODE_FPS.into()),
                        &[1.0, 5.0, 10.0, 15.0, 24.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0],
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(JOB_ATTEMPT_SECONDS.into()),
                        &[0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0],
                    )
                })
                .and_then(|builder| builder.install_recorder())
                .map_err(|e| e.to_string())?;
            describe_metrics();
            process_collector().describe();
            Ok(handle)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

/// The Prometheus text of every metric of this process, with the `process_*`
/// metrics read now.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// How a metric is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric the server emits: its name, kind, unit and `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: MetricKind,
    pub unit: Option<metrics::Unit>,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> MetricInfo {
    MetricInfo { name, kind: MetricKind::Counter, unit: Some(metrics::Unit::Count), help }
}
const fn gauge(name: &'static str, unit: Option<metrics::Unit>, help: &'static str) -> MetricInfo {
    MetricInfo { name, kind: MetricKind::Gauge, unit, help }
}
const fn seconds(name: &'static str, help: &'static str) -> MetricInfo {
    MetricInfo { name, kind: MetricKind::Histogram, unit: Some(metrics::Unit::Seconds), help }
}

/// Duration of job attempts (minutes, for transcodes: buckets of their own).
pub const JOB_ATTEMPT_SECONDS: &str = "reelhouse_job_attempt_duration_seconds";

/// Samples of the encode rate of running transcodes (source frames per second).
pub const ENCODE_FPS: &str = "reelhouse_encode_fps";

/// Every metric the server emits, in one place: [`prometheus`] describes them all,
/// so each has a `# HELP` line. A test collects the names used in the source and
/// fails when one is missing here (or listed here and no longer emitted); another
/// scrapes a live server and fails on any `# TYPE` without `# HELP`.
/// The standard `process_*` metrics come from `metrics-process` and are described there.
pub const METRICS: &[MetricInfo] = {
    use metrics::Unit;
    &[
        // HTTP
        counter("reelhouse_http_requests_total", "HTTP requests answered, by method, matched route pattern and status."),
        seconds(
            "reelhouse_http_request_duration_seconds",
            "Seconds from a request's arrival to its response head, by method, route pattern and status.",
        ),
        counter("reelhouse_rate_limited_total", "Requests and operations refused by a rate limit, by policy."),
        counter(
            "reelhouse_rate_limit_backend_errors_total",
            "Rate-limit checks that could not reach Redis (then decided locally or refused, per policy), by policy.",
        ),
        counter("reelhouse_login_backoff_refusals_total", "Sign-ins refused because the account is backing off after failures."),
        counter(
            "reelhouse_password_hashing_refused_total",
            "Password hashes or checks refused (UNAVAILABLE) because every hashing slot was busy.",
        ),
        gauge(
            "reelhouse_dependency_up",
            None,
            "1 when the dependency answered the last /ready check of this process, 0 when not, by dependency.",
        ),
        // WebSocket sessions and subscriptions
        gauge("reelhouse_ws_sessions", Some(Unit::Count), "Open GraphQL WebSocket sessions in this process."),
        counter("reelhouse_ws_sockets_refused_total", "GraphQL WebSockets refused by the per-address or per-user cap, by per."),
        counter(
            "reelhouse_ws_subscriptions_refused_total",
            "Subscriptions refused by the per-socket or per-user operation cap.",
        ),
        counter(
            "reelhouse_ws_rechecks_deferred_total",
            "Session credential re-checks put off because the database did not answer.",
        ),
        counter(
            "reelhouse_session_cache_lookups_total",
            "Access-token session checks by outcome: hit (no database), miss (read and cached), bypass (cache off or not trusted).",
        ),
        gauge("reelhouse_session_cache_entries", Some(Unit::Count), "Sessions held in this process's session cache."),
        counter(
            "reelhouse_session_cache_evictions_total",
            "Sessions dropped from the session cache to stay within auth.session_cache_capacity (expired ones first).",
        ),
        counter(
            "reelhouse_persisted_queries_total",
            "Apollo persisted-query requests by outcome: hit (document kept, not parsed), miss (PERSISTED_QUERY_NOT_FOUND), registered, unsupported (capacity 0).",
        ),
        counter(
            "reelhouse_video_cache_lookups_total",
            "Video-row cache lookups (video(id), and renditions/progress of listed videos) by outcome: hit (no database), miss (read and cached), bypass (cache off or not trusted).",
        ),
        gauge("reelhouse_video_cache_entries", Some(Unit::Count), "Videos held in this process's video-row cache."),
        counter(
            "reelhouse_video_cache_evictions_total",
            "Videos dropped from the video-row cache to stay within graphql.video_cache_capacity (expired ones first).",
        ),
        counter(
            "reelhouse_access_changes_total",
            "Access changes (session revoked, account disabled, deleted or re-roled) pushed to open sockets.",
        ),
        counter(
            "reelhouse_ws_pushed_rechecks_total",
            "Socket credential re-checks run at once because an access change named the socket's user.",
        ),
        gauge("reelhouse_subscribers", Some(Unit::Count), "Open GraphQL subscriptions to video events in this process."),
        counter("reelhouse_subscriber_resyncs_total", "Subscriptions that fell behind the bus and re-read their state."),
        counter(
            "reelhouse_slow_consumers_total",
            "Subscriptions ended with SLOW_CONSUMER: their queue stayed full for graphql.ws_slow_consumer_ms (they resume with after:).",
        ),
        counter("reelhouse_events_dropped_total", "Bus messages a lagging subscription missed (it resynced after)."),
        counter("reelhouse_events_delivered_total", "Events sent to subscribers, by kind."),
        counter(
            "reelhouse_event_renders_total",
            "Live events executed and serialised for subscribers, by path: shared (once per subscription document + variables and visibility class, bytes shared) or fallback (once per subscriber).",
        ),
        counter(
            "reelhouse_event_render_reuses_total",
            "Frames sent with bytes another subscription of the same document and visibility class had already rendered.",
        ),
        counter(
            "reelhouse_subscription_rechecks_total",
            "Permission re-checks of open subscriptions (periodic, pushed by a change, or an all-videos feed's per-event check), by source: a row read shared with other re-checks, or a database read.",
        ),
        counter(
            "reelhouse_subscription_pushed_rechecks_total",
            "Video changes (visibility, metadata, hiding; from any instance) that made the video's open subscriptions re-check at once.",
        ),
        // Events
        counter("reelhouse_events_published_total", "Domain events published on this process's bus, by kind."),
        counter("reelhouse_events_publish_failures_total", "Events that could not be published to Redis after retries."),
        counter(
            "reelhouse_events_publish_dropped_total",
            "PROGRESS events not sent to Redis because this process's publish queue was full (the next supersedes them).",
        ),
        counter(
            "reelhouse_redis_publish_batches_total",
            "Pipelines of PUBLISH commands sent to Redis (events per round trip = published events / batches).",
        ),
        counter("reelhouse_redis_published_events_total", "Events sent to the Redis channel."),
        gauge(
            "reelhouse_event_relay_connected",
            None,
            "1 while this process's Redis event relay is subscribed, 0 while it reconnects.",
        ),
        seconds("reelhouse_event_fanout_seconds", "Seconds from an event's publication to its arrival through Redis."),
        counter(
            "reelhouse_event_order_gaps_total",
            "Missing cursors the event sequencer met, by outcome: filled (arrived or read from the outbox), passed_over (after events.order_grace_ms), late (a passed-over one delivered after all).",
        ),
        counter("reelhouse_events_pruned_total", "Outbox events deleted by the pruner."),
        // Uploads
        counter("reelhouse_uploads_created_total", "Uploads created, by method."),
        counter("reelhouse_uploads_completed_total", "Upload completions, by outcome (accepted or rejected)."),
        counter("reelhouse_uploads_ended_total", "Uploads ended without completing, by status."),
        seconds(
            "reelhouse_upload_completion_seconds",
            "Seconds to complete an upload (checks, probe, move, enqueue).",
        ),
        counter("reelhouse_upload_url_refusals_total", "Signed upload URLs refused because their upload is closed."),
        gauge("reelhouse_upload_sessions", Some(Unit::Count), "Open tus upload sessions in this process."),
        counter("reelhouse_tus_body_timeouts_total", "tus PATCH bodies abandoned after the idle timeout."),
        counter("reelhouse_tus_buffer_refusals_total", "tus PATCHes refused because the process's part-buffer budget was full."),
        counter(
            "reelhouse_tus_buffer_user_refusals_total",
            "tus PATCHes refused because the user's share of the part-buffer budget was full.",
        ),
        // Media, jail and playback
        counter(
            "reelhouse_media_children_started_total",
            "Media jail children started, by landlock status and seccomp (on/off).",
        ),
        counter("reelhouse_media_children_timed_out_total", "Media jail children killed on their timeout."),
        counter("reelhouse_media_children_died_total", "Media jail children that failed, by error code."),
        counter(
            "reelhouse_media_probes_queued_out_total",
            "Probes refused because no probe slot came free within the probe timeout.",
        ),
        counter(
            "reelhouse_media_pipelines_abandoned_total",
            "GStreamer pipelines that did not stop within the grace period and were left behind.",
        ),
        counter("reelhouse_media_requests_total", "Media (HLS) requests served, by kind (playlist or file)."),
        counter(
            "reelhouse_views_total",
            "Views counted by recordView (once per viewer and video within the dedup window).",
        ),
        // Jobs, queue and workers
        gauge(
            "reelhouse_jobs",
            Some(Unit::Count),
            "Jobs in the queue by status (QUEUED, RUNNING, DEAD), read from the database every telemetry.queue_metrics_secs.",
        ),
        gauge(
            "reelhouse_jobs_oldest_queued_age_seconds",
            Some(Unit::Seconds),
            "Seconds the oldest runnable QUEUED job has waited since it became runnable (0 when none).",
        ),
        gauge(
            "reelhouse_workers",
            Some(Unit::Count),
            "Registered workers by state: live (heartbeat within three periods) or stale.",
        ),
        counter(
            "reelhouse_job_failures_total",
            "Job attempts that ended in an error, by kind and typed code (MEDIA_*, QUOTA_EXCEEDED, VIDEO_GONE, SOURCE_MISSING, RETRYABLE, CANCELLED).",
        ),
        counter("reelhouse_job_attempts_total", "Job attempts ended on this process, by kind and resulting status."),
        counter("reelhouse_job_log_lines_delivered_total", "Job log lines sent to jobLog subscribers."),
        gauge("reelhouse_job_log_subscribers", Some(Unit::Count), "Open jobLog subscriptions on this process."),
        counter(
            "reelhouse_job_log_lines_suppressed_total",
            "Job log lines not stored because a run logged more than jobs.log_lines_per_sec (a line in the job's log says how many).",
        ),
        // mail
        counter("reelhouse_mail_queued_total", "Account mails enqueued as SEND_MAIL jobs, by template."),
        counter(
            "reelhouse_mail_sent_total",
            "Delivery attempts of account mails, by template and outcome (sent, retry, failed, interrupted).",
        ),
        seconds(JOB_ATTEMPT_SECONDS, "Seconds per job attempt run on this process, by kind."),
        MetricInfo {
            name: ENCODE_FPS,
            kind: MetricKind::Histogram,
            unit: None,
            help: "Encode rate samples of running transcodes, in source frames per second (one per progress report).",
        },
        gauge("reelhouse_worker_capacity", Some(Unit::Count), "Jobs this process's worker runs at once."),
        gauge("reelhouse_worker_running_jobs", Some(Unit::Count), "Jobs this process's worker is running."),
        gauge(
            "reelhouse_worker_busy_ratio",
            None,
            "Share (0..=1) of this worker's media slots running a job, sampled at each heartbeat.",
        ),
        gauge(
            "reelhouse_worker_last_heartbeat_timestamp_seconds",
            Some(Unit::Seconds),
            "Unix time of this worker's last successful heartbeat in the workers table.",
        ),
        counter("reelhouse_worker_heartbeat_failures_total", "Worker heartbeats that could not be written."),
        counter(
            "reelhouse_worker_channel_connected_total",
            "Remote workers that opened the worker channel (/workers/ws) with a valid token.",
        ),
        counter(
            "reelhouse_worker_channel_closed_total",
            "Worker channel connections this server closed, by close code (4401 no token, 4403 revoked, 4426 version, ...).",
        ),
        counter(
            "reelhouse_worker_channel_outputs_refused_total",
            "Remote results refused because an output was missing or differed from its reported size or SHA-256, by code.",
        ),
        counter(
            "reelhouse_worker_multipart_uploads_total",
            "Multipart uploads of remote workers' large outputs, by outcome (opened, completed, refused, abandoned, lease_lost).",
        ),
        // Storage and webhooks
        seconds(
            "reelhouse_storage_operation_duration_seconds",
            "Seconds per object-store operation, by backend, operation and outcome.",
        ),
        counter("reelhouse_webhook_attempts_total", "Webhook delivery attempts, by outcome."),
        seconds("reelhouse_webhook_attempt_duration_seconds", "Seconds per webhook delivery attempt."),
        counter("reelhouse_webhook_endpoints_disabled_total", "Webhook endpoints disabled after failing too long."),
        counter(
            "reelhouse_webhook_replayed_total",
            "Events re-sent by replayWebhooks, by kind (created: a first delivery; requeued: an earlier one sent again).",
        ),
        counter(
            "reelhouse_webhook_deferred_total",
            "Webhook deliveries put off, without an attempt counted, because their host's circuit breaker was open.",
        ),
        // Circuit breakers
        gauge(
            "reelhouse_breaker_state",
            None,
            "State of each circuit breaker (0 closed, 1 half-open, 2 open), by dependency (database, redis, storage, webhook:host:port).",
        ),
        counter(
            "reelhouse_breaker_transitions_total",
            "Circuit breaker state changes, by dependency and the state entered (to: CLOSED, HALF_OPEN, OPEN).",
        ),
        counter(
            "reelhouse_breaker_rejected_total",
            "Calls refused at once by an open (or probing) circuit breaker instead of reaching the dependency, by dependency.",
        ),
        // Supervision
        counter("reelhouse_actor_restarts_total", "Hub actors restarted by the supervisor after they died, by actor."),
        counter(LOOP_RESTARTS_METRIC, "Background loops restarted after a panic, by loop."),
    ]
};

/// Describe every metric of [`METRICS`] to the installed recorder.
pub fn describe_metrics() {
    for metric in METRICS {
        match (metric.kind, metric.unit) {
            (MetricKind::Counter, Some(unit)) => metrics::describe_counter!(metric.name, unit, metric.help),
            (MetricKind::Counter, None) => metrics::describe_counter!(metric.name, metric.help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(metric.name, unit, metric.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(metric.name, metric.help),
            (MetricKind::Histogram, Some(unit)) => metrics::describe_histogram!(metric.name, unit, metric.help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric name the source passes to `counter!`/`gauge!`/`histogram!`: a
    /// string literal, or a `const NAME: &str = "..."` defined somewhere in `src/`.
    fn emitted_metric_names() -> std::collections::BTreeSet<String> {
        fn walk(dir: &std::path::Path, files: &mut Vec<(std::path::PathBuf, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.push((path, text));
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        assert!(files.len() > 20, "the source tree was not found");
        let mut consts = std::collections::HashMap::new();
        for (_, text) in &files {
            for line in text.lines() {
                let line = line.trim_start().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
                if let Some(rest) = line.strip_prefix("const ") {
                    if let Some((name, value)) = rest.split_once(": &str = \"") {
                        if let Some(value) = value.strip_suffix("\";") {
                            consts.insert(name.to_string(), value.to_string());
                        }
                    }
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (path, text) in &files {
            for kind in ["counter", "gauge", "histogram"] {
                let pattern = format!("{kind}!(");
                for (at, _) in text.match_indices(&pattern) {
                    let before = text[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue; // describe_counter!(...) and friends
                    }
                    let arg = text[at + pattern.len()..].trim_start();
                    let name = if let Some(literal) = arg.strip_prefix('"') {
                        literal.split('"').next().unwrap_or_default().to_string()
                    } else {
                        let ident: String =
                            arg.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                        let last = ident.rsplit("::").next().unwrap_or_default().to_string();
                        consts
                            .get(&last)
                            .cloned()
                            .unwrap_or_else(|| format!("<unresolved `{ident}` in {}>", path.display()))
                    };
                    names.insert(name);
                }
            }
        }
        names
    }

    #[test]
    fn every_metric_in_the_source_is_described_and_every_described_one_is_emitted() {
        let emitted = emitted_metric_names();
        assert!(emitted.contains("reelhouse_http_requests_total"), "the scan found {emitted:?}");
        assert!(emitted.contains(LOOP_RESTARTS_METRIC), "consts are resolved: {emitted:?}");
        let described: std::collections::BTreeSet<String> = METRICS.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(described.len(), METRICS.len(), "a metric is described twice");
        let undescribed: Vec<_> = emitted.difference(&described).collect();
        let stale: Vec<_> = described.difference(&emitted).collect();
        assert!(undescribed.is_empty(), "emitted without a description in telemetry::METRICS: {undescribed:?}");
        assert!(stale.is_empty(), "described in telemetry::METRICS but emitted nowhere: {stale:?}");
        for metric in METRICS {
            assert!(metric.name.starts_with("reelhouse_"), "{}", metric.name);
            assert!(metric.help.ends_with('.') && metric.help.len() > 20, "{}: help too short", metric.name);
            assert!(!metric.help.contains('\n'), "{}: one-line help", metric.name);
        }
    }
}
