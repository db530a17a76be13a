//! Logs, metrics and the GStreamer log bridge. Each is installed once per process.

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

    // The W3C trace context is read from requests and carried into jobs and webhook
    // deliveries whether or not this process exports spans itself.
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

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use). Metric names
/// are prefixed `reelhouse_`.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .and_then(|builder| builder.install_recorder())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

/// Map a configured level name to a GStreamer debug level (`None` if unknown).
pub fn gst_level(name: &str) -> Option<gstreamer::DebugLevel> {
    use gstreamer::DebugLevel;
    Some(match name.to_ascii_lowercase().as_str() {
        "none" => DebugLevel::None,
        "error" => DebugLevel::Error,
        "warning" | "warn" => DebugLevel::Warning,
        "fixme" => DebugLevel::Fixme,
        "info" => DebugLevel::Info,
        "debug" => DebugLevel::Debug,
        "log" => DebugLevel::Log,
        "trace" => DebugLevel::Trace,
        _ => return None,
    })
}

static GSTREAMER: OnceLock<Result<(), String>> = OnceLock::new();

/// Initialise GStreamer once per process and route its log into tracing
/// (target `gstreamer::<category>`), replacing GStreamer's own stderr printer.
pub fn init_gstreamer(level: &str) -> anyhow::Result<()> {
    GSTREAMER
        .get_or_init(|| {
            gstreamer::init().map_err(|e| e.to_string())?;
            gstreamer::log::remove_default_log_function();
            gstreamer::log::set_default_threshold(gst_level(level).unwrap_or(gstreamer::DebugLevel::Warning));
            gstreamer::log::set_active(true);
            gstreamer::log::add_log_function(|category, level, file, function, line, _object, message| {
                let text = message.get().map(|m| m.to_string()).unwrap_or_default();
                let category = category.name();
                let file = file.as_str();
                let function = function.as_str();
                match level {
                    gstreamer::DebugLevel::Error => {
                        tracing::error!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    gstreamer::DebugLevel::Warning | gstreamer::DebugLevel::Fixme => {
                        tracing::warn!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    gstreamer::DebugLevel::Info => {
                        tracing::info!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    gstreamer::DebugLevel::Debug => {
                        tracing::debug!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    _ => tracing::trace!(target: "gstreamer", category, file, function, line, "{text}"),
                }
            });
            tracing::debug!(version = %gstreamer::version_string(), "GStreamer initialised");
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("initialising GStreamer: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects formatted events so the test can read what reached tracing.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn gstreamer_log_messages_arrive_in_tracing() {
        init_gstreamer("warning").unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(fmt::layer().with_writer(move || writer.clone()).with_ansi(false).with_target(true));
        let category = gstreamer::DebugCategory::new("rh-test", gstreamer::DebugColorFlags::empty(), Some("test"));
        tracing::subscriber::with_default(subscriber, || {
            gstreamer::warning!(category, "bridged warning {}", 42);
            gstreamer::debug!(category, "below the threshold");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("bridged warning 42"), "{text}");
        assert!(text.contains("gstreamer"), "target names GStreamer: {text}");
        assert!(text.contains("rh-test"), "category is kept: {text}");
        assert!(!text.contains("below the threshold"), "threshold applies: {text}");
    }

    #[test]
    fn level_names_map_to_gstreamer_levels() {
        assert_eq!(gst_level("WARN"), Some(gstreamer::DebugLevel::Warning));
        assert_eq!(gst_level("debug"), Some(gstreamer::DebugLevel::Debug));
        assert_eq!(gst_level("loud"), None);
    }
}
