//! Logs, metrics and the GStreamer log bridge. Each is installed once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// Keeps the file-log writer alive; drop it last so buffered lines are flushed.
pub struct TelemetryGuard {
    _file: Option<WorkerGuard>,
}

/// Install the global tracing subscriber: pretty or JSON on stderr, plus optional
/// daily-rotated files keeping `log_retention_days` files. `RUST_LOG` overrides the
/// configured level when set. Returns an error if a subscriber is already installed.
pub fn init_tracing(settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
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

    tracing_subscriber::registry().with(stderr).with(file_layer).try_init()?;
    Ok(TelemetryGuard { _file: guard })
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
